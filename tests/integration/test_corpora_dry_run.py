"""Corpora and dry runs through the real stack (private Redis, the real app, real arq workers and training
processes): an uploaded corpus trains a tokenizer and a run, cannot be deleted while in use, an interrupted
upload to a real server leaves nothing, and dry-run estimates are checked against the jobs that follow."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from redis.asyncio import Redis

from mt_api.app import create_app
from mt_contracts import codec
from mt_contracts.corpora import CorpusInfo, RunEstimate, TokenizerEstimate
from mt_contracts.jobs import TokenizerJob
from mt_contracts.manifests import ModelManifest, RunManifest, TokenizerManifest
from mt_contracts.settings import ApiSettings, EstimateSettings, WorkerServiceSettings
from mt_storage.corpora import UPLOADS
from mt_storage.embedded_redis import free_port
from mt_storage.layout import MANIFEST, Layout
from tests.helpers import running_workers, wait_for, worker_process
from tests.integration.jobs import RUN, TERMINAL, finished_run, submit_run, worker_env

# The README states it: a run's expected time is within this factor of its training time when the pool has
# measured a run of the same shape (a loaded 2-core machine varies that much between runs).
TIME_FACTOR = 5.0


@pytest.fixture
async def client(api_settings: ApiSettings, redis: Redis) -> AsyncIterator[AsyncTestClient[Litestar]]:
    # A sample of 8 KB of the ~50 KB training split, so the token count is estimated, not encoded whole.
    settings = msgspec.structs.replace(api_settings, estimate=EstimateSettings(sample_bytes=8_000))
    async with AsyncTestClient(app=create_app(settings)) as client:
        yield client


async def _queued_jobs(redis: Redis, settings: WorkerServiceSettings) -> tuple[int, int]:
    return await redis.zcard(settings.queue.tokenizer), await redis.zcard(settings.queue.training)


async def test_uploaded_corpus_trains_and_dry_runs_match_the_jobs(
    client: AsyncTestClient[Litestar],
    redis: Redis,
    worker_settings: WorkerServiceSettings,
    shakespeare: str,
    tmp_path: Path,
) -> None:
    text = shakespeare[:60_000].encode()
    uploaded = await client.put("/corpora/bard", content=text, headers={"if-none-match": "*"})
    assert uploaded.status_code == 201, uploaded.text
    corpus = codec.decode(uploaded.content, CorpusInfo)
    assert corpus.bytes == len(text)

    tokenizer_body = {"corpus_path": "bard", "vocab_size": 300}
    before = await _queued_jobs(redis, worker_settings)
    dry = await client.post("/tokenizers/train?dry_run=true", json=tokenizer_body)
    assert dry.status_code == 200, dry.text
    tokenizer_estimate = codec.decode(dry.content, TokenizerEstimate)
    assert (tokenizer_estimate.corpus_bytes, tokenizer_estimate.corpus_lines) == (corpus.bytes, corpus.lines)
    assert tokenizer_estimate.seconds > 0 and tokenizer_estimate.peak_memory_bytes > 0
    assert await _queued_jobs(redis, worker_settings) == before
    assert (await client.get("/tokenizers")).json()["items"] == []

    submitted = await client.post("/tokenizers/train", json=tokenizer_body)
    assert submitted.status_code == 202, submitted.text
    tokenizer_id = submitted.json()["id"]
    refused = await client.delete("/corpora/bard")  # no worker yet: the job is queued
    assert refused.status_code == 409, refused.text

    async with running_workers(worker_settings):

        async def fetch() -> TokenizerJob:
            return codec.decode((await client.get(f"/tokenizers/{tokenizer_id}")).content, TokenizerJob)

        tokenizer = await wait_for(fetch, lambda j: j.status in TERMINAL, 120)
        assert tokenizer.status == "succeeded", tokenizer.error
        assert tokenizer.estimate == tokenizer_estimate
        # The manifest holds the estimate beside what training measured, as the record does.
        assert tokenizer.result is not None
        tokenizer_dir = Layout.from_settings(worker_settings.app).tokenizer_dir(tokenizer_id)
        tokenizer_manifest = codec.decode((tokenizer_dir / MANIFEST).read_bytes(), TokenizerManifest)
        assert (tokenizer_manifest.estimate, tokenizer_manifest.statistics) == (
            tokenizer_estimate,
            tokenizer.result.statistics,
        )

        run_body = {**RUN, "corpus_path": "bard", "tokenizer_id": tokenizer_id, "max_steps": 30}
        # arq takes the finished tokenizer job off its queue a moment after the record says succeeded.
        before = await wait_for(lambda: _queued_jobs(redis, worker_settings), lambda queued: queued == (0, 0), 30)
        dry = await client.post("/runs/train?dry_run=true", json=run_body)
        assert dry.status_code == 200, dry.text
        sampled = codec.decode(dry.content, RunEstimate)
        assert await _queued_jobs(redis, worker_settings) == before
        assert (await client.get("/runs")).json()["items"] == []
        assert not sampled.tokens_exact
        assert sampled.seconds is None  # no run has succeeded on this pool yet
        assert sampled.steps == 30 and sampled.tokens == 30 * 4 * 32

        first = await finished_run(client, await submit_run(client, run_body))
        assert first.status == "succeeded", first.error
        assert first.metrics is not None and first.metrics.train_tokens is not None
        assert first.estimate is not None and first.estimate.n_params == first.metrics.n_params == sampled.n_params
        actual_tokens = first.metrics.train_tokens
        assert abs(sampled.train_tokens - actual_tokens) <= 0.02 * actual_tokens, (sampled, actual_tokens)
        layout = Layout.from_settings(worker_settings.app)
        model = codec.decode((layout.model_dir(first.id) / MANIFEST).read_bytes(), ModelManifest)
        assert model.dataset is not None and model.dataset.train_tokens == actual_tokens
        run_manifest = codec.decode(layout.run_manifest(first.id).read_bytes(), RunManifest)
        assert (run_manifest.estimate, run_manifest.metrics) == (first.estimate, first.metrics)

        # Now the prepared dataset is cached: the count is exact, and the pool has a measured throughput.
        dry = await client.post("/runs/train?dry_run=true", json=run_body)
        cached = codec.decode(dry.content, RunEstimate)
        assert cached.tokens_exact and cached.train_tokens == actual_tokens
        assert cached.throughput_runs == 1 and cached.seconds is not None
        second = await finished_run(client, await submit_run(client, run_body))
        assert second.status == "succeeded" and second.metrics is not None
        ratio = cached.seconds / second.metrics.training_seconds
        assert 1 / TIME_FACTOR <= ratio <= TIME_FACTOR, (cached.seconds, second.metrics.training_seconds)

        # A queued or running job keeps its corpus; once they ended it can go.
        third = await submit_run(client, {**run_body, "max_steps": 200})
        refused = await client.delete("/corpora/bard")
        assert refused.status_code == 409 and third in refused.json()["detail"]
        assert (await client.post(f"/runs/{third}/cancel")).status_code == 200
        await finished_run(client, third)
    assert (await client.delete("/corpora/bard")).status_code == 204
    assert codec.decode((await client.get("/corpora")).content, list[CorpusInfo]) == []


def _api_env(settings: WorkerServiceSettings, port: int) -> dict[str, str]:
    env = worker_env(settings)
    env["HTTP__PORT"] = str(port)
    return env


async def test_an_interrupted_upload_leaves_nothing(worker_settings: WorkerServiceSettings, corpus_root: Path) -> None:
    port = free_port()
    with worker_process("mt_api", _api_env(worker_settings, port)):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:

            async def ready() -> int:
                try:
                    return (await http.get("/healthz")).status_code
                except httpx.TransportError:
                    return 0

            await wait_for(ready, lambda status: status == 200, 60)
            # Half a body, then the connection closes.
            with socket.create_connection(("127.0.0.1", port)) as raw:
                head = b"PUT /corpora/cut HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n"
                raw.sendall(head + b"some text\n" * 5_000)
                await asyncio.sleep(0.5)

            async def left() -> list[str]:
                uploads = corpus_root / UPLOADS
                return sorted(p.name for p in uploads.iterdir()) if uploads.is_dir() else []

            await wait_for(left, lambda names: names == [], 30)
            assert not (corpus_root / "cut").exists()
            assert (await http.get("/corpora/cut")).status_code == 404
            complete = await http.put("/corpora/cut", content=b"some text\n" * 5_000)
            assert complete.status_code == 201, complete.text
