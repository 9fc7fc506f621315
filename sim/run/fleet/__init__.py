"""The fleet: many replicas behind a router, with lifecycles (cold starts, draining) and billing."""
