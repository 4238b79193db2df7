"""Live streams under load: many concurrent SSE clients following one running job.

The real gateway (``python -m mt_api``, uvicorn with uvloop) on a private ``redis-server``. A running
tokenizer job record is written straight to Redis (no worker runs it) and this process appends log events
to its stream, as a worker's publisher does, each carrying the wall-clock time it was written. ``CLIENTS``
SSE clients (raw HTTP/1.0 sockets on one uvloop event loop in this process, cheaper than an HTTP client
library) follow the job; delivery latency is each event's arrival at a client minus its write time, so the
clients' own scheduling is counted against us. ``/healthz`` is polled every 50 ms by a separate process
meanwhile. References measured in the same run: ``/healthz`` on the idle gateway, and delivery to a single
client. Memory per idle stream is the gateway's RSS growth with every client connected and idle, over the
client count.

``BENCH_REPEATS`` (5) rounds alternate the single client and the many; percentiles pool the rounds.
Knobs: ``BENCH_SSE_CLIENTS`` (500), ``BENCH_SSE_RATE`` (events per second, 5), ``BENCH_SSE_SECONDS`` (20).
Goals (issue 6): delivery p99 <= 250 ms and ``/healthz`` p99 <= 50 ms with 500 clients.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import msgspec
import uvloop
from redis.asyncio import Redis

from benchmarks._common import load, spread
from benchmarks.generation import percentile
from mt_contracts import codec
from mt_contracts.events import log_event
from mt_contracts.jobs import TokenizerJob
from mt_contracts.requests import TrainTokenizerRequest
from mt_storage.embedded_redis import EmbeddedRedis, free_port
from mt_storage.events import JobEvents, event_fields
from mt_storage.jobs import tokenizer_jobs
from mt_storage.lifecycle import Lifecycle

CLIENTS = int(os.environ.get("BENCH_SSE_CLIENTS", "500"))
RATE = float(os.environ.get("BENCH_SSE_RATE", "5"))
SECONDS = float(os.environ.get("BENCH_SSE_SECONDS", "20"))
REPEATS = int(os.environ.get("BENCH_REPEATS", "5"))
JOB_ID = "tok_01JDQ8ZQ0000000000000000BE"
_HEALTH = """
import json, sys, time
import httpx
latencies = []
with httpx.Client(base_url=sys.argv[1], timeout=10) as client:
    end = time.monotonic() + float(sys.argv[2])
    while time.monotonic() < end:
        started = time.perf_counter()
        client.get("/healthz").raise_for_status()
        latencies.append(time.perf_counter() - started)
        time.sleep(0.05)
print(json.dumps(latencies))
"""


class _TickFields(msgspec.Struct):
    sent: float = 0.0


class _Tick(msgspec.Struct):
    fields: _TickFields = msgspec.field(default_factory=_TickFields)


_tick = msgspec.json.Decoder(_Tick)


async def _follow(port: int, path: str, connected: list[int], latencies: list[float]) -> None:
    """One SSE client: read the stream, recording each tick's delivery latency, until cancelled."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2**20)
    try:
        writer.write(f"GET {path} HTTP/1.0\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n".encode())
        status = await reader.readline()
        if b" 200 " not in status:
            raise RuntimeError(f"stream answered {status!r}")
        while await reader.readline() not in (b"\r\n", b""):
            pass
        connected[0] += 1
        while line := await reader.readline():
            if line.startswith(b"data:"):
                arrived = time.time()
                sent = _tick.decode(line[5:]).fields.sent
                if sent:
                    latencies.append(arrived - sent)
    finally:
        writer.close()


async def _publish(events: JobEvents, seconds: float) -> int:
    """Append ticks at ``RATE`` per second for ``seconds``; returns how many."""
    count = int(seconds * RATE)
    start = time.monotonic()
    for sequence in range(count):
        event = log_event(JOB_ID, "info", "bench", "tick", seq=sequence, sent=time.time())
        await events.append(JOB_ID, event_fields("log", codec.encode(event)))
        await asyncio.sleep(max(0.0, start + (sequence + 1) / RATE - time.monotonic()))
    return count


def _health(url: str, seconds: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", _HEALTH, url, str(seconds)], stdout=subprocess.PIPE)


def _health_result(process: subprocess.Popen[bytes]) -> list[float]:
    out, _ = process.communicate(timeout=600)
    return [float(value) for value in json.loads(out)]


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


class _Round(msgspec.Struct):
    latencies: list[float]
    published: int
    idle_rss_mb: float
    redis_clients: int


async def _round(
    redis: Redis, port: int, pid: int, clients: int, seconds: float, url: str
) -> tuple[_Round, list[float]]:
    """``clients`` followers, idle first (RSS, Redis connections), then ``seconds`` of ticks with /healthz
    polled meanwhile."""
    connected = [0]
    latencies: list[float] = []
    path = f"/tokenizers/{JOB_ID}/logs/stream?tail=0"
    tasks = []
    for _ in range(clients):
        tasks.append(asyncio.create_task(_follow(port, path, connected, latencies)))
        await asyncio.sleep(0)  # connect gradually: the listen backlog is finite
    deadline = time.monotonic() + 60
    while connected[0] < clients:
        if time.monotonic() > deadline or any(task.done() for task in tasks):
            raise RuntimeError(f"only {connected[0]} of {clients} streams connected")
        await asyncio.sleep(0.05)
    await asyncio.sleep(2.0)
    idle_rss = _rss_mb(pid)
    redis_clients = len(await redis.client_list()) - 1  # ours excluded
    poller = _health(url, seconds) if seconds else None
    published = await _publish(JobEvents(redis), seconds)
    await asyncio.sleep(1.0)  # the last tick's deliveries
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    health = _health_result(poller) if poller else []
    return _Round(latencies, published, idle_rss, redis_clients), health


async def _measure(redis_url: str, port: int, pid: int, url: str) -> list[str]:
    redis = Redis.from_url(redis_url)
    try:
        lifecycle = Lifecycle(tokenizer_jobs(redis), "tokenizer", 3600)
        now = datetime.now(UTC)
        request = TrainTokenizerRequest(corpus_path="bench.txt")
        await lifecycle.create(TokenizerJob(id=JOB_ID, request=request, created_at=now, updated_at=now))
        await lifecycle.start(JOB_ID)

        idle_health = _health_result(_health(url, 5.0))
        base_rss = _rss_mb(pid)
        singles: list[_Round] = []
        manys: list[_Round] = []
        health: list[float] = []
        loads = [load()]
        for repeat in range(REPEATS):
            for side in ("many", "single") if repeat % 2 == 0 else ("single", "many"):
                if side == "single":
                    singles.append((await _round(redis, port, pid, 1, min(SECONDS, 10.0), url))[0])
                else:
                    many_round, polled = await _round(redis, port, pid, CLIENTS, SECONDS, url)
                    manys.append(many_round)
                    health += polled
            loads.append(load())
    finally:
        await redis.aclose()
    single = _Round(
        [x for r in singles for x in r.latencies], sum(r.published for r in singles), 0.0, singles[-1].redis_clients
    )
    many = _Round(
        [x for r in manys for x in r.latencies],
        sum(r.published for r in manys),
        max(r.idle_rss_mb for r in manys),
        max(r.redis_clients for r in manys),
    )
    complete = len(many.latencies) == many.published * CLIENTS
    per_stream_kb = (many.idle_rss_mb - base_rss) * 1024 / CLIENTS
    ms = 1000.0
    round_p99 = [percentile(r.latencies, 0.99) * ms for r in manys]
    return [
        f"| delivery, {CLIENTS} clients | {percentile(many.latencies, 0.5) * ms:.1f} "
        f"| {percentile(many.latencies, 0.99) * ms:.1f} | {len(many.latencies):,} |",
        f"| delivery, 1 client (reference) | {percentile(single.latencies, 0.5) * ms:.1f} "
        f"| {percentile(single.latencies, 0.99) * ms:.1f} | {len(single.latencies):,} |",
        f"| /healthz, {CLIENTS} streams receiving | {percentile(health, 0.5) * ms:.1f} "
        f"| {percentile(health, 0.99) * ms:.1f} | {len(health)} |",
        f"| /healthz, idle gateway (reference) | {percentile(idle_health, 0.5) * ms:.1f} "
        f"| {percentile(idle_health, 0.99) * ms:.1f} | {len(idle_health)} |",
        "",
        f"Every client received every event: {'yes' if complete else 'NO'} "
        f"({len(many.latencies):,} of {many.published * CLIENTS:,} deliveries). "
        f"Gateway RSS {base_rss:.0f} MB idle, {many.idle_rss_mb:.0f} MB with {CLIENTS} idle streams: "
        f"{per_stream_kb:.0f} KB per stream. Redis connections held with {CLIENTS} streams open: "
        f"{many.redis_clients} at most over the rounds (one reader per followed job plus the gateway's own "
        f"connection pool, not one per client; {single.redis_clients} with one stream). Per-round delivery p99 "
        f"with {CLIENTS} clients: {spread(round_p99, 1)} ms. {REPEATS} rounds, the single client and the "
        f"{CLIENTS} alternating; percentiles pooled over the rounds. 1-minute load average: {', '.join(loads)}.",
    ]


def main() -> str:
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp) / "redis", persistent=False) as redis:
        port = free_port()
        env = {
            **os.environ,
            "REDIS__URL": redis.url,
            "HTTP__PORT": str(port),
            "APP__ARTIFACTS_ROOT": str(Path(tmp) / "artifacts"),
            "APP__RUNS_ROOT": str(Path(tmp) / "runs"),
            "APP__CORPUS_ROOT": tmp,
            "APP__LOG_LEVEL": "WARNING",
        }
        url = f"http://127.0.0.1:{port}"
        api = subprocess.Popen([sys.executable, "-m", "mt_api"], env=env)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    httpx.get(f"{url}/healthz", timeout=1).raise_for_status()
                    break
                except httpx.HTTPError:
                    if time.monotonic() > deadline or api.poll() is not None:
                        raise
                    time.sleep(0.2)
            rows = uvloop.run(_measure(redis.url, port, api.pid, url))
        finally:
            api.terminate()
            api.wait(30)
    return "\n".join(
        [
            "## Live streams under load (issue 6)",
            "",
            f"{CLIENTS} SSE clients follow one running job on the real gateway while {RATE:g} log events per "
            f"second are appended to its stream for {SECONDS:g} s; delivery = arrival at a client minus the "
            "write time (clients on one event loop in the benchmark process, so their own scheduling counts). "
            "/healthz polled every 50 ms by another process. References in the same run: one client, and "
            "/healthz on the idle gateway. Goals: delivery p99 <= 250 ms, /healthz p99 <= 50 ms.",
            "",
            "| measure | p50 ms | p99 ms | samples |",
            "| --- | --- | --- | --- |",
            *rows,
        ]
    )
