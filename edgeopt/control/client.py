"""`edgeoptctl`: the admin client for the control socket.

Tables for people, `--json` for scripts. Exit codes (docs/CONTRACT.md): 0 ok,
1 the daemon reported an error, 2 usage, 3 the socket cannot be reached.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

DEFAULT_SOCKET = "/run/edgeopt/edgeopt.sock"
EXIT_OK, EXIT_DAEMON_ERROR, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
# Seconds `write` waits for its reply: the line's current read, the write,
# and a read-back that may wait write.verify_timeout for the value.
WRITE_CLIENT_TIMEOUT = 120.0
JSON_HELP = "print the JSON result (docs/CONTRACT.md), anywhere on the line"


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
    parser = argparse.ArgumentParser(
        prog="edgeoptctl",
        description="Query and steer edgeopt. Exit codes: 0 ok, 1 the daemon reported an "
        "error, 2 usage, 3 the daemon cannot be reached.",
        epilog="The commands, the socket protocol and the --json result shapes: "
        "docs/CONTRACT.md in the edgeopt source tree.",
    )
    parser.add_argument("--socket", default=os.environ.get("EDGEOPT_SOCKET", DEFAULT_SOCKET))
    parser.add_argument("--json", action="store_true", help=JSON_HELP)
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
    write = sub.add_parser(
        "write", help="write a value to a writable tag and read it back (admin only, audited)"
    )
    write.add_argument("target", metavar="DEVICE/TAG")
    write.add_argument("value", help="a number, true/false, or text for a string tag")
    write.add_argument(
        "--no-verify", dest="verify", action="store_false", help="do not read the value back"
    )
    write.add_argument("--timeout", help="how long the read-back may wait for the value (2s)")
    sub.add_parser("northbound", help="MQTT targets: connection, outbox, published/s, dropped")
    top = sub.add_parser("top", help="live view of devices, bus load and busiest tags")
    top.add_argument("--interval", type=float, default=1.0)
    top.add_argument("--iterations", type=int, default=0, help="stop after N refreshes")
    _accept_json_anywhere(parser)
    return parser


def _accept_json_anywhere(parser: argparse.ArgumentParser) -> None:
    """`tags --device x --json` as well as `--json tags`: every subcommand takes --json.

    SUPPRESS keeps a subcommand from resetting a --json given before it.
    """
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                if "--json" not in sub._option_string_actions:
                    sub.add_argument(
                        "--json", action="store_true", default=argparse.SUPPRESS, help=JSON_HELP
                    )
                _accept_json_anywhere(sub)


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
    try:
        return _main(argv)
    except BrokenPipeError:
        # `edgeoptctl … | head`: the reader has gone; no traceback, and nothing
        # more to flush at exit either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


def _main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(_join_relative_times(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:
        return EXIT_USAGE if exc.code else EXIT_OK
    client = ControlClient(args.socket)
    if args.command == "write":
        # A write waits for its line and for the read-back: more than a query.
        client.timeout = WRITE_CLIENT_TIMEOUT
    try:
        request_args = _request_args(args)
    except SystemExit as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    try:
        if args.command == "top":
            return run_top(client, args.interval, args.iterations, as_json=args.json)
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
    if args.command == "write" and isinstance(result, dict) and result.get("result") != "ok":
        # Refused by the device, or it holds something else: the write failed.
        print(f"edgeoptctl: write {_write_summary(result)}", file=sys.stderr)
        return EXIT_DAEMON_ERROR
    return EXIT_OK


def _write_summary(result: dict[str, Any]) -> str:
    outcome = result.get("result")
    if outcome == "exception" and result.get("exception_code") is not None:
        outcome = f"exception {result['exception_code']}"
    text = f"{result.get('tag')} = {_value(result.get('requested'))}: {outcome}"
    if result.get("read_back") is not None:
        text += f", reads back {_value(result['read_back'])}"
    if result.get("message"):
        text += f" ({result['message']})"
    return text


def _request_args(args: argparse.Namespace) -> dict[str, Any]:
    if args.command == "write":
        # The text as typed: the daemon reads it as the tag's type (a string
        # tag keeps "007" and "1e3" as they are).
        out: dict[str, Any] = {"tag": args.target, "value": args.value}
        if not args.verify:
            out["verify"] = False
        if args.timeout is not None:
            out["timeout"] = args.timeout
        return out
    out = {}
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
    return key, _typed(raw)


def _typed(raw: str) -> Any:
    """Command-line text read as JSON when it parses (numbers, booleans), else the text."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


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


def _last_error(device: dict[str, Any]) -> str:
    """`12:03:04 timeout: … (recovered 12:03:10)`; empty if the device never failed."""
    error = device.get("last_error")
    if not error:
        return ""
    when = device.get("last_error_ts")
    text = f"{_ts(when)[11:19]} {error}" if isinstance(when, int | float) else str(error)
    recovered = device.get("recovered_ts")
    if isinstance(recovered, int | float):
        text += f" (recovered {_ts(recovered)[11:19]})"
    return text


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
            "device",
            "transport",
            "state",
            "reads",
            "errors",
            "retried",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "last error",
        )
        for d in result:
            lat = d.get("latency_ms") or {}
            table.add_row(
                d["name"],
                d["transport"],
                d["state"],
                str(d["reads"]),
                str(d["errors"]),
                str(d.get("retried", "-")),
                _value(lat.get("p50")),
                _value(lat.get("p95")),
                _value(lat.get("p99")),
                _last_error(d),
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
        if not result:
            print("no events yet")
        for event in result:
            print(_event_line(event))
    elif command == "reload":
        print(f"reloaded: {result.get('summary', result)}")
        if result.get("restart_needed"):
            print(f"needs a restart to apply: {', '.join(result['restart_needed'])}")
    elif command == "write":
        print(f"write {_write_summary(result)}")
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
        if not result:
            print("no recommendations: nothing to change")
        for r in result:
            # markup=False: "[high]" is text, not a rich style tag.
            console.print(f"[{r.get('priority', '')}] {_recommendation(r)}", markup=False)
    elif command == "optimize":
        _render_cycle(console, result)
    elif command == "strategy":
        _render_strategy(console, result, args)
    elif command == "stats":
        _render_stats(console, result)
    else:
        render_plain(console, result)


def _recommendation(r: dict[str, Any]) -> str:
    text = str(r.get("title") or r.get("message") or "")
    detail = r.get("detail")
    impact = r.get("expected_impact")
    if detail:
        text += f" — {detail}"
    if isinstance(impact, dict):
        parts = []
        if impact.get("bus_s_per_s") is not None:
            parts.append(f"{impact['bus_s_per_s'] * 1000:.3g} ms of bus time per second")
        if impact.get("share") is not None:
            parts.append(f"{impact['share'] * 100:.1f}% of the plan")
        other = {k: v for k, v in impact.items() if k not in ("bus_s_per_s", "share")}
        parts.extend(f"{k} {_cell(v)}" for k, v in other.items())
        text += f" (saves {', '.join(parts)})" if parts else ""
    elif impact is not None:
        text += f" ({_cell(impact)})"
    return text


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


def _cell(value: Any) -> str:
    """One table cell: scalars as they are, small dicts and lists as k=v, a, b."""
    if isinstance(value, dict):
        return ", ".join(f"{k}={_cell(v)}" for k, v in value.items()) or "-"
    if isinstance(value, list | tuple):
        return ", ".join(_cell(v) for v in value) or "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return _value(value)


def render_plain(console: Console, result: Any) -> None:
    """Any result without a renderer of its own, as tables and `key: value` lines."""
    if isinstance(result, list):
        if not result:
            print("(none)")
        elif all(isinstance(r, dict) for r in result):
            columns = list(dict.fromkeys(k for r in result for k in r))
            table = Table(*columns)
            for r in result:
                table.add_row(*(_cell(r.get(c)) for c in columns))
            console.print(table)
        else:
            for item in result:
                print(_cell(item))
    elif isinstance(result, dict):
        for key, value in result.items():
            if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
                print(f"{key}:")
                render_plain(console, value)
            elif (
                isinstance(value, dict)
                and value
                and all(isinstance(v, dict) for v in value.values())
            ):
                print(f"{key}:")  # one row per entry, named in the first column
                render_plain(console, [{"name": k, **v} for k, v in value.items()])
            else:
                print(f"{key}: {_cell(value)}")
    else:
        print(_cell(result))


def _render_cycle(console: Console, result: dict[str, Any]) -> None:
    print(f"{result.get('cycle', '')} cycle at {_ts(result.get('started'))}")
    table = Table("strategy", "status", "detail")
    for name, outcome in (result.get("strategies") or {}).items():
        if isinstance(outcome, dict):
            rest = {k: v for k, v in outcome.items() if k not in ("status", "reason")}
            detail = " ".join(x for x in (outcome.get("reason"), rest and _cell(rest)) if x)
            table.add_row(name, str(outcome.get("status", "")), detail)
        else:
            table.add_row(name, _cell(outcome), "")
    console.print(table)
    render_plain(console, {k: v for k, v in result.items() if k not in _CYCLE_KEYS})


_CYCLE_KEYS = ("cycle", "started", "strategies")


def _render_strategy(console: Console, result: Any, args: argparse.Namespace) -> None:
    if getattr(args, "action", None) != "list" or not isinstance(result, list):
        if isinstance(result, dict) and isinstance(result.get("changes"), dict):
            for key, change in result["changes"].items():
                print(
                    f"{result.get('strategy')}: {key} {_cell(change.get('before'))}"
                    f" → {_cell(change.get('after'))}"
                )
            return
        if isinstance(result, dict) and "was" in result:

            def state(on: Any) -> str:
                return "enabled" if on else "disabled"

            print(
                f"{result.get('strategy')}: {state(result.get('enabled'))}"
                f" (was {state(result.get('was'))})"
            )
            return
        render_plain(console, result)
        return
    table = Table("strategy", "enabled", "runs", "kept", "rolled back", "success", "cooldown s")
    for st in result:
        table.add_row(
            st["name"],
            _cell(st.get("enabled")),
            _cell(st.get("runs")),
            _cell(st.get("kept")),
            _cell(st.get("rolled_back")),
            _percent(st.get("success_rate")),
            _cell(st.get("cooldown_s")),
        )
    console.print(table)
    for st in result:
        print(f"{st['name']}: {st.get('description', '')}")
        print(f"  params: {_cell(st.get('params') or {})}")


def _percent(value: Any) -> str:
    return f"{value * 100:.0f}%" if isinstance(value, int | float) else "-"


def _render_stats(console: Console, result: dict[str, Any]) -> None:
    improvement = result.get("avg_improvement")
    print(
        f"optimizations {result.get('optimizations', 0)}: {result.get('successful', 0)} kept, "
        f"{result.get('rolled_back', 0)} rolled back, {result.get('pending', 0)} pending; "
        "average improvement " + ("-" if improvement is None else f"{improvement * 100:+.1f}%")
    )
    table = Table("strategy", "enabled", "runs", "success", "cooldown until", "trend")
    for name, st in (result.get("strategies") or {}).items():
        table.add_row(
            name,
            _cell(st.get("enabled")),
            _cell(st.get("runs")),
            _percent(st.get("success_rate")),
            _ts(st.get("cooldown_until")),
            _cell(st.get("trend")),
        )
    console.print(table)
    known = ("optimizations", "successful", "rolled_back", "pending", "avg_improvement")
    render_plain(console, {k: v for k, v in result.items() if k not in (*known, "strategies")})


def top_frame(client: ControlClient) -> tuple[dict[str, Any], Table]:
    """One refresh of `top`: the figures (for --json) and their tables."""
    status = client.call("status")["result"]
    devices = client.call("devices")["result"]
    tags = client.call("tags")["result"]
    busiest = sorted(tags, key=lambda t: t["reads"], reverse=True)[:10]
    figures = {"status": status, "devices": devices, "busiest_tags": busiest}
    return figures, _top_tables(status, devices, busiest)


def _top_tables(
    status: dict[str, Any], devices: list[dict[str, Any]], busiest: list[dict[str, Any]]
) -> Table:
    """The layout of one frame of `top`."""
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


def run_top(client: ControlClient, interval: float, iterations: int, as_json: bool = False) -> int:
    """A live view: devices, bus load per line, and the busiest tags.

    On a terminal it redraws in place until `q` (or Ctrl-C); piped, or with
    --json, it prints one frame per refresh. `--iterations N` stops after N.
    """
    interactive = sys.stdout.isatty() and sys.stdin.isatty() and not as_json
    count = 0
    try:
        with _keys(interactive) as pressed:
            live = None
            while True:
                figures, tables = top_frame(client)
                count += 1
                if as_json:
                    print(json.dumps(figures), flush=True)
                elif interactive:
                    if live is None:
                        from rich.live import Live

                        live = Live(tables, refresh_per_second=4, screen=False)
                        live.start()
                    live.update(tables, refresh=True)
                else:
                    Console(width=200).print(tables)
                    sys.stdout.flush()
                if iterations and count >= iterations:
                    break
                if pressed(interval) in ("q", "Q"):
                    break
            if live is not None:
                live.stop()
    except KeyboardInterrupt:
        pass
    return EXIT_OK


@contextlib.contextmanager
def _keys(interactive: bool) -> Iterator[Callable[[float], str | None]]:
    """Wait up to `timeout` s for a key; on a terminal without waiting for Enter."""
    if not interactive:

        def sleep(timeout: float) -> str | None:
            time.sleep(timeout)
            return None

        yield sleep
        return
    import select
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)

    def pressed(timeout: float) -> str | None:
        ready, _, _ = select.select([fd], [], [], timeout)
        return os.read(fd, 1).decode(errors="replace") if ready else None

    try:
        yield pressed
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


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
