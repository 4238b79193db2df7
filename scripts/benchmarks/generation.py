"""Generation latency while a training run occupies the worker machine, and the gateway's /healthz meanwhile.

The real stack (embedded Redis, API with its inference process, both workers) on this machine: a demo-sized
GPT-2 (4 x 128, block 128, vocab 1024) is trained briefly for its weights, then a long run keeps the trainer
busy while generation calls of 64 new tokens run one after the other and /healthz is polled every 50 ms.
The reference, in the same round, is the same calls and polling on the idle stack (no training). ``BENCH_REPEATS``
(default 5) rounds, each idle then busy, of ``BENCH_GENERATION_CALLS`` (default 40) calls per side: p50 and p99
are interpolated percentiles (``statistics.quantiles``) of all calls pooled (200 by default, so the p99 is not
the maximum), with the min-max of the per-round medians; the gateway's RSS (with its inference process) is read
on the idle stack and under load. Goal: /healthz p99 under 50 ms.
"""

from __future__ import annotations

import functools
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from stack import Stack

from benchmarks._common import SHAKESPEARE, load, stack_env
from mt_contracts import codec
from mt_contracts.jobs import JobAccepted, RunJob, TokenizerJob

CALLS = int(os.environ.get("BENCH_GENERATION_CALLS", "40"))
REPEATS = int(os.environ.get("BENCH_REPEATS", "5"))
MODEL = {"n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 128, "batch_size": 16, "device": "cpu"}


def percentile(values: list[float], fraction: float) -> float:
    """The ``fraction`` quantile of ``values``, interpolated between the two nearest samples (the "inclusive"
    method of ``statistics.quantiles``, R's type 7); a single value is its own quantile."""
    if len(values) == 1:
        return values[0]
    cuts = statistics.quantiles(values, n=1000, method="inclusive")
    return cuts[min(len(cuts) - 1, max(0, round(fraction * 1000) - 1))]


def tree_rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and all its descendants (the gateway and its inference process), in MB."""
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        status = Path(f"/proc/{current}/status")
        if not status.exists():
            continue
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) / 1024
        for task in Path(f"/proc/{current}/task").iterdir():
            pending.extend(int(child) for child in (task / "children").read_text().split())
    return total


def wait_job(client: httpx.Client, location: str, done: set[str], timeout: float = 600) -> bytes:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(location).raise_for_status().content
        if codec.decode(body, RunJob if "/runs/" in location else TokenizerJob).status in done:
            return body
        time.sleep(0.5)
    raise TimeoutError(location)


def poll_health(client: httpx.Client, stop: threading.Event, latencies: list[float]) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        client.get("/healthz").raise_for_status()
        latencies.append(time.perf_counter() - started)
        time.sleep(0.05)


def health_for(client: httpx.Client, seconds: float) -> list[float]:
    latencies: list[float] = []
    stop = threading.Event()
    thread = threading.Thread(target=poll_health, args=(client, stop, latencies))
    thread.start()
    time.sleep(seconds)
    stop.set()
    thread.join()
    return latencies


def main() -> str:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        env = stack_env(data)
        env.pop("REDIS__URL", None)
        with (
            Stack(env, data, log_dir=data / "logs") as stack,
            httpx.Client(base_url=stack.api_url, timeout=300) as client,
        ):
            body = {"corpus_path": SHAKESPEARE.name, "vocab_size": 1024}
            tok = codec.decode(client.post("/tokenizers/train", json=body).raise_for_status().content, JobAccepted)
            wait_job(client, tok.location, {"succeeded"})
            run_body = {**MODEL, "tokenizer_id": tok.id, "corpus_path": SHAKESPEARE.name}
            short = codec.decode(
                client.post("/runs/train", json={**run_body, "max_steps": 30, "warmup_steps": 5})
                .raise_for_status()
                .content,
                JobAccepted,
            )
            wait_job(client, short.location, {"succeeded"})
            generate = {"prompt": "ROMEO:", "max_new_tokens": 64, "seed": 1, "temperature": 0.8, "top_k": 40}
            client.post(f"/runs/{short.id}/generate", json=generate).raise_for_status()  # loads torch and the model
            api_pid = stack.processes["api"].pid

            def calls(seed: int) -> list[float]:
                latencies = []
                for call in range(CALLS):
                    started = time.perf_counter()
                    client.post(f"/runs/{short.id}/generate", json={**generate, "seed": seed + call}).raise_for_status()
                    latencies.append(time.perf_counter() - started)
                return latencies

            def polled(work: Callable[[], list[float]]) -> tuple[list[float], list[float]]:
                health: list[float] = []
                stop = threading.Event()
                with httpx.Client(base_url=stack.api_url) as health_client:
                    poller = threading.Thread(target=poll_health, args=(health_client, stop, health))
                    poller.start()
                    try:
                        latencies = work()
                    finally:
                        stop.set()
                        poller.join()
                return latencies, health

            idle_calls: list[list[float]] = []
            busy_calls: list[list[float]] = []
            idle_health: list[float] = []
            busy_health: list[float] = []
            loads = [load()]
            rss = {"idle": 0.0, "busy": 0.0}
            for round_index in range(REPEATS):
                latencies, health = polled(functools.partial(calls, 1000 * round_index))
                idle_calls.append(latencies)
                idle_health += health
                rss["idle"] = max(rss["idle"], tree_rss_mb(api_pid))
                busy = codec.decode(
                    client.post("/runs/train", json={**run_body, "max_steps": 1_000_000}).raise_for_status().content,
                    JobAccepted,
                )
                deadline = time.monotonic() + 300
                while codec.decode(client.get(busy.location).content, RunJob).progress is None:
                    if time.monotonic() > deadline:
                        raise TimeoutError("the long run did not start")
                    time.sleep(0.5)
                latencies, health = polled(functools.partial(calls, 1000 * round_index + 500))
                busy_calls.append(latencies)
                busy_health += health
                rss["busy"] = max(rss["busy"], tree_rss_mb(api_pid))
                client.post(f"/runs/{busy.id}/cancel")
                wait_job(client, busy.location, {"cancelled", "failed", "succeeded"}, timeout=120)
                loads.append(load())

    def row(label: str, per_round: list[list[float]], unit: float, digits: int) -> str:
        pooled = [value for values in per_round for value in values]
        medians = [statistics.median(values) * unit for values in per_round]
        return (
            f"| {label} | {percentile(pooled, 0.5) * unit:.{digits}f} ({min(medians):.{digits}f}-"
            f"{max(medians):.{digits}f}) | {percentile(pooled, 0.99) * unit:.{digits}f} | {len(pooled)} |"
        )

    return "\n".join(
        [
            "## Generation under training load (issue 5)",
            "",
            f"{REPEATS} rounds of {CALLS} sequential calls of 64 new tokens (top-k 40) from a demo-sized model "
            "(4 x 128, block 128, vocab 1024): first on the idle stack (the reference), then while a training run "
            "occupies the trainer worker on the same machine; /healthz polled every 50 ms throughout. p50 and p99 "
            "are interpolated over all samples pooled; in brackets the min-max of the per-round medians. Gateway "
            f"RSS (with its inference process), largest seen: {rss['idle']:.0f} MB idle, {rss['busy']:.0f} MB "
            f"under load. 1-minute load average over the rounds: {', '.join(loads)}. Goal: /healthz p99 < 50 ms.",
            "",
            "| measure | p50 ms (round medians) | p99 ms | samples |",
            "| --- | --- | --- | --- |",
            row("generate (64 tokens), training running", busy_calls, 1000, 0),
            row("generate (64 tokens), idle stack (reference)", idle_calls, 1000, 0),
            row("/healthz, training and generation running", [busy_health], 1000, 1),
            row("/healthz, generation on the idle stack (reference)", [idle_health], 1000, 1),
        ]
    )
