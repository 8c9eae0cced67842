"""jobstatus: the client library for the jobstatus gRPC status service."""
