"""The HTTP transport: the documented REST paths, the SSE watch, the history route,
the dashboard, /openapi.json, /metrics and /healthz. Never imports the gRPC transport."""
