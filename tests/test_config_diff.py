"""A reload's diff: devices by fate, in the new file's order, and what only a restart applies."""

from __future__ import annotations

from edgeopt.config import parse_config
from edgeopt.config.diff import diff_configs

OLD = """\
daemon: {state_dir: /var/lib/edgeopt, socket: /run/edgeopt.sock}
devices:
  - {name: a, transport: tcp, host: h1, tags: &x [{name: x, table: input, type: int16, address: 0}]}
  - {name: b, transport: tcp, host: h2, tags: *x}
  - {name: c, transport: tcp, host: h3, tags: *x}
"""

NEW = """\
daemon: {state_dir: /var/lib/edgeopt, socket: /run/other.sock, log_level: debug}
storage: {flush_interval: 2s}
devices:
  - {name: d, transport: tcp, host: h4, tags: &x [{name: x, table: input, type: int16, address: 0}]}
  - {name: c, transport: tcp, host: h3, tags: *x}
  - {name: a, transport: tcp, host: h1, tags: [{name: x, table: input, type: int16, address: 1}]}
"""


def test_devices_by_fate_and_what_needs_a_restart() -> None:
    old, new = parse_config(OLD), parse_config(NEW)
    diff = diff_configs(old, new)
    assert (diff.added, diff.removed, diff.changed, diff.unchanged) == (["d"], ["b"], ["a"], ["c"])
    assert [d.name for d in diff.devices] == ["d", "a"]  # to apply, in the new file's order
    assert diff.devices[1] == new.devices[2]
    # The log level applies at once; the socket and storage only after a restart.
    assert diff.restart_needed == ["daemon.socket", "storage"]


def test_the_same_file_changes_nothing() -> None:
    diff = diff_configs(parse_config(OLD), parse_config(OLD))
    assert diff.unchanged == ["a", "b", "c"]
    assert not (diff.added or diff.removed or diff.changed or diff.devices or diff.restart_needed)
