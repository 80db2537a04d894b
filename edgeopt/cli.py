"""The `edgeopt` command: `run --config FILE` and `check-config FILE`.

Exit codes (docs/CONTRACT.md): 0 on a clean stop or a valid config, 2 on an
invalid config, 1 on any other fatal error.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import sys
from collections.abc import Sequence

from edgeopt import __version__
from edgeopt.config import ConfigError, ConfigLoad, load_config
from edgeopt.logs import library_log_levels

EXIT_OK = 0
EXIT_FATAL = 1
EXIT_CONFIG = 2
# Where --help sends people: the page that defines what scripts may rely on.
CONTRACT_HINT = (
    "Commands, config keys, the control socket protocol and its result shapes: "
    "docs/CONTRACT.md in the edgeopt source tree; every config key with its default: "
    "config/edgeopt.yaml."
)


def setup_logging(level: str) -> None:
    # Under systemd, journald stamps each line itself.
    stamp = "" if os.environ.get("JOURNAL_STREAM") else "%(asctime)s "
    logging.basicConfig(
        level=level.upper(),
        format=f"{stamp}%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    library_log_levels(level)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="edgeopt",
        description="A self-optimizing Modbus polling daemon. Exit codes: 0 on a clean stop "
        "or a valid config, 2 on an invalid config, 1 on any other fatal error.",
        epilog=CONTRACT_HINT,
    )
    parser.add_argument("--version", action="version", version=f"edgeopt {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the daemon in the foreground")
    run.add_argument("--config", required=True, help="the YAML config file")
    run.add_argument("--log-level", help="override daemon.log_level")
    check = sub.add_parser("check-config", help="validate a config file")
    check.add_argument("file")
    args = parser.parse_args(argv)

    if args.command == "check-config":
        return check_config(args.file)
    return run_daemon(args.config, args.log_level)


def check_config(path: str) -> int:
    try:
        load_config(path)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_CONFIG
    except OSError as exc:
        print(f"{path}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_CONFIG
    print("ok")
    return EXIT_OK


def run_daemon(path: str, log_level: str | None) -> int:
    try:
        # The file is parsed in a child while this process imports the daemon.
        pending = ConfigLoad(path)
        from edgeopt.daemon import Daemon, DaemonError
        from edgeopt.resources import pin_mmap_threshold

        pin_mmap_threshold()  # before the daemon's threads start and its heaps fill
        config = pending.result()
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_CONFIG
    setup_logging(log_level or config.daemon.log_level)
    try:
        daemon = Daemon(config)
        # What exists now (modules, config, tags) lives as long as the daemon:
        # the collector need not walk it again on every full collection.
        gc.freeze()
        asyncio.run(daemon.run())
    except DaemonError as exc:
        logging.getLogger("edgeopt").error("%s", exc)
        return EXIT_FATAL
    except KeyboardInterrupt:
        return EXIT_OK
    except Exception:
        logging.getLogger("edgeopt").exception("fatal error")
        return EXIT_FATAL
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
