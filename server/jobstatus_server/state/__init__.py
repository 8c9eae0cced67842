"""State: the store (its writers, readers, compaction), migrations, the change feed, the
in-memory view and the watch hub. Imports the contract."""
