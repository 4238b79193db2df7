"""Shared test plumbing: real arq workers running in this event loop or as processes, their children,
polling, and a real HTTP receiver of webhooks."""

from __future__ import annotations

import asyncio
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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
        await close_workers(workers, tasks)


async def close_workers(workers: list[Worker], polls: list[asyncio.Task[None]]) -> None:
    """Stop ``workers`` as arq's own ``run`` does: their poll loops (``polls``, the tasks running
    ``worker.main()``) first, then ``close()``, which cancels their jobs, runs their shutdown and closes their
    Redis pools. A poll loop still running during ``close()`` would open a new connection on the closed pool,
    one nothing closes (an unclosed-connection warning when it is collected, often tests later)."""
    for poll in polls:
        poll.cancel()
    await asyncio.gather(*polls, return_exceptions=True)
    for worker in workers:
        await worker.close()


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


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    answered: int


@dataclass
class Receiver:
    """A real HTTP server on 127.0.0.1: answers each POST with the next of ``answers`` (200 once they run
    out); a request arriving while ``hold`` is set waits until it is cleared. Keeps every request."""

    answers: list[int] = field(default_factory=list)
    requests: list[Received] = field(default_factory=list)
    hold: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    arrived: threading.Event = field(default_factory=threading.Event)
    url: str = ""
    port: int = 0

    def successes(self) -> set[str]:
        """The distinct ``webhook-id``s answered with a 2xx."""
        return {r.headers["webhook-id"] for r in self.requests if 200 <= r.answered < 300}


@contextmanager
def receiver(answers: list[int] | None = None, tls: ssl.SSLContext | None = None) -> Iterator[Receiver]:
    """A ``Receiver`` serving until the block exits; over TLS with ``tls`` (a server context), whose ``url``
    then says ``https``."""
    state = Receiver(answers=list(answers or []))
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            state.arrived.set()
            if state.hold.is_set():
                state.release.wait(120)
            with lock:
                status = state.answers.pop(0) if state.answers else 200
                state.requests.append(Received({k.lower(): v for k, v in self.headers.items()}, body, status))
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.port = server.server_address[1]
    state.url = f"{'https' if tls else 'http'}://127.0.0.1:{state.port}/hook"
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()
