"""Stream processors: the gate (validation) and, as they land, the router and reconciler."""
