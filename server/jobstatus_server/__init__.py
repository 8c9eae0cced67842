"""jobstatus server: the gRPC status service for long-running jobs."""
