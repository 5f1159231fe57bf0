"""Run the benchmarks: ``python -m bench`` (``make bench``) runs every one; ``python -m bench events gossip`` only
those named (the module names without ``bench_``)."""

import argparse
from collections.abc import Callable

from bench import (
    bench_actors,
    bench_etcd,
    bench_events,
    bench_gossip,
    bench_list_units,
    bench_registry,
    bench_scheduler,
    bench_units,
)

# In the order a full run takes them.
BENCHMARKS: dict[str, Callable[[], None]] = {
    "units": bench_units.main,
    "actors": bench_actors.main,
    "registry": bench_registry.main,
    "list_units": bench_list_units.main,
    "scheduler": bench_scheduler.main,
    "etcd": bench_etcd.main,
    "events": bench_events.main,
    "gossip": bench_gossip.main,
}

if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"any of {', '.join(BENCHMARKS)}; none: all")
    chosen = parser.parse_args().names or list(BENCHMARKS)
    unknown = [name for name in chosen if name not in BENCHMARKS]
    if unknown:
        parser.error(f"no benchmark {', '.join(unknown)}: expected any of {', '.join(BENCHMARKS)}")
    for name in BENCHMARKS:
        if name in chosen:
            BENCHMARKS[name]()
