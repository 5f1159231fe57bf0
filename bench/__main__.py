"""Run every benchmark: ``python -m bench`` (``make bench``)."""

from bench import (
    bench_actors,
    bench_events,
    bench_gossip,
    bench_list_units,
    bench_registry,
    bench_scheduler,
    bench_units,
)

if __name__ == "__main__":
    bench_units.main()
    bench_actors.main()
    bench_registry.main()
    bench_list_units.main()
    bench_scheduler.main()
    bench_events.main()
    bench_gossip.main()
