"""The node: what runs units on one machine (the supervisor, reconciler and adoption arrive with the agent)."""
