"""A config's data validated with pydantic, and pydantic's errors as the file's issues.

Imported only where a config is validated (the loader's forked child,
`check-config`): the daemon itself never loads pydantic.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import ValidationError

from edgeopt.config.issues import RULE_ERROR, ConfigError, ConfigIssue, Loc, Problem, dotted
from edgeopt.config.model import (
    Config,
    DeviceSettings,
    TagConfig,
    duplicate_name_problems,
    line_problems,
    tag_layout_problems,
)

__all__ = ["validated_config"]


def validated_config(
    data: dict[str, Any],
    source: str,
    lines: Mapping[Loc, int],
    unreadable: Iterable[Loc],
    issues: list[ConfigIssue],
) -> Config:
    """The config in `data` (built from YAML, with the line of each key).

    `issues` are the YAML's own problems, found while building `data`.

    Raises:
        ConfigError: with those issues and every problem in the data.
    """
    report = _Reporter(source, data, lines, unreadable)
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
            return config
    raise ConfigError(_sorted_unique([*issues, *report.issues]))


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
        self.issues.append(ConfigIssue(self._source, self.line_of(loc), dotted(loc), message))

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


def _fields_of(node: Any) -> dict[str, Any] | None:
    """A section's fields and their types (Annotated and None stripped); else None."""
    if isinstance(node, type) and dataclasses.is_dataclass(node):
        return _field_types(node)
    return None


@functools.cache
def _field_types(cls: type[Any]) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: _without_none(hints[f.name]) for f in dataclasses.fields(cls)}


def _without_none(annotation: Any) -> Any:
    """`X | None` -> `X`."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return members[0]
    return annotation


def _known_keys(model: type[Any], loc: Loc) -> list[str]:
    """The keys the model at `loc` (below `model`) accepts, for 'did you mean'."""
    current: Any = model
    for part in loc:
        fields = _fields_of(current)
        if fields is not None:
            field = fields.get(str(part))
            if field is None:
                return []
            current = field
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
