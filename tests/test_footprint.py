"""`benchmarks.footprint worker`'s watcher: a child's life and peak RSS, seen from outside."""

from __future__ import annotations

import subprocess
import sys

from benchmarks.footprint import CONFIG_FORK_S, WATCH_EVERY, _kind, _watch_children

# A parent that starts one child holding ~40 MB for about 2 s, then lives on alone.
PARENT = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c",
    "import time; b = bytearray(40 * 2**20); b[::4096] = b'x' * len(b[::4096]); time.sleep(2)"])
child.wait()
time.sleep(30)
"""


def test_the_watcher_sees_a_child_start_grow_and_exit() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT])
    try:
        children, own = _watch_children(parent, 5.0)
    finally:
        parent.kill()
        parent.wait()
    assert len(children) == 1
    (row,) = children.values()
    assert not row["running"]  # it exited while watched
    lived = row["last"] - row["first"]
    assert 1.0 <= lived + WATCH_EVERY <= 3.5
    assert row["peak_mb"] >= 40.0
    assert row["uss_mb"] >= 40.0  # its own pages, not the parent's
    assert own and own[-1][0] >= 4.0  # the parent's RSS, sampled all along


def test_forks_of_the_daemon_are_told_apart_by_when_they_start() -> None:
    cmd = "/usr/bin/python3 /venv/bin/edgeopt run --config /etc/edgeopt/edgeopt.yaml"
    assert _kind(cmd, 0.2) == "config parse (forked at start)"
    assert _kind(cmd, CONFIG_FORK_S + 300.0).startswith("forked work")
    assert _kind("python -c from multiprocessing.spawn import spawn_main", 400.0) == (
        "cluster worker"
    )
