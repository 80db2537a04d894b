"""What the optimizer learned, as saved and restored, and when a tag's share of it stays valid."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from edgeopt.optimizer.model import PlanModel
from edgeopt.poller import TagRuntime

__all__ = ["LearnedState", "export_tags", "restore_tags", "tag_fingerprint"]


@dataclass
class LearnedState:
    """Everything the optimizer learned, as persisted (see `persistence`)."""

    meta: dict[str, Any]
    strategies: dict[str, dict[str, Any]]
    # key -> fingerprint, allocated, rate, reference, miss, profile
    tags: dict[str, dict[str, Any]]
    triggers: dict[str, list[str]]
    records: list[dict[str, Any]]
    # For a save: instead of `tags`, the keys and each chunk's entries (with
    # their profiles), asked for a few hundred tags at a time while the rows
    # are written. At 10k tags all of them at once are ~50 MB of dicts, lists
    # and floats that the daemon's heap would keep as its high-water mark.
    tag_keys: list[str] | None = None
    tags_of: Callable[[Sequence[str]], Mapping[str, dict[str, Any]]] | None = None

    def keys(self) -> list[str]:
        """The tags this state covers."""
        return list(self.tags) if self.tag_keys is None else self.tag_keys

    def tags_in(self, chunk: Sequence[str]) -> Mapping[str, dict[str, Any]]:
        """The entries of `chunk`'s tags (those still there)."""
        if self.tags_of is not None:
            return self.tags_of(chunk)
        return {k: self.tags[k] for k in chunk if k in self.tags}


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


def export_tags(
    tags: Mapping[str, TagRuntime],
    model: PlanModel,
    profiles: Mapping[str, Any],
    keys: Iterable[str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Each tag's learned share (of `keys` still there; default all): what `restore_tags` takes."""
    if keys is not None:
        tags = {k: tags[k] for k in keys if k in tags}
    return {
        key: {
            "fingerprint": tag_fingerprint(tag),
            "allocated": model.allocated.get(key, tag.base_interval),
            "rate": model.rates.get(key),
            "reference": list(model.reference_rates[key]) if key in model.reference_rates else None,
            "profile": profiles.get(key),
            "miss": model.misses.get(key),
        }
        for key, tag in tags.items()
    }


def restore_tags(
    tags: Mapping[str, TagRuntime],
    model: PlanModel,
    saved: Mapping[str, Mapping[str, Any]],
    triggers: Mapping[str, list[str]],
) -> set[str]:
    """Take back each tag's learned share, and the triggers among them; returns the valid keys.

    A tag whose config changed (another fingerprint) or that is gone starts afresh.
    """
    valid: set[str] = set()
    for key, saved_tag in saved.items():
        tag = tags.get(key)
        if tag is None or saved_tag.get("fingerprint") != tag_fingerprint(tag):
            continue
        valid.add(key)
        model.allocated[key] = float(saved_tag.get("allocated", tag.base_interval))
        rate = saved_tag.get("rate")
        if rate is not None:
            model.rates[key] = float(rate)
        reference = saved_tag.get("reference")
        if isinstance(reference, list) and len(reference) == 2:
            model.reference_rates[key] = (float(reference[0]), float(reference[1]))
        miss = saved_tag.get("miss")
        if miss is not None:
            model.misses[key] = float(miss)
    restored = {
        leader: frozenset(f for f in followers if f in valid)
        for leader, followers in triggers.items()
        if leader in valid
    }
    model.triggers = {k: v for k, v in restored.items() if v}
    return valid
