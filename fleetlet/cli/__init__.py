"""The command line: ``fleetlet`` (also installed as ``fleetctl``)."""
