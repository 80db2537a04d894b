"""The typed config: one frozen dataclass per YAML section, with every rule it obeys.

Every check lives here, so a config built in code with `model_validate` is
held to the same rules as one loaded from YAML. Rules that span fields
report each problem with its own sub-path (see `RULE_ERROR`); the loader
turns those into `file:line: path: message` issues. pydantic does the
validating, in the process that validates only (see `fields`).
"""

from __future__ import annotations

import codecs
import platform
import re
import string
from collections.abc import Sequence
from dataclasses import field
from pathlib import Path
from typing import Annotated, Any, Literal

from annotated_types import Ge, Gt, Interval, Le, Len, MinLen

from edgeopt.config.durations import format_duration
from edgeopt.config.fields import (
    After,
    Before,
    Fraction,
    FsPath,
    Name,
    NonNegativeDuration,
    Number,
    Percent,
    PositiveDuration,
    PositiveSize,
    Section,
    StrictBool,
    StrictFloat,
    StrictInt,
    Word,
    none_is_empty,
    none_is_list,
    positive_duration,
    reject_bool,
    section,
)
from edgeopt.config.issues import RULE_ERROR, Problem, raise_problems
from edgeopt.modbus.codec import DataType, codec_for, register_width

__all__ = [
    "DEFAULT_COOLDOWNS",
    "RULE_ERROR",
    "Config",
    "DaemonConfig",
    "DeviceConfig",
    "DeviceSettings",
    "MetricsConfig",
    "NorthboundBatch",
    "NorthboundTarget",
    "NorthboundTls",
    "OptimizerConfig",
    "Priority",
    "Problem",
    "ResourcesConfig",
    "StorageConfig",
    "StrategyConfig",
    "Table",
    "TagConfig",
    "Transport",
    "WriteConfig",
]

Transport = Literal["tcp", "rtu", "rtu_over_tcp"]
Table = Literal["holding", "input", "coil", "discrete"]
Priority = Literal["high", "normal", "low"]
ParamValue = bool | int | float | str

BIT_TABLES: frozenset[str] = frozenset({"coil", "discrete"})
# The tables a master may write: coils and holding registers.
WRITABLE_TABLES: frozenset[str] = frozenset({"coil", "holding"})
# One past the last protocol address: a tag must end at or before it.
ADDRESS_SPACE = 65536
# The strategies edgeopt knows, with the cooldown each gets when the config
# does not set one: the heavier the strategy, the longer it waits.
DEFAULT_COOLDOWNS: dict[str, float] = {
    "interval": 600.0,
    "cluster": 3600.0,
    "pattern": 21600.0,
}
DEFAULT_EVALUATE_AFTER = 600.0
DEFAULT_INTERVAL = 1.0
# max_staleness defaults to this many intervals.
STALENESS_FACTOR = 10


def _non_zero(value: float) -> float:
    if value == 0:
        raise ValueError("must not be zero")
    return value


def _port_value(value: object) -> object:
    # Exact types only: the transport decides which of the two is right.
    if isinstance(value, int | str) and not isinstance(value, bool):
        return value
    raise ValueError(
        f"expected a TCP port number or a serial device path like /dev/ttyUSB0, got {value!r}"
    )


def _param_value(value: object) -> object:
    if isinstance(value, bool | int | float | str):
        return value
    raise ValueError(f"expected a number, string or boolean, got {value!r}")


_LISTEN_RE = re.compile(r"(\[[^\]\s]+\]|[^:\[\]\s]*):(\d{1,5})")


def _listen(value: str) -> str:
    match = _LISTEN_RE.fullmatch(value)
    if match is None or not 1 <= int(match.group(2)) <= 65535:
        raise ValueError(f"expected HOST:PORT such as 127.0.0.1:9108, got {value!r}")
    return value


def _topic_level(value: str) -> str:
    # One MQTT topic level: the wildcards and the separator would change what it means.
    if not value or any(c in value for c in "/+#") or any(c.isspace() for c in value):
        raise ValueError(
            f"must be one MQTT topic level (no '/', '+', '#' or spaces), got {value!r}"
        )
    return value


# --- sections ------------------------------------------------------------------


@section
class DaemonConfig(Section):
    """Process-level settings: where state lives and who may use the socket.

    `name` is the gateway's name in MQTT topics and its default client id; None
    means the host name (`gateway_name`).
    """

    name: Annotated[str, After(_topic_level)] | None = None
    state_dir: FsPath = Path("/var/lib/edgeopt")
    socket: FsPath = Path("/run/edgeopt/edgeopt.sock")
    socket_group: Word | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    admin_group: Word | None = None

    @property
    def gateway(self) -> str:
        """The gateway's name: `name`, or the host name (up to its first dot)."""
        return self.name or platform.node().split(".")[0] or "edgeopt"


@section
class StorageConfig(Section):
    """How long each storage tier keeps data, and how writes are batched."""

    hot_retention: PositiveDuration = 86400.0
    warm_retention: PositiveDuration = 30 * 86400.0
    cold_retention: PositiveDuration = 365 * 86400.0
    cold_resolution: PositiveDuration = 60.0
    max_disk: PositiveSize | None = None
    flush_interval: PositiveDuration = 1.0
    flush_rows: Annotated[StrictInt, Ge(1)] = 5000
    archive: StrictBool = True
    lifecycle_interval: PositiveDuration = 600.0


@section
class StrategyConfig(Section):
    """One optimizer strategy: on or off, its cooldown, and tuning knobs."""

    enabled: StrictBool = True
    cooldown: NonNegativeDuration
    params: dict[str, Annotated[ParamValue, Before(_param_value)]] = field(default_factory=dict)


def _default_strategies() -> dict[str, StrategyConfig]:
    return {name: StrategyConfig(cooldown=c) for name, c in DEFAULT_COOLDOWNS.items()}


def _fill_strategies(value: object) -> object:
    """Every known strategy, the ones left out with their defaults; no unknown ones."""
    if value is None:
        return _default_strategies()
    if not isinstance(value, dict):
        return value  # pydantic reports the wrong type
    known = ", ".join(DEFAULT_COOLDOWNS)
    raise_problems(
        [
            Problem((name,), f"unknown strategy {name!r} (known: {known})")
            for name in value
            if name not in DEFAULT_COOLDOWNS
        ]
    )
    merged: dict[str, object] = {}
    for name, cooldown in DEFAULT_COOLDOWNS.items():
        entry = value.get(name)
        if entry is None:
            entry = {}
        if isinstance(entry, dict) and "cooldown" not in entry:
            entry = {**entry, "cooldown": cooldown}
        merged[name] = entry
    return merged


@section
class OptimizerConfig(Section):
    """When the optimizer runs and what counts as a change worth keeping.

    `strategies` always holds every known strategy after validation; the
    ones the config leaves out get their defaults.
    """

    enabled: StrictBool = True
    quick_every: PositiveDuration = 300.0
    full_every: PositiveDuration = 3600.0
    evaluate_after: PositiveDuration = DEFAULT_EVALUATE_AFTER
    min_improvement: Fraction = 0.10
    max_fidelity_loss: Fraction = 0.02
    strategies: Annotated[dict[str, StrategyConfig], Before(_fill_strategies)] = field(
        default_factory=_default_strategies
    )

    @classmethod
    def prepared(cls, data: Any) -> Any:
        """A strategy whose cooldown the config leaves out waits in step with the cadence.

        The defaults (10 min, 1 h, 6 h) suit `evaluate_after: 10m`; with a faster
        evaluation they shrink in proportion, so a fast cadence also learns fast.
        """
        if not isinstance(data, dict) or data.get("evaluate_after") is None:
            return data
        try:
            scale = positive_duration(data["evaluate_after"]) / DEFAULT_EVALUATE_AFTER
        except (TypeError, ValueError):
            return data  # the field's own validation reports it
        strategies = data.get("strategies")
        if scale >= 1.0 or not isinstance(strategies or {}, dict):
            return data
        filled: dict[str, object] = dict(strategies or {})
        for name, cooldown in DEFAULT_COOLDOWNS.items():
            entry = filled.get(name)
            entry = {} if entry is None else entry
            if isinstance(entry, dict) and "cooldown" not in entry:
                filled[name] = {**entry, "cooldown": cooldown * scale}
        return {**data, "strategies": filled}


@section
class ResourcesConfig(Section):
    """When the daemon defers optional work, and when it sheds acquisition.

    The machine thresholds (percent, and °C) only defer optional work (KMeans,
    pattern fitting, compaction), at most `max_deferrals` times in a row. Reads
    are shed only when the daemon itself cannot keep up: its reads start
    `lag_limit` periods late on average, or its own RSS reaches `own_rss_limit`.
    """

    cpu_high: Percent = 80.0
    memory_high: Percent = 85.0
    disk_high: Percent = 90.0
    temp_high: Number | None = None
    max_deferrals: Annotated[StrictInt, Interval(ge=0, le=1000)] = 3
    lag_limit: Annotated[StrictFloat, Interval(gt=0, le=10)] = 0.5
    own_rss_limit: PositiveSize | None = None


@section
class MetricsConfig(Section):
    """The optional metrics endpoint; off unless `listen` is set."""

    listen: Annotated[str, After(_listen)] | None = None


# --- northbound (MQTT) ----------------------------------------------------------

DEFAULT_TOPIC = "edgeopt/{gateway}/{device}/{tag}"
DEFAULT_STATUS_TOPIC = "edgeopt/{gateway}/status"


def _template_fields(template: str) -> list[str]:
    try:
        return [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise ValueError(f"not a valid topic template ({exc}): {template!r}") from None


def _topic_template(template: str, *, allowed: tuple[str, ...], required: tuple[str, ...]) -> str:
    fields = _template_fields(template)
    unknown = sorted({f for f in fields if f not in allowed})
    if unknown:
        names = ", ".join("{" + f + "}" for f in allowed)
        raise ValueError(f"unknown placeholder {{{unknown[0]}}} (known: {names})")
    missing = [f for f in required if f not in fields]
    if missing:
        raise ValueError(f"the template needs {{{missing[0]}}} in it, got {template!r}")
    if any(c in template for c in "+#") or template.startswith("$") or not template.strip():
        raise ValueError(f"a topic to publish on has no wildcards and no leading '$': {template!r}")
    return template


def _data_topic(template: str) -> str:
    return _topic_template(
        template, allowed=("gateway", "device", "tag"), required=("device", "tag")
    )


def _status_topic(template: str) -> str:
    return _topic_template(template, allowed=("gateway",), required=())


@section
class NorthboundTls(Section):
    """TLS to the broker: `ca` verifies it (default: the system's CAs), `cert` and `key`
    identify the gateway; `insecure` skips only the host name check."""

    ca: FsPath | None = None
    cert: FsPath | None = None
    key: FsPath | None = None
    insecure: StrictBool = False

    def problems(self) -> list[Problem]:
        problems = []
        if self.key is not None and self.cert is None:
            problems.append(Problem(("cert",), "key needs cert (the client certificate)"))
        if self.cert is not None and self.key is None:
            problems.append(Problem(("key",), "cert needs key (its private key)"))
        return problems


@section
class NorthboundBatch(Section):
    """Pack up to `max_messages` changes of one device in one message, waiting at most
    `max_delay` for them (0: only the changes of one read)."""

    max_messages: Annotated[StrictInt, Interval(ge=1, le=10000)] = 1
    max_delay: NonNegativeDuration = 0.0


@section
class NorthboundTarget(Section):
    """One MQTT broker that tag changes are published to, through a persistent outbox.

    `port` defaults to 8883 with `tls` and 1883 without. `client_id` defaults to
    the gateway name. The password is read from `password_file`, never from here.
    """

    name: Name
    host: Word
    port: Annotated[StrictInt, Interval(ge=1, le=65535)] | None = None
    client_id: Annotated[str, Len(1, 128)] | None = None
    keepalive: Annotated[float, Before(positive_duration), Le(65535)] = 60.0
    username: Annotated[str, MinLen(1)] | None = None
    password_file: FsPath | None = None
    tls: NorthboundTls | None = None
    qos: Annotated[Literal[0, 1], Before(reject_bool)] = 1
    retain_last: StrictBool = False
    topic: Annotated[str, After(_data_topic)] = DEFAULT_TOPIC
    status_topic: Annotated[str, After(_status_topic)] = DEFAULT_STATUS_TOPIC
    batch: Annotated[NorthboundBatch, Before(none_is_empty)] = field(
        default_factory=NorthboundBatch
    )
    outbox_max: PositiveSize = 100_000_000
    # Backlog messages per second after an outage (0: as fast as the broker acknowledges).
    drain_rate: Annotated[StrictInt, Ge(0)] = 1000
    reconnect_max: PositiveDuration = 30.0
    # Device writes from `.../{device}/{tag}/set` (writable tags only), with the
    # outcome on `.../set/result`; audited with the target's name as the caller.
    commands: StrictBool = False

    @classmethod
    def prepared(cls, data: Any) -> Any:
        if isinstance(data, dict) and "password" in data:
            message = (
                "an inline password is not allowed (status would show it); "
                "put it in a file and set password_file"
            )
            raise_problems([Problem(("password",), message)])
        return data

    def problems(self) -> list[Problem]:
        if self.password_file is not None and self.username is None:
            return [Problem(("password_file",), "needs username")]
        return []

    @property
    def broker_port(self) -> int:
        if self.port is not None:
            return self.port
        return 8883 if self.tls is not None else 1883


# --- tags ----------------------------------------------------------------------


@section
class WriteConfig(Section):
    """How a writable tag may be written (only with `writable: true`).

    `min`/`max` bound the requested value in engineering units (before scale
    and offset are undone). `function` picks the Modbus function: `auto` is
    FC5 for a coil, FC6 for one register, FC16 for more, and FC22 (mask
    write) for a `bit:` of a holding register; `single` forces FC5/FC6,
    `multiple` FC15/FC16. `min_interval` is the per-tag rate limit.
    """

    min: Number | None = None
    max: Number | None = None
    verify: StrictBool = True
    verify_timeout: PositiveDuration = 2.0
    function: Literal["auto", "single", "multiple"] = "auto"
    min_interval: NonNegativeDuration = 1.0


@section
class TagConfig(Section):
    """One value on a device: where it is, how to decode it, how often to read it.

    `min_interval` defaults to `interval` and `max_staleness` to ten times
    `interval`. On coil and discrete tables `type` defaults to bool.
    """

    name: Name
    table: Table
    address: Annotated[StrictInt, Interval(ge=0, le=ADDRESS_SPACE - 1)]
    type: DataType
    bit: Annotated[StrictInt, Interval(ge=0, le=15)] | None = None
    # A bit field: `type: uint16`, `bit` its lowest bit, `bits` its width.
    bits: Annotated[StrictInt, Interval(ge=1, le=16)] | None = None
    # int8 / uint8: which byte of the register (after byte_order).
    byte: Literal["high", "low"] | None = None
    length: Annotated[StrictInt, Ge(1)] | None = None
    byte_order: Literal["big", "little"] = "big"
    word_order: Literal["big", "little"] = "big"
    string_encoding: str | None = None
    scale: Annotated[Number, After(_non_zero)] = 1.0
    offset: Number = 0.0
    unit: str | None = None
    description: str | None = None
    interval: PositiveDuration = DEFAULT_INTERVAL
    # These two defaults apply only when `interval` itself is invalid: the
    # before-validator below derives the real ones from it.
    min_interval: PositiveDuration = DEFAULT_INTERVAL
    max_staleness: PositiveDuration = DEFAULT_INTERVAL * STALENESS_FACTOR
    deadband: Annotated[Number, Ge(0)] = 0.0
    priority: Priority = "normal"
    # Lossy storage (swinging door) once data leaves the hot tier: every
    # dropped point stays within this of the line through the kept ones.
    compression_deviation: Annotated[Number, Gt(0)] | None = None
    writable: StrictBool = False
    write: WriteConfig | None = None
    # Sent to the northbound targets (with the device's own `publish`).
    publish: StrictBool = True

    @property
    def write_settings(self) -> WriteConfig:
        """The write settings, defaults filled in (meaningful only when writable)."""
        return self.write if self.write is not None else WriteConfig()

    @property
    def width(self) -> int:
        """Registers (on coil/discrete tables: bits) the tag occupies."""
        return register_width(self.type, self.length)

    @property
    def end(self) -> int:
        """One past the last address the tag occupies."""
        return self.address + self.width

    @classmethod
    def prepared(cls, data: Any) -> Any:
        return _tag_defaults(data) if isinstance(data, dict) else data

    def problems(self) -> list[Problem]:
        return tag_problems(self)


def _tag_defaults(data: dict[str, Any]) -> dict[str, Any]:
    """`type` and the timing keys a tag leaves out, derived from the ones it gives."""
    data = dict(data)
    if "type" not in data and data.get("table") in BIT_TABLES:
        data["type"] = DataType.BOOL.value
    if "min_interval" not in data or "max_staleness" not in data:
        try:
            interval = positive_duration(data.get("interval", DEFAULT_INTERVAL))
        except ValueError:
            return data  # `interval` gets its own error
        data.setdefault("min_interval", interval)
        data.setdefault("max_staleness", interval * STALENESS_FACTOR)
    return data


def tag_problems(tag: TagConfig) -> list[Problem]:
    """Rules that span a tag's fields: table/type combinations, range, timing."""
    problems: list[Problem] = []
    table, dtype = tag.table, tag.type
    if table in BIT_TABLES:
        if dtype is not DataType.BOOL:
            problems.append(Problem(("type",), f"a {table} holds one bit: type must be bool"))
        if tag.bit is not None:
            problems.append(
                Problem(("bit",), f"not used on a {table} table: each address is one bit")
            )
    else:
        field_type = dtype is DataType.UINT16 and tag.bits is not None
        if tag.bit is not None and dtype is not DataType.BOOL and not field_type:
            problems.append(
                Problem(
                    ("bit",), f"needs type bool, or uint16 with bits (a bit field), not {dtype}"
                )
            )
        if dtype is DataType.BOOL and tag.bit is None:
            problems.append(
                Problem(("type",), f"bool on a {table} register needs bit (0..15) to pick one")
            )
        if tag.bits is not None:
            if dtype is not DataType.UINT16:
                problems.append(
                    Problem(
                        ("bits",), f"a bit field is an unsigned number: type uint16, not {dtype}"
                    )
                )
            elif tag.bit is None:
                problems.append(Problem(("bits",), "a bit field needs bit: its lowest bit (0..15)"))
            elif tag.bit + tag.bits > 16:
                problems.append(
                    Problem(
                        ("bits",),
                        f"{tag.bits} bits from bit {tag.bit} do not fit a 16-bit register "
                        f"(at most {16 - tag.bit})",
                    )
                )
    if dtype in (DataType.INT8, DataType.UINT8) and tag.byte is None:
        problems.append(
            Problem(("byte",), f"{dtype} is one byte of a register: set byte: high or low")
        )
    if tag.byte is not None and dtype not in (DataType.INT8, DataType.UINT8):
        problems.append(Problem(("byte",), f"only used by types int8 and uint8, not {dtype}"))
    if dtype is DataType.STRING and tag.length is None:
        problems.append(Problem(("type",), "string needs length (its size in registers)"))
    if tag.length is not None and dtype is not DataType.STRING:
        problems.append(Problem(("length",), f"only used by type string, not {dtype}"))
    if tag.string_encoding is not None:
        if dtype is not DataType.STRING:
            problems.append(Problem(("string_encoding",), "only used by type string"))
        else:
            try:
                codecs.lookup(tag.string_encoding)
            except LookupError:
                problems.append(
                    Problem(("string_encoding",), f"unknown encoding {tag.string_encoding!r}")
                )
    if dtype in (DataType.BOOL, DataType.STRING) and tag.compression_deviation is not None:
        problems.append(
            Problem(("compression_deviation",), f"only used by numeric types, not {dtype}")
        )
    if dtype in (DataType.BOOL, DataType.STRING):
        if tag.scale != 1.0:
            problems.append(Problem(("scale",), f"only used by numeric types, not {dtype}"))
        if tag.offset != 0.0:
            problems.append(Problem(("offset",), f"only used by numeric types, not {dtype}"))
    if not (dtype is DataType.STRING and tag.length is None):
        end = tag.address + register_width(dtype, tag.length)
        if end > ADDRESS_SPACE:
            problems.append(
                Problem(
                    ("address",),
                    f"the tag spans addresses {tag.address}..{end - 1}, "
                    f"past the last address {ADDRESS_SPACE - 1}",
                )
            )
    problems += _timing_problems(tag)
    problems += _write_problems(tag)
    if not problems:
        # The codec has the last word on what it can decode; normally it
        # agrees with the rules above, and this catches any drift.
        try:
            codec_for(tag)
        except ValueError as exc:
            problems.append(Problem((), f"the codec rejects this tag: {exc}"))
    return problems


def _write_problems(tag: TagConfig) -> list[Problem]:
    """Only coils and holding registers are writable, and `write:` must fit the tag."""
    problems: list[Problem] = []
    if tag.writable and tag.table not in WRITABLE_TABLES:
        problems.append(
            Problem(
                ("writable",),
                f"a {tag.table} table is read-only in Modbus: only coil and holding tags "
                "can be writable",
            )
        )
    write = tag.write
    if write is None:
        return problems
    if not tag.writable:
        problems.append(Problem(("write",), "needs writable: true"))
    numeric = tag.type not in (DataType.BOOL, DataType.STRING)
    for key in ("min", "max"):
        if getattr(write, key) is not None and not numeric:
            problems.append(Problem(("write", key), f"only used by numeric types, not {tag.type}"))
    if write.min is not None and write.max is not None and write.min > write.max:
        problems.append(Problem(("write", "max"), f"{write.max:g} is below min {write.min:g}"))
    width = register_width(tag.type, tag.length) if tag.length or tag.type != "string" else 0
    if write.function == "single" and tag.table not in BIT_TABLES and width > 1:
        problems.append(
            Problem(
                ("write", "function"),
                f"single (FC6) writes one register, and this {tag.type} spans {width}",
            )
        )
    return problems


def _timing_problems(tag: TagConfig) -> list[Problem]:
    """min_interval <= interval <= max_staleness, blaming the key most likely written."""
    fmt = format_duration
    low, mid, high = tag.min_interval, tag.interval, tag.max_staleness
    problems: list[Problem] = []
    # A min_interval equal to interval is probably the default, so a clash
    # with max_staleness is then reported on max_staleness below.
    if low > high and low != mid:
        problems.append(
            Problem(("min_interval",), f"{fmt(low)} is longer than max_staleness {fmt(high)}")
        )
    elif low > mid:
        message = f"{fmt(low)} is longer than interval {fmt(mid)}"
        problems.append(Problem(("min_interval",), message))
    if mid > high:
        message = f"{fmt(high)} is shorter than interval {fmt(mid)}"
        problems.append(Problem(("max_staleness",), message))
    return problems


# --- devices -------------------------------------------------------------------


@section
class DeviceSettings(Section):
    """A device without its tags (`DeviceConfig` adds them).

    Separate so the loader can check a device's own keys even when one of
    its tags is broken.
    """

    name: Name
    transport: Transport
    host: Word | None = None
    # After validation: an int for tcp and rtu_over_tcp, a path for rtu. The
    # empty default only stands for "not given" until the rules below run.
    port: Annotated[int | str, Before(_port_value)] = ""
    baudrate: Annotated[StrictInt, Gt(0)] = 9600
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Annotated[Literal[1, 2], Before(reject_bool)] = 1
    bytesize: Annotated[Literal[7, 8], Before(reject_bool)] = 8
    unit: Annotated[StrictInt, Interval(ge=0, le=247)] = 1
    timeout: PositiveDuration = 1.0
    retries: Annotated[StrictInt, Interval(ge=0, le=10)] = 1
    max_registers_per_read: Annotated[StrictInt, Interval(ge=1, le=125)] = 125
    max_bits_per_read: Annotated[StrictInt, Interval(ge=1, le=2000)] = 2000
    max_gap: Annotated[StrictInt, Interval(ge=0, le=124)] = 10
    # A slow device: after its reply the line stays quiet this long before the
    # next request (to any device on the line).
    turnaround: NonNegativeDuration = 0.0
    # false: none of this device's tags goes to the northbound targets.
    publish: StrictBool = True

    @property
    def line_key(self) -> str:
        """What devices sharing one bus have in common: the serial port, or host:port."""
        if self.transport == "rtu":
            return str(self.port)
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"{host}:{self.port}"

    @classmethod
    def prepared(cls, data: Any) -> Any:
        tcp = isinstance(data, dict) and data.get("transport") in ("tcp", "rtu_over_tcp")
        if tcp and "port" not in data:
            data = {**data, "port": 502}
        return data

    def problems(self) -> list[Problem]:
        return device_settings_problems(self)


def device_settings_problems(device: DeviceSettings) -> list[Problem]:
    """Transport-specific rules: what host and port must be, and no reads from broadcast."""
    problems: list[Problem] = []
    port = device.port
    if device.transport in ("rtu", "rtu_over_tcp") and device.unit == 0:
        # On a serial line unit 0 is broadcast: every device obeys, none answers.
        problems.append(
            Problem(("unit",), "unit 0 is broadcast on a serial line and is never answered")
        )
    if device.transport == "rtu":
        if not isinstance(port, str) or not port.strip():
            problems.append(
                Problem(("port",), "rtu needs port: the serial device path, e.g. /dev/ttyUSB0")
            )
        if device.host is not None:
            problems.append(Problem(("host",), "not used by rtu (the port is a serial device)"))
    else:
        if device.host is None:
            problems.append(
                Problem(("host",), f"{device.transport} needs host: the device's address")
            )
        if not isinstance(port, int) or not 1 <= port <= 65535:
            problems.append(
                Problem(
                    ("port",),
                    f"{device.transport} needs a TCP port number in 1..65535, got {port!r}",
                )
            )
    return problems


@section
class DeviceConfig(DeviceSettings):
    """One Modbus device (one unit id on one connection or serial line) and its tags.

    `port` defaults to 502 for tcp and rtu_over_tcp; rtu needs it set to the
    serial device path. Serial settings (baudrate, parity, …) apply to rtu.
    """

    tags: Annotated[list[TagConfig], MinLen(1)]

    def problems(self) -> list[Problem]:
        # The tags' rules only where the device's own settings pass.
        # (Not super(): a slotted dataclass is a new class, which zero-argument super() misses.)
        settings = DeviceSettings.problems(self)
        return settings or device_tag_problems(self, list(enumerate(self.tags)))


def device_tag_problems(
    device: DeviceSettings | None, tags: Sequence[tuple[int, TagConfig]]
) -> list[Problem]:
    """Rules across a device's tags: unique names, no overlaps, each fits one read.

    `tags` pairs each tag with its index in the device's list, so the loader
    can pass just the tags that validated. `device` is None when its own
    settings are invalid; the checks against its limits are then skipped.
    """
    names = [(index, tag.name) for index, tag in tags]
    return duplicate_name_problems("tags", "tag", names) + tag_layout_problems(device, tags)


def duplicate_name_problems(
    list_key: str, what: str, names: Sequence[tuple[int, str]]
) -> list[Problem]:
    """A problem on each `list_key[i].name` that repeats an earlier one."""
    problems: list[Problem] = []
    first_by_name: dict[str, int] = {}
    for index, name in names:
        first = first_by_name.setdefault(name, index)
        if first != index:
            problems.append(
                Problem(
                    (list_key, index, "name"),
                    f"duplicate {what} name {name!r}",
                    other=(list_key, first),
                )
            )
    return problems


def tag_layout_problems(
    device: DeviceSettings | None, tags: Sequence[tuple[int, TagConfig]]
) -> list[Problem]:
    """Where a device's tags sit: no overlaps, and none larger than one read."""
    problems: list[Problem] = []
    if device is not None:
        limit = device.max_registers_per_read
        for index, tag in tags:
            if tag.table not in BIT_TABLES and tag.width > limit:
                field = "length" if tag.type is DataType.STRING else "type"
                problems.append(
                    Problem(
                        ("tags", index, field),
                        f"{tag.width} registers do not fit one read "
                        f"(max_registers_per_read is {limit})",
                    )
                )
    return problems + _overlap_problems(tags)


def _overlap_problems(tags: Sequence[tuple[int, TagConfig]]) -> list[Problem]:
    """Two tags may not read the same register, except as different bits of it.

    A sweep per table over tags sorted by address: each tag is compared with
    the earlier one that reaches furthest, so every overlapping tag is
    reported once, on whichever of the pair comes later in the file.
    """
    problems: list[Problem] = []
    by_table: dict[str, list[tuple[int, TagConfig]]] = {}
    # (table, register) -> the tags holding parts of it, with their bit masks.
    parts: dict[tuple[str, int], list[tuple[int, int]]] = {}
    names = dict(tags)
    for index, tag in tags:
        mask = register_mask(tag)
        if mask is None:
            by_table.setdefault(tag.table, []).append((index, tag))
            continue
        owners = parts.setdefault((tag.table, tag.address), [])
        clash = next((o for o, m in owners if m & mask), None)
        owners.append((index, mask))
        if clash is not None:
            field = "byte" if tag.byte is not None else "bit"
            problems.append(
                Problem(
                    ("tags", index, field),
                    f"{_part(tag)} of {tag.table} register {tag.address} is also read by "
                    f"tag {names[clash].name!r}",
                    other=("tags", clash),
                )
            )
    for table, members in by_table.items():
        members.sort(key=lambda m: (m[1].address, m[0]))
        reach: tuple[int, TagConfig] | None = None
        for index, tag in members:
            if reach is not None and tag.address < reach[1].end:
                other_index = reach[0]
                later, earlier = max(index, other_index), min(index, other_index)
                blamed, partner = names[later], names[earlier]
                problems.append(
                    Problem(
                        ("tags", later, "address"),
                        f"{_span(table, blamed)} overlaps tag {partner.name!r} "
                        f"({_span(table, partner)})",
                        other=("tags", earlier),
                    )
                )
            if reach is None or tag.end > reach[1].end:
                reach = (index, tag)
    return problems


def register_mask(tag: TagConfig) -> int | None:
    """The bits of its register a tag reads, as they sit on the wire; None for a
    tag that reads whole registers (see `TagCodec.wire_mask`)."""
    if tag.table in BIT_TABLES or (tag.bit is None and tag.byte is None):
        return None
    return codec_for(tag).wire_mask


def _part(tag: TagConfig) -> str:
    if tag.byte is not None:
        return f"the {tag.byte} byte"
    if tag.bits is not None and tag.bit is not None:
        return f"bits {tag.bit}..{tag.bit + tag.bits - 1}"
    return f"bit {tag.bit}"


def _span(table: str, tag: TagConfig) -> str:
    last = tag.end - 1
    where = f"{tag.address}" if last == tag.address else f"{tag.address}..{last}"
    return f"{table} {where}"


# --- the whole file ------------------------------------------------------------


@section
class Config(Section):
    """A whole edgeopt config. `source` names the file it came from."""

    daemon: Annotated[DaemonConfig, Before(none_is_empty)] = field(default_factory=DaemonConfig)
    storage: Annotated[StorageConfig, Before(none_is_empty)] = field(default_factory=StorageConfig)
    optimizer: Annotated[OptimizerConfig, Before(none_is_empty)] = field(
        default_factory=OptimizerConfig
    )
    resources: Annotated[ResourcesConfig, Before(none_is_empty)] = field(
        default_factory=ResourcesConfig
    )
    metrics: Annotated[MetricsConfig, Before(none_is_empty)] = field(default_factory=MetricsConfig)
    northbound: Annotated[list[NorthboundTarget], Before(none_is_list)] = field(
        default_factory=list
    )
    devices: Annotated[list[DeviceConfig], MinLen(1)]
    source: str = "<string>"

    def problems(self) -> list[Problem]:
        # As pydantic's chained validators did: the northbound rule only when the devices pass.
        names = [(index, target.name) for index, target in enumerate(self.northbound)]
        return config_device_problems(list(enumerate(self.devices))) or duplicate_name_problems(
            "northbound", "northbound target", names
        )


# Serial settings every device on one RTU line must agree on.
_LINE_SETTINGS = ("baudrate", "parity", "stopbits", "bytesize")


def config_device_problems(devices: Sequence[tuple[int, DeviceSettings]]) -> list[Problem]:
    """Rules across devices: unique names, and one set of settings per bus.

    Devices on one RTU line share its serial settings. Two devices on one
    RTU line (or RTU-over-TCP gateway) cannot share a unit id; on plain TCP
    they may, since gateways often expose one device per port.
    """
    names = [(index, device.name) for index, device in devices]
    return duplicate_name_problems("devices", "device", names) + line_problems(devices)


def line_problems(devices: Sequence[tuple[int, DeviceSettings]]) -> list[Problem]:
    """Devices sharing an RTU line agree on its settings and do not share a unit id."""
    problems: list[Problem] = []
    first_on_line: dict[str, tuple[int, DeviceSettings]] = {}
    unit_owner: dict[tuple[str, int], tuple[int, DeviceSettings]] = {}
    for index, device in devices:
        if device.transport == "tcp":
            continue
        line = device.line_key
        if device.transport == "rtu":
            first_index, first_device = first_on_line.setdefault(line, (index, device))
            for key in _LINE_SETTINGS:
                mine, theirs = getattr(device, key), getattr(first_device, key)
                if mine != theirs:
                    problems.append(
                        Problem(
                            ("devices", index, key),
                            f"{mine!r} differs from device {first_device.name!r} ({theirs!r}) "
                            f"on the same serial line {line}",
                            other=("devices", first_index),
                        )
                    )
        owner_index, owner = unit_owner.setdefault((line, device.unit), (index, device))
        if owner_index != index:
            problems.append(
                Problem(
                    ("devices", index, "unit"),
                    f"unit {device.unit} is already used by device {owner.name!r} on line {line}",
                    other=("devices", owner_index),
                )
            )
    return problems
