"""The domain of change: registry, rollout specs, traffic policies, analysis, decisions, controller, stores, audit."""
