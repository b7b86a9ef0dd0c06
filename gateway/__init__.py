"""servegate: the serving gateway (protocols, data plane, batching, inference, routing, admin, CLI)."""
