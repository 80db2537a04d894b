"""The config's building blocks: the `Section` base, field types, and their checks.

Sections are frozen, slotted stdlib dataclasses. Their field types carry
their rules as `Annotated` metadata that pydantic reads (annotated_types
bounds, and the `Before`/`After`/`Strict` markers here), so the daemon,
which only receives finished configs, never imports pydantic: only the
process that validates does (the loader's forked child, `check-config`).
"""

from __future__ import annotations

import functools
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Self, dataclass_transform

from annotated_types import Ge, Gt, Interval, Le

from edgeopt.config.durations import parse_duration, parse_size
from edgeopt.config.issues import Problem, raise_problems

if TYPE_CHECKING:
    from pydantic import GetCoreSchemaHandler, TypeAdapter
    from pydantic_core import CoreSchema

__all__ = [
    "Before",
    "Fraction",
    "FsPath",
    "Name",
    "NonNegativeDuration",
    "Number",
    "Percent",
    "PositiveDuration",
    "PositiveSize",
    "Section",
    "Strict",
    "StrictBool",
    "StrictFloat",
    "StrictInt",
    "Word",
    "section",
]


# --- markers pydantic understands --------------------------------------------------


@dataclass(frozen=True, slots=True)
class _FieldCheck:
    """`Annotated` marker: `check` runs on the field's value (pydantic's Before/AfterValidator)."""

    check: Callable[[Any], Any]
    # Whether `check` runs before the type's own validation (else after it).
    first: ClassVar[bool]

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        from pydantic_core import core_schema

        if self.first:
            return core_schema.no_info_before_validator_function(self.check, handler(source))
        return core_schema.no_info_after_validator_function(self.check, handler(source))


class Before(_FieldCheck):
    """`check` sees the raw value first, and returns what the type then validates."""

    __slots__ = ()
    first = True


class After(_FieldCheck):
    """`check` sees the value once its type is validated."""

    __slots__ = ()
    first = False


@dataclass(frozen=True, slots=True)
class _StrictMarker:
    """`Annotated` marker: no coercion from other types (a float still takes an int)."""

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        schema = handler(source)
        typing.cast(dict[str, Any], schema)["strict"] = True  # int, float and bool schemas
        return schema


Strict = _StrictMarker()
StrictInt = Annotated[int, Strict]
StrictFloat = Annotated[float, Strict]
StrictBool = Annotated[bool, Strict]


# --- sections ------------------------------------------------------------------

_T = typing.TypeVar("_T")


@dataclass_transform(frozen_default=True, kw_only_default=True)
def section(cls: type[_T]) -> type[_T]:
    """Every section's dataclass: frozen (a reload diffs by ==), slotted, keyword-only."""
    return dataclass(frozen=True, slots=True, kw_only=True)(cls)


class Section:
    """Base of every config section: a frozen, slotted dataclass that pydantic validates.

    Unknown keys are errors, and NaN or infinity never passes. A subclass
    may fill keys derived from others before validation (`prepared`) and
    check rules that span fields after it (`problems`). Constructing a
    section in code does not validate; `model_validate` does.
    """

    __slots__ = ()
    # pydantic reads this off a stdlib dataclass, as a model's `model_config`.
    __pydantic_config__: ClassVar[dict[str, Any]] = {"extra": "forbid", "allow_inf_nan": False}

    @classmethod
    def prepared(cls, data: Any) -> Any:
        """The raw input, with the keys its other keys imply filled in."""
        return data

    def problems(self) -> list[Problem]:
        """The rules across this section's fields that it breaks (its fields are valid)."""
        return []

    @classmethod
    def model_validate(cls, data: Any) -> Self:
        """A valid section from a mapping, as a pydantic model's `model_validate`.

        Raises:
            pydantic.ValidationError: with every problem found.
        """
        adapter = _ADAPTERS.get(cls)
        if adapter is None:
            from pydantic import TypeAdapter

            adapter = _ADAPTERS[cls] = TypeAdapter(cls)
        valid: Self = adapter.validate_python(data)
        return valid

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        from pydantic_core import core_schema

        # Like a model's validators: `prepared` before the fields, and the
        # rules only once every field is valid.
        checked = core_schema.no_info_after_validator_function(_checked, handler(source))
        return core_schema.no_info_before_validator_function(cls.prepared, checked)


# One pydantic TypeAdapter per section validated as a whole (built on first use).
_ADAPTERS: dict[type[Section], TypeAdapter[Any]] = {}


def _checked(value: Section) -> Section:
    raise_problems(value.problems())
    return value


# --- field checks ------------------------------------------------------------------
# Checks raise ValueError with the whole message; pydantic prefixes
# "Value error, ", which the loader strips.


def reject_bool(value: object) -> object:
    # `stopbits: true` would otherwise pass as 1: bool is an int subclass.
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    return value


def _duration(value: object, *, allow_zero: bool) -> float:
    if type(value) is str:
        # A plant repeats a few durations ("1s") across thousands of tags.
        return _text_duration(value, allow_zero)
    return _checked_duration(value, allow_zero)


@functools.lru_cache(maxsize=1024)
def _text_duration(value: str, allow_zero: bool) -> float:
    return _checked_duration(value, allow_zero)


def _checked_duration(value: object, allow_zero: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"expected a duration like 250ms, 10s or 5m, got {value!r}")
    seconds = parse_duration(value)
    if seconds < 0 or (seconds == 0 and not allow_zero):
        kind = "non-negative" if allow_zero else "positive"
        raise ValueError(f"must be a {kind} duration, got {value!r}")
    return seconds


def positive_duration(value: object) -> float:
    return _duration(value, allow_zero=False)


def _non_negative_duration(value: object) -> float:
    return _duration(value, allow_zero=True)


def _positive_size(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"expected a size like 512MB, 2GB or 10KiB, got {value!r}")
    size = parse_size(value)
    if size <= 0:
        raise ValueError(f"must be a positive size, got {value!r}")
    return size


_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")


def _name(value: str) -> str:
    if not _NAME_RE.fullmatch(value):
        raise ValueError(f"{value!r} may contain only letters, digits, '_', '.' and '-'")
    return value


def _word(value: str) -> str:
    # Host names, groups: a stray space is always a typo.
    if not value or any(c.isspace() for c in value):
        raise ValueError(f"must be a non-empty word without spaces, got {value!r}")
    return value


def _path(value: object) -> Path:
    if isinstance(value, Path):
        return value
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a file system path, got {value!r}")
    return Path(value)


def none_is_empty(value: object) -> object:
    # A section whose keys are all commented out (`storage:`) is YAML null.
    return {} if value is None else value


def none_is_list(value: object) -> object:
    return [] if value is None else value


PositiveDuration = Annotated[float, Before(positive_duration)]
NonNegativeDuration = Annotated[float, Before(_non_negative_duration)]
PositiveSize = Annotated[int, Before(_positive_size)]
Name = Annotated[str, After(_name)]
Word = Annotated[str, After(_word)]
FsPath = Annotated[Path, Before(_path)]
Percent = Annotated[float, Strict, Gt(0), Le(100)]
Fraction = Annotated[float, Strict, Interval(ge=0, le=1)]
# StrictFloat still takes ints (`scale: 2`), but never bools or strings.
Number = StrictFloat
NonNegative = Ge(0)
