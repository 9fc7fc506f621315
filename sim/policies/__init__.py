"""Pure policies (no SimPy): routers, autoscalers, replica lifecycles."""
