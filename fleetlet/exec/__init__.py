"""Executing units: Exec lines to commands, docker argv to Engine API calls, and the runtimes that carry them out."""
