"""What the API's handlers share: the registry they read and write, the view of the machines, the clock, and what
they keep of the registry between requests."""

from __future__ import annotations

from dataclasses import dataclass, field

from fleetlet.api.caches import OptionsCache, ScheduleCache
from fleetlet.api.proxy import Proxy
from fleetlet.api.view import NodeView
from fleetlet.clock import Clock
from fleetlet.registry.model import ScheduleEntry
from fleetlet.registry.protocol import Registry

# fleet served pages of 100 units, and its clients follow nextPageToken until it is absent.
#
# /state keeps pages of 100 too, though any client of fleet's API (fleetctl 1.0 included) follows the token
# whatever the page size. Each page is a pass over every state the view reports, so a listing costs
# states x pages; measured with 5,000 states (bench/bench_list_units.py), list-units takes 78 ms with pages of 100
# and 58 ms with pages of 1,000: well under the 150 ms asked either way, so fleet's size stays. Clusters that
# report tens of thousands of states are where a larger default for /state would pay.
PAGE_SIZE = 100


@dataclass(frozen=True, slots=True)
class ApiContext:
    registry: Registry
    view: NodeView
    clock: Clock
    page_size: int = PAGE_SIZE
    schedules: ScheduleCache = field(default_factory=ScheduleCache)
    options: OptionsCache = field(default_factory=OptionsCache)
    proxy: Proxy = field(default_factory=Proxy)  # status and journal of units another member runs

    async def schedule_entry(self, unit: str) -> ScheduleEntry | None:
        """The unit's placement now (None: on no machine), through the schedule cache.

        Ask it after reading the unit: the schedule is then at least as recent as the unit's record.
        """
        return (await self.schedules.at(self.registry, await self.registry.revision())).entries.get(unit)
