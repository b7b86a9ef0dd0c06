"""The demo: real models, a served repository, traffic and a live rollout."""
