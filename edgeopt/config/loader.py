"""Load a YAML config file into a validated `Config`, or report every problem in it.

Each problem becomes a `ConfigIssue` that names the file, the line and the
field path (`edgeopt.yaml:42: devices[0].tags[3].min_interval: ...`). To know
the lines, the YAML is composed into nodes and turned into plain data here,
recording the line of every mapping key and sequence item on the way.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import gc
import math
import pickle
import sys
import typing
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from edgeopt.config.model import (
    RULE_ERROR,
    Config,
    DeviceSettings,
    Problem,
    TagConfig,
    duplicate_name_problems,
    line_problems,
    tag_layout_problems,
)
from edgeopt.forked import ChildLost, ForkedWork, WorkFailed

__all__ = [
    "ConfigError",
    "ConfigIssue",
    "ConfigLoad",
    "check_config_main",
    "load_config",
    "parse_config",
]

Loc = tuple[str | int, ...]

# libyaml composes about ten times faster than the pure-Python parser. The two
# classes share no base in the type stubs, hence Any.
_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BaseLoader):
    """The safe loader, resolving each distinct plain scalar's tag once.

    A plant's config repeats a few hundred distinct scalars ("1s", "input",
    "normal", ...) across 100k+ places, and PyYAML resolves each one with its
    Python regexes even under libyaml: at 10k tags that was a third of the
    time to load. The safe loader has no path resolvers, so a scalar's tag
    depends on its text and style alone.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        # An instance attribute over the method: libyaml's composer calls
        # `self.resolve` for every node, and the C-level cache answers it
        # without a Python frame (the cache goes with the loader).
        self.resolve = functools.lru_cache(maxsize=None)(super().resolve)


_MERGE_TAG = "tag:yaml.org,2002:merge"
# A cap on nodes built, aliases expanded each time: a "billion laughs" file
# must fail with an error, not eat the gateway's memory.
_MAX_NODES = 2_000_000


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a config file.

    Attributes:
        file: the file (or the `source` given to `parse_config`).
        line: 1-based line of the offending key, or None when unknown.
        field: path of the field, like `devices[0].tags[3].address`; empty
            when the problem is the file itself (a YAML syntax error).
        message: what is wrong, fit to show as it is.
    """

    file: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return ": ".join(part for part in (where, self.field, self.message) if part)


class ConfigError(ValueError):
    """Raised when a config cannot be read or is invalid.

    Attributes:
        issues: every problem found, in file order; never empty.
    """

    def __init__(self, issues: Sequence[ConfigIssue]) -> None:
        self.issues: list[ConfigIssue] = list(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues))


def load_config(path: str | Path, *, isolated: bool = False) -> Config:
    """Read and validate a config file.

    With `isolated`, as `ConfigLoad(path).result()`: parsed in a forked child.

    Raises:
        ConfigError: the file cannot be read, is not valid YAML, or breaks the schema.
    """
    if isolated:
        return ConfigLoad(path).result()
    return parse_config(_read(path), str(path))


def parse_config(text: str, source: str = "<string>") -> Config:
    """Validate a config given as YAML text; `source` names it in errors and in `Config.source`.

    Raises:
        ConfigError: the text is not valid YAML or breaks the schema.
    """
    with _gc_paused():
        data = _validated(text, source)
    gc.collect()  # the parse's temporaries hold cycles (nodes, the loader)
    return _unpickled(data)


class ConfigLoad:
    """A config file parsed and validated in a forked child while the caller goes on.

    The daemon starts one before it imports the rest of itself, so the two
    overlap on a gateway's cores, and only the finished config comes back:
    none of the parse's temporaries ever occupy (and fragment) the daemon's
    own heap (at 10k tags, 13 MB of RSS for the config instead of 34 MB).
    Where no child can be forked, the file is parsed here, at once.

    Raises:
        ConfigError: (at once) the file cannot be read.
    """

    def __init__(self, path: str | Path) -> None:
        self.source = str(path)
        self._text = _read(path)
        text, source = self._text, self.source

        def work() -> Iterator[tuple[bool, Any]]:
            try:
                with _gc_paused():
                    data = _validated(text, source)
            except ConfigError as exc:
                yield False, exc.issues
            else:
                yield True, data

        self._child: ForkedWork[tuple[bool, Any]] | None = ForkedWork(work)

    def result(self) -> Config:
        """The config; waits for the child.

        Raises:
            ConfigError: the YAML is not valid or breaks the schema.
        """
        child, self._child = self._child, None
        # The text is not kept: the caller may hold this object as long as it runs.
        text, self._text = self._text, ""
        if child is None:
            raise RuntimeError("ConfigLoad.result() was called twice")
        try:
            ((ok, payload),) = child.items_now()
        except (ChildLost, WorkFailed):
            # The child failed unexpectedly: parse here, where the error shows.
            return parse_config(text, self.source)
        if not ok:
            raise ConfigError(payload)
        return _unpickled(typing.cast(bytes, payload))


def _read(path: str | Path) -> str:
    try:
        # utf-8-sig: editors on Windows like to start files with a BOM.
        return Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(
            [ConfigIssue(str(path), None, "", f"cannot read the file: {reason}")]
        ) from None


def _unpickled(data: bytes) -> Config:
    # The config comes out of a pickle round trip (~0.1 s at 10k tags), built
    # anew once every temporary of the parse is gone. Built among the parse's
    # far larger temporaries (nodes, marks, the data with its lines), its
    # objects would pin the allocator's arenas they share with them: at 10k
    # tags about 80 MB that the daemon would keep for its whole life.
    with _gc_paused():
        config = typing.cast(Config, pickle.loads(data))
    _share_numbers(config)
    return config


def _share_numbers(config: Config) -> None:
    """One object per distinct number in the tags' fields.

    A pickle carries each float and each int beyond the small ones as a
    value of its own: at 10k tags, 60k float objects (1.4 MB) for a handful
    of intervals, deadbands and scales.
    """
    shared: dict[tuple[type, float, float], float] = {}
    for device in config.devices:
        for tag in device.tags:
            for name in TagConfig.__slots__:
                value = getattr(tag, name)
                kind = type(value)
                if kind is float or (kind is int and not -5 <= value <= 256):
                    # The sign tells -0.0 from 0.0, which are equal as keys.
                    key = (kind, value, math.copysign(1.0, value))
                    one = shared.setdefault(key, value)
                    if one is not value:
                        object.__setattr__(tag, name, one)  # frozen: set before anyone reads it


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic collections while a parse builds 100k+ objects that all live on.

    Each automatic collection would walk every object built so far: at 10k
    tags, loading took 1.6-1.8 s with them and 0.7-1.0 s without.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _validated(text: str, source: str) -> bytes:
    """The valid config of `parse_config`, pickled; or ConfigError."""
    built = _build(text, source)
    issues = list(built.issues)
    data = built.data
    if data is None:
        if not issues:
            issues.append(ConfigIssue(source, None, "", "the config is empty"))
        raise ConfigError(issues)
    if not isinstance(data, dict):
        message = "the top level must be a mapping of sections (daemon:, devices:, ...)"
        raise ConfigError([*issues, ConfigIssue(source, 1, "", message)])

    report = _Reporter(source, data, built.lines, built.unreadable)
    if "source" in data:
        # `source` is a field of Config, but is set by the loader, not the file.
        report.add(("source",), "unknown key 'source'")
        data = {k: v for k, v in data.items() if k != "source"}
    try:
        config = Config.model_validate({**data, "source": source})
    except ValidationError as exc:
        report.validation_error(exc, Config)
        _salvage(data, report)
    else:
        # Valid, unless the YAML itself had a problem (a duplicate key, ...).
        if not issues and not report.issues:
            return pickle.dumps(config, pickle.HIGHEST_PROTOCOL)
    raise ConfigError(_sorted_unique([*issues, *report.issues]))


def check_config_main(path: str | Path) -> int:
    """`edgeopt check-config FILE`: print `ok` and return 0, or print the issues and return 2."""
    try:
        load_config(path)
    except ConfigError as exc:
        for issue in exc.issues:
            print(issue, file=sys.stderr)
        return 2
    print("ok")
    return 0


# --- YAML -> data with lines -------------------------------------------------


@dataclass
class _Built:
    data: Any
    # Line of each mapping key and sequence item, by path.
    lines: dict[Loc, int]
    issues: list[ConfigIssue]
    # Paths whose value could not be read (it became None): schema errors
    # there would only repeat the YAML issue.
    unreadable: set[Loc] = dataclass_field(default_factory=set)


class _TooLarge(Exception):
    pass


def _build(text: str, source: str) -> _Built:
    """Parse `text` and build plain data from it, noting lines and YAML-level issues."""
    loader = _Loader(text)
    try:
        try:
            node = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            return _Built(None, {}, [_yaml_issue(source, exc)])
        except yaml.YAMLError as exc:  # e.g. a ReaderError for a control character
            return _Built(None, {}, [ConfigIssue(source, None, "", f"invalid YAML: {exc}")])
        except RecursionError:
            return _Built(None, {}, [ConfigIssue(source, None, "", "the YAML is nested too deep")])
        if node is None:
            return _Built(None, {}, [])
        builder = _Builder(loader, source)
        try:
            data = builder.build(node, ())
        except _TooLarge:
            message = f"the YAML expands to more than {_MAX_NODES} values (aliases?)"
            return _Built(None, {}, [ConfigIssue(source, None, "", message)])
        except RecursionError:
            return _Built(None, {}, [ConfigIssue(source, None, "", "the YAML is nested too deep")])
        return _Built(data, builder.lines, builder.issues, builder.unreadable)
    finally:
        loader.dispose()


def _yaml_issue(source: str, exc: yaml.MarkedYAMLError) -> ConfigIssue:
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark is not None else None
    message = f"invalid YAML: {exc.problem or exc.context or 'syntax error'}"
    if exc.problem and exc.context:
        context = exc.context
        if exc.context_mark is not None and exc.context_mark.line + 1 != line:
            context += f" at line {exc.context_mark.line + 1}"
        message += f" ({context})"
    return ConfigIssue(source, line, "", message)


class _Builder:
    """Turns composed YAML nodes into dicts, lists and scalars.

    Unlike PyYAML's own constructor it records where each key and item is,
    reports duplicate keys, and insists that keys are strings.
    """

    def __init__(self, loader: Any, source: str) -> None:
        self._loader = loader
        self._source = source
        self._active: set[int] = set()  # ids of the collections being built, to catch cycles
        self._count = 0
        # Scalars already built, by (tag, text): all are immutable, so equal
        # ones can share one object (fewer objects to keep, and faster).
        self._scalars: dict[tuple[str, str], Any] = {}
        self.lines: dict[Loc, int] = {}
        self.issues: list[ConfigIssue] = []
        self.unreadable: set[Loc] = set()

    def _issue(self, loc: Loc, node: Node, message: str) -> None:
        self.issues.append(ConfigIssue(self._source, _line(node), _dotted(loc), message))

    def build(self, node: Node, loc: Loc) -> Any:
        self._count += 1
        if self._count > _MAX_NODES:
            raise _TooLarge
        if isinstance(node, ScalarNode):
            try:
                return self._scalar(node)
            except yaml.YAMLError as exc:
                problem = getattr(exc, "problem", None) or str(exc)
                self._issue(loc, node, f"cannot read this value: {problem}")
                self.unreadable.add(loc)
                return None
        if id(node) in self._active:
            self._issue(loc, node, "an alias refers to itself")
            self.unreadable.add(loc)
            return None
        self._active.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                items = []
                for index, item in enumerate(node.value):
                    self.lines[(*loc, index)] = _line(item)
                    items.append(self.build(item, (*loc, index)))
                return items
            if isinstance(node, MappingNode):
                return self._mapping(node, loc)
            self._issue(loc, node, "unsupported YAML node")  # pragma: no cover
            return None
        finally:
            self._active.discard(id(node))

    def _mapping(self, node: MappingNode, loc: Loc) -> dict[str, Any]:
        result: dict[str, Any] = {}
        # Merge keys (`<<: *defaults`) first, so keys written here override them.
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
                # Earlier sources win over later ones, as YAML specifies.
                for source in reversed(sources):
                    if isinstance(source, MappingNode):
                        result.update(self.build(source, loc))
                    else:
                        self._issue(loc, source, "'<<' needs a mapping or a list of mappings")
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = self._key(key_node, loc)
            if key is None:
                continue
            line = _line(key_node)
            if key in first_line:
                self._issue(
                    (*loc, key),
                    key_node,
                    f"duplicate key {key!r} (first at line {first_line[key]})",
                )
            else:
                first_line[key] = line
            # Like PyYAML, the last duplicate wins.
            self.lines[(*loc, key)] = line
            result[key] = self.build(value_node, (*loc, key))
        return result

    def _scalar(self, node: ScalarNode) -> Any:
        key = (node.tag, node.value)
        try:
            return self._scalars[key]
        except KeyError:
            value = self._scalars[key] = self._loader.construct_object(node, deep=True)
            return value

    def _key(self, node: Node, loc: Loc) -> str | None:
        if isinstance(node, ScalarNode):
            try:
                key = self._scalar(node)
            except yaml.YAMLError:
                key = None
            if isinstance(key, str):
                return key
            self._issue(loc, node, f"key {node.value!r} must be a string; quote it")
            return None
        self._issue(loc, node, "a key must be a plain string, not a list or mapping")
        return None


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


def _dotted(loc: Iterable[str | int]) -> str:
    """`('devices', 0, 'name')` -> `devices[0].name`."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


# --- pydantic errors -> issues -------------------------------------------------


class _Reporter:
    """Collects issues for one file, mapping field paths to lines."""

    def __init__(
        self,
        source: str,
        data: Mapping[str, Any],
        lines: Mapping[Loc, int],
        unreadable: Iterable[Loc] = (),
    ) -> None:
        self._source = source
        self._data = data
        self._lines = lines
        self._unreadable = set(unreadable)
        self.issues: list[ConfigIssue] = []

    def line_of(self, loc: Loc) -> int | None:
        """The line of `loc`, or of its nearest ancestor that is in the file."""
        for end in range(len(loc), 0, -1):
            line = self._lines.get(loc[:end])
            if line is not None:
                return line
        return None

    def add(self, loc: Loc, message: str, other: Loc | None = None) -> None:
        if any(loc[:end] in self._unreadable for end in range(len(loc) + 1)):
            return
        if other is not None:
            other_line = self.line_of(other)
            if other_line is not None:
                message += f" (see line {other_line})"
        self.issues.append(ConfigIssue(self._source, self.line_of(loc), _dotted(loc), message))

    def problems(self, problems: Iterable[Problem], prefix: Loc = ()) -> None:
        for problem in problems:
            other = None if problem.other is None else (*prefix, *problem.other)
            self.add((*prefix, *problem.loc), problem.message, other)

    def validation_error(self, exc: ValidationError, model: type[Any], prefix: Loc = ()) -> None:
        """Add an issue per pydantic error; `model` was validated at `prefix`."""
        for error in exc.errors():
            kind = error["type"]
            loc = self._in_data((*prefix, *error["loc"]), keep_last=kind == "missing")
            if kind == RULE_ERROR:
                self.problems(error["ctx"]["problems"], loc)
            else:
                self.add(loc, _message(error, model, loc[len(prefix) :]))

    def _in_data(self, loc: Loc, *, keep_last: bool) -> Loc:
        """`loc` without the parts that are not keys in the data.

        pydantic adds the member of a union or the name of a validator to a
        location (`port.int`, `strategies.foo.[key]`); users never wrote those.
        """
        path: list[str | int] = []
        node: Any = self._data
        for depth, part in enumerate(loc):
            in_dict = isinstance(node, dict) and part in node
            in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
            if in_dict or in_list:
                node = node[part]
            elif not (keep_last and depth == len(loc) - 1):
                continue
            path.append(part)
        return tuple(path)


def _message(error: Any, model: type[Any], loc: Loc) -> str:
    """A user-facing message for one pydantic error."""
    kind = error["type"]
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        key = loc[-1] if loc else "?"
        message = f"unknown key {key!r}"
        known = _known_keys(model, loc[:-1])
        close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
        if close:
            message += f" (did you mean {close[0]!r}?)"
        return message
    if kind == "missing":
        return "required key is missing"
    text: str = error["msg"]
    if kind in ("model_type", "model_attributes_type", "dataclass_type", "dict_type"):
        return f"must be a mapping of keys, got {_shown(error.get('input'))}"
    if kind == "too_short":
        least = error.get("ctx", {}).get("min_length", 1)
        return f"must have at least {least} item{'s' if least != 1 else ''}"
    if kind in ("value_error", "assertion_error"):
        return text.split(", ", 1)[1] if ", " in text else text
    for prefix in ("Input should be ", "Value should be "):
        if text.startswith(prefix):
            text = "must be " + text[len(prefix) :]
    return f"{text}, got {_shown(error.get('input'))}"


def _shown(value: object) -> str:
    """A short description of a bad value, for `..., got X`."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    shown = repr(value)
    return shown if len(shown) <= 40 else shown[:37] + "..."


def _fields_of(node: Any) -> dict[str, FieldInfo] | None:
    """A model's or a pydantic dataclass's fields (TagConfig is the dataclass); else None."""
    if isinstance(node, type) and issubclass(node, BaseModel):
        return node.model_fields
    fields: dict[str, FieldInfo] | None = getattr(node, "__pydantic_fields__", None)
    return fields


def _known_keys(model: type[Any], loc: Loc) -> list[str]:
    """The keys the model at `loc` (below `model`) accepts, for 'did you mean'."""
    current: Any = model
    for part in loc:
        fields = _fields_of(current)
        if fields is not None:
            field = fields.get(str(part))
            if field is None:
                return []
            current = field.annotation
        elif typing.get_origin(current) is list and isinstance(part, int):
            current = typing.get_args(current)[0]
        elif typing.get_origin(current) is dict:
            current = typing.get_args(current)[1]
        else:
            return []
    fields = _fields_of(current)
    # `source` is set by the loader, so never suggest it.
    return [] if fields is None else [name for name in fields if name != "source"]


def _salvage(data: Mapping[str, Any], report: _Reporter) -> None:
    """Find the errors a failed validation hid.

    pydantic skips a model's cross-field rules when any of its fields failed,
    so one bad tag would hide every duplicate name and overlap on its device.
    So validate each device's settings and each tag on its own, and run the
    cross-field rules over what passed. A tag that failed still takes part
    in the overlap check if its placement keys alone are valid.
    """
    devices = data.get("devices")
    if not isinstance(devices, list):
        return
    good_devices: list[tuple[int, DeviceSettings]] = []
    device_names: list[tuple[int, str]] = []
    for d_index, raw_device in enumerate(devices):
        if not isinstance(raw_device, dict):
            continue
        prefix: Loc = ("devices", d_index)
        if isinstance(raw_device.get("name"), str):
            device_names.append((d_index, raw_device["name"]))
        settings: DeviceSettings | None = None
        try:
            settings = DeviceSettings.model_validate(
                {k: v for k, v in raw_device.items() if k != "tags"}
            )
            good_devices.append((d_index, settings))
        except ValidationError as exc:
            report.validation_error(exc, DeviceSettings, prefix)
        raw_tags = raw_device.get("tags")
        if isinstance(raw_tags, list):
            _salvage_tags(raw_tags, settings, prefix, report)
    report.problems(duplicate_name_problems("devices", "device", device_names))
    report.problems(line_problems(good_devices))


# The keys that say where a tag sits; enough to check it for overlaps.
_PLACEMENT_KEYS = ("name", "table", "address", "type", "bit", "length")


def _salvage_tags(
    raw_tags: list[Any], settings: DeviceSettings | None, prefix: Loc, report: _Reporter
) -> None:
    placed: list[tuple[int, TagConfig]] = []
    names: list[tuple[int, str]] = []
    for t_index, raw_tag in enumerate(raw_tags):
        if isinstance(raw_tag, dict) and isinstance(raw_tag.get("name"), str):
            names.append((t_index, raw_tag["name"]))
        try:
            placed.append((t_index, TagConfig.model_validate(raw_tag)))
            continue
        except ValidationError as exc:
            report.validation_error(exc, TagConfig, (*prefix, "tags", t_index))
        if isinstance(raw_tag, dict):
            placement = {k: raw_tag[k] for k in _PLACEMENT_KEYS if k in raw_tag}
            try:
                placed.append((t_index, TagConfig.model_validate(placement)))
            except ValidationError:
                pass  # its errors are reported above
    report.problems(duplicate_name_problems("tags", "tag", names), prefix)
    report.problems(tag_layout_problems(settings, placed), prefix)


def _sorted_unique(issues: Iterable[ConfigIssue]) -> list[ConfigIssue]:
    """Drop repeats (the salvage pass finds some errors again), then sort by line."""
    unique = list(dict.fromkeys(issues))
    return sorted(unique, key=lambda i: (i.line is None, i.line or 0))
