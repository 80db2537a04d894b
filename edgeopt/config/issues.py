"""What a config check reports: a `Problem` found by a rule, a `ConfigIssue` placed in a file.

Free of pydantic, so the daemon can hold configs and report issues without it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

__all__ = ["RULE_ERROR", "ConfigError", "ConfigIssue", "Loc", "Problem", "dotted", "raise_problems"]

Loc = tuple[str | int, ...]

# pydantic error type of a failed cross-field rule. Its ctx["problems"] holds
# the individual `Problem`s; the loader expands them into one issue each.
RULE_ERROR = "edgeopt_rule"


class Problem(NamedTuple):
    """One failed rule: where (relative to the section checked) and why."""

    loc: Loc
    message: str
    # Where the other half of a conflict is (a duplicate's first definition),
    # so the loader can add its line.
    other: Loc | None = None


def dotted(loc: Iterable[str | int]) -> str:
    """`('devices', 0, 'name')` -> `devices[0].name`."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def raise_problems(problems: Sequence[Problem]) -> None:
    """Raises all `problems` as one pydantic error (a validator can raise only one).

    Called only while pydantic validates, so pydantic is loaded already.
    """
    if not problems:
        return
    from pydantic_core import PydanticCustomError

    summary = "; ".join(
        f"{dotted(p.loc) or '<model>'}: {p.message}"
        + (f" (see {dotted(p.other)})" if p.other is not None else "")
        for p in problems
    )
    raise PydanticCustomError(RULE_ERROR, "{summary}", {"summary": summary, "problems": problems})


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
