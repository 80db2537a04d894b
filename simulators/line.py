"""A simulated RS-485 line: two pseudo-terminals joined by a relay that runs at a baud rate.

A plain pty pair moves bytes at memory speed, so it says nothing about a
9600-baud bus (BENCHMARK.md section 4). `PtyLine` creates two pty pairs, one
for the server (the devices) and one for the client (the master), and a
relay thread copies bytes between them. With a baud rate, every byte takes
`bits_per_char / baudrate` seconds on the wire: a byte is delivered only once
the wire has carried it, bytes queue behind each other, and idle time is
never compressed, so silences between frames survive.

With `record=True` the line keeps a log of its turns (`turns()`): each run
of bytes one way, with when it started and when the wire delivered its last
byte. `alternation_problems` checks such a log for a strict master/slave
exchange: one request, its reply, the next request, never two at once.
"""

from __future__ import annotations

import errno
import os
import select
import threading
import time
import tty
from collections import deque
from dataclasses import dataclass
from types import TracebackType

__all__ = ["LineTurn", "PtyLine", "alternation_problems"]


@dataclass
class LineTurn:
    """Bytes sent one way without the other side talking in between."""

    direction: str  # "request" (master to devices) or "reply"
    start: float  # time.monotonic() the first byte reached the line
    end: float  # when the wire delivered the last byte
    data: bytes


class _Direction:
    """Bytes in flight one way: segments of (time the first byte starts, data)."""

    __slots__ = ("delivered", "dropped", "dst", "queue", "src", "wire_free")

    def __init__(self, src: int, dst: int) -> None:
        self.src = src
        self.dst = dst
        self.queue: deque[tuple[float, bytes]] = deque()
        self.wire_free = 0.0
        self.delivered = 0
        self.dropped = 0


class PtyLine:
    """Two ptys joined by a relay; open `server_path` in the server, `client_path` in the client.

    baudrate None relays at once (still through the relay). Directions are
    timed independently (a Modbus master never talks over its slaves), except
    for the optional enforced silence between frames (`silence_chars`).
    Use as a context manager, or call close().
    """

    def __init__(
        self,
        baudrate: int | None = None,
        bits_per_char: int = 11,
        silence_chars: float = 0.0,
        record: bool = False,
    ) -> None:
        if baudrate is not None and baudrate <= 0:
            raise ValueError("baudrate must be positive")
        self.baudrate = baudrate
        self.bits_per_char = bits_per_char
        self.char_time = bits_per_char / baudrate if baudrate else 0.0
        # Idle time the line enforces before a new frame, after the last byte
        # either way (3.5 for a conforming RTU bus). 0 leaves the silences to
        # the endpoints, as a real wire does.
        self.silence = silence_chars * self.char_time
        self.record = record
        self._turns: list[LineTurn] = []
        self._turns_lock = threading.Lock()
        self._fds: list[int] = []
        try:
            m_srv, s_srv = self._open_pair()
            m_cli, s_cli = self._open_pair()
        except BaseException:
            self._close_fds()
            raise
        self.server_path = os.ttyname(s_srv)
        self.client_path = os.ttyname(s_cli)
        self._to_server = _Direction(m_cli, m_srv)
        self._to_client = _Direction(m_srv, m_cli)
        self._wake_r, self._wake_w = os.pipe()
        self._fds += [self._wake_r, self._wake_w]
        self._stop = False
        self._thread = threading.Thread(
            target=self._run, name=f"PtyLine {self.client_path}", daemon=True
        )
        self._thread.start()

    def _open_pair(self) -> tuple[int, int]:
        master, slave = os.openpty()
        self._fds += [master, slave]
        # Raw mode on the slave: no echo (it would loop bytes back into the
        # relay), no line editing, no CR/LF translation. We keep our slave fd
        # open so the master never reads EIO while no one has the port open.
        tty.setraw(slave)
        os.set_blocking(master, False)
        return master, slave

    # ------------------------------------------------------------------ relay
    def _schedule(self, d: _Direction, data: bytes, now: float) -> None:
        start = max(now, d.wire_free)
        if self.silence and now >= d.wire_free:
            # The wire was idle this way, so this is a new frame: it waits
            # out the silence after the last frame in either direction.
            other = self._to_client if d is self._to_server else self._to_server
            start = max(start, d.wire_free + self.silence, other.wire_free + self.silence)
        d.wire_free = start + len(data) * self.char_time
        d.queue.append((start, data))
        if self.record:
            direction = "request" if d is self._to_server else "reply"
            with self._turns_lock:
                last = self._turns[-1] if self._turns else None
                if last is not None and last.direction == direction:
                    last.data += data
                    last.end = d.wire_free
                else:
                    self._turns.append(LineTurn(direction, now, d.wire_free, data))

    def turns(self) -> list[LineTurn]:
        """The recorded turns so far (a copy; empty unless `record`)."""
        with self._turns_lock:
            return [LineTurn(t.direction, t.start, t.end, t.data) for t in self._turns]

    def _deliver(self, d: _Direction, now: float) -> float | None:
        """Write the bytes the wire has finished carrying; return when the next one is due."""
        ct = self.char_time
        while d.queue:
            start, data = d.queue[0]
            # Byte j (0-based) is fully on the other side at start + (j+1) * ct.
            n = min(len(data), int((now - start) / ct + 1e-9)) if ct else len(data)
            if n <= 0:
                return start + ct
            self._write(d, data[:n])
            if n == len(data):
                d.queue.popleft()
            else:
                d.queue[0] = (start + n * ct, data[n:])
                return start + (n + 1) * ct
        return None

    def _write(self, d: _Direction, data: bytes) -> None:
        try:
            written = os.write(d.dst, data)
        except BlockingIOError:
            written = 0
        except OSError:
            written = 0
        # Nobody reading the far end: bytes fall off the wire, as on a real bus.
        d.delivered += written
        d.dropped += len(data) - written

    def _run(self) -> None:
        dirs = (self._to_server, self._to_client)
        readers = [self._to_server.src, self._to_client.src, self._wake_r]
        while not self._stop:
            now = time.monotonic()
            due = [t for t in (self._deliver(d, now) for d in dirs) if t is not None]
            timeout = max(0.0, min(due) - time.monotonic()) if due else None
            try:
                ready, _, _ = select.select(readers, [], [], timeout)
            except OSError:
                break
            if not ready:
                continue
            now = time.monotonic()
            for d in dirs:
                if d.src in ready:
                    try:
                        data = os.read(d.src, 4096)
                    except BlockingIOError:
                        continue
                    except OSError as exc:
                        # EIO: transient hang-up of the far end; keep serving.
                        if exc.errno != errno.EIO:
                            raise
                        time.sleep(0.01)
                        continue
                    if data:
                        self._schedule(d, data, now)
            if self._wake_r in ready:
                try:
                    os.read(self._wake_r, 64)
                except OSError:
                    pass

    # -------------------------------------------------------------- lifecycle
    @property
    def stats(self) -> dict[str, int]:
        """Bytes delivered (and dropped) per direction."""
        return {
            "to_server": self._to_server.delivered,
            "to_client": self._to_client.delivered,
            "dropped": self._to_server.dropped + self._to_client.dropped,
        }

    def close(self) -> None:
        """Stop the relay and close the ptys (idempotent)."""
        if not self._stop:
            self._stop = True
            try:
                os.write(self._wake_w, b"x")
            except OSError:
                pass
            self._thread.join(timeout=2.0)
        self._close_fds()

    def _close_fds(self) -> None:
        for fd in self._fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds = []

    def __enter__(self) -> PtyLine:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        # Best effort: a line left open must not keep its thread spinning.
        if getattr(self, "_fds", None):
            self.close()


def _request_size(data: bytes, at: int) -> int | None:
    """Length of the RTU request frame at data[at], or None if it is not one we know."""
    if len(data) - at < 2:
        return None
    fc = data[at + 1]
    if fc in (1, 2, 3, 4, 5, 6):
        return 8
    if fc in (15, 16):
        return 9 + data[at + 6] if len(data) - at > 6 else None
    if fc == 22:
        return 10
    return None


def alternation_problems(turns: list[LineTurn]) -> list[str]:
    """Where a recorded line broke strict alternation (empty: it never did).

    Strict: turns alternate request, reply, request, ...; each request turn
    is exactly one request frame; and no turn starts before the wire has
    delivered the one before it (nobody talks over anybody).
    """
    problems: list[str] = []
    for n, turn in enumerate(turns):
        if n and turn.direction == turns[n - 1].direction:
            problems.append(f"turn {n}: two {turn.direction}s in a row")
        if n and turn.start < turns[n - 1].end - 1e-4:
            problems.append(
                f"turn {n}: starts {turns[n - 1].end - turn.start:.4f}s before the last ends"
            )
        if turn.direction == "request":
            frames, at = 0, 0
            while at < len(turn.data):
                size = _request_size(turn.data, at)
                if size is None:
                    problems.append(f"turn {n}: unknown request bytes {turn.data[at:].hex()}")
                    break
                frames, at = frames + 1, at + size
            if frames > 1:
                problems.append(f"turn {n}: {frames} requests sent without a reply between")
    return problems
