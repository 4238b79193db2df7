"""Tokenizer jobs end to end: the real Litestar app, the real arq workers on a private Redis and the real
training process, on a slice of Tiny Shakespeare."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from redis.asyncio import Redis
from tokenizers import Tokenizer
from transformers import AutoTokenizer

from mt_api.app import create_app
from mt_contracts import codec
from mt_contracts.jobs import JobAccepted, TokenizerJob, TokenizerPage
from mt_contracts.manifests import TokenizerManifest
from mt_contracts.settings import ApiSettings, WorkerServiceSettings
from mt_contracts.tokenizers import EncodeResponse, RustBpeConfig
from mt_storage.files import sha256_file
from mt_storage.process import SCRATCH_PREFIX
from tests.helpers import running_workers, scratch_of, wait_for, worker_process

TERMINAL = {"succeeded", "failed", "cancelled"}
TEXT = "ROMEO: Ünïcödé 東京 🙂\tdigits 0123456789\n"


async def _tokenizer(client: AsyncTestClient[Litestar], job_id: str) -> TokenizerJob:
    return codec.decode((await client.get(f"/tokenizers/{job_id}")).content, TokenizerJob)


async def _submit(client: AsyncTestClient[Litestar], body: dict[str, object]) -> str:
    response = await client.post("/tokenizers/train", json=body)
    assert response.status_code == 202, response.text
    return codec.decode(response.content, JobAccepted).id


async def _finished(client: AsyncTestClient[Litestar], job_id: str, timeout: float = 60) -> TokenizerJob:
    return await wait_for(lambda: _tokenizer(client, job_id), lambda j: j.status in TERMINAL, timeout)


async def test_both_methods_train_list_and_encode_through_the_api(
    api_settings: ApiSettings, worker_settings: WorkerServiceSettings, redis: Redis
) -> None:
    bodies: list[dict[str, object]] = [
        {"corpus_path": "small.txt", "vocab_size": 500},
        {"corpus_path": "small.txt", "method": "sentencepiece", "vocab_size": 500},
        {"corpus_path": "small.txt", "method": "sentencepiece", "model_type": "bpe", "vocab_size": 500},
    ]
    async with AsyncTestClient(app=create_app(api_settings)) as client, running_workers(worker_settings):
        ids = [await _submit(client, body) for body in bodies]
        jobs = [await _finished(client, job_id) for job_id in ids]
        assert [job.status for job in jobs] == ["succeeded"] * 3, [job.error for job in jobs]

        for job in jobs:
            assert job.result is not None and job.result.statistics is not None
            assert job.result.vocab_size == job.result.statistics.vocab_size == 500
            assert job.result.statistics.heldout is not None
            assert job.result.statistics.heldout.roundtrip_exact_rate == 1.0
            directory = Path(job.result.artifact_dir)
            manifest = codec.decode((directory / "manifest.json").read_bytes(), TokenizerManifest)
            assert manifest.method == job.request.method
            assert all(sha256_file(directory / f.path) == f.sha256 for f in manifest.files)
            tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
            hf = AutoTokenizer.from_pretrained(directory)
            assert hf(TEXT)["input_ids"] == tokenizer.encode(TEXT).ids
            response = await client.post(f"/tokenizers/{job.id}/encode", json={"text": TEXT})
            assert response.status_code == 200, response.text
            encoded = codec.decode(response.content, EncodeResponse)
            assert encoded == EncodeResponse(
                ids=tokenizer.encode(TEXT).ids, tokens=tokenizer.encode(TEXT).tokens, decoded=TEXT
            )
            events = [
                msgspec.json.decode(line)["event"] for line in (directory / "logs.jsonl").read_bytes().splitlines()
            ]
            assert events == [
                "started", "process_started", "reading", "training", "statistics", "writing", "trained", "succeeded"
            ]  # fmt: skip

        # Newest first, two per page, then the rest; the filter keeps only the status asked for.
        page = codec.decode((await client.get("/tokenizers?limit=2")).content, TokenizerPage)
        assert [job.id for job in page.items] == ids[:0:-1] and page.next_cursor == ids[1]
        rest = codec.decode((await client.get(f"/tokenizers?limit=2&cursor={page.next_cursor}")).content, TokenizerPage)
        assert ([job.id for job in rest.items], rest.next_cursor) == ([ids[0]], None)
        failed = codec.decode((await client.get("/tokenizers?status=failed")).content, TokenizerPage)
        assert failed == TokenizerPage(items=[], next_cursor=None)


async def test_a_rustbpe_tokenizer_trains_and_encodes_through_the_api(
    api_settings: ApiSettings, worker_settings: WorkerServiceSettings
) -> None:
    body = {"corpus_path": "small.txt", "method": "rustbpe", "vocab_size": 500}
    async with AsyncTestClient(app=create_app(api_settings)) as client, running_workers(worker_settings):
        job = await _finished(
            client, await _submit(client, body), timeout=300
        )  # workers start slowly on a loaded machine
        assert job.status == "succeeded", job.error
        assert job.result is not None and job.result.statistics is not None
        assert job.result.vocab_size == job.result.statistics.vocab_size == 500
        heldout = job.result.statistics.heldout
        assert heldout is not None and heldout.roundtrip_exact_rate == 1.0 and heldout.bytes_per_token > 2.0
        directory = Path(job.result.artifact_dir)
        manifest = codec.decode((directory / "manifest.json").read_bytes(), TokenizerManifest)
        assert manifest.method == "rustbpe" and isinstance(manifest.config, RustBpeConfig)
        assert "rustbpe" in manifest.versions
        assert all(sha256_file(directory / f.path) == f.sha256 for f in manifest.files)
        tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        assert tokenizer.token_to_id("<|endoftext|>") == 498
        hf = AutoTokenizer.from_pretrained(directory)
        assert hf(TEXT)["input_ids"] == tokenizer.encode(TEXT).ids
        assert hf.decode(hf(TEXT)["input_ids"]) == TEXT
        response = await client.post(f"/tokenizers/{job.id}/encode", json={"text": TEXT})
        assert response.status_code == 200, response.text
        assert codec.decode(response.content, EncodeResponse).ids == tokenizer.encode(TEXT).ids


@pytest.mark.parametrize(
    ("files", "body", "code", "message"),
    [
        ({"blank.txt": b" \n\t\n"}, {"corpus_path": "blank.txt"}, "empty_corpus", "no non-whitespace text"),
        (
            {"bad.txt": b"fine\nbad \xff\n"},
            {"corpus_path": "bad.txt"},
            "invalid_utf8",
            "bad.txt is not valid UTF-8 at byte offset 9",
        ),
        ({"bad.jsonl": b'{"txt": "x"}\n'}, {"corpus_path": "bad.jsonl"}, "invalid_jsonl", "bad.jsonl line 1"),
        (
            {"a.txt": b"a short line\n"},
            {"corpus_path": "a.txt", "min_frequency": 50},
            "no_merges_learned",
            "min_frequency=50",
        ),
        ({}, {"corpus_path": "small.txt", "vocab_size": 50_000}, "vocab_size_too_large", "at most vocab_size="),
        (
            {},
            {"corpus_path": "small.txt", "method": "sentencepiece", "vocab_size": 50_000},
            "vocab_size_too_large",
            "at most vocab_size=",
        ),
    ],
)
async def test_user_errors_fail_the_job_once_with_a_stable_code(
    api_settings: ApiSettings,
    worker_settings: WorkerServiceSettings,
    redis: Redis,
    files: dict[str, bytes],
    body: dict[str, object],
    code: str,
    message: str,
) -> None:
    for name, data in files.items():
        (Path(api_settings.app.corpus_root) / name).write_bytes(data)
    async with AsyncTestClient(app=create_app(api_settings)) as client, running_workers(worker_settings):
        job = await _finished(
            client, await _submit(client, body), timeout=300
        )  # workers start slowly on a loaded machine
    assert job.status == "failed" and job.error is not None
    assert (job.error.code, job.attempts) == (code, 1)
    assert message in job.error.message
    assert not (Path(api_settings.app.artifacts_root) / "tokenizers" / job.id / "manifest.json").exists()


def _slow_job(corpus_root: Path, shakespeare: str) -> dict[str, object]:
    """A job that trains for a few seconds: SentencePiece unigram, vocab 8000, on four copies of Tiny
    Shakespeare (4.4 MB, every line used)."""
    corpus = corpus_root / "big"
    corpus.mkdir()
    for index in range(4):
        (corpus / f"part{index}.txt").write_text(shakespeare, encoding="utf-8")
    return {"corpus_path": "big", "method": "sentencepiece", "vocab_size": 8000, "input_sentence_size": 0}


async def test_cancel_stops_a_running_tokenizer_within_ten_seconds(
    api_settings: ApiSettings, worker_settings: WorkerServiceSettings, redis: Redis, shakespeare: str
) -> None:
    body = _slow_job(Path(api_settings.app.corpus_root), shakespeare)
    async with AsyncTestClient(app=create_app(api_settings)) as client, running_workers(worker_settings):
        job_id = await _submit(client, body)
        logs = Path(api_settings.app.artifacts_root) / "tokenizers" / job_id / "logs.jsonl"

        async def training_phase() -> bool:
            return logs.is_file() and b'"event":"training"' in logs.read_bytes()

        await wait_for(training_phase, bool, timeout=30)
        await asyncio.sleep(1.0)
        # The training process has a temporary directory of its own, where SentencePiece reads a FIFO.
        (spawned,) = [
            msgspec.json.decode(line) for line in logs.read_bytes().splitlines() if b"process_started" in line
        ]
        scratch = scratch_of(spawned["fields"]["pid"])
        assert scratch.name.startswith(SCRATCH_PREFIX)
        assert [path.name for path in scratch.rglob("*") if path.is_fifo()] == ["sentences.txt"]
        # The worker's event loop is free while the process trains: its health key stays fresh.
        assert (await client.get("/readyz")).json()["workers"]["tokenizer"]["live"] == 1
        started = time.monotonic()
        response = await client.post(f"/tokenizers/{job_id}/cancel")
        assert response.status_code == 200 and response.json()["status"] == "cancelling", response.text
        job = await _finished(client, job_id, timeout=10)
        elapsed = time.monotonic() - started
    assert job.status == "cancelled", job
    assert elapsed < 10
    assert not (logs.parent / "manifest.json").exists()
    assert b'"event":"cancelled"' in logs.read_bytes()
    assert not scratch.exists()  # removed although the process was killed


async def test_a_job_whose_worker_was_killed_is_reaped_and_trained_again_by_another_worker(
    api_settings: ApiSettings, worker_settings: WorkerServiceSettings, redis: Redis, shakespeare: str
) -> None:
    body = _slow_job(Path(api_settings.app.corpus_root), shakespeare)
    stall_after = 4.0
    env = {
        **os.environ,
        "REDIS__URL": worker_settings.redis.url,
        "APP__ARTIFACTS_ROOT": worker_settings.app.artifacts_root,
        "APP__RUNS_ROOT": worker_settings.app.runs_root,
        "APP__CORPUS_ROOT": worker_settings.app.corpus_root,
        "APP__STALL_AFTER_SECONDS": str(stall_after),
        "WORKER__HEARTBEAT_INTERVAL": "0.5",
        "WORKER__HEALTH_CHECK_INTERVAL": "1",
    }
    settings = msgspec.structs.replace(
        api_settings, app=msgspec.structs.replace(api_settings.app, stall_after_seconds=stall_after)
    )
    async with AsyncTestClient(app=create_app(settings)) as client:
        job_id = await _submit(client, body)
        logs = Path(api_settings.app.artifacts_root) / "tokenizers" / job_id / "logs.jsonl"

        async def training_phase() -> bool:
            return logs.is_file() and b'"event":"training"' in logs.read_bytes()

        with worker_process("mt_tokenizer_worker", env) as first:
            await wait_for(training_phase, bool, timeout=60)
            # The worker refreshes the record's heartbeat while the process trains.
            beating = await wait_for(lambda: _tokenizer(client, job_id), lambda j: j.heartbeat_at is not None, 10)
            assert beating.status == "running"
            first.send_signal(signal.SIGKILL)
            first.wait()
        # No worker: its heartbeat ages until the job shows stalled.
        stalled = await wait_for(lambda: _tokenizer(client, job_id), lambda j: j.status == "stalled", 30)
        assert stalled.heartbeat_at is not None and stalled.attempts == 1
        with worker_process("mt_tokenizer_worker", env):
            job = await _finished(client, job_id, timeout=240)
    assert job.status == "succeeded", job.error
    assert job.attempts == 2
    assert (logs.parent / "manifest.json").is_file()
    assert logs.read_bytes().count(b'"event":"started"') == 2
