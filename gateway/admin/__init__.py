"""The authenticated admin API: routes, JWT auth, endpoints."""
