"""State stores: one protocol, an embedded SQLite backend and a Redis backend for replicas."""
