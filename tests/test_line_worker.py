"""Line workers: a wake or a stop ends a sleep at once, leaving no timer; one worker a line."""

from __future__ import annotations

import asyncio
import dataclasses

from edgeopt.clock import SystemClock
from edgeopt.config import parse_config
from edgeopt.lines import LineWorker, LineWorkers
from edgeopt.modbus.planner import Table
from edgeopt.modbus.transport import ReadResult
from edgeopt.poller import Poller

CONFIG = """\
devices:
  - name: meter1
    transport: tcp
    host: 192.0.2.10
    tags:
      - {name: power, table: input, address: 8, type: uint16, interval: 1h}
"""


class CountingTransport:
    def __init__(self) -> None:
        self.reads = 0

    async def read(self, table: Table, address: int, count: int, unit: int) -> ReadResult:
        self.reads += 1
        return ReadResult(values=[7] * count, latency=0.001)

    async def write(self, request: object, unit: int) -> ReadResult:  # pragma: no cover
        raise AssertionError("these tests make no writes")

    async def close(self) -> None:
        pass


def _worker() -> tuple[Poller, LineWorker, CountingTransport]:
    clock = SystemClock()
    poller = Poller(parse_config(CONFIG).devices)
    poller.replan(clock.monotonic())
    transport = CountingTransport()
    (line,) = poller.schedules
    return poller, LineWorker(line, poller, transport, clock), transport  # type: ignore[arg-type]


def _timers(loop: asyncio.AbstractEventLoop) -> int:
    return sum(1 for h in getattr(loop, "_scheduled", ()) if not h.cancelled())


async def test_a_woken_worker_reads_what_became_due_at_once() -> None:
    poller, worker, transport = _worker()
    task = asyncio.create_task(worker.run())
    await asyncio.sleep(0.05)
    assert transport.reads == 1  # the first read, then a sleep of an hour
    read = next(iter(poller.plan.reads))
    poller.read_soon(read.tags[0], SystemClock().monotonic())  # the schedule says: now
    worker.wake()
    await asyncio.sleep(0.05)
    assert transport.reads == 2
    worker.stop()
    await asyncio.wait_for(task, 1.0)


async def test_stop_ends_the_sleep_and_cancels_its_timer() -> None:
    _, worker, _ = _worker()
    loop = asyncio.get_running_loop()
    before = _timers(loop)
    task = asyncio.create_task(worker.run())
    await asyncio.sleep(0.05)
    assert _timers(loop) == before + 1  # asleep until the next read, an hour away
    worker.stop()
    await asyncio.wait_for(task, 1.0)
    assert _timers(loop) == before


async def test_a_cancelled_worker_leaves_no_timer() -> None:
    _, worker, _ = _worker()
    loop = asyncio.get_running_loop()
    before = _timers(loop)
    task = asyncio.create_task(worker.run())
    await asyncio.sleep(0.05)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()
    assert _timers(loop) == before


def test_a_reconfigured_device_decodes_into_its_new_tags_before_any_replan() -> None:
    poller = Poller(parse_config(CONFIG).devices)
    poller.replan(0.0)
    (read,) = poller.plan.reads
    poller.apply(read, ReadResult(values=[7], latency=0.001), 100.0, 0.0, 0.0)
    assert poller.tags["meter1/power"].state.value == 7
    scaled = CONFIG.replace("type: uint16,", "type: uint16, scale: 10,")
    (device,) = parse_config(scaled).devices
    poller.update_device(device)  # a new TagRuntime for the changed tag
    poller.apply(read, ReadResult(values=[7], latency=0.001), 101.0, 1.0, 1.0)
    assert poller.tags["meter1/power"].state.value == 70


async def test_a_line_whose_endpoint_changes_runs_the_new_worker_only() -> None:
    # A device's timeout changed on reload: same line, new transport. The old
    # worker must stop and the new one must be the line's (it once went the
    # other way: the stop, run later, found and stopped the new worker).
    clock = SystemClock()
    config = parse_config(CONFIG)
    poller = Poller(config.devices)
    poller.replan(clock.monotonic())
    made: list[CountingTransport] = []

    def factory(endpoint: object, clock: object) -> CountingTransport:
        made.append(CountingTransport())
        return made[-1]

    lines = LineWorkers(poller, clock, factory)  # type: ignore[arg-type]
    lines.sync()
    (line,) = lines.runners
    old = lines.runners[line]
    await asyncio.sleep(0.05)
    device = config.devices[0]
    poller.update_device(dataclasses.replace(device, timeout=2.5))
    poller.replan(clock.monotonic())
    lines.sync()
    new = lines.runners[line]
    assert new is not old and new.endpoint.timeout == 2.5
    await asyncio.sleep(0.05)
    assert old.task.done() and not new.task.done()
    assert lines.runners[line] is new
    read = next(iter(poller.plan.reads))
    poller.read_soon(read.tags[0], clock.monotonic())
    lines.wake(line)
    await asyncio.sleep(0.05)
    assert [t.reads for t in made] == [1, 1]  # the new worker read; the old one is gone
    await lines.stop_all()
    assert new.task.done() and not lines.runners
