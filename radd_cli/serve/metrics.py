"""What `GET /metrics` shows, in the Prometheus text format (through prometheus_client).

Counters (`*_total`): requests by path and status code, network calls, generated tokens, rows removed
before they finished. Gauges: requests waiting, rows in the running batch, tokens/s over the last
`window` seconds. A histogram of request latencies. Each server has its own registry, so several apps in
one process (tests) do not share numbers.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, window: float = 10.0):
        disable_created_metrics()  # no `*_created` timestamps beside every counter
        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = Counter(
            "radd_requests", "HTTP requests answered, by path and status code", ["path", "code"], registry=registry
        )
        self.queue_depth = Gauge("radd_queue_depth", "Completion requests waiting to join the batch", registry=registry)
        self.rows_in_flight = Gauge(
            "radd_rows_in_flight", "Sequences being denoised in the running batch", registry=registry
        )
        self.network_calls = Counter(
            "radd_network_calls", "Network calls (one batched forward pass each)", registry=registry
        )
        self.tokens = Counter("radd_generated_tokens", "Tokens generated (free positions decoded)", registry=registry)
        self.cancelled_rows = Counter(
            "radd_cancelled_rows",
            "Rows removed before they finished (client gone, stop string, shutdown)",
            registry=registry,
        )
        self.latency = Histogram(
            "radd_request_latency_seconds",
            "Completion requests: arrival to last byte",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        rate = Gauge(
            "radd_tokens_per_second", f"Tokens generated per second over the last {window:g} s", registry=registry
        )
        rate.set_function(self.tokens_per_second)
        self.window = window
        self._recent: deque[tuple[float, int]] = deque()  # (time, tokens) of recently finished rows
        self._lock = threading.Lock()

    def generated(self, count: int) -> None:
        self.tokens.inc(count)
        with self._lock:
            self._recent.append((time.monotonic(), count))

    def tokens_per_second(self) -> float:
        with self._lock:
            horizon = time.monotonic() - self.window
            while self._recent and self._recent[0][0] < horizon:
                self._recent.popleft()
            return sum(count for _, count in self._recent) / self.window

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
