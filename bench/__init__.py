"""Benchmarks: `make bench` runs every one and prints figures beside a baseline measured in the same run."""
