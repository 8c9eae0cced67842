"""Use cases: create, update, get, list, expire, history. Imports state and the contract."""
