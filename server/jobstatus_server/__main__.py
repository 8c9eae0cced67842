import sys

from jobstatus_server.main import main

sys.exit(main())
