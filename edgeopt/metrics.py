"""The optional Prometheus endpoint (`metrics.listen`), via prometheus_client.

Scrapes run in prometheus_client's HTTP thread. So that they never read daemon
state while the event loop changes it, each scrape asks the loop for a
snapshot (a plain dict) and renders that. A stuck loop makes scrapes fail,
which is itself a signal worth alerting on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

Snapshot = dict[str, Any]


class DaemonCollector(Collector):
    """Turns a daemon snapshot into metric families."""

    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        try:
            snap = self._snapshot()
        except Exception as exc:  # a failed scrape must not kill the HTTP thread
            log.warning("metrics snapshot failed: %s", exc)
            return
        reads = CounterMetricFamily("edgeopt_reads", "Modbus reads per device", labels=["device"])
        errors = CounterMetricFamily(
            "edgeopt_read_errors", "Failed reads per device and kind", labels=["device", "kind"]
        )
        latency = GaugeMetricFamily(
            "edgeopt_read_latency_seconds",
            "Recent read latency quantiles per device",
            labels=["device", "quantile"],
        )
        up = GaugeMetricFamily(
            "edgeopt_device_online", "1 if the device is online", labels=["device", "state"]
        )
        for d in snap["devices"]:
            reads.add_metric([d["name"]], d["reads"])
            for kind, count in d["errors_by_kind"].items():
                errors.add_metric([d["name"], kind], count)
            for q, ms in d["latency_ms"].items():
                if ms is not None:  # "p99" → quantile "0.99", as Prometheus summaries name it
                    latency.add_metric([d["name"], str(int(q[1:]) / 100)], ms / 1000)
            up.add_metric([d["name"], d["state"]], 1.0 if d["state"] == "online" else 0.0)
        yield from (reads, errors, latency, up)

        bus = GaugeMetricFamily("edgeopt_bus_load", "Busy fraction per line", labels=["line"])
        for line, load in snap["bus_load"].items():
            bus.add_metric([line], load)
        yield bus

        tags = GaugeMetricFamily("edgeopt_tags", "Tags by quality", labels=["quality"])
        for quality, count in snap["tags_by_quality"].items():
            tags.add_metric([quality], count)
        yield tags

        outcomes = CounterMetricFamily(
            "edgeopt_optimizations", "Optimizer changes by outcome", labels=["outcome"]
        )
        for outcome, count in snap.get("optimizer_outcomes", {}).items():
            outcomes.add_metric([outcome], count)
        yield outcomes

        size = GaugeMetricFamily("edgeopt_storage_bytes", "Storage size per tier", labels=["tier"])
        samples = GaugeMetricFamily("edgeopt_storage_samples", "Samples per tier", labels=["tier"])
        for tier, figures in snap.get("storage_tiers", {}).items():
            if figures.get("bytes") is not None:
                size.add_metric([tier], figures["bytes"])
            if figures.get("samples") is not None:
                samples.add_metric([tier], figures["samples"])
        yield from (size, samples)

        buffered = GaugeMetricFamily("edgeopt_storage_buffered", "Samples waiting for a flush")
        buffered.add_metric([], snap.get("storage_buffered", 0))
        yield buffered
        yield from _northbound_metrics(snap.get("northbound", []))


def _northbound_metrics(targets: list[dict[str, Any]]) -> Iterator[Metric]:
    """Per MQTT target: connection, outbox depth and age, published and dropped."""
    label = ["target"]
    connected = GaugeMetricFamily(
        "edgeopt_northbound_connected", "1 if connected to the broker", labels=label
    )
    messages = GaugeMetricFamily(
        "edgeopt_northbound_outbox_messages", "Undelivered messages in the outbox", labels=label
    )
    size = GaugeMetricFamily(
        "edgeopt_northbound_outbox_bytes", "Undelivered topic and payload bytes", labels=label
    )
    age = GaugeMetricFamily(
        "edgeopt_northbound_outbox_oldest_age_seconds",
        "Age of the oldest undelivered message",
        labels=label,
    )
    published = CounterMetricFamily(
        "edgeopt_northbound_published", "Messages the broker acknowledged", labels=label
    )
    dropped = CounterMetricFamily(
        "edgeopt_northbound_dropped", "Undelivered messages dropped over outbox_max", labels=label
    )
    for t in targets:
        name = [t["name"]]
        connected.add_metric(name, 1.0 if t["connected"] else 0.0)
        messages.add_metric(name, t["outbox"]["messages"])
        size.add_metric(name, t["outbox"]["bytes"])
        age.add_metric(name, t["outbox"]["oldest_age_s"] or 0.0)
        published.add_metric(name, t["published"])
        dropped.add_metric(name, t["dropped"])
    yield from (connected, messages, size, age, published, dropped)


class MetricsServer:
    """Serves /metrics on host:port while the daemon runs."""

    def __init__(self, listen: str, snapshot: Callable[[], Snapshot]) -> None:
        host, _, port = listen.rpartition(":")
        self.host, self.port = host.strip("[]") or "127.0.0.1", int(port)
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.registry.register(DaemonCollector(snapshot))
        self._server: Any = None

    def start(self) -> None:
        self._server, _ = start_http_server(self.port, addr=self.host, registry=self.registry)
        log.info("metrics on http://%s:%d/metrics", self.host, self.port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def loop_snapshot(
    loop: asyncio.AbstractEventLoop, build: Callable[[], Snapshot], timeout: float = 2.0
) -> Callable[[], Snapshot]:
    """A snapshot function for the HTTP thread that runs `build` on the event loop."""

    async def on_loop() -> Snapshot:
        return build()

    def snapshot() -> Snapshot:
        return asyncio.run_coroutine_threadsafe(on_loop(), loop).result(timeout)

    return snapshot
