"""Generation latency while a training run occupies the worker machine, and the gateway's /healthz meanwhile.

The real stack (embedded Redis, API with its inference process, both workers) on this machine: a demo-sized
GPT-2 (4 x 128, block 128, vocab 1024) is trained briefly for its weights, then a long run keeps the trainer
busy while 20 generation calls of 64 new tokens run one after the other and /healthz is polled every 50 ms.
/healthz is also measured on the idle stack first, as the reference. Goal: /healthz p99 under 50 ms.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
from stack import Stack

from benchmarks._common import SHAKESPEARE
from mt_contracts import codec
from mt_contracts.jobs import JobAccepted, RunJob, TokenizerJob
from mt_storage.embedded_redis import free_port

CALLS = 20
MODEL = {"n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 128, "batch_size": 16, "device": "cpu"}


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


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
        env = {
            **os.environ,
            "APP__CORPUS_ROOT": str(SHAKESPEARE.parent),
            "APP__ARTIFACTS_ROOT": str(data / "artifacts"),
            "APP__RUNS_ROOT": str(data / "runs"),
            "HTTP__PORT": str(free_port()),
            "APP__LOG_LEVEL": "WARNING",
        }
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
            idle = health_for(client, 5.0)

            busy = codec.decode(
                client.post("/runs/train", json={**run_body, "max_steps": 1_000_000}).raise_for_status().content,
                JobAccepted,
            )
            deadline = time.monotonic() + 120
            while codec.decode(client.get(busy.location).content, RunJob).progress is None:
                if time.monotonic() > deadline:
                    raise TimeoutError("the long run did not start")
                time.sleep(0.5)
            health: list[float] = []
            stop = threading.Event()
            health_client = httpx.Client(base_url=stack.api_url)
            poller = threading.Thread(target=poll_health, args=(health_client, stop, health))
            poller.start()
            latencies = []
            for call in range(CALLS):
                started = time.perf_counter()
                client.post(f"/runs/{short.id}/generate", json={**generate, "seed": call}).raise_for_status()
                latencies.append(time.perf_counter() - started)
            stop.set()
            poller.join()
            health_client.close()
            client.post(f"/runs/{busy.id}/cancel")
            wait_job(client, busy.location, {"cancelled", "failed", "succeeded"}, timeout=60)
    return "\n".join(
        [
            "## Generation under training load (issue 5)",
            "",
            f"{CALLS} sequential calls of 64 new tokens (top-k 40) from a demo-sized model (4 x 128, block 128, "
            "vocab 1024) while a training run occupies the trainer worker on the same machine; /healthz polled "
            "every 50 ms meanwhile, and for 5 s on the idle stack as the reference. Goal: /healthz p99 < 50 ms.",
            "",
            "| measure | p50 ms | p99 ms | samples |",
            "| --- | --- | --- | --- |",
            f"| generate (64 tokens), training running | {statistics.median(latencies) * 1000:.0f} "
            f"| {percentile(latencies, 0.99) * 1000:.0f} | {len(latencies)} |",
            f"| /healthz, training and generation running | {statistics.median(health) * 1000:.1f} "
            f"| {percentile(health, 0.99) * 1000:.1f} | {len(health)} |",
            f"| /healthz, idle stack (reference) | {statistics.median(idle) * 1000:.1f} "
            f"| {percentile(idle, 0.99) * 1000:.1f} | {len(idle)} |",
        ]
    )
