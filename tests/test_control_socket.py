"""The control socket never crashes or hangs on bad input (real Unix socket)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeopt.control.server import MAX_REQUEST, ControlError, ControlServer, Peer

NOBODY = 65534


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


async def wait_forever(args: dict[str, Any], peer: Peer) -> Any:
    async def gen():
        await asyncio.Event().wait()  # a stream that never sends: a working client
        yield {}

    return gen()


async def test_busy_only_when_every_slot_is_working(tmp_path: Path):
    srv = ControlServer(tmp_path / "ctl.sock", max_clients=4, idle_timeout=30.0)
    srv.command("echo", echo)
    srv.command("wait", wait_forever)
    await srv.start()
    try:
        working = []
        for _ in range(4):
            _, writer = await asyncio.open_unix_connection(str(srv.path))
            writer.write(b'{"cmd": "wait"}\n')
            await writer.drain()
            working.append(writer)
        await asyncio.sleep(0.2)
        (busy,) = await roundtrip(srv.path, b'{"cmd": "echo"}\n')
        assert busy["error"]["code"] == "busy"
        for writer in working:
            writer.close()
    finally:
        await srv.close()


async def test_idle_connections_never_lock_out_a_working_client(tmp_path: Path):
    """40 idle connections against 32 slots: a request still answers at once."""
    srv = ControlServer(tmp_path / "ctl.sock")  # the daemon's defaults: 32 slots
    srv.command("echo", echo)
    await srv.start()
    try:
        idle = [await asyncio.open_unix_connection(str(srv.path)) for _ in range(40)]
        async with asyncio.timeout(3):  # not after an idle timeout of minutes
            (ok,) = await roundtrip(srv.path, b'{"id": 1, "cmd": "echo"}\n')
        assert ok["ok"], ok
        # The oldest idle connections made room (EOF), the newest are still open.
        async with asyncio.timeout(3):
            assert await idle[0][0].read() == b""
        assert srv.evicted >= 9
        for _, writer in idle:
            writer.close()
    finally:
        await srv.close()


async def test_connection_that_never_asks_is_closed_sooner(tmp_path: Path):
    srv = ControlServer(tmp_path / "ctl.sock", idle_timeout=30.0, hello_timeout=0.5)
    srv.command("echo", echo)
    await srv.start()
    try:
        silent_reader, _ = await asyncio.open_unix_connection(str(srv.path))
        reader, writer = await asyncio.open_unix_connection(str(srv.path))
        writer.write(b'{"id": 1, "cmd": "echo"}\n')
        assert json.loads(await reader.readline())["ok"]
        async with asyncio.timeout(5):
            assert await silent_reader.read() == b""  # after hello_timeout
        await asyncio.sleep(0.5)
        writer.write(b'{"id": 2, "cmd": "echo"}\n')  # one that asked keeps idle_timeout
        assert json.loads(await reader.readline())["id"] == 2
        writer.close()
    finally:
        await srv.close()


async def test_a_burst_of_200_connects_is_accepted(tmp_path: Path):
    """Back-to-back non-blocking connects while the loop cannot accept: the backlog holds them."""
    srv = ControlServer(tmp_path / "ctl.sock")
    srv.command("echo", echo)
    await srv.start()
    socks: list[socket.socket] = []
    refused = 0
    try:
        for _ in range(200):  # no await in between: the server accepts none meanwhile
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.setblocking(False)
            try:
                s.connect(str(srv.path))
            except BlockingIOError:
                refused += 1
            socks.append(s)
        assert refused == 0
        last = socks[-1]
        last.setblocking(True)
        last.settimeout(5)
        await asyncio.to_thread(last.sendall, b'{"id": 9, "cmd": "echo"}\n')
        reply = await asyncio.to_thread(last.recv, 65536)
        assert json.loads(reply)["id"] == 9
    finally:
        for s in socks:
            s.close()
        await srv.close()


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


def hold_streams_as(uid: int, path: Path, count: int) -> tuple[int, int]:
    """Fork a child that drops to `uid` and holds `count` `wait` streams open.

    Returns (pid, read end): one byte per connection the server took, 'b' per
    `busy`, then the child waits until it is killed.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            held = []
            for _ in range(count):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(str(path))
                # On a loaded machine the server may have said busy and closed
                # before the request goes out: the reply is still there to read.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    s.sendall(b'{"cmd": "wait"}\n')
                s.settimeout(0.5)
                try:
                    reply = s.recv(200)
                except TimeoutError:
                    reply = b""  # no reply: the stream is running
                os.write(write_end, b"b" if b"busy" in reply else b".")
                held.append(s)
            time.sleep(60)
        finally:
            os._exit(0)
    os.close(write_end)
    return pid, read_end


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory another user may enter (pytest's tmp_path is root's alone)."""
    where = Path(tempfile.mkdtemp(prefix="edgeopt-ctl-"))
    where.chmod(0o755)
    yield where
    shutil.rmtree(where, ignore_errors=True)


async def test_one_user_cannot_take_every_slot(shared_dir: Path):
    where = shared_dir
    srv = ControlServer(where / "ctl.sock", max_clients=8, max_per_user=4, idle_timeout=30.0)
    srv.command("echo", echo)
    srv.command("wait", wait_forever)
    await srv.start()
    os.chmod(srv.path, 0o666)  # let the other user connect
    pid, read_end = hold_streams_as(NOBODY, srv.path, 8)
    try:
        got = b""
        while len(got) < 8:
            chunk = await asyncio.to_thread(os.read, read_end, 8)
            assert chunk, got
            got += chunk
        # Four working streams for that user; the rest of its connects were told busy...
        assert got == b"....bbbb", got
        # ... and everyone else still gets in.
        (ok,) = await roundtrip(srv.path, b'{"id": 1, "cmd": "echo"}\n')
        assert ok["ok"] is True
    finally:
        os.kill(pid, signal.SIGKILL)
        await asyncio.to_thread(os.waitpid, pid, 0)
        os.close(read_end)
        await srv.close()
