"""The torchrun launcher through the real stack: real workers on the private Redis, real torchrun, two gloo
ranks on the CPU.

- a 2-process run succeeds, and its final validation loss matches the 1-process run with the same global
  batch (``batch_size`` 4 x 2 ranks against 8 x 1) within ``LOSS_TOLERANCE``;
- a cancel stops every rank (no PID of the group survives), and the 2-process checkpoint resumes with one
  process to the end;
- SIGKILL of one rank fails the launch; the job service starts the group again from the checkpoint, which
  finishes.
"""

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
from mt_contracts.manifests import ModelManifest
from mt_contracts.settings import ApiSettings, WorkerServiceSettings
from tests.helpers import children, running_workers, wait_for
from tests.integration.jobs import RUN, TERMINAL, get_run, submit_run, trained_tokenizer

# Two ranks of 4 windows against one of 8 take the same steps on the same data; what differs is the order of
# floating-point sums (the all-reduce), which after 30 steps moves the validation loss by far less than this
# (nats per token, on a loss of about 5).
LOSS_TOLERANCE = 1e-3
TORCHRUN = {**RUN, "launcher": "torchrun", "nproc_per_node": 2, "threads": 2}


@pytest.fixture
async def client(api_settings: ApiSettings, redis: Redis) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(app=create_app(api_settings)) as client:
        yield client


def rank_of(pid: int) -> int | None:
    """The ``RANK`` torchrun gave process ``pid``, or None (torchrun itself)."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except (FileNotFoundError, ProcessLookupError):
        return None
    for item in environ:
        if item.startswith(b"RANK="):
            return int(item.removeprefix(b"RANK="))
    return None


def child_pid(artifacts_root: str, run_id: str) -> int:
    """The pid of the run's latest child (torchrun), from the ``process_started`` line of its log."""
    logs = Path(artifacts_root) / "models" / run_id / "logs.jsonl"
    started = [msgspec.json.decode(line) for line in logs.read_bytes().splitlines() if b"process_started" in line]
    pid: int = started[-1]["fields"]["pid"]
    return pid


async def ranks_running(pid: int) -> dict[int, int]:
    """Rank -> pid of the ranks of torchrun ``pid``, once both run."""

    async def fetch() -> dict[int, int]:
        found = {rank_of(p): p for p in children(pid)}
        return {rank: p for rank, p in found.items() if rank is not None}

    return await wait_for(fetch, lambda ranks: set(ranks) == {0, 1}, 60)


def manifest(artifacts_root: str, run_id: str) -> ModelManifest:
    return codec.decode((Path(artifacts_root) / "models" / run_id / "manifest.json").read_bytes(), ModelManifest)


async def test_two_processes_match_one_process_with_the_same_global_batch(
    client: AsyncTestClient[Litestar], worker_settings: WorkerServiceSettings
) -> None:
    steps = {"max_steps": 30, "checkpoint_interval": 30, "eval_interval": 10}
    async with running_workers(worker_settings):
        tokenizer_id = await trained_tokenizer(client)
        two = await submit_run(client, {**TORCHRUN, **steps, "tokenizer_id": tokenizer_id, "batch_size": 4})
        one = await submit_run(client, {**RUN, **steps, "tokenizer_id": tokenizer_id, "batch_size": 8})
        two_run = await wait_for(lambda: get_run(client, two), lambda j: j.status in TERMINAL, 600)
        one_run = await wait_for(lambda: get_run(client, one), lambda j: j.status in TERMINAL, 600)
    assert two_run.status == "succeeded", two_run.error
    assert one_run.status == "succeeded", one_run.error
    assert two_run.metrics is not None and one_run.metrics is not None
    assert abs(two_run.metrics.val_loss - one_run.metrics.val_loss) < LOSS_TOLERANCE
    assert abs(two_run.metrics.train_loss - one_run.metrics.train_loss) < LOSS_TOLERANCE
    # Both drew the same tokens; the final validation scored every token once, over both ranks.
    assert two_run.metrics.tokens_seen == one_run.metrics.tokens_seen == 30 * 8 * 32
    assert two_run.metrics.val_tokens == one_run.metrics.val_tokens
    root = worker_settings.app.artifacts_root
    assert (manifest(root, two).world_size, manifest(root, one).world_size) == (2, 1)
    # Rank 0 alone wrote the checkpoint and the events: one checkpoint event for the one checkpoint.
    logs = (await client.get(f"/runs/{two}/logs?tail=1000")).json()["lines"]
    assert [line["checkpoint"]["step"] for line in logs if line["kind"] == "checkpoint"] == [30]


async def test_cancel_stops_every_rank_and_the_checkpoint_resumes_with_one_process(
    client: AsyncTestClient[Litestar], worker_settings: WorkerServiceSettings
) -> None:
    async with running_workers(worker_settings):
        tokenizer_id = await trained_tokenizer(client)
        run_id = await submit_run(
            client, {**TORCHRUN, "tokenizer_id": tokenizer_id, "max_steps": 100_000, "compile": "off"}
        )
        await wait_for(lambda: get_run(client, run_id), lambda j: j.checkpoint is not None, 300)
        torchrun = child_pid(worker_settings.app.artifacts_root, run_id)
        pids = [torchrun, *(await ranks_running(torchrun)).values()]
        response = await client.post(f"/runs/{run_id}/cancel")
        assert response.status_code == 200, response.text
        cancelled = await wait_for(lambda: get_run(client, run_id), lambda j: j.status in TERMINAL, 120)
        assert cancelled.status == "cancelled"
        assert [pid for pid in pids if Path(f"/proc/{pid}").exists()] == []
        last = cancelled.checkpoint
        assert last is not None

        # The same run, continued by one process from the 2-process checkpoint.
        body = {"max_steps": last.step + 10, "launcher": "local", "nproc_per_node": 1}
        response = await client.post(f"/runs/{run_id}/resume", json=body)
        assert response.status_code == 202, response.text
        resumed = await wait_for(lambda: get_run(client, run_id), lambda j: j.status in TERMINAL, 300)
    assert resumed.status == "succeeded", resumed.error
    assert resumed.resumed_from_step == last.step
    assert resumed.metrics is not None and resumed.metrics.steps == last.step + 10
    # The data position continued in tokens: 2 ranks x 4 windows a step, then 1 x 4.
    assert resumed.metrics.tokens_seen == (last.step * 8 + 10 * 4) * 32
    assert manifest(worker_settings.app.artifacts_root, run_id).world_size == 1


async def test_a_killed_rank_fails_the_launch_and_the_group_restarts_from_the_checkpoint(
    client: AsyncTestClient[Litestar], worker_settings: WorkerServiceSettings
) -> None:
    async with running_workers(worker_settings):
        tokenizer_id = await trained_tokenizer(client)
        run_id = await submit_run(client, {**TORCHRUN, "tokenizer_id": tokenizer_id, "max_steps": 200})
        await wait_for(lambda: get_run(client, run_id), lambda j: j.checkpoint is not None, 300)
        torchrun = child_pid(worker_settings.app.artifacts_root, run_id)
        ranks = await ranks_running(torchrun)
        os.kill(ranks[1], signal.SIGKILL)
        run = await wait_for(lambda: get_run(client, run_id), lambda j: j.status in TERMINAL, 600)
    assert run.status == "succeeded", run.error
    # A new launch of the whole group within the attempt, from the checkpoint of before the kill.
    assert (run.attempts, run.restarts) == (1, 1)
    assert run.resumed_from_step is not None and run.resumed_from_step >= 20
    assert run.metrics is not None and run.metrics.steps == 200
    assert Path(f"/proc/{ranks[0]}").exists() is False
