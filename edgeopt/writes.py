"""Verified device writes: refuse early, write once between reads, read back, audit every attempt.

`WriteService.write` is the one entry point (the control socket calls it;
a northbound command topic can call it the same way with its own `Caller`).
Each write is a one-shot job on the tag's line (`LineWorker.submit`), so it
never overlaps a read; planning is pure (`edgeopt.modbus.writeplan`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from edgeopt.clock import Clock
from edgeopt.config.durations import parse_duration
from edgeopt.events import EventLog
from edgeopt.lines import LineWork
from edgeopt.modbus.health import DeviceState
from edgeopt.modbus.transport import ReadError, ReadResult, Transport
from edgeopt.modbus.writeplan import (
    FC_MASK_WRITE,
    WritePlan,
    WriteRefused,
    WriteRequest,
    plan_write,
)
from edgeopt.poller import DeviceRuntime, Poller, TagRuntime
from edgeopt.tags import Value

__all__ = ["Caller", "WriteOutcome", "WriteRefused", "WriteService"]

log = logging.getLogger(__name__)

ILLEGAL_FUNCTION = 1
# Pause between read-backs while a device has not yet taken the value.
VERIFY_PAUSE = 0.2
# A write job waits at most this long beyond its own timeouts for its line:
# a line busy with one slow read is normal; one that never gets free is not.
QUEUE_SLACK = 10.0


@dataclass(frozen=True, slots=True)
class Caller:
    """Who asks for a write, for the audit: a control-socket peer, or a northbound target."""

    name: str
    uid: int = -1
    pid: int = -1


@dataclass(slots=True)
class WriteOutcome:
    """What a write did (the control socket's `write` result, CONTRACT.md).

    `result` is ok | mismatch | exception | timeout; `read_back` is what the
    device holds afterwards (None when not verified or not readable).
    """

    tag: str
    requested: Value
    written: Value
    result: str
    read_back: Value | None = None
    exception_code: int | None = None
    message: str = ""
    old: Value | None = None
    function: int | None = None

    @property
    def ok(self) -> bool:
        return self.result == "ok"

    def describe(self) -> str:
        """The result as the audit and the events say it: `ok`, `exception 3`, ..."""
        if self.result == "exception" and self.exception_code is not None:
            return f"exception {self.exception_code}"
        return self.result

    def to_dict(self) -> dict[str, Any]:
        return {
            "tag": self.tag,
            "requested": self.requested,
            "written": self.written,
            "read_back": self.read_back,
            "result": self.result,
            "exception_code": self.exception_code,
            "message": self.message,
            "old": self.old,
            "function": self.function,
        }


# (caller, details, result) → one row in the audit table.
WriteAudit = Callable[[Caller, dict[str, Any], str], Awaitable[None]]
# Runs one-shot work on a line (the daemon's LineWorker.submit for that line).
SubmitJob = Callable[[str, LineWork], "asyncio.Future[Any]"]


class WriteService:
    """Validates, rate-limits, schedules, verifies and audits writes.

    Args:
        poller: tags, devices and their health; takes the read-back values.
        submit: runs a job on a line, between its reads.
        clock: monotonic time for rate limits and timeouts, wall time for events.
        events: each attempt is an event (`events` shows it).
        audit: writes each attempt, refused or not, to the audit table.
    """

    def __init__(
        self,
        *,
        poller: Poller,
        submit: SubmitJob,
        clock: Clock,
        events: EventLog,
        audit: WriteAudit | None = None,
    ) -> None:
        self.poller = poller
        self._submit = submit
        self._clock = clock
        self._events = events
        self._audit = audit
        self._last_write: dict[str, float] = {}  # tag -> monotonic time of its last write
        self._no_mask_write: set[str] = set()  # devices that answered FC22 with exception 1

    async def write(
        self,
        tag: object,
        value: object,
        *,
        caller: Caller,
        verify: object = None,
        verify_timeout: object = None,
    ) -> WriteOutcome:
        """Write `value` to `tag` (DEVICE/NAME) and, unless told not to, verify it.

        `verify` (bool) and `verify_timeout` (a duration: the read-back's patience)
        override the tag's `write.verify` and `write.verify_timeout`.

        Raises:
            WriteRefused: the write was refused before it reached the device
                (bad arguments, not writable, offline, rate limited, line busy).
        """
        details: dict[str, Any] = {"tag": tag, "value": value, "caller": caller.name}
        if verify is not None:
            details["verify"] = verify
        if verify_timeout is not None:
            details["verify_timeout"] = verify_timeout
        try:
            outcome = await self._write(tag, value, verify, verify_timeout, details)
        except WriteRefused as exc:
            details["reason"] = exc.message
            self._event(f"write to {tag} refused: {exc.message}", details, exc.code)
            await self._record(caller, details, exc.code)
            raise
        except Exception as exc:  # a bug, not a refusal: still audited, then reported
            details["reason"] = f"{type(exc).__name__}: {exc}"
            self._event(f"write to {tag} failed: {details['reason']}", details, "internal")
            await self._record(caller, details, "internal")
            raise
        details.update(
            old=outcome.old,
            written=outcome.written,
            read_back=outcome.read_back,
            function=outcome.function,
        )
        if outcome.message:
            details["reason"] = outcome.message
        result = outcome.describe()
        message = f"write {outcome.tag} = {outcome.requested!r}: {result}"
        if outcome.read_back is not None and not outcome.ok:
            message += f" (the device holds {outcome.read_back!r})"
        self._event(message, details, result)
        await self._record(caller, details, result)
        return outcome

    async def _write(
        self,
        tag_arg: object,
        value: object,
        verify_arg: object,
        timeout_arg: object,
        details: dict[str, Any],
    ) -> WriteOutcome:
        if not isinstance(tag_arg, str) or "/" not in tag_arg:
            raise WriteRefused("invalid_args", "tag must be a string DEVICE/NAME")
        tag = self.poller.tags.get(tag_arg)
        if tag is None:
            raise WriteRefused("not_found", f"no tag named {tag_arg!r}")
        config = tag.config
        if not config.writable:
            raise WriteRefused(
                "invalid_args", f"{tag.key} is not writable (its config needs writable: true)"
            )
        settings = config.write_settings
        if verify_arg is not None and not isinstance(verify_arg, bool):
            raise WriteRefused("invalid_args", "verify must be true or false")
        verify = settings.verify if verify_arg is None else verify_arg
        verify_timeout = float(settings.verify_timeout)
        if timeout_arg is not None:
            verify_timeout = _timeout(timeout_arg)
        device = self.poller.devices.get(tag.device)
        if device is None:
            raise WriteRefused("not_found", f"no device named {tag.device!r}")
        plan = plan_write(
            config,
            tag.key,
            tag.codec,
            value,
            low=settings.min,
            high=settings.max,
            function=settings.function,
            mask_write=device.name not in self._no_mask_write,
        )
        details["requested"] = plan.requested
        if device.health.state is DeviceState.OFFLINE:
            error = device.health.last_error or "no answer"
            raise WriteRefused("offline", f"device {device.name} is offline ({error})")
        now = self._clock.monotonic()
        last = self._last_write.get(tag.key)
        gap = float(settings.min_interval)
        if last is not None and now - last < gap:
            raise WriteRefused(
                "rate_limited",
                f"{tag.key} was written {now - last:.2f}s ago; at most one write every "
                f"{gap:g}s (write.min_interval); try again in {gap - (now - last):.2f}s",
            )
        self._last_write[tag.key] = now
        old = tag.state.value
        outcome = await self._run(tag, device, plan, verify, verify_timeout)
        outcome.old = old
        wall, now = self._clock.now(), self._clock.monotonic()
        if outcome.read_back is not None and outcome.result in ("ok", "mismatch"):
            # The device took a value (maybe not ours): the tag shows it, as a change.
            self.poller.record_write(tag.key, outcome.read_back, wall, now)
        else:
            self.poller.read_soon(tag.key, now)  # unverified or unknown: look soon
        return outcome

    async def _run(
        self,
        tag: TagRuntime,
        device: DeviceRuntime,
        plan: WritePlan,
        verify: bool,
        verify_timeout: float,
    ) -> WriteOutcome:
        """The write job, then read-back jobs until the value shows or verify_timeout passes."""
        budget = device.config.timeout * (device.config.retries + 1)
        step = _WriteStep(plan, device, verify, self._no_mask_write)
        outcome = await self._on_line(device, step.run, 4 * budget)
        if not verify or outcome.result != "mismatch" or step.conflict:
            return outcome
        # The device answered with another value; some take a moment to apply
        # a setpoint. Look again (each look a job between reads) until the deadline.
        deadline = self._clock.monotonic() + verify_timeout
        while self._clock.monotonic() + VERIFY_PAUSE < deadline:
            await asyncio.sleep(VERIFY_PAUSE)
            again = await self._on_line(device, step.read_back_once, 2 * budget)
            if again.result != "mismatch":
                return again
            outcome = again
        return outcome

    async def _on_line(self, device: DeviceRuntime, work: LineWork, budget: float) -> WriteOutcome:
        try:
            future = self._submit(device.line, work)
        except KeyError:
            raise WriteRefused("unavailable", f"line {device.line} is not running") from None
        try:
            async with asyncio.timeout(budget + QUEUE_SLACK):
                outcome: WriteOutcome = await asyncio.shield(future)
        except TimeoutError:
            future.cancel()
            raise WriteRefused(
                "unavailable",
                f"line {device.line} gave no result within {budget + QUEUE_SLACK:g}s; "
                "whether the write was sent is unknown: read the tag before trying again",
            ) from None
        except RuntimeError as exc:  # the line stopped (a reload or shutdown)
            raise WriteRefused("unavailable", str(exc)) from None
        return outcome

    def _event(self, message: str, details: dict[str, Any], result: str) -> None:
        self._events.emit(self._clock.now(), "write", message, result=result, **details)
        if result == "ok":
            log.info("%s", message)
        else:
            log.warning("%s", message)

    async def _record(self, caller: Caller, details: dict[str, Any], result: str) -> None:
        if self._audit is None:
            return
        try:
            await self._audit(caller, details, result)
        except Exception:
            log.exception("could not write the audit record of a write to %s", details.get("tag"))


def _timeout(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise WriteRefused("invalid_args", f"timeout must be a duration like 2s, not {value!r}")
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise WriteRefused("invalid_args", f"timeout: {exc}") from None
    if seconds < 0:
        raise WriteRefused("invalid_args", "timeout must not be negative")
    return seconds


class _WriteStep:
    """The line job: write once, then read back; runs with the line to itself.

    After a write that got no answer it reads first, and writes again (once)
    only if the value is not there: a write is never repeated blindly.
    """

    def __init__(
        self, plan: WritePlan, device: DeviceRuntime, verify: bool, no_mask_write: set[str]
    ) -> None:
        self.plan = plan
        self.device = device
        self.verify = verify
        self.unit = int(device.config.unit)
        self.conflict = False
        self._no_mask_write = no_mask_write
        self._rmw_before: int | None = None  # the register before a read-modify-write
        self._rmw_after: int | None = None  # and as read back afterwards

    def _outcome(self, result: str, **extra: Any) -> WriteOutcome:
        plan = self.plan
        return WriteOutcome(plan.tag, plan.requested, plan.written, result, **extra)

    async def run(self, transport: Transport) -> WriteOutcome:
        request = await self._first_request(transport)
        if isinstance(request, WriteOutcome):
            return request
        ack = await transport.write(request, self.unit)
        if ack.exception_code == ILLEGAL_FUNCTION and request.function == FC_MASK_WRITE:
            self._no_mask_write.add(self.device.name)
            log.warning(
                "device %s does not take mask writes (FC22); writing bits by read-modify-write",
                self.device.name,
            )
            request = await self._read_modify(transport)
            if isinstance(request, WriteOutcome):
                return request
            ack = await transport.write(request, self.unit)
        fc = request.function
        if ack.error is ReadError.EXCEPTION:
            return self._exception(ack, fc)
        if not ack.ok:
            # The request or its answer was lost: the device may hold the value
            # already. Read first; write again (once) only if it does not.
            seen = await self._read(transport)
            if isinstance(seen, ReadResult):
                return self._outcome("timeout", message=f"write: {ack.describe()}", function=fc)
            if self.plan.holds(seen):
                return self._outcome(
                    "ok",
                    read_back=seen,
                    function=fc,
                    message="the write's answer was lost, but the device holds the value",
                )
            if fc != FC_MASK_WRITE and self.plan.bit_mask is not None:
                request = await self._read_modify(transport)  # the register may have moved
                if isinstance(request, WriteOutcome):
                    return request
            ack = await transport.write(request, self.unit)
            if ack.error is ReadError.EXCEPTION:
                return self._exception(ack, fc)
        if not self.verify:
            if not ack.ok:
                return self._outcome("timeout", message=f"write: {ack.describe()}", function=fc)
            return self._outcome("ok", function=fc, message="not verified")
        outcome = await self.read_back_once(transport)
        outcome.function = fc
        if not ack.ok and not outcome.ok:
            outcome.result, outcome.message = "timeout", f"write: {ack.describe()}"
        return outcome

    async def _first_request(self, transport: Transport) -> WriteRequest | WriteOutcome:
        if self.plan.request is not None:
            return self.plan.request
        return await self._read_modify(transport)

    def _exception(self, ack: ReadResult, fc: int) -> WriteOutcome:
        return self._outcome(
            "exception", exception_code=ack.exception_code, message=ack.describe(), function=fc
        )

    async def read_back_once(self, transport: Transport) -> WriteOutcome:
        """Read the tag's registers and judge them against the value written."""
        seen = await self._read(transport)
        if isinstance(seen, ReadResult):
            result = "exception" if seen.error is ReadError.EXCEPTION else "timeout"
            return self._outcome(
                result, exception_code=seen.exception_code, message=f"read-back: {seen.describe()}"
            )
        if self.plan.holds(seen):
            return self._outcome("ok", read_back=seen)
        message = f"the device holds {seen!r}, not {self.plan.written!r}"
        if self._rmw_before is not None and self._others_changed():
            message = "other bits of the register changed during the read-modify-write"
        return self._outcome("mismatch", read_back=seen, message=message)

    def _others_changed(self) -> bool:
        mask = self.plan.bit_mask or 0
        before, after = self._rmw_before, self._rmw_after
        return before is not None and after is not None and (before ^ after) & ~mask & 0xFFFF != 0

    async def _read(self, transport: Transport) -> Value | ReadResult:
        """The tag's value now, or the failed read."""
        plan = self.plan
        result = await transport.read(plan.table, plan.address, plan.count, self.unit)
        if not result.ok or result.values is None:
            return result
        if plan.bit_mask is not None:
            self._rmw_after = int(result.values[0])
        try:
            return plan.decode(result.values)
        except ValueError as exc:
            return ReadResult(None, result.latency, ReadError.GARBAGE, message=str(exc))

    async def _read_modify(self, transport: Transport) -> WriteRequest | WriteOutcome:
        """Read the register twice; refuse if it changed in between, else the new register."""
        plan = self.plan
        words: list[int] = []
        for _ in range(2):
            result = await transport.read(plan.table, plan.address, 1, self.unit)
            if not result.ok or not result.values:
                kind = "exception" if result.error is ReadError.EXCEPTION else "timeout"
                return self._outcome(
                    kind,
                    exception_code=result.exception_code,
                    message=f"read before read-modify-write: {result.describe()}",
                )
            words.append(int(result.values[0]))
        if words[0] != words[1]:
            self.conflict = True
            return self._outcome(
                "conflict",
                message=(
                    f"register {plan.address} changed between two reads ({words[0]:#06x} → "
                    f"{words[1]:#06x}); a read-modify-write could undo that change, so nothing "
                    "was written"
                ),
            )
        self._rmw_before = words[1]
        return plan.rmw_request(words[1])
