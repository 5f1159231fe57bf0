"""fleetlet: a cluster init system for containers — CoreOS fleet's model, rebuilt in asyncio Python."""
