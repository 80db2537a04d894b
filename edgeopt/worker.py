"""A helper process for work whose imports the daemon must not hold (numpy, scikit-learn).

`WorkerProcess` runs `python -m MODULE` as a plain child process, started on
first use, reused by requests close together, and stopped when idle for
`idle_exit` seconds (or on `close()`), so its memory goes back to the system
between bursts of work. The module's `__main__` calls `main(handlers)`.
Requests and replies are pickles, length-prefixed, over the worker's stdin
and stdout; each carries a sequence number, so a reply can only ever answer
its own request.

A plain process, not a multiprocessing pool: a pool would also leave
multiprocessing's resource tracker (13 MB) running for the daemon's life,
and a spawned pool worker imports the parent's main module (the whole
daemon) first. This worker imports only its module.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import os
import pickle
import signal
import struct
import sys
import traceback
import typing
from collections.abc import Callable, Collection, Mapping
from typing import Any

__all__ = [
    "IDLE_EXIT",
    "WorkerDied",
    "WorkerError",
    "WorkerFailed",
    "WorkerProcess",
    "WorkerStartFailed",
    "main",
    "serve",
]

#: A worker unused this long exits; the next request starts a new one.
IDLE_EXIT = 120.0
# A frame's head: the payload's length.
_HEAD = struct.Struct(">Q")
# The request every worker answers: the modules it has imported.
_MODULES = "modules"


class WorkerError(RuntimeError):
    """Raised when a worker could not answer a request; nothing it sent is used."""


class WorkerStartFailed(WorkerError):
    """Raised when the worker process cannot be started (fork or exec failed)."""


class WorkerDied(WorkerError):
    """Raised when the worker ended in the middle of a request; the next one starts a new worker."""


class WorkerFailed(WorkerError):
    """Raised when the request raised in the worker.

    Attributes:
        kind: the exception's type name in the worker (e.g. "CodecError").
        details: the worker's traceback.
    """

    def __init__(self, message: str, *, kind: str, details: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.details = details


class WorkerProcess:
    """`python -m MODULE`, started lazily, answering one request at a time, stopped when idle.

    Args:
        module: the worker's module; its `__main__` calls `main(handlers)`.
        name: what logs and errors call it (default: the module).
        idle_exit: seconds without a request after which the worker is stopped.
        reply_modules: if given, replies may hold only builtins and the classes
            of these modules: unpickling anything else (numpy's float64, an
            ndarray) raises `WorkerError` instead of importing its module here.
    """

    def __init__(
        self,
        module: str,
        *,
        name: str | None = None,
        idle_exit: float = IDLE_EXIT,
        reply_modules: Collection[str] | None = None,
    ) -> None:
        self.module = module
        self.name = name or module
        self.idle_exit = idle_exit
        self._reply_modules = None if reply_modules is None else frozenset(reply_modules)
        self._proc: asyncio.subprocess.Process | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._lock = asyncio.Lock()
        self._seq = itertools.count()
        self._closed = False  # by `aclose`: no worker is started again

    @property
    def started(self) -> bool:
        return self._proc is not None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    async def call(self, request: str, *args: Any) -> Any:
        """The worker's answer to `request(*args)`.

        Raises:
            WorkerStartFailed: the worker could not be started.
            WorkerDied: it ended before it answered.
            WorkerFailed: the request raised in the worker.
            WorkerError: the reply holds a class outside `reply_modules`, or
                `aclose` was called.
        """
        async with self._lock:
            if self._idle is not None:
                self._idle.cancel()
                self._idle = None
            try:
                proc = await self._started()
                if self._closed:  # while it started
                    raise WorkerError(f"the {self.name} is closed")
                seq = next(self._seq)
                await self._send(proc, _dumps((seq, request, args)))
                answered, ok, reply = self._loads(await self._receive(proc))
                if answered != seq:
                    raise WorkerError(f"the {self.name} answered request {answered}, not {seq}")
            except BaseException as exc:
                # Cancelled or broken mid-request, its reply would answer the
                # next request: never reuse this worker.
                stopped = self.close()
                if isinstance(exc, asyncio.IncompleteReadError | ConnectionError):
                    raise WorkerDied(
                        f"the {self.name} ended in the middle of a request "
                        f"({await _ended(stopped)})"
                    ) from exc
                raise
            finally:
                if self._proc is not None:
                    loop = asyncio.get_running_loop()
                    self._idle = loop.call_later(self.idle_exit, self.close)
        if not ok:
            kind, message, details = reply
            raise WorkerFailed(f"{self.name}: {kind}: {message}", kind=kind, details=details)
        return reply

    async def loaded_modules(self) -> list[str]:
        """The modules the worker has imported (what it holds in memory)."""
        return typing.cast(list[str], await self.call(_MODULES))

    async def _started(self) -> asyncio.subprocess.Process:
        if self._closed:
            raise WorkerError(f"the {self.name} is closed")
        if self._proc is None or self._proc.returncode is not None:
            try:
                self._proc = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    self.module,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                )
            except OSError as exc:
                raise WorkerStartFailed(
                    f"cannot start the {self.name} ({sys.executable} -m {self.module}): {exc}"
                ) from exc
        return self._proc

    async def _send(self, proc: asyncio.subprocess.Process, data: bytes) -> None:
        assert proc.stdin is not None
        proc.stdin.write(_HEAD.pack(len(data)) + data)
        await proc.stdin.drain()

    async def _receive(self, proc: asyncio.subprocess.Process) -> bytes:
        assert proc.stdout is not None
        (size,) = _HEAD.unpack(await proc.stdout.readexactly(_HEAD.size))
        return await proc.stdout.readexactly(size)

    def _loads(self, data: bytes) -> Any:
        try:
            if self._reply_modules is None:
                return pickle.loads(data)
            return _RestrictedUnpickler(data, self._reply_modules).load()
        except _Refused as exc:
            raise WorkerError(f"the {self.name}'s reply holds {exc}, not allowed here") from None
        except Exception as exc:
            raise WorkerError(f"the {self.name}'s reply cannot be read: {exc!r}") from exc

    def close(self) -> asyncio.subprocess.Process | None:
        """Stop the worker (it is started again when next needed); returns the stopped one."""
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()  # it holds nothing worth a clean exit
        return proc

    async def aclose(self) -> None:
        """`close` for good (no worker starts again), and wait until it is gone."""
        self._closed = True
        proc = self.close()
        if proc is not None:
            await proc.wait()
            await proc.communicate()  # drains and closes the pipes


class _Refused(pickle.UnpicklingError):
    pass


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles only builtins and the classes of the allowed modules."""

    def __init__(self, data: bytes, modules: frozenset[str]) -> None:
        super().__init__(io.BytesIO(data))
        self._modules = modules

    def find_class(self, module: str, name: str) -> Any:
        if module == "builtins" or module in self._modules:
            return super().find_class(module, name)
        raise _Refused(f"{module}.{name}")


def _dumps(obj: Any) -> bytes:
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, pickle.HIGHEST_PROTOCOL)
    # Requests and replies are trees of plain values (nothing refers to
    # itself): without the memo, a day of points pickles in a third of the time.
    pickler.fast = True
    pickler.dump(obj)
    return buffer.getvalue()


async def _ended(proc: asyncio.subprocess.Process | None) -> str:
    """How the worker ended (it was killed by `close` if it had not)."""
    if proc is None:
        return "not started"
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(proc.wait(), 1.0)
    code = proc.returncode
    if code is None:
        return f"pid {proc.pid}, still running"
    if code < 0:
        return f"pid {proc.pid}, killed by signal {-code}"
    return f"pid {proc.pid}, exit status {code}"


# --- The worker's side ---------------------------------------------------------------


def serve(
    handlers: Mapping[str, Callable[..., Any]],
    requests: typing.BinaryIO,
    replies: typing.BinaryIO,
) -> None:
    """Answer each request with its handler until the daemon closes the pipe."""
    while True:
        head = requests.read(_HEAD.size)
        if len(head) < _HEAD.size:
            return
        (size,) = _HEAD.unpack(head)
        seq, name, args = pickle.loads(requests.read(size))
        try:
            if name == _MODULES:
                data = _dumps((seq, True, sorted(sys.modules)))
            elif name in handlers:
                data = _dumps((seq, True, handlers[name](*args)))
            else:
                data = _dumps((seq, False, ("KeyError", f"unknown request {name!r}", "")))
        except Exception as exc:  # sent to the daemon, which reports it
            data = _dumps((seq, False, (type(exc).__name__, str(exc), traceback.format_exc())))
        try:
            replies.write(_HEAD.pack(len(data)) + data)
            replies.flush()
        except BrokenPipeError:  # the daemon is gone
            return


def main(handlers: Mapping[str, Callable[..., Any]]) -> None:
    """The worker process's entry point: serve `handlers` over stdin and stdout."""
    # Replies go to the original stdout; anything else printed goes to stderr,
    # where it cannot corrupt a frame.
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    # Ctrl-C reaches the whole process group: the daemon stops this worker itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        serve(handlers, sys.stdin.buffer, replies)
    finally:
        with contextlib.suppress(BrokenPipeError):  # the daemon is gone
            replies.close()
