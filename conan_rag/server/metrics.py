"""Prometheus metrics of one server (its own registry), and the ASGI middleware that times requests.

Metrics (all prefixed ``conan_rag_``): ``requests_total{endpoint,status}``,
``request_duration_seconds{endpoint}`` (histogram), ``inputs_total{endpoint}``,
``tokens_total{endpoint}``, ``queued_tokens`` and ``requests_in_flight`` (admitted, not yet
answered), ``batch_size`` and ``batch_tokens`` (histograms of the model's forward passes, rows and
padded tokens, from the shared batching queue), ``model_info{model,dim,dtype,device}``, and the
process's CPU and memory.

Example:
    >>> metrics = Metrics()
    >>> metrics.count_inputs("/embed", texts=2, tokens=9)
    >>> "conan_rag_tokens_total" in metrics.render().decode()
    True
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

ENDPOINTS: tuple[str, ...] = (
    "/v1/embeddings",
    "/embeddings",
    "/v1/retrieve",
    "/v1/collections",
    "/embed",
    "/v1/models",
    "/info",
    "/tokenizer",
    "/health",
    "/metrics",
)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
TOKEN_BUCKETS = (64, 256, 1024, 4096, 8192, 16384, 65536, 262144)


class Metrics:
    """The server's metrics, in a registry of its own (several apps may live in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        reg = self.registry
        ProcessCollector(registry=reg)
        self.requests = Counter(
            "conan_rag_requests", "HTTP requests answered", ["endpoint", "status"], registry=reg
        )
        self.latency = Histogram(
            "conan_rag_request_duration_seconds",
            "Time from request to response",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.inputs = Counter("conan_rag_inputs", "Texts embedded", ["endpoint"], registry=reg)
        self.tokens = Counter(
            "conan_rag_tokens",
            "Tokens embedded (prompt and special tokens included, after truncation)",
            ["endpoint"],
            registry=reg,
        )
        self.queued_tokens = Gauge(
            "conan_rag_queued_tokens", "Tokens admitted and not yet answered", registry=reg
        )
        self.in_flight = Gauge(
            "conan_rag_requests_in_flight", "Requests admitted and not yet answered", registry=reg
        )
        self.batch_size = Histogram(
            "conan_rag_batch_size",
            "Texts per forward pass of the model (all clients' requests coalesced)",
            buckets=BATCH_BUCKETS,
            registry=reg,
        )
        self.batch_tokens = Histogram(
            "conan_rag_batch_tokens",
            "Padded tokens per forward pass of the model",
            buckets=TOKEN_BUCKETS,
            registry=reg,
        )
        self.model = Gauge(
            "conan_rag_model_info",
            "The served model (value 1)",
            ["model", "dim", "dtype", "device"],
            registry=reg,
        )

    def watch_queue(self, tokens: Callable[[], float], requests: Callable[[], float]) -> None:
        """Read the queue depth from these functions at every scrape."""
        self.queued_tokens.set_function(tokens)
        self.in_flight.set_function(requests)

    def observe_batch(self, rows: int, padded_tokens: int) -> None:
        """Record one forward pass (called from the batching queue's worker thread)."""
        self.batch_size.observe(rows)
        self.batch_tokens.observe(padded_tokens)

    def count_inputs(self, endpoint: str, *, texts: int, tokens: int) -> None:
        """Record the texts and tokens of one embedding request."""
        self.inputs.labels(endpoint).inc(texts)
        self.tokens.labels(endpoint).inc(tokens)

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        """Record one answered HTTP request."""
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def render(self) -> bytes:
        """The Prometheus text format of every metric."""
        return generate_latest(self.registry)


class MetricsMiddleware:
    """ASGI middleware counting and timing every HTTP request by endpoint and status.

    Paths that are not endpoints count as ``other``, so the label set stays small.
    """

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Pass the request on, timing it and noting its status."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        endpoint = path if path in ENDPOINTS else "other"
        status = 500  # unless a response starts

        async def send_status(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        start = time.perf_counter()
        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.observe_request(endpoint, status, time.perf_counter() - start)
