"""`edgeoptctl`: the admin client for the control socket.

Tables for people, `--json` for scripts. Exit codes (CONTRACT.md): 0 ok,
1 the daemon reported an error, 2 usage, 3 the socket cannot be reached.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import socket
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

DEFAULT_SOCKET = "/run/edgeopt/edgeopt.sock"
EXIT_OK, EXIT_DAEMON_ERROR, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3


class Unreachable(Exception):
    """Raised when the control socket cannot be reached."""


class ControlClient:
    """A blocking JSON-lines client; one request, one reply."""

    def __init__(self, path: str, timeout: float = 10.0) -> None:
        self.path = path
        self.timeout = timeout
        self._next_id = 0

    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except OSError as exc:
            sock.close()
            raise Unreachable(
                f"cannot reach edgeopt at {self.path}: {exc.strerror or exc}. "
                "Is the daemon running? (set --socket or EDGEOPT_SOCKET)"
            ) from None
        return sock

    def call(self, cmd: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        with self._connect() as sock:
            self._send(sock, cmd, args)
            for reply in _lines(sock):
                return reply
        raise Unreachable(f"edgeopt at {self.path} closed the connection without a reply")

    def stream(self, cmd: str, args: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        with self._connect() as sock:
            sock.settimeout(None)
            self._send(sock, cmd, args)
            yield from _lines(sock)

    def _send(self, sock: socket.socket, cmd: str, args: dict[str, Any] | None) -> None:
        self._next_id += 1
        request = {"id": self._next_id, "cmd": cmd, "args": args or {}}
        sock.sendall(json.dumps(request).encode() + b"\n")


def _lines(sock: socket.socket) -> Iterator[dict[str, Any]]:
    buffer = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if line.strip():
                yield json.loads(line)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgeoptctl", description="Query and steer edgeopt.")
    parser.add_argument("--socket", default=os.environ.get("EDGEOPT_SOCKET", DEFAULT_SOCKET))
    parser.add_argument("--json", action="store_true", help="print the JSON result")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("status", help="daemon summary")
    sub.add_parser("devices", help="devices and their health")
    tags = sub.add_parser("tags", help="tag values and quality")
    tags.add_argument("--device")
    query = sub.add_parser("query", help="stored points of one tag")
    query.add_argument("tag", help="DEVICE/NAME")
    query.add_argument("--since", help="epoch, ISO 8601 or relative (-10m)")
    query.add_argument("--until")
    query.add_argument("--limit", type=int)
    query.add_argument("--resolution", help="bucket means at this step, e.g. 1m")
    query.add_argument("--csv", action="store_true", help="print ts,value lines")
    events = sub.add_parser("events", help="recent events")
    events.add_argument("--follow", action="store_true", help="stream new events until Ctrl-C")
    events.add_argument("--limit", type=int)
    sub.add_parser("reload", help="re-read the config file and apply the difference")
    optimize = sub.add_parser("optimize", help="run an optimizer cycle now")
    optimize.add_argument("mode", choices=["quick", "full"])
    sub.add_parser("evaluate", help="judge pending optimizations now")
    strategy = sub.add_parser("strategy", help="list or tune optimizer strategies")
    actions = strategy.add_subparsers(dest="action", required=True)
    actions.add_parser("list")
    setter = actions.add_parser("set")
    setter.add_argument("name")
    setter.add_argument("params", nargs="+", metavar="KEY=VALUE")
    for action in ("enable", "disable"):
        actions.add_parser(action).add_argument("name")
    history = sub.add_parser("history", help="applied optimizations and their outcome")
    history.add_argument("--limit", type=int)
    sub.add_parser("stats", help="optimizer statistics")
    sub.add_parser("recommendations", help="what to change, by priority")
    sub.add_parser("northbound", help="MQTT targets: connection, outbox, published/s, dropped")
    top = sub.add_parser("top", help="live view of devices, bus load and busiest tags")
    top.add_argument("--interval", type=float, default=1.0)
    top.add_argument("--iterations", type=int, default=0, help="stop after N refreshes")
    return parser


def _join_relative_times(argv: Sequence[str]) -> list[str]:
    """`--since -10m` → `--since=-10m`: argparse would read -10m as an option."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("--since", "--until") and i + 1 < len(argv) and argv[i + 1].startswith("-"):
            out.append(f"{arg}={argv[i + 1]}")
            i += 2
            continue
        out.append(arg)
        i += 1
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(_join_relative_times(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:
        return EXIT_USAGE if exc.code else EXIT_OK
    client = ControlClient(args.socket)
    try:
        request_args = _request_args(args)
    except SystemExit as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    try:
        if args.command == "top":
            return run_top(client, args.interval, args.iterations)
        if getattr(args, "follow", False):
            return _follow(client, args.command, request_args, args.json)
        reply = client.call(args.command, request_args)
    except Unreachable as exc:
        print(f"edgeoptctl: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except (OSError, ValueError) as exc:
        print(f"edgeoptctl: connection to edgeopt failed: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    if not reply.get("ok"):
        error = reply.get("error") or {}
        print(f"edgeoptctl: {error.get('code')}: {error.get('message')}", file=sys.stderr)
        return EXIT_DAEMON_ERROR
    result = reply.get("result")
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        render(args.command, result, args)
    return EXIT_OK


def _request_args(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in (
        "device",
        "tag",
        "since",
        "until",
        "limit",
        "resolution",
        "follow",
        "mode",
        "action",
        "name",
    ):
        value = getattr(args, name, None)
        if value is not None and value is not False:
            out[name] = value
    if getattr(args, "params", None):
        out["params"] = dict(_key_value(p) for p in args.params)
    return out


def _key_value(text: str) -> tuple[str, Any]:
    """KEY=VALUE, with VALUE read as JSON when it parses (numbers, booleans)."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise SystemExit(f"edgeoptctl: expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        return key, raw


def _follow(client: ControlClient, cmd: str, args: dict[str, Any], as_json: bool) -> int:
    try:
        for item in client.stream(cmd, args):
            if as_json:
                print(json.dumps(item), flush=True)
            else:
                print(_event_line(item), flush=True)
    except KeyboardInterrupt:
        return EXIT_OK
    return EXIT_OK


def _event_line(event: dict[str, Any]) -> str:
    return f"{_ts(event.get('ts'))}  {event.get('kind', ''):<22} {event.get('message', '')}"


def _ts(value: Any) -> str:
    if not isinstance(value, int | float):
        return "-"
    return dt.datetime.fromtimestamp(value).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "-" if value is None else str(value)


def render(command: str, result: Any, args: argparse.Namespace) -> None:
    # Piped output keeps whole names rather than a terminal-width table.
    console = Console(width=None if sys.stdout.isatty() else 200)
    if command == "status":
        _render_status(console, result)
    elif command == "devices":
        table = Table(
            "device", "transport", "state", "reads", "errors", "p50 ms", "p99 ms", "last error"
        )
        for d in result:
            lat = d.get("latency_ms") or {}
            table.add_row(
                d["name"],
                d["transport"],
                d["state"],
                str(d["reads"]),
                str(d["errors"]),
                _value(lat.get("p50")),
                _value(lat.get("p99")),
                d.get("last_error") or "",
            )
        console.print(table)
    elif command == "tags":
        table = Table("tag", "value", "unit", "quality", "interval s", "reads", "changes")
        for t in result:
            table.add_row(
                f"{t['device']}/{t['name']}",
                _value(t["value"]),
                t.get("unit") or "",
                t["quality"],
                f"{t['interval_s']:g}",
                str(t["reads"]),
                str(t["changes"]),
            )
        console.print(table)
    elif command == "query":
        if getattr(args, "csv", False):
            print("ts,value")
            for ts, value in result["points"]:
                print(f"{ts},{'' if value is None else value}")
            return
        table = Table("time", "value", title=f"{result['tag']} ({', '.join(result['tiers'])})")
        for ts, value in result["points"]:
            table.add_row(_ts(ts), _value(value))
        console.print(table)
    elif command == "events":
        for event in result:
            print(_event_line(event))
    elif command == "reload":
        print(f"reloaded: {result.get('summary', result)}")
        if result.get("restart_needed"):
            print(f"needs a restart to apply: {', '.join(result['restart_needed'])}")
    elif command == "history":
        table = Table("id", "strategy", "started", "outcome", "improvement")
        for h in result:
            improvement = h.get("improvement")
            table.add_row(
                str(h["id"]),
                h["strategy"],
                _ts(h.get("started")),
                h["outcome"],
                "-" if improvement is None else f"{improvement * 100:+.1f}%",
            )
        console.print(table)
    elif command == "northbound":
        console.print(_northbound_table(result))
    elif command == "recommendations":
        for r in result:
            console.print(
                f"[{r.get('priority', '')}] {r.get('title', r.get('message', ''))}"
                f" — {r.get('detail', r.get('expected_impact', ''))}"
            )
    else:
        console.print_json(json.dumps(result))


def _northbound_table(targets: list[dict[str, Any]]) -> Table:
    table = Table(
        "target", "broker", "state", "since", "outbox", "oldest s", "published/s", "dropped"
    )
    for t in targets:
        box = t.get("outbox") or {}
        state = "connected" if t.get("connected") else "disconnected"
        if not t.get("connected") and t.get("last_error"):
            state += f" ({t['last_error']})"
        table.add_row(
            t["name"],
            f"{t.get('host')}:{t.get('port')}",
            state,
            _ts(t.get("since")),
            f"{box.get('messages', 0)} ({box.get('bytes', 0)} B)",
            _value(box.get("oldest_age_s")),
            _value(t.get("published_per_s")),
            str(t.get("dropped", 0)),
        )
    return table


def run_top(client: ControlClient, interval: float, iterations: int) -> int:
    """A live view: devices, bus load per line, and the busiest tags."""
    from rich.live import Live

    def frame() -> Table:
        status = client.call("status")["result"]
        devices = client.call("devices")["result"]
        tags = client.call("tags")["result"]
        grid = Table.grid(padding=(0, 1))
        grid.add_row(
            f"edgeopt {status['version']}  up {status['uptime_s']:.0f}s  "
            f"reads/s {status['reads_per_s']:.1f}  pressure {status['pressure']}"
        )
        dev = Table("device", "state", "reads", "errors", "p50 ms", "p99 ms", title="devices")
        for d in devices:
            lat = d.get("latency_ms") or {}
            dev.add_row(
                d["name"],
                d["state"],
                str(d["reads"]),
                str(d["errors"]),
                _value(lat.get("p50")),
                _value(lat.get("p99")),
            )
        grid.add_row(dev)
        bus = Table("line", "busy", title="bus load")
        for line, load in sorted(status.get("bus_load", {}).items()):
            bus.add_row(line, f"{load * 100:.1f}%")
        grid.add_row(bus)
        busiest = sorted(tags, key=lambda t: t["reads"], reverse=True)[:10]
        top_tags = Table("tag", "value", "interval s", "reads", "changes", title="busiest tags")
        for t in busiest:
            top_tags.add_row(
                f"{t['device']}/{t['name']}",
                _value(t["value"]),
                f"{t['interval_s']:g}",
                str(t["reads"]),
                str(t["changes"]),
            )
        grid.add_row(top_tags)
        return grid

    import time

    count = 0
    try:
        with Live(frame(), refresh_per_second=4, screen=False) as live:
            while True:
                count += 1
                if iterations and count >= iterations:
                    return EXIT_OK
                time.sleep(interval)
                live.update(frame())
    except KeyboardInterrupt:
        return EXIT_OK


def _render_status(console: Console, s: dict[str, Any]) -> None:
    devices = s["devices"]
    console.print(
        f"edgeopt {s['version']}  pid {s['pid']}  up {s['uptime_s']:.0f}s  pressure {s['pressure']}"
    )
    console.print(
        f"devices {devices['total']} (online {devices['online']}, degraded "
        f"{devices['degraded']}, offline {devices['offline']})  tags {s['tags']}  "
        f"reads/s {s['reads_per_s']:.1f}"
    )
    if "plan" in s:
        console.print(f"plan: {s['plan']['summary']}")
    for line, load in sorted(s.get("bus_load", {}).items()):
        console.print(f"bus {line}: {load * 100:.1f}% busy")
    for t in s.get("northbound") or []:
        box = t.get("outbox") or {}
        console.print(
            f"northbound {t['name']}: {'connected' if t['connected'] else 'disconnected'}, "
            f"outbox {box.get('messages', 0)}, {t.get('published_per_s', 0):.1f} published/s, "
            f"{t.get('dropped', 0)} dropped"
        )
    storage = s.get("storage")
    if storage:
        console.print(
            f"storage {storage['state']}: {storage['rows_written']} rows written, "
            f"{storage['buffered']} buffered"
        )
        for tier, figures in (storage.get("tiers") or {}).items():
            if isinstance(figures, dict) and figures.get("samples") is not None:
                ratio = figures.get("compression_ratio")
                extra = f", {ratio:.1f}x smaller than hot" if ratio else ""
                console.print(
                    f"  {tier}: {figures['samples']} samples, {figures['bytes']} bytes{extra}"
                )


if __name__ == "__main__":
    sys.exit(main())
