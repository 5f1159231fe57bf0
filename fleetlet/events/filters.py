"""Which events a subscriber wants: ``?topic=state``, ``?topic=state:hello_world@*`` (a glob on the key, with
the path.Match rules unit globs use everywhere else), repeatable, and ``?machine=ID``.

Topics are ORed; a machine narrows every topic to the events that concern that machine: its own ``machine``
events, states on it, units placed on it or moved away from it, and its leadership. Events that concern no machine
(``unit`` events) are left out when a machine is given.

The ``journal`` topic is not part of "every topic": only a filter that names it (``journal:hello.service``,
``journal:web*``, or ``journal`` for every unit) lets journal entries through.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from fleetlet.events.model import EXPLICIT_TOPICS, TOPICS, Event, Topic
from fleetlet.units.globs import compile_glob, glob_matches

_KNOWN_TOPICS: tuple[Topic, ...] = (*TOPICS, *EXPLICIT_TOPICS)


@dataclass(frozen=True, slots=True)
class TopicFilter:
    topic: Topic
    key_glob: str = ""  # "": every key

    def matches(self, event: Event) -> bool:
        return event.topic == self.topic and (not self.key_glob or glob_matches(self.key_glob, event.key))


@dataclass(frozen=True, slots=True)
class EventFilter:
    topics: tuple[TopicFilter, ...] = ()  # none: every topic but the explicit ones
    machine: str = ""  # "": every machine

    @property
    def everything(self) -> bool:
        """Whether it lets every event through but those of the topics one must ask for by name."""
        return not self.topics and not self.machine

    def matches(self, event: Event) -> bool:
        if self.topics:
            if not any(t.matches(event) for t in self.topics):
                return False
        elif event.topic in EXPLICIT_TOPICS:
            return False
        return not self.machine or self.machine in _machines_of(event)

    def may_match(self, topic: Topic) -> bool:
        """Whether some event of ``topic`` could pass: what a stream needs produced for it."""
        if self.topics:
            if all(t.topic != topic for t in self.topics):
                return False
        elif topic in EXPLICIT_TOPICS:
            return False
        return not self.machine or topic != "unit"  # a unit event concerns no machine

    @property
    def journal_globs(self) -> tuple[str, ...]:
        """The unit globs whose journals the filter asks for ("*" for a bare ``journal``); () when none."""
        return tuple(t.key_glob or "*" for t in self.topics if t.topic == "journal")


def parse_filter(topics: Iterable[str], machine: str = "") -> EventFilter:
    """The filter of a request's ``topic`` and ``machine`` values; ValueError with a message for a client."""
    parsed: list[TopicFilter] = []
    for value in topics:
        topic, _, glob = value.partition(":")
        if topic not in _KNOWN_TOPICS:
            raise ValueError(f"unknown topic {topic!r}: expected one of {', '.join(_KNOWN_TOPICS)}")
        if glob:
            try:
                compile_glob(glob)
            except ValueError as exc:
                raise ValueError(f"invalid key pattern {glob!r}: {exc}") from None
        parsed.append(TopicFilter(topic, glob))
    return EventFilter(tuple(parsed), machine)


def _machines_of(event: Event) -> tuple[str, ...]:
    if event.topic == "machine":
        return (event.key,)
    payload = event.payload
    return tuple(
        str(payload[field]) for field in ("machineID", "previousMachineID") if isinstance(payload.get(field), str)
    )
