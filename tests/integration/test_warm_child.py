"""The warm standby child (``mt_storage.warm``, ``WORKER__WARM_CHILD``) through the real stack: a run, an
evaluation and a tokenizer job run in the standby that was waiting before they were submitted, write their
stderr to their own process log, and stop like any child; a worker's shutdown leaves no standby behind; a
standby that died while waiting is replaced and the job still runs; with the setting off there is none.

The workers run in this process, so their standbys are this process's children, found in /proc."""

from __future__ import annotations

import asyncio
import gc
import logging
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
from mt_contracts.jobs import EvalJob, JobAccepted, TokenizerJob
from mt_contracts.settings import ApiSettings, WorkerServiceSettings
from mt_storage.layout import Layout
from mt_storage.process import STANDBY_LOG, WARM_MODULE
from tests.helpers import children, running_workers, scratch_of, wait_for, worker_process
from tests.integration.jobs import RUN, TERMINAL, finished_run, get_run, submit_run, trained_tokenizer, worker_env

TRAINING = "mt_trainer_worker.training"
EVALUATE = "mt_trainer_worker.training.evaluate"
TOKENIZER = "mt_tokenizer_worker.process"


@pytest.fixture
async def client(api_settings: ApiSettings, redis: Redis) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(app=create_app(api_settings), timeout=120) as client:
        yield client


def _argv(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except (FileNotFoundError, ProcessLookupError):
        return []


def standbys(module: str, parent: int | None = None) -> list[int]:
    """The pids of the warm standbys of ``parent`` (this process) that serve ``module``."""
    found = children(os.getpid() if parent is None else parent)
    return [pid for pid in found if WARM_MODULE in _argv(pid) and module in _argv(pid)]


async def standby(module: str, parent: int | None = None, other_than: frozenset[int] = frozenset()) -> int:
    """The pid of the one standby of ``parent`` (this process) serving ``module``, once there is one that is
    none of ``other_than``."""

    async def fetch() -> list[int]:
        return standbys(module, parent)

    (pid,) = await wait_for(fetch, lambda pids: len(pids) == 1 and pids[0] not in other_than, 120)
    return pid


async def ready(pid: int) -> None:
    """Wait until standby ``pid`` imported its modules and waits for a job (its own stderr says so)."""
    log = scratch_of(pid) / STANDBY_LOG

    async def text() -> str:
        return await asyncio.to_thread(log.read_text) if log.is_file() else ""

    await wait_for(text, lambda said: f"mt_storage.warm: standby {pid} ready for " in said, 120)


def started_pids(logs: Path, job_id: str) -> list[int]:
    """The pids of job ``job_id``'s ``process_started`` events in ``logs`` (a ``logs.jsonl``)."""
    lines = [msgspec.json.decode(line) for line in logs.read_bytes().splitlines()]
    return [line["fields"]["pid"] for line in lines if line["event"] == "process_started" and line["job_id"] == job_id]


def gone(pid: int) -> bool:
    return not Path(f"/proc/{pid}").exists()


async def test_a_run_takes_the_waiting_standby_logs_to_its_process_log_and_cancels_cleanly(
    client: AsyncTestClient[Litestar], worker_settings: WorkerServiceSettings
) -> None:
    layout = Layout.from_settings(worker_settings.app)
    async with running_workers(worker_settings):
        tokenizer_id = await trained_tokenizer(client)
        first = await standby(TRAINING)
        run_id = await submit_run(client, {**RUN, "tokenizer_id": tokenizer_id, "max_steps": 30})
        run = await finished_run(client, run_id)
        assert run.status == "succeeded", run.error
        assert started_pids(layout.run_logs(run_id), run_id) == [first]
        assert f"mt_storage.warm: standby {first} runs {TRAINING}\n" in layout.run_process_log(run_id).read_text()

        # The next run takes the standby started after the first one was taken, and stops on a cancel.
        second = await standby(TRAINING, None, other_than=frozenset({first}))
        scratch = scratch_of(second)
        long_run = await submit_run(client, {**RUN, "tokenizer_id": tokenizer_id, "max_steps": 1_000_000})
        await wait_for(lambda: get_run(client, long_run), lambda j: j.progress is not None, 120)
        assert (await client.post(f"/runs/{long_run}/cancel")).status_code == 200
        cancelled = await wait_for(lambda: get_run(client, long_run), lambda j: j.status in TERMINAL, 60)
        assert cancelled.status == "cancelled"
        assert started_pids(layout.run_logs(long_run), long_run) == [second]
        assert gone(second) and not scratch.exists()
        events = [msgspec.json.decode(line)["event"] for line in layout.run_logs(long_run).read_bytes().splitlines()]
        assert "stopped" in events and events[-1] == "cancelled"
        assert f"mt_storage.warm: standby {second} runs {TRAINING}\n" in layout.run_process_log(long_run).read_text()
        waiting = await standby(TRAINING, None, other_than=frozenset({first, second}))
        waiting_scratch = scratch_of(waiting)
    # The workers' shutdown killed the standby left waiting and removed its TMPDIR.
    assert gone(waiting) and not waiting_scratch.exists()
    assert standbys(TRAINING) == [] and standbys(TOKENIZER) == []


async def test_an_evaluation_takes_the_waiting_standby_and_a_worker_stopped_by_sigterm_leaves_no_process(
    client: AsyncTestClient[Litestar], worker_settings: WorkerServiceSettings, shakespeare: str
) -> None:
    layout = Layout.from_settings(worker_settings.app)
    # Evaluating the whole of Tiny Shakespeare takes the toy model long enough to be stopped midway.
    (Path(worker_settings.app.corpus_root) / "big.txt").write_text(shakespeare, encoding="utf-8")
    async with running_workers(worker_settings, trainer=False):
        tokenizer_id = await trained_tokenizer(client)
        with worker_process("mt_trainer_worker", worker_env(worker_settings)) as worker:
            run_id = await submit_run(client, {**RUN, "tokenizer_id": tokenizer_id, "max_steps": 10})
            assert (await finished_run(client, run_id)).status == "succeeded"
            taken = frozenset(started_pids(layout.run_logs(run_id), run_id))
            pid = await standby(EVALUATE, worker.pid, other_than=taken)
            scratch = scratch_of(pid)
            response = await client.post(f"/runs/{run_id}/evaluate", json={"split": "corpus", "corpus_path": "big.txt"})
            assert response.status_code == 202, response.text
            eval_id = codec.decode(response.content, JobAccepted).id

            async def started() -> list[int]:
                return started_pids(layout.run_logs(run_id), eval_id)

            assert await wait_for(started, bool, 60) == [pid]
            process_log = layout.eval_process_log(run_id, eval_id)
            await wait_for(
                lambda: asyncio.to_thread(process_log.read_text),
                lambda text: f"mt_storage.warm: standby {pid} runs {EVALUATE}\n" in text,
                60,
            )
            waiting = standbys(EVALUATE, worker.pid)
            worker.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(worker.wait, 60) == 0
        evaluation = codec.decode((await client.get(f"/runs/{run_id}/evals/{eval_id}")).content, EvalJob)
    # Handed back to the queue; the child stopped and its TMPDIR removed; no standby of the worker left.
    assert evaluation.status == "queued", evaluation
    assert gone(pid) and not scratch.exists()
    assert [standby for standby in waiting if not gone(standby)] == []


async def _tokenizer_job(client: AsyncTestClient[Litestar]) -> TokenizerJob:
    response = await client.post("/tokenizers/train", json={"corpus_path": "small.txt", "vocab_size": 300})
    assert response.status_code == 202, response.text
    job_id = codec.decode(response.content, JobAccepted).id

    async def fetch() -> TokenizerJob:
        return codec.decode((await client.get(f"/tokenizers/{job_id}")).content, TokenizerJob)

    return await wait_for(fetch, lambda j: j.status in TERMINAL, 60)


def _tokenizer_pids(worker_settings: WorkerServiceSettings, job: TokenizerJob) -> list[int]:
    return started_pids(Layout.from_settings(worker_settings.app).tokenizer_logs(job.id), job.id)


async def test_a_worker_closed_with_a_standby_waiting_leaves_no_process_and_no_warning(
    client: AsyncTestClient[Litestar], worker_settings: WorkerServiceSettings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="mt_storage")
    async with running_workers(worker_settings, trainer=False):
        job = await _tokenizer_job(client)
        assert job.status == "succeeded", job.error
        (taken,) = _tokenizer_pids(worker_settings, job)
        pid = await standby(TOKENIZER, None, other_than=frozenset({taken}))
        scratch = scratch_of(pid)
        await ready(pid)
    gc.collect()  # an unclosed pipe or transport of the standby would warn now, failing the test
    assert gone(pid) and not scratch.exists()
    assert standbys(TOKENIZER) == []
    assert [record.getMessage() for record in caplog.records] == []


async def test_a_standby_that_died_while_waiting_is_replaced_and_the_job_still_runs(
    client: AsyncTestClient[Litestar], worker_settings: WorkerServiceSettings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="mt_storage.process")
    async with running_workers(worker_settings, trainer=False):
        dead = await standby(TOKENIZER)
        await ready(dead)
        os.kill(dead, signal.SIGKILL)
        await wait_for(lambda: asyncio.to_thread(gone, dead), bool, 30)  # and reaped by the worker
        job = await _tokenizer_job(client)
        assert job.status == "succeeded", job.error
        (fresh,) = _tokenizer_pids(worker_settings, job)
        assert fresh != dead
        replacement = await standby(TOKENIZER, None, other_than=frozenset({dead, fresh}))
        second = await _tokenizer_job(client)
        assert second.status == "succeeded", second.error
        assert _tokenizer_pids(worker_settings, second) == [replacement]
    assert [getattr(record, "event", None) for record in caplog.records] == ["warm_child_lost"]


async def test_without_warm_child_each_job_starts_a_fresh_child_and_no_standby_waits(
    client: AsyncTestClient[Litestar], worker_settings: WorkerServiceSettings
) -> None:
    worker = msgspec.structs.replace(worker_settings.worker, warm_child=False)
    settings = msgspec.structs.replace(worker_settings, worker=worker)
    async with running_workers(settings, trainer=False):
        job = await _tokenizer_job(client)
        assert job.status == "succeeded", job.error
        (pid,) = _tokenizer_pids(settings, job)
        assert standbys(TOKENIZER) == []
    log = Layout.from_settings(settings.app).tokenizer_process_log(job.id)
    assert "mt_storage.warm" not in log.read_text()
    assert gone(pid)
