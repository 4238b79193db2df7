"""The job runner through the real stack: one owner per job even when the stall limit is shorter than a
child's start-up, a Redis crash ridden out, a full disk named."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import msgspec
import pytest
from arq.worker import Worker
from litestar.testing import AsyncTestClient

from mt_api.app import create_app
from mt_contracts import codec
from mt_contracts.jobs import TokenizerJob
from mt_contracts.settings import ApiSettings, AppSettings, RedisSettings, WorkerServiceSettings
from mt_storage.embedded_redis import EmbeddedRedis
from mt_trainer_worker.worker import create_worker as create_trainer_worker
from tests.helpers import close_workers, running_workers, wait_for
from tests.integration.jobs import RUN, finished_run, get_run, submit_run, trained_tokenizer


def _log_events(settings: AppSettings, run_id: str) -> list[dict[str, object]]:
    path = Path(settings.artifacts_root) / "models" / run_id / "logs.jsonl"
    return [msgspec.json.decode(line) for line in path.read_bytes().splitlines()]


@asynccontextmanager
async def _trainer_workers(settings: WorkerServiceSettings, count: int) -> AsyncIterator[list[Worker]]:
    """``count`` real trainer workers (and one tokenizer worker) polling the same queue in this loop."""
    async with running_workers(settings, trainer=False) as tokenizer_workers:
        trainers = [create_trainer_worker(settings, handle_signals=False) for _ in range(count)]
        tasks = [asyncio.create_task(worker.main()) for worker in trainers]
        try:
            yield [*tokenizer_workers, *trainers]
        finally:
            for worker in trainers:
                in_flight = [task for task in worker.tasks.values() if not task.done()]
                if in_flight:
                    await asyncio.wait(in_flight, timeout=30)
            await close_workers(trainers, tasks)


async def test_a_stall_limit_below_the_childs_start_up_still_runs_each_run_once(
    api_settings: ApiSettings, worker_settings: WorkerServiceSettings
) -> None:
    # A training child takes seconds to import torch; the reapers of two workers look every second for runs
    # silent for 2 s. The supervising worker renews the lease from before the child starts, so none is reaped.
    stall = 2.0
    app = msgspec.structs.replace(worker_settings.app, stall_after_seconds=stall)
    settings = msgspec.structs.replace(worker_settings, app=app)
    api = msgspec.structs.replace(
        api_settings, app=msgspec.structs.replace(api_settings.app, stall_after_seconds=stall)
    )
    async with AsyncTestClient(app=create_app(api)) as client, _trainer_workers(settings, 2):
        tokenizer_id = await trained_tokenizer(client)
        run_ids = [await submit_run(client, {**RUN, "tokenizer_id": tokenizer_id, "max_steps": 30}) for _ in range(2)]
        runs = [await finished_run(client, run_id) for run_id in run_ids]
    for run in runs:
        assert run.status == "succeeded", run.error
        assert (run.attempts, run.restarts) == (1, 0)
        events = [line["event"] for line in _log_events(settings.app, run.id)]
        assert events.count("process_started") == 1, events
        assert "lease_lost" not in events and "stopped" not in events


@contextmanager
def _own_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "redis-data", persistent=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_a_redis_crash_is_ridden_out_by_the_worker_the_api_and_the_run(
    tmp_path: Path, api_settings: ApiSettings, worker_settings: WorkerServiceSettings
) -> None:
    with _own_redis(tmp_path) as server:
        redis = RedisSettings(url=server.url)
        api = msgspec.structs.replace(api_settings, redis=redis)
        settings = msgspec.structs.replace(worker_settings, redis=redis)
        async with AsyncTestClient(app=create_app(api)) as client, running_workers(settings):
            tokenizer_id = await trained_tokenizer(client)
            run_id = await submit_run(client, {**RUN, "tokenizer_id": tokenizer_id, "max_steps": 400})
            await wait_for(lambda: get_run(client, run_id), lambda j: j.progress is not None, 120)
            assert (await client.get("/readyz")).status_code == 200

            server.kill()
            down = await client.get("/readyz")
            assert down.status_code == 503
            response = await client.get(f"/runs/{run_id}")
            assert response.status_code == 503
            assert response.headers["content-type"].startswith("application/problem+json")
            assert response.json()["status"] == 503 and "Redis" in response.json()["detail"]
            await asyncio.sleep(10)
            server.start()

            async def readiness() -> int:
                return (await client.get("/readyz")).status_code

            await wait_for(readiness, lambda status: status == 200, 30)
            run = await wait_for(
                lambda: get_run(client, run_id), lambda j: j.status in {"succeeded", "failed", "cancelled"}, 300
            )
            tokenizer = codec.decode((await client.get(f"/tokenizers/{tokenizer_id}")).content, TokenizerJob)
    assert run.status == "succeeded", run.error
    assert (run.attempts, run.restarts) == (1, 0)
    assert tokenizer.status == "succeeded"
    assert run.progress is not None and run.progress.step == 400
    assert run.checkpoint is not None and run.checkpoint.step == 400
    events = [line["event"] for line in _log_events(settings.app, run_id)]
    assert events.count("process_started") == 1 and events[-1] == "succeeded"


@contextmanager
def _tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("mount") is None, reason="mounting a tmpfs needs root")
async def test_a_full_disk_fails_the_run_disk_full_naming_the_folder_even_when_its_log_cannot_be_written(
    tmp_path: Path, api_settings: ApiSettings, worker_settings: WorkerServiceSettings
) -> None:
    runs_root = tmp_path / "small-runs"
    models = Path(worker_settings.app.artifacts_root) / "models"
    with _tmpfs(runs_root, "1m"), _tmpfs(models, "64k"):
        # The log's own disk is full before the run starts: the failure must travel through the pipe.
        (models / "filler").write_bytes(b"x" * (64 * 1024 - 4096))
        with pytest.raises(OSError):
            (models / "more").write_bytes(b"x" * 8192)
        app = msgspec.structs.replace(worker_settings.app, runs_root=str(runs_root))
        settings = msgspec.structs.replace(worker_settings, app=app)
        api = msgspec.structs.replace(
            api_settings, app=msgspec.structs.replace(api_settings.app, runs_root=str(runs_root))
        )
        async with AsyncTestClient(app=create_app(api)) as client, running_workers(settings):
            tokenizer_id = await trained_tokenizer(client)
            # A 2 x 128 model's checkpoint (weights and AdamW moments, about 5 MB) cannot fit in 1 MB.
            body = {**RUN, "tokenizer_id": tokenizer_id, "n_layer": 2, "n_embd": 128, "max_steps": 40}
            run_id = await submit_run(client, body)
            run = await wait_for(
                lambda: get_run(client, run_id), lambda j: j.status in {"succeeded", "failed", "cancelled"}, 240
            )
        assert run.status == "failed"
        assert run.error is not None and run.error.code == "disk_full", run.error
        assert f"{run_id}/checkpoints under APP__RUNS_ROOT" in run.error.message
        assert "bytes free" in run.error.message and "larger disk" in run.error.message
        # Nothing half-written looks complete: no checkpoint file, no index.
        assert not list((runs_root / run_id / "checkpoints").glob("*"))
        assert not (runs_root / run_id / "checkpoints.json").exists()
