"""Log policy: the daemon's own lines at its level, the libraries' routine chatter kept out."""

from __future__ import annotations

import logging


def library_log_levels(level: str) -> None:
    """Keep the libraries' routine chatter out of an INFO log (also applied on reload)."""
    debug = level.lower() == "debug"
    # pymodbus logs frames at debug and routine late replies at error; the
    # transport already reports every failed read with its device.
    logging.getLogger("pymodbus").setLevel(logging.INFO if debug else logging.CRITICAL)
    logging.getLogger("aiosqlite").setLevel(logging.WARNING)
    # APScheduler logs every job run ("Running job", "executed successfully") at
    # INFO: nearly all of a day's log. Its warnings and errors still come through,
    # and failed or missed jobs are also logged by the daemon with their name.
    logging.getLogger("apscheduler").setLevel(logging.DEBUG if debug else logging.WARNING)
