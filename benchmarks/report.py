"""BENCHMARKS.md and the plots: every table stamped with the machine, the command and the date.

Each benchmark section saves its figures as JSON under `benchmarks/results/`
(with its own stamp), and BENCHMARKS.md is rebuilt from all of them, so
running one section (`python -m benchmarks serial`) refreshes that section
and keeps the others as they were last measured, each still showing when
and how it was.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = [
    "RESULTS",
    "ROOT",
    "Stamp",
    "load_result",
    "machine_info",
    "md_table",
    "pct",
    "save_result",
    "write_benchmarks_md",
]

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
SECTIONS = (
    "frontier",
    "generated",
    "realsocket",
    "overhead",
    "storage",
    "serial",
    "northbound",
    "peers",
)


def machine_info() -> str:
    """CPU model and cores, memory, OS and the versions that matter."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        import psutil

        mem = f", {psutil.virtual_memory().total / 2**30:.0f} GiB RAM"
    except ImportError:
        pass
    versions = []
    for pkg in ("numpy", "pymodbus"):
        try:
            versions.append(f"{pkg} {metadata.version(pkg)}")
        except metadata.PackageNotFoundError:
            pass
    return (
        f"{cpu}, {os.cpu_count()} cores{mem}; {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}; {', '.join(versions)}"
    )


@dataclass(frozen=True)
class Stamp:
    """Where and how a table was measured."""

    machine: str
    command: str
    date: str

    @classmethod
    def now(cls, argv: Sequence[str] | None = None) -> Stamp:
        args = list(sys.argv[1:] if argv is None else argv)
        command = "python -m benchmarks " + " ".join(shlex.quote(a) for a in args)
        return cls(
            machine_info(), command.strip(), datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        )

    def line(self) -> str:
        return f"<sub>Machine: {self.machine}. Command: `{self.command}`. Date: {self.date}.</sub>"

    def to_dict(self) -> dict[str, str]:
        return {"machine": self.machine, "command": self.command, "date": self.date}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Stamp:
        return cls(str(d["machine"]), str(d["command"]), str(d["date"]))


def save_result(section: str, data: dict[str, Any], stamp: Stamp) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{section}.json"
    path.write_text(
        json.dumps({"stamp": stamp.to_dict(), **data}, indent=1, default=_json_default) + "\n",
        encoding="utf-8",
    )
    return path


def load_result(section: str) -> dict[str, Any] | None:
    path = RESULTS / f"{section}.json"
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _json_default(o: object) -> object:
    if hasattr(o, "item"):  # numpy scalars
        return o.item()
    if isinstance(o, tuple | set):
        return list(o)
    raise TypeError(f"cannot serialise {type(o).__name__}")


def md_table(headers: Sequence[str], rows: Sequence[Sequence[object]], align: str = "") -> str:
    """A GitHub markdown table; align: one of l/r/c per column (default: l then r)."""
    if not align:
        align = "l" + "r" * (len(headers) - 1)
    marks = {"l": ":--", "r": "--:", "c": ":-:"}
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join(marks[a] for a in align) + "|"]
    for row in rows:
        out.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(out)


def pct(x: float, digits: int = 2) -> str:
    return f"{100 * x:.{digits}f} %"


_INTRO = """# edgeopt benchmarks

Measured by the benchmark suite in [`benchmarks/`](benchmarks/); the metrics
and goals are defined in the project's BENCHMARK.md. Run everything with

```sh
make bench                      # = .venv/bin/python -m benchmarks all
.venv/bin/python -m benchmarks all --quick      # a shorter run (minutes)
.venv/bin/python -m benchmarks frontier         # one section: frontier | generated |
                                                #   realsocket | overhead | serial | storage |
                                                #   northbound | peers
```

Each section below was produced by the command, on the machine and at the
date shown under its tables. Figures are from one run, not averages; the
ratios compare two things measured in the same run.
"""


def write_benchmarks_md(renderers: dict[str, Callable[[dict[str, Any]], str]]) -> Path:
    """Rebuild BENCHMARKS.md from every section's saved results."""
    parts = [_INTRO]
    head = renderers.get("headline")
    if head is not None:
        parts.append(head({}))
    for section in SECTIONS:
        data = load_result(section)
        render = renderers.get(section)
        if render is None:
            continue
        if data is None:
            parts.append(
                f"## {section}\n\nNot measured yet: run `python -m benchmarks {section}`.\n"
            )
        else:
            parts.append(render(data))
    path = ROOT / "BENCHMARKS.md"
    path.write_text("\n".join(p.rstrip() + "\n" for p in parts), encoding="utf-8")
    return path
