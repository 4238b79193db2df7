"""The object-store backend through the real stack: the API, the tokenizer worker and two trainer workers
each have their own local roots (as pods with an emptyDir each), and share nothing but Redis and a bucket on
the harness's S3-compatible server. Tokenizer artifacts, encode, listing, Range downloads and logs; a run's
checkpoints, cancelled on one trainer worker and resumed on another that never saw it; generation and export
with the final weights and a checkpoint. Every upload of a job comes before its ending is recorded."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from redis.asyncio import Redis

from mt_api.app import create_app
from mt_contracts import codec
from mt_contracts.corpora import CorpusInfo
from mt_contracts.jobs import CheckpointInfo, JobAccepted, JobStatus, RunJob, TokenizerJob
from mt_contracts.settings import ApiSettings, AppSettings, StorageSettings, WorkerServiceSettings
from mt_storage.jobs import run_jobs, tokenizer_jobs
from mt_storage.s3 import S3Store
from mt_storage.store import STORES, ArtifactStore, ObjectInfo
from tests.helpers import running_workers, wait_for

TERMINAL = {"succeeded", "failed", "cancelled"}
RUN = {
    "corpus_path": "small.txt",
    "n_layer": 1,
    "n_head": 2,
    "n_embd": 32,
    "block_size": 32,
    "batch_size": 4,
    "warmup_steps": 5,
    "eval_interval": 50,
    "eval_iters": 2,
    "checkpoint_interval": 20,
    "device": "cpu",
}


def _roots(app: AppSettings, root: Path) -> AppSettings:
    return msgspec.structs.replace(app, artifacts_root=str(root / "artifacts"), runs_root=str(root / "runs"))


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()} if root.exists() else set()


@pytest.fixture
def api_s3(api_settings: ApiSettings, s3_settings: StorageSettings, tmp_path: Path) -> ApiSettings:
    return msgspec.structs.replace(api_settings, app=_roots(api_settings.app, tmp_path / "api"), storage=s3_settings)


def _worker(settings: WorkerServiceSettings, storage: StorageSettings, root: Path) -> WorkerServiceSettings:
    return msgspec.structs.replace(settings, app=_roots(settings.app, root), storage=storage)


@pytest.fixture
async def client(api_s3: ApiSettings, redis: Redis) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(app=create_app(api_s3), timeout=120) as client:
        yield client


async def _run(client: AsyncTestClient[Litestar], run_id: str) -> RunJob:
    return codec.decode((await client.get(f"/runs/{run_id}")).content, RunJob)


async def test_everything_the_api_serves_comes_through_the_object_store(
    client: AsyncTestClient[Litestar],
    api_s3: ApiSettings,
    worker_settings: WorkerServiceSettings,
    s3_settings: StorageSettings,
    tmp_path: Path,
) -> None:
    tokenizer_settings = _worker(worker_settings, s3_settings, tmp_path / "tokenizer-pod")
    first_trainer = _worker(worker_settings, s3_settings, tmp_path / "trainer-pod-1")
    second_trainer = _worker(worker_settings, s3_settings, tmp_path / "trainer-pod-2")
    store = S3Store.from_settings(s3_settings)
    api_root = Path(api_s3.app.artifacts_root)

    ready = await client.get("/readyz")
    assert (ready.status_code, ready.json()["reasons"]) == (200, [])

    async with running_workers(tokenizer_settings, trainer=False):
        # ---- a tokenizer, trained in its own pod ----
        response = await client.post("/tokenizers/train", json={"corpus_path": "small.txt", "vocab_size": 300})
        tokenizer_id = codec.decode(response.content, JobAccepted).id

        async def tokenizer() -> TokenizerJob:
            return codec.decode((await client.get(f"/tokenizers/{tokenizer_id}")).content, TokenizerJob)

        job = await wait_for(tokenizer, lambda j: j.status in TERMINAL, 60)
        assert job.status == "succeeded", job.error
        assert not (api_root / "tokenizers" / tokenizer_id).exists()  # nothing shared but the bucket
        encoded = await client.post(f"/tokenizers/{tokenizer_id}/encode", json={"text": "ROMEO: hello"})
        assert encoded.status_code == 200, encoded.text
        assert encoded.json()["decoded"] == "ROMEO: hello"
        worker_dir = Path(tokenizer_settings.app.artifacts_root) / "tokenizers" / tokenizer_id
        listing = (await client.get(f"/artifacts/tokenizers/{tokenizer_id}")).json()["files"]
        assert {f["path"]: f["sha256"] for f in listing} == {
            name: hashlib.sha256((worker_dir / name).read_bytes()).hexdigest() for name in _files(worker_dir)
        }
        source = (worker_dir / "tokenizer.json").read_bytes()
        part = await client.get(
            f"/artifacts/tokenizers/{tokenizer_id}/download",
            params={"path": "tokenizer.json"},
            headers={"Range": "bytes=10-59"},
        )
        assert (part.status_code, part.content) == (206, source[10:60])
        assert part.headers["content-range"] == f"bytes 10-59/{len(source)}"
        logs = (await client.get(f"/tokenizers/{tokenizer_id}/logs", params={"tail": 3})).json()["lines"]
        assert logs == [
            msgspec.json.decode(line) for line in (worker_dir / "logs.jsonl").read_bytes().splitlines()[-3:]
        ]

        # ---- a run, cancelled on the first trainer pod after its first checkpoints ----
        body = {**RUN, "tokenizer_id": tokenizer_id, "max_steps": 1_000_000, "compile": "off"}
        run_id = codec.decode((await client.post("/runs/train", json=body)).content, JobAccepted).id
        async with running_workers(first_trainer, tokenizer=False):

            async def checkpoints_in_store() -> list[str]:
                return [i.key for i in store.list_objects(f"runs/{run_id}/checkpoints/")]

            await wait_for(checkpoints_in_store, lambda keys: len(keys) >= 1, 180)
            assert (await client.post(f"/runs/{run_id}/cancel")).json()["status"] == "cancelling"
            cancelled = await wait_for(lambda: _run(client, run_id), lambda j: j.status in TERMINAL, 30)
            assert cancelled.status == "cancelled"
        checkpoints = msgspec.json.decode(
            (await client.get(f"/runs/{run_id}/checkpoints")).content, type=list[CheckpointInfo]
        )
        assert checkpoints, "the API read no checkpoint index from the store"
        last = checkpoints[-1].step
        assert f"runs/{run_id}/{checkpoints[-1].path}" in await checkpoints_in_store()

        # ---- resumed on a second trainer pod that never saw the run ----
        assert not Path(second_trainer.app.runs_root).exists()
        response = await client.post(f"/runs/{run_id}/resume", json={"max_steps": last + 15})
        assert response.status_code == 202, response.text
        async with running_workers(second_trainer, tokenizer=False):
            resumed = await wait_for(lambda: _run(client, run_id), lambda j: j.status in TERMINAL, 180)
    assert resumed.status == "succeeded", resumed.error
    assert resumed.resumed_from_step == last
    assert resumed.progress is not None and resumed.progress.step == last + 15
    model_keys = {i.key for i in store.list_objects(f"artifacts/models/{run_id}/")}
    assert {f"artifacts/models/{run_id}/{name}" for name in ("manifest.json", "model.safetensors")} <= model_keys

    # ---- generation and export in the API, from what it fetched ----
    generated = await client.post(
        f"/runs/{run_id}/generate", json={"prompt": "ROMEO:", "max_new_tokens": 4, "seed": 3, "num_samples": 1}
    )
    assert generated.status_code == 200, generated.text
    assert len(generated.json()["samples"]) == 1
    from_checkpoint = await client.post(
        f"/runs/{run_id}/generate", json={"prompt": "ROMEO:", "max_new_tokens": 4, "seed": 3, "checkpoint": last}
    )
    assert from_checkpoint.status_code == 200, from_checkpoint.text
    exported = await client.post(f"/runs/{run_id}/export", json={"checkpoint": last})
    assert exported.status_code == 200, exported.text
    assert exported.json()["directory"] == str(api_root.resolve() / "models" / run_id / "export" / f"step-{last}")
    export_keys = {i.key for i in store.list_objects(f"artifacts/models/{run_id}/export/step-{last}/")}
    assert f"artifacts/models/{run_id}/export/step-{last}/manifest.json" in export_keys
    assert len(export_keys) == len(exported.json()["files"]) + 1

    weights = (Path(second_trainer.app.artifacts_root) / "models" / run_id / "model.safetensors").read_bytes()
    part = await client.get(
        f"/artifacts/models/{run_id}/download", params={"path": "model.safetensors"}, headers={"Range": "bytes=-100"}
    )
    assert (part.status_code, part.content) == (206, weights[-100:])


class Watched:
    """The real S3 store, noting for each write (an upload or a delete) in a job's folders the status of the
    job's record in Redis at that moment."""

    def __init__(self, store: ArtifactStore, redis: Redis, loop: asyncio.AbstractEventLoop) -> None:
        self.store = store
        self.runs = run_jobs(redis)
        self.tokenizers = tokenizer_jobs(redis)
        self.loop = loop
        self.writes: list[tuple[str, JobStatus | None]] = []  # (job id, its status)

    async def _status(self, job_id: str) -> JobStatus | None:
        if job_id.startswith("run_"):
            run = await self.runs.get(job_id)
            return run.status if run is not None else None
        tokenizer = await self.tokenizers.get(job_id)
        return tokenizer.status if tokenizer is not None else None

    def _note(self, key: str) -> None:
        """Called in the uploading thread: the record is read in the test's event loop. Keys outside a job's
        folders (prepared datasets, corpora) are not noted."""
        parts = key.split("/")
        job_id = parts[2] if parts[0] == "artifacts" else parts[1]
        if job_id.startswith(("run_", "tok_")):
            status = asyncio.run_coroutine_threadsafe(self._status(job_id), self.loop).result()
            self.writes.append((job_id, status))

    def put_file(self, key: str, path: Path) -> None:
        self._note(key)
        self.store.put_file(key, path)

    def get_file(self, key: str, path: Path) -> None:
        self.store.get_file(key, path)

    def list_objects(self, prefix: str) -> list[ObjectInfo]:
        return self.store.list_objects(prefix)

    def delete(self, keys: list[str]) -> None:
        for key in keys:
            self._note(key)
        self.store.delete(keys)

    def check(self) -> str | None:
        return self.store.check()


async def test_a_job_is_uploaded_before_its_ending_is_recorded(
    api_s3: ApiSettings,
    worker_settings: WorkerServiceSettings,
    s3_settings: StorageSettings,
    redis: Redis,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every service opens the real S3 store through the registry, watched.
    watched: list[Watched] = []

    def open_watched(settings: StorageSettings) -> ArtifactStore:
        watched.append(Watched(S3Store.from_settings(settings), redis, asyncio.get_running_loop()))
        return watched[-1]

    monkeypatch.setitem(STORES, "s3", open_watched)
    store = S3Store.from_settings(s3_settings)
    worker_pod = _worker(worker_settings, s3_settings, tmp_path / "worker-pod")
    async with AsyncTestClient(app=create_app(api_s3), timeout=120) as client, running_workers(worker_pod):
        response = await client.post("/tokenizers/train", json={"corpus_path": "small.txt", "vocab_size": 300})
        tokenizer_id = codec.decode(response.content, JobAccepted).id

        async def tokenizer() -> TokenizerJob:
            return codec.decode((await client.get(f"/tokenizers/{tokenizer_id}")).content, TokenizerJob)

        assert (await wait_for(tokenizer, lambda j: j.status in TERMINAL, 60)).status == "succeeded"
        body = {**RUN, "tokenizer_id": tokenizer_id, "max_steps": 1_000_000}
        run_id = codec.decode((await client.post("/runs/train", json=body)).content, JobAccepted).id
        await wait_for(lambda: _run(client, run_id), lambda j: j.checkpoint is not None, 180)
        assert (await client.post(f"/runs/{run_id}/cancel")).json()["status"] == "cancelling"
        cancelled = await wait_for(lambda: _run(client, run_id), lambda j: j.status in TERMINAL, 30)

        # As soon as the record ends, the bucket holds the checkpoint the run stopped with, and the log
        # with its last line.
        assert cancelled.status == "cancelled" and cancelled.checkpoint is not None
        listed = msgspec.json.decode(
            (await client.get(f"/runs/{run_id}/checkpoints")).content, type=list[CheckpointInfo]
        )
        assert listed[-1] == cancelled.checkpoint
        in_store = {i.key for i in store.list_objects(f"runs/{run_id}/")}
        assert f"runs/{run_id}/{cancelled.checkpoint.path}" in in_store
        logs = (await client.get(f"/runs/{run_id}/logs", params={"tail": 1})).json()["lines"]
        assert [line["event"] for line in logs] == ["cancelled"]
    writes = [write for each in watched for write in each.writes]
    assert {job_id for job_id, _ in writes} == {tokenizer_id, run_id}
    # Not one write after the ending: each came while its job was running (or cancelling).
    assert [(job_id, status) for job_id, status in writes if status not in {"running", "cancelling"}] == []


def _pod(settings: ApiSettings, storage: StorageSettings, root: Path) -> ApiSettings:
    """An API pod with every root of its own (corpus root included: an emptyDir), on ``storage``."""
    app = msgspec.structs.replace(_roots(settings.app, root), corpus_root=str(root / "corpus"))
    return msgspec.structs.replace(settings, app=app, storage=storage)


async def test_api_pods_with_corpus_folders_of_their_own_share_the_uploaded_corpora(
    api_settings: ApiSettings,
    worker_settings: WorkerServiceSettings,
    s3_settings: StorageSettings,
    shakespeare: str,
    redis: Redis,
    tmp_path: Path,
) -> None:
    first_pod, second_pod = (
        _pod(api_settings, s3_settings, tmp_path / "api-1"),
        _pod(api_settings, s3_settings, tmp_path / "api-2"),
    )
    # The worker keeps nothing it does not need (STORAGE__CACHE_MAX_BYTES=1): what a job uses is held while it
    # runs, and trimmed once it ended.
    tokenizer_pod = _worker(
        worker_settings, msgspec.structs.replace(s3_settings, cache_max_bytes=1), tmp_path / "tokenizer-pod"
    )
    tokenizer_pod = msgspec.structs.replace(
        tokenizer_pod,
        app=msgspec.structs.replace(tokenizer_pod.app, corpus_root=str(tmp_path / "tokenizer-pod/corpus")),
    )
    text = shakespeare[:60_000].encode()
    async with (
        AsyncTestClient(app=create_app(first_pod), timeout=120) as first,
        AsyncTestClient(app=create_app(second_pod), timeout=120) as second,
    ):
        created = await first.put("/corpora/plays", content=text, headers={"if-none-match": "*"})
        assert created.status_code == 201, created.text
        info = codec.decode(created.content, CorpusInfo)
        assert not Path(second_pod.app.corpus_root, "plays").exists()

        # The other pod lists, shows and refuses to create it again, from the bucket.
        assert codec.decode((await second.get("/corpora")).content, list[CorpusInfo]) == [info]
        assert codec.decode((await second.get("/corpora/plays")).content, CorpusInfo) == info
        again = await second.put("/corpora/plays", content=b"other\n", headers={"if-none-match": "*"})
        assert again.status_code == 412, again.text
        # It checks and estimates a submission with the corpus's bytes, and a worker with a corpus folder of
        # its own trains on it.
        missing = await second.post("/tokenizers/train", json={"corpus_path": "plays/other.txt", "vocab_size": 300})
        assert (missing.status_code, missing.json()["errors"][0]["field"]) == (400, "corpus_path")
        body = {"corpus_path": "plays", "vocab_size": 300}
        estimate = await second.post("/tokenizers/train", json=body, params={"dry_run": "true"})
        assert (estimate.status_code, estimate.json()["corpus_bytes"]) == (200, info.bytes), estimate.text
        tokenizer_id = codec.decode((await second.post("/tokenizers/train", json=body)).content, JobAccepted).id
        async with running_workers(tokenizer_pod, trainer=False):

            async def tokenizer() -> TokenizerJob:
                return codec.decode((await second.get(f"/tokenizers/{tokenizer_id}")).content, TokenizerJob)

            trained = await wait_for(tokenizer, lambda j: j.status in TERMINAL, 60)
        assert trained.status == "succeeded", trained.error
        assert trained.result is not None and trained.result.corpus_bytes == info.bytes
        worker_roots = (Path(tokenizer_pod.app.corpus_root), Path(tokenizer_pod.app.artifacts_root) / "tokenizers")
        assert [sorted(p.name for p in root.iterdir()) for root in worker_roots] == [[], []]
        assert (await second.post(f"/tokenizers/{tokenizer_id}/encode", json={"text": "ROMEO"})).status_code == 200

        # Replaced through the second pod: the first shows the new one.
        replaced = await second.put("/corpora/plays", content=text[:30_000])
        assert replaced.status_code == 200, replaced.text
        new_info = codec.decode(replaced.content, CorpusInfo)
        assert codec.decode((await first.get("/corpora/plays")).content, CorpusInfo) == new_info != info
        estimate = await first.post("/tokenizers/train", json=body, params={"dry_run": "true"})
        assert estimate.json()["corpus_bytes"] == new_info.bytes == 30_000

        # Deleted through the first pod: gone for the second too, whose cached copy no longer validates.
        assert (await first.delete("/corpora/plays")).status_code == 204
        assert (await second.get("/corpora")).json() == []
        assert (await second.get("/corpora/plays")).status_code == 404
        assert (await second.delete("/corpora/plays")).status_code == 404
        refused = await second.post("/tokenizers/train", json=body)
        assert (refused.status_code, refused.json()["errors"][0]["field"]) == (400, "corpus_path")
        assert not Path(second_pod.app.corpus_root, "plays").exists()
    assert S3Store.from_settings(s3_settings).list_objects("corpora/") == []
