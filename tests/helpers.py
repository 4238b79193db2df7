"""Shared test plumbing: real arq workers running in this event loop or as processes, their children, and
polling."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import TypeVar

from arq.worker import Worker

from mt_contracts.settings import WorkerServiceSettings
from mt_tokenizer_worker.worker import create_worker as create_tokenizer_worker
from mt_trainer_worker.worker import create_worker as create_trainer_worker

T = TypeVar("T")
# How long the teardown of ``running_workers`` waits for jobs still in arq's hands (seconds).
JOB_FINISH_TIMEOUT = 60.0


@asynccontextmanager
async def running_workers(
    settings: WorkerServiceSettings, *, tokenizer: bool = True, trainer: bool = True
) -> AsyncIterator[list[Worker]]:
    """The real arq workers (both kinds unless told otherwise), polling the private Redis, until the block
    exits."""
    workers = [create_tokenizer_worker(settings, handle_signals=False)] if tokenizer else []
    if trainer:
        workers.append(create_trainer_worker(settings, handle_signals=False))
    tasks = [asyncio.create_task(worker.main()) for worker in workers]
    try:
        yield workers
    finally:
        # A job whose record is already terminal may still be in arq's hands (uploading to the object store,
        # storing its result): let it finish, since close() cancels running jobs, and a job cancelled while
        # arq stores its result (a shielded step) would then find arq's pool closed under it. Jobs that start
        # meanwhile are waited for too.
        # Jobs that start meanwhile are waited for too: the workers must be seen idle twice, a poll apart.
        deadline = time.monotonic() + JOB_FINISH_TIMEOUT
        idle = 0
        while idle < 2 and time.monotonic() < deadline:
            in_flight = [task for worker in workers for task in worker.tasks.values() if not task.done()]
            if in_flight:
                idle = 0
                await asyncio.wait(in_flight, timeout=max(0.0, deadline - time.monotonic()))
            else:
                idle += 1
                await asyncio.sleep(2 * settings.worker.poll_delay)
        for worker in workers:
            await worker.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def children(parent: int) -> list[int]:
    """The processes whose parent is ``parent`` (each child in a session of its own too), from /proc."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(stat.rpartition(")")[2].split()[1]) == parent:
                pids.append(int(entry.name))
    return pids


def scratch_of(pid: int) -> Path:
    """The ``TMPDIR`` process ``pid`` was started with (a job's child: its own temporary directory)."""
    for item in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
        if item.startswith(b"TMPDIR="):
            return Path(item.removeprefix(b"TMPDIR=").decode())
    raise AssertionError(f"process {pid} has no TMPDIR")


@contextmanager
def worker_process(module: str, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m <module>`` (a worker service) as a child process; on exit SIGTERM and a wait for it to
    stop, unless the block killed it already."""
    process = subprocess.Popen(
        [sys.executable, "-m", module], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def wait_for(fetch: Callable[[], Awaitable[T]], done: Callable[[T], bool], timeout: float) -> T:
    """Call ``fetch`` until ``done`` holds for its result; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await fetch()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s; last value: {value!r}")
        await asyncio.sleep(0.1)
