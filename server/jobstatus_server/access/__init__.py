"""Access: credentials (API keys), tenants, scopes and per-caller limits."""
