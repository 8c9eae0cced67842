"""Cross-cutting: metrics and tracing. Imports nothing of ours, so every layer may use it."""
