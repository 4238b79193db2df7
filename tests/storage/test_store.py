"""The artifact store against a real S3-compatible server (the harness's moto server on a free port): uploads
commit with the manifest last, downloads verify every file and skip what the cache holds, a prefix without
its manifest is never read, large files go up in parts and come back through ranged GETs, pruned checkpoints
are deleted after the index that dropped them, and a worker that lost its run's lease (real leases in the
private Redis) neither replaces nor deletes what the run's new owner uploaded."""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest
from redis.asyncio import Redis

from mt_contracts import codec
from mt_contracts.jobs import CheckpointInfo, RunJob
from mt_contracts.manifests import FileEntry
from mt_contracts.requests import TrainRunRequest
from mt_contracts.settings import AppSettings, CorpusSettings, StorageSettings
from mt_storage.corpora import Staging
from mt_storage.files import atomic_write_bytes, sha256_file
from mt_storage.jobs import run_jobs
from mt_storage.layout import Layout
from mt_storage.lifecycle import LeaseLost, Lifecycle
from mt_storage.s3 import S3Store
from mt_storage.store import SINGLE_PART_LIMIT, ArtifactStore, Mirror, ObjectInfo, StoreError, fenced, open_store

TOK = "tok_01JDQ8ZQ0000000000000000AA"


class Recording:
    """The real store, with the order of its uploads and downloads written down."""

    def __init__(self, store: ArtifactStore) -> None:
        self.store = store
        self.puts: list[str] = []
        self.gets: list[str] = []

    def put_file(self, key: str, path: Path) -> None:
        self.puts.append(key)
        self.store.put_file(key, path)

    def get_file(self, key: str, path: Path) -> None:
        self.gets.append(key)
        self.store.get_file(key, path)

    def list_objects(self, prefix: str) -> list[ObjectInfo]:
        return self.store.list_objects(prefix)

    def delete(self, keys: list[str]) -> None:
        self.store.delete(keys)

    def check(self) -> str | None:
        return self.store.check()


def _layout(root: Path) -> Layout:
    return Layout.from_settings(
        AppSettings(artifacts_root=str(root / "artifacts"), runs_root=str(root / "runs"), corpus_root=str(root))
    )


class Manifest(msgspec.Struct):
    files: list[FileEntry]
    note: str = "test"


def _folder(directory: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        atomic_write_bytes(directory / name, data)
    entries = [
        FileEntry(path=name, size=len(data), sha256=hashlib.sha256(data).hexdigest()) for name, data in files.items()
    ]
    atomic_write_bytes(directory / "manifest.json", codec.encode(Manifest(files=entries)))


def test_open_store_picks_the_backend() -> None:
    assert open_store(StorageSettings()) is None
    with pytest.raises(StoreError, match="STORAGE__S3_BUCKET is empty"):
        open_store(StorageSettings(backend="s3"))


def test_a_folder_goes_up_manifest_last_and_comes_back_verified(tmp_path: Path, s3_settings: StorageSettings) -> None:
    store = Recording(S3Store.from_settings(s3_settings))
    writer, reader = Mirror(store, _layout(tmp_path / "a")), Mirror(store, _layout(tmp_path / "b"))
    source = writer.layout.tokenizer_dir(TOK)
    _folder(source, {"tokenizer.json": b'{"model": 1}', "tokenizer_config.json": b"{}"})
    atomic_write_bytes(source / "export" / "step-2" / "weights.bin", b"w" * 10)
    atomic_write_bytes(source / "export" / "step-2" / "manifest.json", b'{"files": []}')
    (source / ".tokenizer.json.123.tmp").write_bytes(b"half written")
    (tmp_path / "outside.txt").write_text("not an artifact")
    os.symlink(tmp_path / "outside.txt", source / "link.txt")  # never followed out of the folder
    assert writer.push(source) == 5
    base = f"artifacts/tokenizers/{TOK}"
    assert store.puts == [
        f"{base}/export/step-2/weights.bin",
        f"{base}/tokenizer.json",
        f"{base}/tokenizer_config.json",
        f"{base}/export/step-2/manifest.json",
        f"{base}/manifest.json",
    ]
    # Under the configured prefix in the bucket; scratch files never leave the machine.
    client = S3Store.from_settings(s3_settings).client
    listed = client.list_objects_v2(Bucket=s3_settings.s3_bucket)
    assert sorted(item.get("Key", "") for item in listed.get("Contents", [])) == sorted(f"mt/{k}" for k in store.puts)
    assert writer.push(source) == 0  # nothing changed

    target = reader.layout.tokenizer_dir(TOK)
    assert reader.pull(target) is True
    assert store.gets[0] == f"{base}/manifest.json"  # read first, to verify the files against it
    assert store.gets[-2:] == [f"{base}/export/step-2/manifest.json", f"{base}/manifest.json"]
    for name in ("tokenizer.json", "tokenizer_config.json", "manifest.json", "export/step-2/weights.bin"):
        assert (target / name).read_bytes() == (source / name).read_bytes(), name
    assert sorted(p.name for p in target.iterdir()) == [
        "export",
        "manifest.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    store.gets.clear()
    assert reader.pull(target) is True and store.gets == []  # a committed folder is never fetched again


def test_a_prefix_without_its_manifest_is_not_read(tmp_path: Path, s3_settings: StorageSettings) -> None:
    store = S3Store.from_settings(s3_settings)
    writer, reader = Mirror(store, _layout(tmp_path / "a")), Mirror(store, _layout(tmp_path / "b"))
    source = writer.layout.model_dir("run_x")
    _folder(source, {"model.safetensors": b"weights"})
    (source / "manifest.json").unlink()  # an upload interrupted before its commit point
    writer.push(source)
    target = reader.layout.model_dir("run_x")
    assert reader.pull(target) is False
    assert not target.exists()
    # Not committed folders (logs, a run's folder) are read as they are.
    assert reader.pull(target, committed=False) is True
    assert (target / "model.safetensors").read_bytes() == b"weights"


def test_a_file_that_does_not_match_its_manifest_is_refused(tmp_path: Path, s3_settings: StorageSettings) -> None:
    store = S3Store.from_settings(s3_settings)
    writer, reader = Mirror(store, _layout(tmp_path / "a")), Mirror(store, _layout(tmp_path / "b"))
    source = writer.layout.tokenizer_dir(TOK)
    _folder(source, {"tokenizer.json": b"original"})
    writer.push(source)
    (source / "tokenizer.json").write_bytes(b"tampered")  # same size, other bytes
    store.put_file(f"artifacts/tokenizers/{TOK}/tokenizer.json", source / "tokenizer.json")
    target = reader.layout.tokenizer_dir(TOK)
    with pytest.raises(StoreError, match=f"artifacts/tokenizers/{TOK}/tokenizer.json: the downloaded file does not"):
        reader.pull(target)
    assert not (target / "tokenizer.json").exists() and not (target / "manifest.json").exists()
    assert [p.name for p in target.iterdir()] == []  # no temporary file left behind


def test_growing_and_rewritten_files_are_fetched_again(tmp_path: Path, s3_settings: StorageSettings) -> None:
    store = Recording(S3Store.from_settings(s3_settings))
    writer, reader = Mirror(store, _layout(tmp_path / "a")), Mirror(store, _layout(tmp_path / "b"))
    log = writer.layout.run_logs("run_x")
    atomic_write_bytes(log, b'{"line": 1}\n')
    index = writer.layout.run_dir("run_x") / "checkpoints.json"
    atomic_write_bytes(index, b'[{"step": 100}, {"step": 200}]')
    writer.push_files([log, index])
    local_log, local_index = reader.layout.run_logs("run_x"), reader.layout.run_dir("run_x") / "checkpoints.json"
    assert reader.pull_file(local_log) and reader.pull_file(local_index)
    atomic_write_bytes(log, b'{"line": 1}\n{"line": 2}\n')
    atomic_write_bytes(index, b'[{"step": 200}, {"step": 300}]')  # same length, other content
    writer.push_files([log, index])
    store.gets.clear()
    assert reader.pull_file(local_log) and reader.pull_file(local_index)
    assert (local_log.read_bytes(), local_index.read_bytes()) == (log.read_bytes(), index.read_bytes())
    assert len(store.gets) == 2
    store.gets.clear()
    assert reader.pull_file(local_log) and store.gets == []  # unchanged: not fetched
    assert reader.pull_file(reader.layout.run_logs("run_y")) is False  # nothing in the store, nothing here


def test_large_files_go_up_in_parts_and_come_back_through_ranged_gets(
    tmp_path: Path, s3_settings: StorageSettings
) -> None:
    store = S3Store.from_settings(s3_settings)
    writer, reader = Mirror(store, _layout(tmp_path / "a")), Mirror(store, _layout(tmp_path / "b"))
    source = writer.layout.model_dir("run_big")
    payload = os.urandom(SINGLE_PART_LIMIT + 3 * 1024 * 1024)
    _folder(source, {"model.safetensors": payload})
    writer.push(source)
    (info,) = [i for i in store.list_objects("artifacts/models/run_big/") if i.key.endswith("model.safetensors")]
    assert (info.size, "-" in info.etag) == (len(payload), True)  # a multipart upload's ETag
    target = reader.layout.model_dir("run_big")
    assert reader.pull(target)
    assert sha256_file(target / "model.safetensors") == hashlib.sha256(payload).hexdigest()
    # One ranged GET, as the API's own downloads and s3transfer's parallel parts use them.
    part = store.client.get_object(
        Bucket=s3_settings.s3_bucket, Key="mt/artifacts/models/run_big/model.safetensors", Range="bytes=100-199"
    )
    assert (part["ContentRange"], part["Body"].read()) == (f"bytes 100-199/{len(payload)}", payload[100:200])


def test_pruned_checkpoints_leave_the_store_after_the_index(tmp_path: Path, s3_settings: StorageSettings) -> None:
    store = Recording(S3Store.from_settings(s3_settings))
    mirror = Mirror(store, _layout(tmp_path / "a"))
    run_dir = mirror.layout.run_dir("run_x")
    _index(run_dir, [100, 200])
    mirror.push_checkpoints(run_dir)
    _index(run_dir, [200, 300])  # step 300 written, step 100 pruned
    store.puts.clear()
    mirror.push_checkpoints(run_dir)
    assert store.puts == ["runs/run_x/checkpoints/step-300.pt", "runs/run_x/checkpoints.json"]
    assert [i.key for i in store.list_objects("runs/run_x/")] == [
        "runs/run_x/checkpoints.json",
        "runs/run_x/checkpoints/step-200.pt",
        "runs/run_x/checkpoints/step-300.pt",
    ]


def _stored_index(store: S3Store, run_id: str) -> list[int]:
    """The steps the store's index of ``run_id`` names, after checking that it holds each of them."""
    held = {info.key for info in store.list_objects(f"runs/{run_id}/")}
    with tempfile.TemporaryDirectory() as tmp:
        store.get_file(f"runs/{run_id}/checkpoints.json", Path(tmp) / "index")
        entries = codec.decode((Path(tmp) / "index").read_bytes(), list[CheckpointInfo])
    assert all(f"runs/{run_id}/{entry.path}" in held for entry in entries)
    return [entry.step for entry in entries]


def test_the_stores_index_names_only_checkpoints_it_holds_while_training_writes_on(
    tmp_path: Path, s3_settings: StorageSettings
) -> None:
    store = S3Store.from_settings(s3_settings)
    mirror = Mirror(store, _layout(tmp_path / "a"))
    run_dir = mirror.layout.run_dir("run_x")
    _index(run_dir, [100, 200])
    mirror.push_checkpoints(run_dir)
    # The index was read before the training process dropped step 100 (keep_checkpoints): the store keeps
    # the checkpoint its index names.
    _index(run_dir, [100, 200, 300])
    (run_dir / "checkpoints" / "step-100.pt").unlink()
    mirror.push_checkpoints(run_dir)
    assert _stored_index(store, "run_x") == [100, 200, 300]
    # An index naming a checkpoint that is gone before it reached the store: the store's index leaves it out.
    _index(run_dir, [300, 400])
    (run_dir / "checkpoints" / "step-400.pt").unlink()
    mirror.push_checkpoints(run_dir)
    assert _stored_index(store, "run_x") == [300]


def test_check_reports_a_missing_bucket(s3_settings: StorageSettings) -> None:
    assert S3Store.from_settings(s3_settings).check() is None
    missing = S3Store.from_settings(msgspec.structs.replace(s3_settings, s3_bucket="no-such-bucket"))
    reason = missing.check()
    assert reason is not None and reason.startswith("storage: bucket no-such-bucket is not usable: ")


def _index(run_dir: Path, steps: list[int], content: bytes = b"x") -> None:
    moment = datetime(2026, 12, 1, tzinfo=UTC)
    entries = [
        CheckpointInfo(step=step, path=f"checkpoints/step-{step}.pt", size_bytes=1, created_at=moment) for step in steps
    ]
    for entry in entries:
        atomic_write_bytes(run_dir / entry.path, content)
    atomic_write_bytes(run_dir / "checkpoints.json", codec.encode(entries))
    for stale in (run_dir / "checkpoints").iterdir():
        if stale.name not in {Path(entry.path).name for entry in entries}:
            stale.unlink()  # pruned, as the training loop prunes


def test_a_run_is_pulled_when_the_stores_index_is_ahead(tmp_path: Path, s3_settings: StorageSettings) -> None:
    store = Recording(S3Store.from_settings(s3_settings))
    writer, reader = Mirror(store, _layout(tmp_path / "a")), Mirror(store, _layout(tmp_path / "b"))
    local = reader.layout.run_dir("run_x")
    assert not reader.has_checkpoint(local)
    _index(writer.layout.run_dir("run_x"), [20, 40])
    writer.push_checkpoints(writer.layout.run_dir("run_x"))
    assert reader.has_checkpoint(local)
    _index(local, [20])  # this pod ran the run earlier, then another pod went on
    reader.pull_run("run_x", TOK)
    assert (local / "checkpoints" / "step-40.pt").is_file()
    assert (local / "checkpoints.json").read_bytes() == (
        writer.layout.run_dir("run_x") / "checkpoints.json"
    ).read_bytes()
    store.gets.clear()
    reader.pull_run("run_x", TOK)  # level with the store: only the index is read
    assert store.gets == ["runs/run_x/checkpoints.json"]


def _upload(root: Path, name: str, text: bytes) -> None:
    staging = Staging(root, name, CorpusSettings())
    try:
        staging.write(text)
        staging.commit(None, "text/plain", overwrite=True)
    finally:
        staging.discard()


def test_an_uploaded_corpus_reaches_a_worker_and_a_replaced_one_is_fetched_again(
    tmp_path: Path, s3_settings: StorageSettings
) -> None:
    store = Recording(S3Store.from_settings(s3_settings))
    api = Mirror(store, Layout.from_settings(AppSettings(corpus_root=str(tmp_path / "api"))))
    worker = Mirror(store, Layout.from_settings(AppSettings(corpus_root=str(tmp_path / "worker"))))
    _upload(api.layout.corpus_root, "notes", b"first text\n")
    api.push(api.layout.corpus_root / "notes")
    assert store.puts == ["corpora/notes/notes.txt", "corpora/notes/manifest.json"]

    worker.pull_corpus("notes")
    assert (worker.layout.corpus_root / "notes" / "notes.txt").read_bytes() == b"first text\n"
    worker.pull_corpus("small.txt")  # not an uploaded corpus: left alone
    assert not (worker.layout.corpus_root / "small.txt").exists()

    _upload(api.layout.corpus_root, "notes", b"replaced text, longer\n")
    api.push(api.layout.corpus_root / "notes", prune=True)
    worker.pull_corpus("notes/notes.txt")
    assert (worker.layout.corpus_root / "notes" / "notes.txt").read_bytes() == b"replaced text, longer\n"

    api.remove(api.layout.corpus_root / "notes")
    assert store.list_objects("corpora/") == []


async def test_a_worker_that_lost_its_run_neither_replaces_nor_deletes_the_new_owners_checkpoints(
    tmp_path: Path, s3_settings: StorageSettings, redis: Redis
) -> None:
    store = S3Store.from_settings(s3_settings)
    run_id = "run_01JDQ8ZQ0000000000000000AA"
    lifecycle = Lifecycle(run_jobs(redis), "run", stall_after_seconds=0.01)
    now = datetime.now(UTC)
    request = TrainRunRequest(tokenizer_id=TOK, corpus_path="a.txt")
    await lifecycle.create(RunJob(id=run_id, request=request, created_at=now, updated_at=now))
    first = await lifecycle.start(run_id)
    assert first is not None
    old_pod, new_pod = Mirror(store, _layout(tmp_path / "a")), Mirror(store, _layout(tmp_path / "b"))
    old_dir, new_dir = old_pod.layout.run_dir(run_id), new_pod.layout.run_dir(run_id)
    _index(old_dir, [20])
    await fenced(lambda check: old_pod.push_checkpoints(old_dir, check), first.heartbeat)  # it holds the lease

    # Its heartbeats stop reaching Redis: the run is reaped and resumed on another pod, which goes on from
    # step 20 and prunes it.
    await asyncio.sleep(0.05)
    assert await lifecycle.reap(run_id, "requeue") is not None
    second = await lifecycle.start(run_id)
    assert second is not None
    new_pod.pull_run(run_id, TOK)
    _index(new_dir, [40, 60], content=b"new owner")
    await fenced(lambda check: new_pod.push_checkpoints(new_dir, check), second.heartbeat)

    # The first pod comes back with a checkpoint of its own at step 40 and uploads late: refused before any
    # write, so the store keeps the new owner's index and checkpoints.
    _index(old_dir, [40], content=b"old owner")
    with pytest.raises(LeaseLost):
        await fenced(lambda check: old_pod.push_run(run_id, check), first.heartbeat)
    assert [i.key for i in store.list_objects(f"runs/{run_id}/")] == [
        f"runs/{run_id}/checkpoints.json",
        f"runs/{run_id}/checkpoints/step-40.pt",
        f"runs/{run_id}/checkpoints/step-60.pt",
    ]
    fresh = Mirror(store, _layout(tmp_path / "c"))
    fresh.pull_run(run_id, TOK)
    fresh_dir = fresh.layout.run_dir(run_id)
    assert (fresh_dir / "checkpoints.json").read_bytes() == (new_dir / "checkpoints.json").read_bytes()
    assert (fresh_dir / "checkpoints" / "step-40.pt").read_bytes() == b"new owner"


def test_the_cache_drops_the_least_recently_used_folders_that_nothing_holds_and_the_store_has(
    tmp_path: Path, s3_settings: StorageSettings
) -> None:
    store = S3Store.from_settings(s3_settings)
    writer = Mirror(store, _layout(tmp_path / "a"))
    first, second, third = (f"tok_01JDQ8ZQ0000000000000000A{letter}" for letter in "BCD")
    for tokenizer_id in (first, second, third):
        _folder(writer.layout.tokenizer_dir(tokenizer_id), {"tokenizer.json": os.urandom(10_000)})
        writer.push(writer.layout.tokenizer_dir(tokenizer_id))
    # Room for two tokenizers (10 kB and a manifest each), not three.
    reader = Mirror(store, _layout(tmp_path / "b"), cache_max_bytes=25_000)

    def cached() -> list[str]:
        return sorted(p.name for p in reader.layout.tokenizer_dir(first).parent.iterdir())

    reader.pull(reader.layout.tokenizer_dir(first))
    reader.pull(reader.layout.tokenizer_dir(second))
    reader.pull(reader.layout.tokenizer_dir(first))  # used again: the second is now the least recently used
    assert cached() == [first, second]
    reader.pull(reader.layout.tokenizer_dir(third))
    assert cached() == [first, third]

    # A held folder (a running job's) stays, even when it is the least recently used.
    with reader.hold([reader.layout.tokenizer_dir(first) / "tokenizer.json"]):
        reader.pull(reader.layout.tokenizer_dir(second))
    assert cached() == [first, second]

    # A folder with a file the store lacks (a checkpoint not uploaded yet) is the only copy: never removed.
    run_dir = reader.layout.run_dir("run_01JDQ8ZQ0000000000000000AA")
    atomic_write_bytes(run_dir / "checkpoints" / "step-20.pt", os.urandom(20_000))
    os.utime(run_dir, ns=(0, 0))  # the least recently used of all
    reader.pull(reader.layout.tokenizer_dir(third))
    assert cached() == [third] and run_dir.is_dir()
    # Once uploaded it can go: the cache is over its limit until then.
    reader.push(run_dir)
    assert reader.trim() == [run_dir] and not run_dir.exists()
    assert reader.trim() == []  # within the limit
    # Nothing but the cache is touched: the store still holds every tokenizer.
    assert len(reader.committed(reader.layout.tokenizer_dir(first).parent)) == 3
