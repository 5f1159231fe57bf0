"""The unit actor: systemd's service state machine, restart policy, timeouts, and the unit's journal."""
