"""Prometheus metrics of the plugin (served on ``/metrics``).

Each app gets its own registry, so several apps (tests, benchmarks) can live in one
process without clashing.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from interlink_htcondor.core.pod_status import STATE_NAMES
from interlink_htcondor.service.breaker import Contact

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "interlink_htcondor_requests",
            "HTTP requests by endpoint and status code.",
            ["endpoint", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "interlink_htcondor_request_seconds",
            "HTTP request latency by endpoint (streamed logs: until the first byte).",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.schedd_latency = Histogram(
            "interlink_htcondor_schedd_call_seconds",
            "Latency of schedd/collector binding calls by operation.",
            ["operation"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.schedd_errors = Counter(
            "interlink_htcondor_schedd_errors",
            "Failed schedd/collector binding calls by operation.",
            ["operation"],
            registry=self.registry,
        )
        self.jobs = Gauge(
            "interlink_htcondor_jobs",
            "This plugin's jobs in the schedd queue by state (last snapshot).",
            ["state"],
            registry=self.registry,
        )
        self.snapshot_age = Gauge(
            "interlink_htcondor_snapshot_timestamp_seconds",
            "Unix time of the last successful job snapshot.",
            registry=self.registry,
        )
        self.last_contact = Gauge(
            "interlink_htcondor_schedd_last_contact_timestamp_seconds",
            "Unix time of the last schedd call that succeeded.",
            registry=self.registry,
        )
        self.circuit_open = Gauge(
            "interlink_htcondor_schedd_circuit_open",
            "1 while schedd calls fail at once because the schedd does not answer.",
            registry=self.registry,
        )

        self.gc_pause = Histogram(
            "interlink_htcondor_gc_pause_seconds",
            "Garbage collections of the server process by generation (the server serves "
            "nothing meanwhile).",
            ["generation"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.loop_lag = Histogram(
            "interlink_htcondor_event_loop_lag_seconds",
            "How late the server's event loop woke up for a timer (sampled 50 times a "
            "second), by cause: the server ran something else (server) or the process "
            "had no CPU (machine).",
            ["cause"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )

    def set_contact(self, contact: Contact) -> None:
        """What the gateway knows of the schedd (read from memory, never from the schedd)."""
        if contact.last_ok is not None:
            self.last_contact.set(time.time() - (time.monotonic() - contact.last_ok))
        self.circuit_open.set(1 if contact.open else 0)

    def observe_request(self, endpoint: str, code: int, seconds: float) -> None:
        self.requests.labels(endpoint, str(code)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def observe_schedd(self, operation: str, seconds: float, ok: bool) -> None:
        self.schedd_latency.labels(operation).observe(seconds)
        if not ok:
            self.schedd_errors.labels(operation).inc()

    def set_job_counts(self, counts: dict[int, int], wall: float) -> None:
        for code, name in STATE_NAMES.items():
            self.jobs.labels(name).set(counts.get(code, 0))
        self.snapshot_age.set(wall)

    def render(self) -> bytes:
        return generate_latest(self.registry)
