"""Run lifecycle through the real stack, on both storage backends: cancel, resume, a killed training process,
a killed worker whose run another worker (another pod, with the object store) resumes, a worker stopped by
SIGTERM."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from redis.asyncio import Redis

from mt_api.app import create_app
from mt_contracts import codec
from mt_contracts.jobs import CheckpointInfo, RunPage, RunSeries
from mt_contracts.settings import ApiSettings, StorageSettings, WorkerServiceSettings
from tests.helpers import running_workers, wait_for, worker_process
from tests.integration.backends import api_settings, on_backend, storage, worker_settings
from tests.integration.jobs import (
    EVAL_INTERVAL,
    RUN,
    TERMINAL,
    get_run,
    submit_run,
    trained_tokenizer,
    worker_env,
)

STALL_AFTER_SECONDS = 15.0
__all__ = ["api_settings", "storage", "worker_settings"]  # both backends (tests.integration.backends)


@pytest.fixture
async def client(api_settings: ApiSettings, redis: Redis) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(app=create_app(api_settings)) as client:
        yield client


async def listed_checkpoints(client: AsyncTestClient[Litestar], run_id: str) -> list[CheckpointInfo]:
    return msgspec.json.decode((await client.get(f"/runs/{run_id}/checkpoints")).content, type=list[CheckpointInfo])


async def test_cancel_queued_and_running_runs_then_resume_from_the_checkpoint(
    client: AsyncTestClient[Litestar], worker_settings: WorkerServiceSettings
) -> None:
    async with running_workers(worker_settings):
        tokenizer_id = await trained_tokenizer(client)
        # compile on: the end-to-end test of a compiled run (trained, stopped, resumed through the real stack).
        long_run = await submit_run(
            client, {**RUN, "tokenizer_id": tokenizer_id, "max_steps": 1_000_000, "compile": "on"}
        )
        queued_run = await submit_run(client, {**RUN, "tokenizer_id": tokenizer_id, "max_steps": 10})
        running = await wait_for(lambda: get_run(client, long_run), lambda j: j.checkpoint is not None, 120)
        assert running.status == "running"

        # The worker runs one job at a time: the second run is still queued and is cancelled at once.
        response = await client.post(f"/runs/{queued_run}/cancel")
        assert (response.status_code, response.json()["status"]) == (200, "cancelled")
        response = await client.post(f"/runs/{long_run}/cancel")
        assert (response.status_code, response.json()["status"]) == (200, "cancelling")
        cancelled = await wait_for(lambda: get_run(client, long_run), lambda j: j.status in TERMINAL, 10)
        assert cancelled.status == "cancelled"
        assert (await client.post(f"/runs/{long_run}/cancel")).status_code == 409

        # Right as the record is terminal (with the object store: uploaded before the ending was written).
        checkpoints = await listed_checkpoints(client, long_run)
        assert checkpoints and [c.step for c in checkpoints] == sorted(c.step for c in checkpoints)
        last = checkpoints[-1].step
        # The stop wrote a checkpoint of the very step it stopped at, and the record and the log name it.
        logs = (await client.get(f"/runs/{long_run}/logs?tail=200")).json()["lines"]
        assert "compiled" in [line["event"] for line in logs]
        (stopped,) = [line for line in logs if line["event"] == "stopped"]
        assert stopped["fields"]["step"] == last
        assert cancelled.checkpoint is not None and cancelled.checkpoint == checkpoints[-1]
        assert [line["checkpoint"]["step"] for line in logs if line["kind"] == "checkpoint"][-1] == last
        # A checkpoint carries the validation of its own step only.
        assert all(c.val_loss is None or c.step % EVAL_INTERVAL == 0 for c in checkpoints)
        assert (await client.post(f"/runs/{long_run}/resume", json={"max_steps": last})).status_code == 400
        response = await client.post(f"/runs/{long_run}/resume", json={"max_steps": last + 15})
        assert response.status_code == 202, response.text
        resumed = await wait_for(lambda: get_run(client, long_run), lambda j: j.status in TERMINAL, 120)

    assert resumed.status == "succeeded", resumed.error
    assert resumed.resumed_from_step == last
    assert resumed.progress is not None and resumed.progress.step == last + 15
    assert resumed.last_eval is not None and resumed.last_eval.step == last + 15  # the final validation
    assert (await get_run(client, queued_run)).attempts == 0
    series = codec.decode((await client.get(f"/runs/{long_run}/metrics")).content, RunSeries)
    steps = [point.step for point in series.train]
    assert steps == sorted(steps) and steps[-1] == last + 15
    assert series.val[-1] == resumed.last_eval

    # Newest first, one per page, then filtered by status.
    first_page = codec.decode((await client.get("/runs", params={"limit": 1})).content, RunPage)
    assert [job.id for job in first_page.items] == [queued_run] and first_page.next_cursor == queued_run
    second_page = codec.decode(
        (await client.get("/runs", params={"limit": 1, "cursor": first_page.next_cursor})).content, RunPage
    )
    assert [job.id for job in second_page.items] == [long_run]
    cancelled_page = codec.decode((await client.get("/runs", params={"status": "cancelled"})).content, RunPage)
    assert [job.id for job in cancelled_page.items] == [queued_run]
    assert (await client.get("/runs", params={"cursor": "tok_x"})).status_code == 400


async def test_a_killed_training_process_is_restarted_from_its_checkpoint(
    client: AsyncTestClient[Litestar], worker_settings: WorkerServiceSettings
) -> None:
    async with running_workers(worker_settings):
        tokenizer_id = await trained_tokenizer(client)
        run_id = await submit_run(client, {**RUN, "tokenizer_id": tokenizer_id, "max_steps": 400})
        await wait_for(lambda: get_run(client, run_id), lambda j: j.checkpoint is not None, 120)
        logs = Path(worker_settings.app.artifacts_root) / "models" / run_id / "logs.jsonl"
        started = [msgspec.json.decode(line) for line in logs.read_bytes().splitlines() if b"process_started" in line]
        os.kill(started[-1]["fields"]["pid"], signal.SIGKILL)
        run = await wait_for(lambda: get_run(client, run_id), lambda j: j.status in TERMINAL, 300)
    assert run.status == "succeeded", run.error
    # A restart of the child within the attempt, not a new attempt of the job.
    assert (run.attempts, run.restarts) == (1, 1)
    assert run.resumed_from_step is not None and run.resumed_from_step >= 20


async def test_a_run_whose_worker_was_killed_is_reaped_and_resumed_by_another_worker(
    client: AsyncTestClient[Litestar],
    worker_settings: WorkerServiceSettings,
    storage: StorageSettings,
    redis: Redis,
    tmp_path: Path,
) -> None:
    settings = msgspec.structs.replace(
        worker_settings, app=msgspec.structs.replace(worker_settings.app, stall_after_seconds=4.0)
    )
    timing = {"APP__STALL_AFTER_SECONDS": str(STALL_AFTER_SECONDS), "WORKER__HEALTH_CHECK_INTERVAL": "1"}
    env = worker_env(settings, **timing)
    # With the object store the second worker is another pod: it has only the bucket to resume from.
    second_pod = on_backend(settings, storage, tmp_path / "second-trainer-pod")
    async with running_workers(settings, trainer=False):
        tokenizer_id = await trained_tokenizer(client)
        run_id = await submit_run(client, {**RUN, "tokenizer_id": tokenizer_id, "max_steps": 600})
        with worker_process("mt_trainer_worker", env) as first:
            # The record names a checkpoint (the worker applies the child's events a moment after the child writes
            # the files) and the API lists it from the storage (with the object store: uploaded by the pod).
            await wait_for(lambda: get_run(client, run_id), lambda j: j.checkpoint is not None, 120)
            await wait_for(lambda: listed_checkpoints(client, run_id), bool, 120)
            first.send_signal(signal.SIGKILL)
            first.wait()
        stalled = await wait_for(lambda: get_run(client, run_id), lambda j: j.status == "stalled", 60)
        assert stalled.checkpoint is not None
        with worker_process("mt_trainer_worker", worker_env(second_pod, **timing)):
            # Generous: on a loaded machine the 600 steps run at a step a second.
            run = await wait_for(lambda: get_run(client, run_id), lambda j: j.status in TERMINAL, 900)
    assert run.status == "succeeded", run.error
    assert run.resumed_from_step is not None and run.resumed_from_step >= 20
    assert run.attempts == 2


async def test_a_worker_stopped_by_sigterm_hands_its_run_back_with_a_clean_process_log(
    client: AsyncTestClient[Litestar], worker_settings: WorkerServiceSettings
) -> None:
    env = worker_env(worker_settings)
    async with running_workers(worker_settings, trainer=False):
        tokenizer_id = await trained_tokenizer(client)
        run_id = await submit_run(client, {**RUN, "tokenizer_id": tokenizer_id, "max_steps": 100_000, "compile": "off"})
        with worker_process("mt_trainer_worker", env) as worker:
            await wait_for(lambda: get_run(client, run_id), lambda j: j.checkpoint is not None, 120)
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(60) == 0
        handed_back = await get_run(client, run_id)
    assert (handed_back.status, handed_back.owner) == ("queued", None)
    process_log = (Path(worker_settings.app.runs_root) / run_id / "process.log").read_text()
    assert "Traceback" not in process_log and "BrokenPipeError" not in process_log, process_log
    events = (await client.get(f"/runs/{run_id}/logs?tail=300")).json()["lines"]
    names = [line["event"] for line in events]
    assert names[-2:] == ["stopped", "stopped"] and "failed" not in names
    child_stop, worker_stop = events[-2:]
    assert handed_back.checkpoint is not None and child_stop["fields"]["step"] == handed_back.checkpoint.step
    assert "goes back on the queue" in worker_stop["message"]
