"""`python -m benchmarks [SECTION] [--quick]`: all sections, or one (see SECTION_ORDER).

Runs the chosen sections with progress on the console, prints each one's
tables, saves its figures under `benchmarks/results/` and rebuilds
BENCHMARKS.md (with the plots it links).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence

from rich.console import Console
from rich.markdown import Markdown

from .report import SECTIONS, Stamp, save_result, write_benchmarks_md
from .sections import RENDERERS, RUNNERS, UI, Options

# The order BENCHMARKS.md shows them in, which is the order `all` runs them.
SECTION_ORDER = SECTIONS


class RichUI(UI):
    def __init__(self, console: Console) -> None:
        self.console = console
        self._status = console.status("starting")
        self._status.start()

    def status(self, text: str) -> None:
        self._status.update(text)

    def log(self, text: str) -> None:
        self.console.log(text)

    def stop(self) -> None:
        self._status.stop()


def _show(console: Console, markdown: str) -> None:
    """Rendered on a wide terminal; the markdown itself otherwise (logs, narrow windows)."""
    if console.is_terminal and console.width >= 140:
        console.print(Markdown(markdown))
    else:
        console.print(markdown, markup=False, highlight=False, soft_wrap=True)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    ap.add_argument("section", nargs="?", default="all", choices=("all", *SECTION_ORDER))
    ap.add_argument("--quick", action="store_true", help="shorter runs (a few minutes in all)")
    ap.add_argument(
        "--realsocket-seconds",
        type=float,
        default=None,
        help="wall seconds of the real-socket run (default 120, --quick 30)",
    )
    ap.add_argument("--workers", type=int, default=2, help="processes for the replays")
    ap.add_argument(
        "--no-optimizer",
        action="store_true",
        help="replay edgeopt without its optimizer even if edgeopt.optimizer has one",
    )
    args = ap.parse_args(argv)
    # The daemon's own warnings (e.g. each ILLEGAL ADDRESS split) would flood
    # the console over a simulated day.
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    opts = Options(
        quick=args.quick,
        realsocket_seconds=args.realsocket_seconds,
        workers=args.workers,
        with_optimizer=False if args.no_optimizer else None,
    )
    stamp = Stamp.now(argv)
    console = Console()
    sections = SECTION_ORDER if args.section == "all" else (args.section,)
    ui = RichUI(console)
    started = time.perf_counter()
    try:
        for name in sections:
            t = time.perf_counter()
            ui.status(f"{name}: starting")
            data = RUNNERS[name](opts, ui)
            save_result(name, data, stamp)
            ui.log(f"{name} done in {time.perf_counter() - t:.0f} s")
            ui.stop()
            _show(console, RENDERERS[name]({"stamp": stamp.to_dict(), **data}))
            ui._status.start()
    finally:
        ui.stop()
    path = write_benchmarks_md(RENDERERS)
    _show(console, RENDERERS["headline"]({}))
    console.log(f"wrote {path} in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
