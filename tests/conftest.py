"""Test-wide settings."""

from hypothesis import HealthCheck, settings

# CI machines are shared and noisy: a per-example deadline would make property tests flaky without finding bugs.
settings.register_profile("fleetlet", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True)
settings.load_profile("fleetlet")
