import sys

from jobstatus_server.composition.main import main

sys.exit(main())
