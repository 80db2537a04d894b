"""The control socket: JSON lines over a Unix stream socket (docs/CONTRACT.md).

Each request is one line of at most 64 KiB; each reply is one line. A bad
request of any kind (oversized, binary, not JSON, half-sent, a client that
vanishes) gets a clear error or a clean close, never a crash or a hang.
Commands that change things check the caller's SO_PEERCRED credentials.

Idle connections cannot lock anyone out: a connection that has not sent a
request within `hello_timeout` is closed, one user other than root and the
daemon's own holds at most `max_per_user` slots, and when all `max_clients`
slots are taken a new client evicts the connection idle longest. Only
when every slot is working (a command or an `events --follow` stream) is a
new client told `busy`. The listen backlog absorbs a burst of connects.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import logging
import os
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MAX_REQUEST = 64 * 1024
# Connects that may queue before the loop accepts them (the kernel caps it at
# net.core.somaxconn). asyncio's default of 100 refused a burst of 200 with EAGAIN.
LISTEN_BACKLOG = 1024


@dataclass(frozen=True, slots=True)
class Peer:
    """Who is on the other end of a connection (from SO_PEERCRED)."""

    pid: int
    uid: int
    gid: int


class ControlError(Exception):
    """Raised by a command handler to answer with an error code and message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


Handler = Callable[[dict[str, Any], Peer], Awaitable[Any]]
AuditHook = Callable[[Peer, str, dict[str, Any], str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Command:
    handler: Handler
    # Changes something: needs an authorised peer, and is audited. A predicate
    # over the args for a command that only sometimes writes (`strategy list`
    # only reads, `strategy set` writes).
    writes: bool | Callable[[dict[str, Any]], bool]
    # False: the handler writes its own, richer audit record (`write` records
    # the old and read-back values); a forbidden call is still audited here.
    audited: bool = True

    def writes_with(self, args: dict[str, Any]) -> bool:
        return self.writes(args) if callable(self.writes) else self.writes


@dataclass(slots=True, eq=False)
class _Connection:
    """One client connection, and since when it has waited for a request."""

    task: asyncio.Task[None]
    writer: asyncio.StreamWriter
    idle_since: float | None  # None while a command or stream is running
    uid: int = -1
    requests: int = 0


class ControlServer:
    """Serves registered commands on a Unix socket."""

    def __init__(
        self,
        path: Path,
        *,
        group: str | None = None,
        admin_group: str | None = None,
        max_clients: int = 32,
        max_per_user: int | None = None,
        idle_timeout: float = 300.0,
        hello_timeout: float = 10.0,
        audit: AuditHook | None = None,
    ) -> None:
        self.path = Path(path)
        self.group = group
        self.admin_group = admin_group
        self.max_clients = max_clients
        # One user (but root and the daemon's own) holds at most this many slots,
        # so a script with many `events --follow` streams cannot lock others out.
        self.max_per_user = max(1, max_clients // 4) if max_per_user is None else max_per_user
        self.idle_timeout = idle_timeout
        # A connection that never sends a request is worth less than one that did.
        self.hello_timeout = min(hello_timeout, idle_timeout)
        self.audit = audit
        self.evicted = 0  # idle connections closed to make room (a figure for tests and logs)
        self._commands: dict[str, Command] = {}
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.Task[None]] = set()  # every task still running
        self._slots: dict[asyncio.Task[None], _Connection] = {}  # those that hold a slot
        self._closing = False

    def command(
        self,
        name: str,
        handler: Handler,
        *,
        writes: bool | Callable[[dict[str, Any]], bool] = False,
        audited: bool = True,
    ) -> None:
        self._commands[name] = Command(handler, writes, audited)

    @property
    def commands(self) -> list[str]:
        return sorted(self._commands)

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() or self.path.is_symlink():
            self.path.unlink()  # a stale socket from a crash; the state-dir lock guards liveness
        self._server = await asyncio.start_unix_server(
            self._on_client, path=str(self.path), limit=MAX_REQUEST + 1, backlog=LISTEN_BACKLOG
        )
        os.chmod(self.path, 0o660)
        if self.group:
            try:
                os.chown(self.path, -1, grp.getgrnam(self.group).gr_gid)
            except (KeyError, PermissionError) as exc:
                log.warning("cannot give control socket to group %s: %s", self.group, exc)

    async def close(self) -> None:
        self._closing = True
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in list(self._clients):
            task.cancel()
        if self._clients:
            await asyncio.gather(*self._clients, return_exceptions=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        try:
            peer = _peer_of(writer)
            if (
                peer.uid not in (0, os.getuid())
                and sum(1 for c in self._slots.values() if c.uid == peer.uid) >= self.max_per_user
                and not self._evict_idlest(peer.uid)
            ):
                message = f"too many control clients of uid {peer.uid}; try again"
                await _send(writer, _error(None, "busy", message))
                return
            if len(self._slots) >= self.max_clients and not self._evict_idlest():
                await _send(writer, _error(None, "busy", "too many control clients; try again"))
                return
            conn = _Connection(task, writer, idle_since=time.monotonic(), uid=peer.uid)
            self._slots[task] = conn
            await self._serve(reader, writer, peer, conn)
        except (ConnectionError, BrokenPipeError):
            pass  # the client went away mid-reply
        except asyncio.CancelledError:
            # close() cancels us on shutdown. asyncio's stream callback asks a
            # cancelled connection task for its exception and logs a traceback
            # per client, so the task ends normally instead.
            if not self._closing:
                raise
        finally:
            self._clients.discard(task)
            self._slots.pop(task, None)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _evict_idlest(self, uid: int | None = None) -> bool:
        """Close the connection (of `uid`, or anyone's) idle longest; False if none is idle."""
        idle = [
            c
            for c in self._slots.values()
            if c.idle_since is not None and (uid is None or c.uid == uid)
        ]
        if not idle:
            return False
        victim = min(idle, key=lambda c: c.idle_since or 0.0)
        self._slots.pop(victim.task, None)  # its slot is free now, not when it has unwound
        victim.writer.close()  # its pending read ends; the client sees EOF
        self.evicted += 1
        log.debug("control socket full: closed a connection idle since %.1f", victim.idle_since)
        return True

    async def _serve(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        peer: Peer,
        conn: _Connection,
    ) -> None:
        while True:
            conn.idle_since = time.monotonic()
            timeout = self.idle_timeout if conn.requests else self.hello_timeout
            try:
                async with asyncio.timeout(timeout):
                    line = await reader.readuntil(b"\n")
            except TimeoutError:
                return
            except asyncio.LimitOverrunError:
                # Nothing after an oversized request can be trusted to be framed.
                message = f"request longer than {MAX_REQUEST} bytes"
                await _send(writer, _error(None, "bad_request", message))
                return
            except asyncio.IncompleteReadError as exc:
                if exc.partial.strip():
                    await _send(writer, _error(None, "bad_request", "request without a newline"))
                return
            if not line.strip():
                continue
            conn.idle_since = None
            conn.requests += 1
            reply = await self._dispatch(line, peer)
            if isinstance(reply, AsyncIterator):
                await self._stream(reply, reader, writer)
                return
            await _send(writer, reply)

    async def _dispatch(self, line: bytes, peer: Peer) -> dict[str, Any] | AsyncIterator[Any]:
        try:
            request = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError:
            return _error(None, "bad_request", "request is not UTF-8 text")
        except json.JSONDecodeError as exc:
            return _error(None, "bad_request", f"request is not JSON: {exc.msg} at {exc.pos}")
        if not isinstance(request, dict):
            return _error(None, "bad_request", "request must be a JSON object")
        rid = request.get("id")
        if not isinstance(rid, str | int | float | type(None)) or isinstance(rid, bool):
            return _error(None, "bad_request", "id must be a number, a string or null")
        name = request.get("cmd")
        args = request.get("args", {})
        if not isinstance(name, str):
            return _error(rid, "bad_request", "cmd must be a string")
        if not isinstance(args, dict):
            return _error(rid, "bad_request", "args must be a JSON object")
        command = self._commands.get(name)
        if command is None:
            known = ", ".join(self.commands)
            return _error(rid, "unknown_command", f"unknown command {name!r}; known: {known}")
        writes = command.writes_with(args)
        if writes and not self._authorised(peer):
            await self._audit(peer, name, args, "forbidden")
            return _error(
                rid, "forbidden", f"{name} needs root, the daemon's user or the admin group"
            )
        try:
            result = await command.handler(args, peer)
        except ControlError as exc:
            outcome: dict[str, Any] = _error(rid, exc.code, exc.message)
        except Exception as exc:
            log.exception("control command %s failed", name)
            outcome = _error(rid, "internal", f"{type(exc).__name__}: {exc}")
        else:
            if isinstance(result, AsyncIterator):
                return result
            outcome = {"id": rid, "ok": True, "result": result}
        if writes and command.audited:
            status = "ok" if outcome["ok"] else outcome["error"]["code"]
            await self._audit(peer, name, args, status)
        return outcome

    async def _stream(
        self,
        items: AsyncIterator[Any],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        """Send items until the stream ends or the client closes its end."""
        closed = asyncio.ensure_future(reader.read())  # b"" once the client hangs up
        try:
            while True:
                nxt = asyncio.ensure_future(anext(items))
                done, _ = await asyncio.wait({nxt, closed}, return_when=asyncio.FIRST_COMPLETED)
                if closed in done:
                    nxt.cancel()
                    return
                try:
                    item = nxt.result()
                except StopAsyncIteration:
                    return
                await _send(writer, item)
        finally:
            closed.cancel()
            aclose = getattr(items, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

    def _authorised(self, peer: Peer) -> bool:
        if peer.uid in (0, os.getuid()):
            return True
        if not self.admin_group:
            return False
        try:
            group = grp.getgrnam(self.admin_group)
        except KeyError:
            return False
        if peer.gid == group.gr_gid:
            return True
        try:
            import pwd

            user = pwd.getpwuid(peer.uid).pw_name
        except KeyError:
            return False
        return user in group.gr_mem

    async def _audit(self, peer: Peer, name: str, args: dict[str, Any], result: str) -> None:
        if self.audit is None:
            return
        try:
            await self.audit(peer, name, args, result)
        except Exception:
            log.exception("could not write the audit record for %s", name)


def _peer_of(writer: asyncio.StreamWriter) -> Peer:
    sock = writer.get_extra_info("socket")
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, gid = struct.unpack("3i", raw)
    except (OSError, AttributeError):
        return Peer(-1, -1, -1)  # unknown peers get no write access
    return Peer(pid, uid, gid)


def _error(rid: Any, code: str, message: str) -> dict[str, Any]:
    return {"id": rid, "ok": False, "error": {"code": code, "message": message}}


def encode_line(obj: Any) -> bytes:
    """One JSON line; NaN and infinities (valid device values) become null."""
    try:
        text = json.dumps(obj, default=str, allow_nan=False)
    except ValueError:
        text = json.dumps(_finite(obj), default=str, allow_nan=False)
    return text.encode("utf-8") + b"\n"


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


async def _send(writer: asyncio.StreamWriter, obj: Any) -> None:
    writer.write(encode_line(obj))
    await writer.drain()
