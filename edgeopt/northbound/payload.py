"""What goes on the wire to MQTT: topics, JSON payloads and per-device batches (pure).

A change is `{"ts", "value", "quality", "unit"}` on the tag's topic; a batch of
one device's changes is a JSON list of those objects, each adding `device` and
`tag`, on the device's topic (the template without its `{tag}` level).
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from edgeopt.config import DeviceConfig, TagConfig
from edgeopt.tags import Sample

ONLINE = b"online"
OFFLINE = b"offline"
META_SUFFIX = "/meta"
# Where device writes will arrive, below each tag's topic (see `command_topic`).
COMMAND_SUFFIX = "/set"
# Receives (topic, payload) of a message on a command topic (a device write) and
# returns the payload of its result, published on the topic + "/result".
CommandHandler = Callable[[str, bytes], Awaitable[bytes | None]]
RESULT_SUFFIX = "/result"


@dataclass(frozen=True, slots=True)
class Message:
    """One MQTT message waiting in (or read back from) the outbox.

    `id` orders a target's messages (0 until the outbox numbers it); `ts` is
    the time of its first change, for the outbox's oldest age.
    """

    topic: str
    payload: bytes
    ts: float
    id: int = 0

    @property
    def size(self) -> int:
        """What the message costs against `outbox_max`: its topic and payload bytes."""
        return len(self.topic.encode()) + len(self.payload)


@dataclass(frozen=True, slots=True)
class TagRoute:
    """Where one published tag goes and what its payload says about it."""

    device: str
    tag: str
    topic: str
    unit: str | None


def render_topic(template: str, gateway: str, device: str, tag: str) -> str:
    return template.format(gateway=gateway, device=device, tag=tag)


def device_topic(template: str, gateway: str, device: str) -> str:
    """The topic of a batch: the template with its `{tag}` level taken out."""
    levels = [level for level in template.split("/") if "{tag}" not in level]
    return "/".join(levels).format(gateway=gateway, device=device)


def status_topic(template: str, gateway: str) -> str:
    return template.format(gateway=gateway)


def meta_topic(tag_topic: str) -> str:
    return tag_topic + META_SUFFIX


def command_topic(tag_topic: str) -> str:
    """The topic a write to this tag arrives on (for targets with `commands: true`)."""
    return tag_topic + COMMAND_SUFFIX


def result_topic(command: str) -> str:
    """Where the outcome of a command on `command` (a `.../set` topic) is published."""
    return command + RESULT_SUFFIX


def command_tag(topic: str, tags: dict[str, TagRoute]) -> str | None:
    """The tag key a command topic (`<tag topic>/set`) names, if it names a published tag."""
    if not topic.endswith(COMMAND_SUFFIX):
        return None
    wanted = topic[: -len(COMMAND_SUFFIX)]
    return next((key for key, route in tags.items() if route.topic == wanted), None)


def encode_result(result: dict[str, Any]) -> bytes:
    """A command's result as JSON (non-finite numbers as null, like the payloads)."""
    return json.dumps(_json_value(result), separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class WriteCommand:
    """A write asked for on a command topic: the value, and whether to read it back."""

    value: Any
    verify: bool | None = None


def parse_command(payload: bytes) -> WriteCommand:
    """A command payload: a JSON value (`42.5`, `true`, `"text"`), or an object
    `{"value": 42.5, "verify": false}`.

    Raises:
        ValueError: not JSON, or an object without `value`.
    """
    try:
        data = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not a JSON value: {exc}") from None
    if isinstance(data, dict):
        if "value" not in data:
            raise ValueError('an object needs "value"')
        verify = data.get("verify")
        if verify is not None and not isinstance(verify, bool):
            raise ValueError('"verify" must be true or false')
        return WriteCommand(data["value"], verify)
    return WriteCommand(data)


def routes(devices: Iterable[DeviceConfig], template: str, gateway: str) -> dict[str, TagRoute]:
    """The published tags by key (DEVICE/NAME): `publish: false` on a device or tag leaves
    it out."""
    return {
        f"{device.name}/{tag.name}": TagRoute(device.name, tag.name, topic, tag.unit)
        for device, tag, topic in _published(devices, template, gateway)
    }


def _published(
    devices: Iterable[DeviceConfig], template: str, gateway: str
) -> Iterator[tuple[DeviceConfig, TagConfig, str]]:
    """Each published tag with its topic (`publish: false` on a device or tag leaves it out)."""
    for device in devices:
        if device.publish:
            for tag in device.tags:
                if tag.publish:
                    yield device, tag, render_topic(template, gateway, device.name, tag.name)


def _json_value(value: object) -> object:
    # JSON has no NaN or infinity: a bad float travels as null (its quality says why).
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    return value


def change_object(sample: Sample, route: TagRoute, *, named: bool = False) -> dict[str, object]:
    obj: dict[str, object] = {
        "ts": sample.ts,
        "value": _json_value(sample.value),
        "quality": sample.quality,
        "unit": route.unit,
    }
    if named:
        obj["device"], obj["tag"] = route.device, route.tag
    return obj


def encode(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()


def change_message(sample: Sample, route: TagRoute) -> Message:
    return Message(route.topic, encode(change_object(sample, route)), sample.ts)


def batch_message(samples: Sequence[Sample], routes_of: Sequence[TagRoute], topic: str) -> Message:
    """One message for several changes of one device (a JSON list)."""
    body = [change_object(s, r, named=True) for s, r in zip(samples, routes_of, strict=True)]
    return Message(topic, encode(body), min(s.ts for s in samples))


def meta_payload(tag: TagConfig) -> bytes:
    """The retained description of a tag: type, unit, scale and offset, description."""
    return encode(
        {
            "type": str(tag.type),
            "unit": tag.unit,
            "scale": tag.scale,
            "offset": tag.offset,
            "table": tag.table,
            "address": tag.address,
            "description": tag.description,
        }
    )


def meta_messages(devices: Iterable[DeviceConfig], template: str, gateway: str) -> dict[str, bytes]:
    """Retained meta payload by topic, for every published tag."""
    return {
        meta_topic(topic): meta_payload(tag)
        for _, tag, topic in _published(devices, template, gateway)
    }


@dataclass
class Batcher:
    """Packs changes per device into messages: up to `max_messages` changes each, and
    none held longer than `max_delay` (time is passed in, so this stays pure).

    With `max_messages` 1 every change is its own message on the tag's topic.
    """

    template: str
    gateway: str
    max_messages: int = 1
    max_delay: float = 0.0
    _open: dict[str, tuple[float, list[Sample], list[TagRoute]]] = field(default_factory=dict)

    def add(
        self, samples: Iterable[Sample], route_of: dict[str, TagRoute], now: float
    ) -> list[Message]:
        """Take one read's samples; returns the messages complete now."""
        if self.max_messages <= 1:
            out = []
            for sample in samples:
                route = route_of.get(sample.tag)
                if route is not None:
                    out.append(change_message(sample, route))
            return out
        done: list[Message] = []
        for sample in samples:
            route = route_of.get(sample.tag)
            if route is None:
                continue
            _, pending, their_routes = self._open.setdefault(route.device, (now, [], []))
            pending.append(sample)
            their_routes.append(route)
            if len(pending) >= self.max_messages:
                done.append(self._close(route.device))
        if self.max_delay <= 0:
            done.extend(self._close(device) for device in list(self._open))
        return done

    def due(self, now: float) -> list[Message]:
        """The batches whose first change has waited `max_delay`."""
        late = [d for d, (opened, _, _) in self._open.items() if now - opened >= self.max_delay]
        return [self._close(device) for device in late]

    def next_due(self) -> float | None:
        if not self._open:
            return None
        return min(opened for opened, _, _ in self._open.values()) + self.max_delay

    def flush(self) -> list[Message]:
        return [self._close(device) for device in list(self._open)]

    def _close(self, device: str) -> Message:
        _, samples, their_routes = self._open.pop(device)
        topic = device_topic(self.template, self.gateway, device)
        return batch_message(samples, their_routes, topic)
