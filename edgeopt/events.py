"""Operational events (device online/offline, reloads, optimizations, anomalies).

A bounded in-memory log that listeners subscribe to: the control socket's
`events --follow` streams from it, and the log keeps the recent past for
`events` without `--follow`.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

Listener = Callable[["Event"], None]


@dataclass(frozen=True, slots=True)
class Event:
    """Something an operator may want to know happened."""

    seq: int
    ts: float
    kind: str  # e.g. device_online, device_offline, config_reloaded, anomaly
    message: str
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class EventLog:
    """Recent events plus the listeners that want new ones."""

    def __init__(self, keep: int = 1000) -> None:
        self._events: deque[Event] = deque(maxlen=keep)
        self._listeners: list[Listener] = []
        self._seq = itertools.count(1)

    def emit(self, ts: float, kind: str, message: str, **data: Any) -> Event:
        event = Event(next(self._seq), ts, kind, message, data)
        self._events.append(event)
        for listener in list(self._listeners):
            listener(event)
        return event

    def recent(self, limit: int = 100) -> list[Event]:
        return list(self._events)[-limit:] if limit > 0 else []

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Add a listener; returns the function that removes it."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe
