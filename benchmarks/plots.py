"""The frontier plot: bus load vs fidelity, and reads/s vs SLA, with edgeopt's points on it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never a display
import matplotlib.pyplot as plt

__all__ = ["frontier_plot"]


def frontier_plot(plant: dict[str, Any], path: Path) -> Path:
    """Two panels for one plant; `plant` is one entry of frontier.json's "plants"."""
    scores = plant["scores"]
    fixed = [s for s in scores if s["name"].startswith("fixed_coalesced")]
    fixed.sort(key=lambda s: s["period"])
    others = [s for s in scores if not s["name"].startswith("fixed_coalesced")]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    panels = (
        (ax1, "out_of_deadband", "bus_load_9600", "out_of_deadband (%)", "bus_load_9600"),
        (ax2, "sla", "reads_per_s", "SLA (%)", "reads/s"),
    )
    for ax, xkey, ykey, xlabel, ylabel in panels:
        xs = [100 * s[xkey] for s in fixed]
        ys = [s[ykey] for s in fixed]
        ax.plot(xs, ys, "-o", color="0.45", label="fixed_coalesced (0.5–5 s)")
        for s, x, y in zip(fixed, xs, ys, strict=True):
            ax.annotate(f"{s['period']:g}s", (x, y), textcoords="offset points", xytext=(4, 4))
        for s in others:
            style = _style(s["name"])
            ax.plot(100 * s[xkey], s[ykey], linestyle="none", label=s["name"], **style)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
    slas = [100 * s["sla"] for s in scores]
    ax2.set_xlim(min(slas) - 0.5, 100.1)  # nothing lies beyond 100 %
    ax1.set_title("bus load vs fidelity (lower-left is better)")
    ax2.set_title("reads/s vs SLA (lower-right is better)")
    handles, labels = ax1.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle(
        f"{plant['plant_name']}: {plant['n_tags']} tags, {plant['n_devices']} devices, "
        f"{_span(plant['duration'])} simulated (scored on the last 2/3)"
    )
    fig.tight_layout(rect=(0, 0.1, 1, 0.95))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _span(seconds: float) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:g} d"
    if seconds >= 3600:
        return f"{seconds / 3600:g} h"
    return f"{seconds / 60:g} min"


def _style(name: str) -> dict[str, Any]:
    if name == "fixed_naive":
        return {"marker": "s", "color": "tab:orange", "markersize": 8}
    if name == "fixed_by_interval":
        return {"marker": "o", "color": "0.2", "markersize": 9, "fillstyle": "none"}
    if name == "oracle":
        return {"marker": "*", "color": "tab:green", "markersize": 12}
    if "plan only" in name:
        return {"marker": "D", "color": "tab:blue", "markersize": 8}
    if name.endswith(": all"):
        return {"marker": "P", "color": "tab:red", "markersize": 11}
    # One strategy on its own: its own colour (they often sit on top of each other).
    colours = {"interval": "tab:purple", "cluster": "tab:brown", "pattern": "tab:cyan"}
    strategy = name.rsplit(": ", 1)[-1]
    return {"marker": "^", "markersize": 8, "color": colours.get(strategy, "tab:gray")}
