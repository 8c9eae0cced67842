"""The gRPC transport: the servicers, the method wrapper (authentication, limits,
validation, errors to statuses) and reflection. Never imports the HTTP transport."""
