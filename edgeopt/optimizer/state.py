"""What the optimizer learned, as saved and restored, and when a tag's share of it stays valid."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgeopt.poller import TagRuntime

__all__ = ["LearnedState", "tag_fingerprint"]


@dataclass
class LearnedState:
    """Everything the optimizer learned, as persisted (see `persistence`)."""

    meta: dict[str, Any]
    strategies: dict[str, dict[str, Any]]
    tags: dict[str, dict[str, Any]]  # key -> fingerprint, allocated, rate, profile
    triggers: dict[str, list[str]]
    records: list[dict[str, Any]]


def tag_fingerprint(tag: TagRuntime) -> str:
    """What must not change for a tag's learned state to stay valid across a reload."""
    c = tag.config
    return "|".join(
        str(v)
        for v in (
            tag.device,
            c.table,
            c.address,
            c.type,
            c.bit,
            c.width,
            c.interval,
            c.min_interval,
            c.max_staleness,
            c.deadband,
            c.priority,
            # Newer keys only when set, so an unchanged tag keeps its fingerprint.
            *(f"{name}={value}" for name, value in (("byte", c.byte), ("bits", c.bits)) if value),
        )
    )
