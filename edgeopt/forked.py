"""Pure work run in a short-lived forked child, so its temporaries never enter the daemon's heap.

A planning pass or a learned-state save at 10k tags builds hundreds of
thousands of short-lived objects. In the daemon's own heap they raise the
allocator's high-water mark for good: the few objects that live on (a new
value, a record) land among them and pin their arenas. A child forked for
the work sees the daemon's state as it was (copy on write), sends back only
its results, pickled, and exits.

The child is given pure work: it must not touch the event loop, a database
connection or a lock another thread may hold. Where there is no fork, or it
fails (no memory, too many processes), the work runs here instead. A child
that dies or overruns its time is killed and its work is lost (the caller
hears `ChildLost`); from then on, all work runs here.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import pickle
import select
import signal
import struct
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Generic, TypeVar

__all__ = ["CHILD_TIMEOUT", "ChildLost", "ForkedWork", "WorkFailed"]

T = TypeVar("T")
log = logging.getLogger(__name__)

CHILD_TIMEOUT = 300.0  # seconds a child may take before it is killed
_READ = 1 << 20
# Frames: kind, then the payload's length, then the payload (a pickle).
_HEAD = struct.Struct("<cQ")
_ITEM, _DONE, _ERROR = b"i", b"d", b"e"
# Signals the daemon handles: in a child they would wake the daemon's loop
# through the wakeup fd the two share, so the child takes the defaults back.
_RESET = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class WorkFailed(RuntimeError):
    """The work raised in the child; the message holds the child's traceback."""


class ChildLost(RuntimeError):
    """The child died, or overran its time, before it sent all its results."""


class _KeyPickler(pickle.Pickler):
    """Sends known strings (tag keys) as their index: the parent keeps its own copies."""

    def __init__(self, file: io.BufferedIOBase, index: dict[str, int]) -> None:
        super().__init__(file, pickle.HIGHEST_PROTOCOL)
        self._index = index

    def persistent_id(self, obj: Any) -> int | None:
        return self._index.get(obj) if type(obj) is str else None


class _KeyUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, keys: Sequence[str]) -> None:
        super().__init__(io.BytesIO(data))
        self._keys = keys

    def persistent_load(self, pid: Any) -> str:
        return self._keys[int(pid)]


class ForkedWork(Generic[T]):
    """`work()`'s items, made in a child forked when this is created.

    keys: strings the results are full of (tag keys): they come back as the
    parent's own objects rather than as copies. timeout: seconds the child
    may take before it is killed.

    Create it, then `await items()` (or call `items_now()` where blocking is
    fine); the items are unpickled one at a time as the caller iterates.
    Where no child could be forked, `work()` ran at creation, here.
    """

    def __init__(
        self,
        work: Callable[[], Iterable[T]],
        keys: Sequence[str] = (),
        timeout: float = CHILD_TIMEOUT,
    ) -> None:
        self._keys = keys
        self._timeout = timeout
        self._local: list[T] = []
        self._child: tuple[int, int] | None = _fork(work, keys)
        if self._child is None:
            self._local = list(work())

    @property
    def forked(self) -> bool:
        """Whether the work runs in a child (rather than ran here already)."""
        return self._child is not None

    async def items(self) -> Iterator[T]:
        """The work's items.

        Raises:
            WorkFailed: the work raised in the child.
            ChildLost: the child died or overran its time.
        """
        child, self._child = self._child, None
        if child is None:
            return self._take_local()
        data = await asyncio.to_thread(_collect, *child, self._timeout)
        return _frames(data, self._keys)

    def items_now(self) -> Iterator[T]:
        """`items`, waiting for the child in this thread."""
        child, self._child = self._child, None
        if child is None:
            return self._take_local()
        return _frames(_collect(*child, self._timeout), self._keys)

    def __del__(self) -> None:
        # Dropped without being asked for its items: no zombie is left behind.
        child, self._child = getattr(self, "_child", None), None
        if child is not None:
            os.close(child[1])
            _kill(child[0])

    def _take_local(self) -> Iterator[T]:
        local, self._local = self._local, []
        return iter(local)


# Set when a child was lost: forking may not work here (a lock a thread held
# at the fork, the OOM killer), so all later work runs in the daemon.
_lost: list[str] = []


def _fork(work: Callable[[], Iterable[Any]], keys: Sequence[str]) -> tuple[int, int] | None:
    """Fork a child that writes `work()`'s items to a pipe; (pid, read end), or None."""
    if _lost or not hasattr(os, "fork") or os.environ.get("EDGEOPT_NO_FORK"):
        return None
    try:
        read_end, write_end = os.pipe()
    except OSError:
        return None
    try:
        pid = os.fork()
    except OSError as exc:
        os.close(read_end)
        os.close(write_end)
        log.debug("cannot fork (%s): the work runs in the daemon", exc)
        return None
    if pid == 0:  # pragma: no cover - the child; what it sends is checked in the parent
        status = 1
        try:
            os.close(read_end)
            _child_setup()
            with os.fdopen(write_end, "wb") as out:
                _send(out, work, keys)
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    return pid, read_end


def _child_setup() -> None:  # pragma: no cover - runs in the child
    import gc

    # The child lives for one piece of work: a collection would only walk
    # (and so copy) the daemon's objects.
    gc.disable()
    try:
        signal.set_wakeup_fd(-1)
        for sig in _RESET:
            signal.signal(sig, signal.SIG_DFL)
    except ValueError:  # forked from a thread other than the main one
        pass
    try:
        import asyncio

        asyncio.events._set_running_loop(None)  # the daemon's loop is not the child's
    except Exception:
        pass


def _send(
    out: io.BufferedIOBase, work: Callable[[], Iterable[Any]], keys: Sequence[str]
) -> None:  # pragma: no cover - runs in the child
    index = {k: i for i, k in enumerate(keys)}
    try:
        for item in work():
            buffer = io.BytesIO()
            _KeyPickler(buffer, index).dump(item)
            _write_frame(out, _ITEM, buffer.getbuffer())
    except BaseException:
        _write_frame(out, _ERROR, traceback.format_exc().encode())
        return
    _write_frame(out, _DONE, b"")


def _write_frame(out: io.BufferedIOBase, kind: bytes, payload: Any) -> None:
    out.write(_HEAD.pack(kind, len(payload)))
    out.write(payload)


def _collect(pid: int, read_end: int, timeout: float) -> bytes:
    """Everything the child sent, up to its last frame; the child is reaped.

    Raises:
        WorkFailed: the work raised (the child's traceback in the message).
        ChildLost: the child died or overran `timeout`, and was killed.
    """
    deadline = time.monotonic() + timeout
    buf = bytearray()
    pos = 0  # the start of the first frame not yet seen whole
    last: bytes | None = None
    try:
        while last is None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([read_end], [], [], left)[0]:
                _kill(pid)
                raise _lose(f"no result within {timeout:g} s")
            chunk = os.read(read_end, _READ)
            if not chunk:
                raise _lose(f"the child ended ({_ended(_reap(pid))}) before its last result")
            buf += chunk
            while len(buf) - pos >= _HEAD.size:
                kind, size = _HEAD.unpack_from(buf, pos)
                end = pos + _HEAD.size + size
                if len(buf) < end:
                    break
                if kind != _ITEM:
                    last = kind
                    if kind == _ERROR:
                        message = bytes(buf[pos + _HEAD.size : end]).decode(errors="replace")
                        _reap(pid)
                        raise WorkFailed(message.rstrip())
                    break
                pos = end
    finally:
        os.close(read_end)
    _reap(pid)
    return bytes(buf)


def _frames(data: bytes, keys: Sequence[str]) -> Iterator[Any]:
    pos = 0
    while True:
        kind, size = _HEAD.unpack_from(data, pos)
        if kind != _ITEM:
            return
        start = pos + _HEAD.size
        pos = start + size
        yield _KeyUnpickler(data[start:pos], keys).load()


def _lose(reason: str) -> ChildLost:
    if not _lost:
        log.warning("forked work lost: %s; from now on such work runs in the daemon", reason)
    _lost.append(reason)
    return ChildLost(reason)


def _ended(status: int) -> str:
    if status < 0:
        return "not found"
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit status {os.WEXITSTATUS(status)}"


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    _reap(pid)


def _reap(pid: int) -> int:
    try:
        return os.waitpid(pid, 0)[1]
    except ChildProcessError:
        return -1
