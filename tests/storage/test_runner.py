"""The job runner's last step with a real child process and a real Redis: a second cancel that arrives while
the attempt winds down (its keeper finishing an upload, after a worker shutdown or a lost lease) still stops
the heartbeats and the record writer."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import msgspec
import pytest
from redis.asyncio import Redis

from mt_contracts.events import ChildEvent, Failed, Resumed
from mt_contracts.jobs import TokenizerJob, utcnow
from mt_contracts.requests import TrainTokenizerRequest
from mt_contracts.settings import WorkerSettings
from mt_storage.joblog import JobLog
from mt_storage.jobs import tokenizer_jobs
from mt_storage.lifecycle import Change, Lifecycle
from mt_storage.process import Command
from mt_storage.runner import JobRunner, Prepared
from mt_storage.store import Fence
from tests.helpers import wait_for

JOB = "tok_01JDQ8ZQ0000000000000000RN"
HEARTBEAT = 0.2
# How long the keeper's upload under way takes once it is told to stop.
UPLOAD_SECONDS = 1.0


class Done(msgspec.Struct, frozen=True):
    """The twin child's success message (its child never sends one)."""

    done: bool


class SlowKeeperWork:
    """A ``Work`` twin for the runner alone: the child sleeps; ``keep`` finishes an upload under way when
    cancelled, as ``mt_storage.store.fenced`` does."""

    module = "unused"
    out_of_memory_hint = "none"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.keeping = asyncio.Event()
        self.winding_down = asyncio.Event()

    def logs_path(self, job: TokenizerJob) -> Path:
        return self.root / "logs.jsonl"

    async def prepare(self, job: TokenizerJob) -> Prepared:
        async def launch() -> Command:
            return Command(argv=[sys.executable, "-c", "import time; time.sleep(60)"], spec_on_stdin=False)

        return Prepared(spec=b"{}", process_log=self.root / "process.log", launch=launch)

    def decode(self, line: bytes) -> ChildEvent | Resumed | Failed | Done:
        return msgspec.json.decode(line, type=Done)

    def record_change(self, message: ChildEvent | Resumed) -> tuple[str, Change[TokenizerJob]] | None:
        return None

    def restart_marker(self, job: TokenizerJob) -> int:
        return 0

    async def commit(self, job: TokenizerJob, outcome: Done, log: JobLog) -> Change[TokenizerJob]:
        return lambda record: record

    async def keep(self, job: TokenizerJob, fence: Fence) -> None:
        self.keeping.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.winding_down.set()
            await asyncio.shield(asyncio.sleep(UPLOAD_SECONDS))

    async def settle(self, job: TokenizerJob, fence: Fence) -> None:
        return None


@pytest.mark.parametrize("first", ["shutdown", "lease_lost"])
async def test_a_second_cancel_while_the_attempt_winds_down_leaves_nothing_running(
    first: str, redis: Redis, tmp_path: Path
) -> None:
    lifecycle = Lifecycle(tokenizer_jobs(redis), "tokenizer", 30)
    now = utcnow()
    await lifecycle.create(
        TokenizerJob(id=JOB, request=TrainTokenizerRequest(corpus_path="small.txt"), created_at=now, updated_at=now)
    )
    work = SlowKeeperWork(tmp_path)
    settings = WorkerSettings(heartbeat_interval=HEARTBEAT, shutdown_grace=5.0, niceness=0)
    runner = JobRunner(lifecycle, work, settings, queue=lambda: None, publisher=None, timeout_seconds=60)
    before = asyncio.all_tasks()
    attempt = asyncio.create_task(runner.run(JOB, 1))
    await asyncio.wait_for(work.keeping.wait(), 30)

    async def log() -> bytes:
        return (tmp_path / "logs.jsonl").read_bytes()

    await wait_for(log, lambda text: b"process_started" in text, 30)  # the child runs

    if first == "shutdown":
        attempt.cancel()  # the child is stopped and the job handed back
    else:
        # Another worker took the job over: the next heartbeat finds it, and the attempt stops writing.
        await lifecycle.store.transact(JOB, lambda record: msgspec.structs.replace(record, owner="worker-b"))
    await asyncio.wait_for(work.winding_down.wait(), 30)
    attempt.cancel()  # a second cancel, while the keeper finishes its upload
    with pytest.raises(asyncio.CancelledError):
        await attempt

    record = await lifecycle.store.get(JOB)
    expected = ("queued", None) if first == "shutdown" else ("running", "worker-b")
    assert record is not None and (record.status, record.owner, record.attempts) == (*expected, 1)
    # Nothing of the attempt still runs: no heartbeat, no record writer, no keeper.
    await asyncio.sleep(UPLOAD_SECONDS + 3 * HEARTBEAT)
    left = asyncio.all_tasks() - before - {asyncio.current_task()}
    assert left == set(), [task.get_coro() for task in left]
