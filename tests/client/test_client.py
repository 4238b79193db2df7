"""The Python client through the real stack (uvicorn serving the real app, real workers, a private Redis):
``follow()`` across a connection cut mid-stream, ``download()`` across a connection cut mid-body, a 503
retried, and problem JSON as typed errors."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest
from redis.asyncio import Redis

from mt_client import AsyncClient, BadRequest, Client, Conflict, IntegrityError, NotFound, Streamed, Unreachable
from mt_contracts.events import ProgressEvent, StatusEvent
from mt_contracts.requests import TrainRunRequest, TrainTokenizerRequest
from mt_contracts.settings import ApiSettings, GatewaySettings, WorkerServiceSettings
from mt_storage.embedded_redis import free_port
from tests.client.stack import Rule, proxy_to, serving
from tests.helpers import running_workers

RUN = {
    "corpus_path": "small.txt",
    "n_layer": 1,
    "n_head": 2,
    "n_embd": 32,
    "block_size": 32,
    "batch_size": 4,
    "warmup_steps": 5,
    "eval_interval": 20,
    "eval_iters": 2,
    "checkpoint_interval": 20,
    "device": "cpu",
}


@pytest.fixture
async def server(api_settings: ApiSettings, redis: Redis) -> AsyncIterator[str]:
    settings = msgspec.structs.replace(api_settings, api=GatewaySettings(keepalive_seconds=0.3))
    async with serving(settings) as url:
        yield url


def _follow(url: str, job_id: str) -> list[Streamed]:
    with Client(url, backoff=0.1) as client:
        return list(client.follow(job_id, tail=10_000))


async def test_follow_reconnects_after_a_cut_and_download_resumes(
    server: str, worker_settings: WorkerServiceSettings, tmp_path: Path
) -> None:
    async with (
        AsyncClient(server) as client,
        running_workers(worker_settings) as _,
        proxy_to(server) as proxy,
    ):
        tokenizer = await client.train_tokenizer(TrainTokenizerRequest(corpus_path="small.txt", vocab_size=300))
        events = [streamed async for streamed in client.follow(tokenizer.id)]
        assert isinstance(events[-1].event, StatusEvent) and events[-1].event.status == "succeeded"

        request = msgspec.convert({**RUN, "tokenizer_id": tokenizer.id, "max_steps": 60}, TrainRunRequest)
        run = await client.train_run(request)
        # The first stream is cut after 1,500 bytes of its body while the run trains; follow() reopens it.
        proxy.rules.append(Rule(match="/logs/stream", after=1500))
        followed = await asyncio.to_thread(_follow, proxy.url, run.id)
        assert proxy.cuts == 1
        streams = proxy.heads_with("/logs/stream")
        assert len(streams) >= 2
        assert "last-event-id: " not in streams[0]
        resumed_after = streams[1].split("last-event-id: ", 1)[1].split("\r\n", 1)[0]
        assert resumed_after in [streamed.id for streamed in followed]

        # Every event once, in order, the same as one uncut read of the whole stream.
        whole = [streamed async for streamed in client.follow(run.id, tail=10_000)]
        assert [s.id for s in followed] == [s.id for s in whole]
        assert [s.event for s in followed] == [s.event for s in whole]
        assert any(isinstance(s.event, ProgressEvent) for s in followed)
        last = followed[-1].event
        assert isinstance(last, StatusEvent) and last.status == "succeeded"
        assert (await client.get_run(run.id)).status == "succeeded"
        # A resume after the terminal event: the stream has nothing more (204), follow() ends at once.
        assert [s async for s in client.follow(run.id, last_event_id=followed[-1].id)] == []

        listing = await client.list_artifacts("models", run.id)
        weights = next(entry for entry in listing.files if entry.path == "model.safetensors")
        assert weights.size > 20_000
        proxy.rules.append(Rule(match="/download?path=model.safetensors", after=10_000))
        async with AsyncClient(proxy.url, backoff=0.1) as cut_client:
            downloaded = await cut_client.download("models", run.id, "model.safetensors", tmp_path)
        target = tmp_path / "model.safetensors"
        assert proxy.cuts == 2, proxy.heads[-3:]
        assert downloaded.path == str(target) and downloaded.resumed == 1
        assert downloaded.size == weights.size and downloaded.sha256 == weights.sha256
        assert hashlib.sha256(target.read_bytes()).hexdigest() == weights.sha256
        assert not (tmp_path / "model.safetensors.part").exists()
        first, second = proxy.heads_with("/download?path=model.safetensors")
        assert "range:" not in first
        offset = int(second.split("range: bytes=", 1)[1].split("-", 1)[0])
        assert 0 < offset <= 10_000
        assert f'if-range: "{weights.size:x}-' in second

        head = await client.artifact_info("models", run.id, "model.safetensors")
        assert head.size == weights.size and head.etag.startswith(f'"{weights.size:x}-')

        # A partial file left by an earlier call is continued by the next one (the ETag is kept beside it).
        again = tmp_path / "again.safetensors"
        part = tmp_path / "again.safetensors.part"
        part.write_bytes(target.read_bytes()[:5000])
        (tmp_path / "again.safetensors.part.etag").write_text(head.etag, encoding="utf-8")
        with Client(server) as sync_client:
            resumed = await asyncio.to_thread(sync_client.download, "models", run.id, "model.safetensors", again)
        assert resumed.resumed == 1 and again.read_bytes() == target.read_bytes()

        # Bytes that do not match the listing are refused and not kept.
        bad = tmp_path / "bad.safetensors"
        (tmp_path / "bad.safetensors.part").write_bytes(b"\0" * weights.size)
        (tmp_path / "bad.safetensors.part.etag").write_text(head.etag, encoding="utf-8")
        with pytest.raises(IntegrityError, match="sha256"):
            await client.download("models", run.id, "model.safetensors", bad)
        assert not bad.exists() and not (tmp_path / "bad.safetensors.part").exists()


async def test_typed_errors_and_retries(server: str) -> None:
    async with AsyncClient(server) as client:
        with pytest.raises(BadRequest) as bad:
            await client.train_tokenizer(TrainTokenizerRequest(corpus_path="small.txt", vocab_size=1))
        assert bad.value.status == 400
        assert [error.field for error in bad.value.errors] == ["vocab_size"]
        assert bad.value.problem.request_id
        with pytest.raises(NotFound) as missing:
            await client.get_run("run_01HZY7V3J9T6S4W0XKQ0A1B2C3")
        assert missing.value.problem.detail == "no run run_01HZY7V3J9T6S4W0XKQ0A1B2C3"
        accepted = await client.train_tokenizer(TrainTokenizerRequest(corpus_path="small.txt", vocab_size=300))
        await client.cancel_tokenizer(accepted.id)
        with pytest.raises(Conflict):
            await client.cancel_tokenizer(accepted.id)

    async with proxy_to(server) as proxy, AsyncClient(proxy.url, backoff=0.05) as through:
        proxy.rules.append(Rule(match="get /healthz", status_503=True, times=2))
        assert (await through.health()).status == "ok"
        assert len(proxy.heads_with("get /healthz")) == 3

    async with AsyncClient(f"http://127.0.0.1:{free_port()}", retries=2, backoff=0.05) as nowhere:
        with pytest.raises(Unreachable, match="does not answer"):
            await nowhere.health()
