"""``GET /metrics`` in the Prometheus text format: HTTP requests by route (count and latency histogram),
live log streams open, jobs by kind and status, queue depth per queue, live workers per kind and training
tokens per second.

Each app owns its ``CollectorRegistry``, so several apps in one process (tests) never collide. Job, queue
and throughput gauges are read from Redis when scraped.
"""

from __future__ import annotations

import time

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from redis.asyncio import Redis

from mt_contracts.jobs import JobStatus, RunJob, TokenizerJob
from mt_storage.jobs import JobStore

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_STATUSES: tuple[JobStatus, ...] = ("queued", "running", "cancelling", "succeeded", "failed", "cancelled")


class Metrics:
    """The gateway's metrics and the registry they live in."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "mt_http_requests", "HTTP requests answered, by method, route and status code.",
            ["method", "route", "status"], registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "mt_http_request_duration_seconds", "Time to the response's first byte, by method and route.",
            ["method", "route"], buckets=_LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.live_streams = Gauge(
            "mt_live_streams", "Live log streams open (SSE and WebSocket).", registry=self.registry
        )
        self.jobs = Gauge("mt_jobs", "Job records by kind and status.", ["kind", "status"], registry=self.registry)
        self.queue_depth = Gauge("mt_queue_depth", "Jobs waiting in each arq queue.", ["queue"], registry=self.registry)
        self.workers = Gauge(
            "mt_workers_live",
            "Workers (pods) of each kind whose health key is fresh.",
            ["kind"],
            registry=self.registry,
        )
        self.tokens_per_second = Gauge(
            "mt_training_tokens_per_second",
            "Training tokens per second summed over running runs (each run's latest progress report).",
            registry=self.registry,
        )

    async def render(
        self,
        redis: Redis,
        tokenizers: JobStore[TokenizerJob],
        runs: JobStore[RunJob],
        queues: list[str],
        workers: dict[str, int],
    ) -> bytes:
        """Refresh the job, queue, worker and throughput gauges from Redis and render every metric; ``workers``
        is each worker kind's live worker count."""
        for kind, store in (("tokenizer", tokenizers), ("run", runs)):
            counts = await store.count_by_status()
            for status in _STATUSES:
                self.jobs.labels(kind=kind, status=status).set(counts.get(status, 0))
        for queue in queues:
            self.queue_depth.labels(queue=queue).set(await redis.zcard(queue))
        for kind, live in workers.items():
            self.workers.labels(kind=kind).set(live)
        total = 0.0
        for run_id in await runs.active_ids():
            run = await runs.get(run_id)
            if run is not None and run.status == "running" and run.progress is not None:
                total += run.progress.tokens_per_second
        self.tokens_per_second.set(total)
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts each HTTP request and times it to its response's start, labelled by the route template
    (``/runs/{run_id}``), never the raw path, so ids do not explode the label set."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        method = scope["method"]
        route = str(scope.get("path_template", "unmatched"))

        async def timed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.metrics.latency.labels(method=method, route=route).observe(time.perf_counter() - started)
                self.metrics.requests.labels(method=method, route=route, status=str(message["status"])).inc()
            await send(message)

        await self.app(scope, receive, timed_send)
