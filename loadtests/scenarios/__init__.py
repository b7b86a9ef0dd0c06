"""Game days: load scenarios that each start (or target) a gateway, drive it, and end in a verdict."""
