"""The contract: the kinds and their rules, validation, the error table, the documented
JSON shapes and the wire helpers. Imports nothing of ours but the generated code."""
