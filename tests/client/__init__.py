"""Tests of the client library, the CLI and the Node example (client/)."""
