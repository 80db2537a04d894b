"""The control socket never crashes or hangs on bad input (real Unix socket)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeopt.control.server import MAX_REQUEST, ControlError, ControlServer, Peer


async def echo(args: dict[str, Any], peer: Peer) -> dict[str, Any]:
    return {"args": args, "uid": peer.uid}


async def boom(args: dict[str, Any], peer: Peer) -> None:
    raise RuntimeError("kaboom")


async def refuse(args: dict[str, Any], peer: Peer) -> None:
    raise ControlError("not_found", "no such thing")


async def counter(args: dict[str, Any], peer: Peer) -> Any:
    async def gen():
        for i in range(int(args.get("n", 3))):
            yield {"i": i}
            await asyncio.sleep(0)

    return gen()


@pytest.fixture
async def server(tmp_path: Path):
    srv = ControlServer(tmp_path / "ctl.sock", max_clients=4, idle_timeout=2.0)
    srv.command("echo", echo)
    srv.command("boom", boom)
    srv.command("refuse", refuse)
    srv.command("count", counter)
    await srv.start()
    yield srv
    await srv.close()


async def roundtrip(path: Path, payload: bytes, half_close: bool = True) -> list[dict[str, Any]]:
    reader, writer = await asyncio.open_unix_connection(str(path), limit=1 << 20)
    try:
        writer.write(payload)
        await writer.drain()
        if half_close and writer.can_write_eof():
            writer.write_eof()
    except ConnectionError:
        pass  # the server may answer (busy, too large) and close before reading it all
    out = []
    async with asyncio.timeout(5):
        try:
            while line := await reader.readline():
                out.append(json.loads(line))
        except ConnectionError:
            pass
    writer.close()
    return out


async def test_request_and_reply_echo_the_id(server):
    (reply,) = await roundtrip(server.path, b'{"id": 7, "cmd": "echo", "args": {"a": 1}}\n')
    assert reply == {"id": 7, "ok": True, "result": {"args": {"a": 1}, "uid": 0}}


async def test_several_requests_on_one_connection(server):
    payload = b'{"id": 1, "cmd": "echo"}\n\n{"id": "x", "cmd": "echo"}\n'
    replies = await roundtrip(server.path, payload)
    assert [r["id"] for r in replies] == [1, "x"]


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"not json\n", "bad_request"),
        (b"\xff\xfe\x00binary\n", "bad_request"),
        (b"[1, 2]\n", "bad_request"),
        (b'{"cmd": 5}\n', "bad_request"),
        (b'{"cmd": "echo", "args": []}\n', "bad_request"),
        (b'{"id": {"a": 1}, "cmd": "echo"}\n', "bad_request"),
        (b'{"id": 1, "cmd": "nope"}\n', "unknown_command"),
        (b'{"id": 1, "cmd": "boom"}\n', "internal"),
        (b'{"id": 1, "cmd": "refuse"}\n', "not_found"),
        (b'{"id": 1, "cmd": "echo"', "bad_request"),  # half-sent, then EOF
    ],
)
async def test_bad_requests_get_a_clear_error(server, payload, code):
    replies = await roundtrip(server.path, payload)
    assert replies[-1]["ok"] is False
    assert replies[-1]["error"]["code"] == code
    assert replies[-1]["error"]["message"]
    # And the server is still fine afterwards.
    (ok,) = await roundtrip(server.path, b'{"id": 2, "cmd": "echo"}\n')
    assert ok["ok"] is True


async def test_oversized_request_is_refused_and_closed(server):
    big = b'{"cmd": "echo", "args": {"x": "' + b"a" * (MAX_REQUEST + 10) + b'"}}\n'
    replies = await roundtrip(server.path, big)
    assert replies == [
        {
            "id": None,
            "ok": False,
            "error": {"code": "bad_request", "message": f"request longer than {MAX_REQUEST} bytes"},
        }
    ]


async def test_client_vanishing_mid_reply_does_not_hurt(server):
    for _ in range(5):
        reader, writer = await asyncio.open_unix_connection(str(server.path))
        writer.write(b'{"cmd": "count", "args": {"n": 100000}}\n')
        await writer.drain()
        await reader.read(10)
        writer.transport.abort()
    (ok,) = await roundtrip(server.path, b'{"id": 3, "cmd": "echo"}\n')
    assert ok["ok"]


async def test_stream_sends_items_until_done(server):
    items = await roundtrip(server.path, b'{"cmd": "count", "args": {"n": 3}}\n', half_close=False)
    assert items == [{"i": 0}, {"i": 1}, {"i": 2}]


async def test_stream_stops_when_the_client_closes(server):
    # The client's EOF ends an endless stream instead of leaving it running.
    items = await roundtrip(server.path, b'{"cmd": "count", "args": {"n": 1000000000}}\n')
    assert len(items) < 1000000000


async def test_client_cap_and_idle_timeout(server):
    idle = [await asyncio.open_unix_connection(str(server.path)) for _ in range(4)]
    (busy,) = await roundtrip(server.path, b'{"cmd": "echo"}\n')
    assert busy["error"]["code"] == "busy"
    # Idle clients are dropped after idle_timeout (2 s here) and free their slots.
    for reader, _ in idle:
        async with asyncio.timeout(5):
            assert await reader.read() == b""
    (ok,) = await roundtrip(server.path, b'{"cmd": "echo"}\n')
    assert ok["ok"]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(max_size=300))
async def test_fuzz_random_bytes_never_crash_the_server(server, data):
    replies = await roundtrip(server.path, data + b"\n")
    for reply in replies:
        assert set(reply) >= {"id", "ok"}
    (ok,) = await roundtrip(server.path, b'{"cmd": "echo"}\n')
    assert ok["ok"]
