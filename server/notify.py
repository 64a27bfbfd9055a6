"""Wake-ups for streaming calls.

A stream handler does not receive rows through here: it is only told that
something under its topic committed, and then reads the store from the last
sequence it sent. Missed or doubled wake-ups therefore cannot lose or repeat
an event, and a restarted server simply has every stream re-read from the
client's ``after_sequence``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict


class Notifier:
    """Topic -> set of waiting events; :meth:`close` wakes everyone for shutdown."""

    def __init__(self):
        self._events: dict[str, set[asyncio.Event]] = defaultdict(set)
        self.closed = False

    @contextlib.contextmanager
    def subscribe(self, *topics: str):
        """An event set whenever one of ``topics`` is notified, for the duration of the block."""
        event = asyncio.Event()
        for topic in topics:
            self._events[topic].add(event)
        try:
            yield event
        finally:
            for topic in topics:
                self._events[topic].discard(event)
                if not self._events[topic]:
                    del self._events[topic]

    def notify(self, *topics: str) -> None:
        for topic in topics:
            for event in self._events.get(topic, ()):
                event.set()

    def close(self) -> None:
        self.closed = True
        for events in self._events.values():
            for event in events:
                event.set()


def dispatch_topic(aggregator_id: str | None) -> str:
    """Topic of an aggregator's awards and instructions; None = every aggregator's."""
    return f"dispatch:{aggregator_id or '*'}"


CURVES = "curves"
