"""What a config reload changes: devices added, removed, changed, and what only a restart applies.

Pure: two `Config`s in, a `ConfigDiff` out. The daemon applies it; the
northbound targets' own diff is the northbound sink's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edgeopt.config.model import Config, DeviceConfig

__all__ = ["RESTART_ONLY", "ConfigDiff", "Fates", "diff_configs"]

# daemon.* keys and whole sections a running daemon cannot take over.
RESTART_ONLY = (
    ("daemon", "state_dir"),
    ("daemon", "socket"),
    ("daemon", "socket_group"),
    ("daemon", "admin_group"),
    ("storage", None),
    ("metrics", None),
)


@dataclass
class Fates:
    """Names (devices, northbound targets) by what a reload does to them."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


@dataclass
class ConfigDiff(Fates):
    """Devices by fate, and what needs a restart to apply."""

    restart_needed: list[str] = field(default_factory=list)
    # The new configs of the added and changed devices, in the new file's order.
    devices: list[DeviceConfig] = field(default_factory=list)


def diff_configs(old: Config, new: Config) -> ConfigDiff:
    """How `new` differs from the running `old`."""
    diff = ConfigDiff()
    old_devices = {d.name: d for d in old.devices}
    new_names = {d.name for d in new.devices}
    diff.removed = [name for name in old_devices if name not in new_names]
    for device in new.devices:
        before = old_devices.get(device.name)
        if before is None:
            diff.added.append(device.name)
        elif before != device:
            diff.changed.append(device.name)
        else:
            diff.unchanged.append(device.name)
            continue
        diff.devices.append(device)
    for section, key in RESTART_ONLY:
        was, now = getattr(old, section), getattr(new, section)
        if key is not None:
            was, now = getattr(was, key), getattr(now, key)
        if was != now:
            diff.restart_needed.append(section if key is None else f"{section}.{key}")
    return diff
