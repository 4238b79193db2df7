"""The one job runner: every job (tokenizer training, a training run, an evaluation) is started, supervised,
stopped and ended here, through its lease (``mt_storage.lifecycle``) and one child process
(``mt_storage.process``).

What differs between kinds is a ``Work``: the child module, the spec, how a child's events change the record,
how a success is committed, and whether a crashed child may start again. Everything else is the same for all:

- the lease is renewed every ``heartbeat_interval`` seconds from before the child starts until it ended; a
  renewal refused (``LeaseLost``: the job was handed to another worker) stops the child and ends the attempt
  without another write;
- the child's events go, decoded once, to the job's ``logs.jsonl`` and live stream (``JobLog``) and to the
  record (``RecordWriter``); the record writes are coalesced and retried while Redis is unreachable, so the
  child never waits on Redis and the latest progress, validation and checkpoint reach the record once it is
  back;
- a cancel, the job's timeout or a worker shutdown stops the child by the one stop policy, and the events it
  writes while stopping (a training child's stop checkpoint) are still applied;
- a child that dies without an outcome is started again when ``Work.restartable`` says so (a run whose
  checkpoint moved on): a restart within the attempt, counted in ``restarts``, not a new attempt;
- while the child runs, ``Work.keep`` makes what it writes durable as it goes (with an object store: a run's
  checkpoints are uploaded);
- the ending: ``succeed`` after ``Work.commit`` wrote the artifacts' commit point, under a fresh check of the
  lease; ``fail`` with the child's own error, ``timeout``, ``process_crashed`` or ``internal_error``;
  ``cancel`` once a cancelled job's child stopped; ``requeue`` at a worker shutdown, or ``fail``
  ``worker_lost`` on the job's last try. Before each, ``Work.settle`` makes everything the attempt wrote
  durable (with an object store: uploaded), so whoever sees the ending (a client, a webhook, the worker that
  resumes the job) finds its files. Both are fenced by the lease: a worker that lost its job writes nothing
  more to shared storage.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Generic, Protocol, TypeVar

import msgspec

from mt_contracts.events import (
    CheckpointEvent,
    ChildEvent,
    Failed,
    JobEvent,
    LogEvent,
    ProgressEvent,
    Resumed,
    ValidationEvent,
)
from mt_contracts.jobs import JobError
from mt_contracts.settings import SettingsError, WorkerSettings
from mt_storage.child import os_failure
from mt_storage.events import REDIS_DOWN, LivePublisher, wait_idle
from mt_storage.joblog import JobLog
from mt_storage.jobs import R
from mt_storage.lifecycle import Change, Lease, LeaseLost, Lifecycle
from mt_storage.process import Command, WarmChild, run_child, tail
from mt_storage.queue import JobQueue
from mt_storage.store import Fence, StoreError

logger = logging.getLogger(__name__)

S = TypeVar("S")
S_co = TypeVar("S_co", covariant=True)
_TAIL_LINES = 20
# Waits between record writes while Redis is unreachable (seconds): doubling from the first to the last.
RETRY_FIRST_SECONDS = 0.2
RETRY_MAX_SECONDS = 5.0
# The shortest stall limit, in heartbeat intervals, that a worker accepts: a lease must survive a late beat.
MIN_STALL_HEARTBEATS = 3.0


def check_timing(stall_after_seconds: float, heartbeat_interval: float) -> None:
    """Refuse a stall limit too short for the heartbeat interval (a live job would be reaped).

    Raises:
        SettingsError: ``APP__STALL_AFTER_SECONDS`` is below ``MIN_STALL_HEARTBEATS`` heartbeat intervals.
    """
    least = MIN_STALL_HEARTBEATS * heartbeat_interval
    if heartbeat_interval <= 0 or stall_after_seconds < least:
        raise SettingsError(
            f"APP__STALL_AFTER_SECONDS={stall_after_seconds:g} is too short for WORKER__HEARTBEAT_INTERVAL="
            f"{heartbeat_interval:g}: a worker renews its jobs' leases every heartbeat interval, so the stall "
            f"limit must be at least {MIN_STALL_HEARTBEATS:g} intervals ({least:g} s); raise "
            "APP__STALL_AFTER_SECONDS or lower WORKER__HEARTBEAT_INTERVAL"
        )


class JobFailed(Exception):
    """A job that cannot run, with the ``JobError`` to record (the corpus is gone, the tokenizer missing)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.error = JobError(code=code, message=message)


Launch = Callable[[], Awaitable[Command]]


class Prepared(msgspec.Struct, frozen=True):
    """What one attempt runs: the child's ``spec`` (stdin) and where its stderr goes; ``launch``, when set,
    makes the command of each launch of the child (a launcher's ``torchrun``, with a fresh rendezvous; it may
    raise ``JobFailed``), else the child is ``python -m <Work.module>``."""

    spec: bytes
    process_log: Path
    launch: Launch | None = None


class Work(Protocol[R, S]):
    """What one kind of job runs; ``R`` is its record type, ``S`` its child's success message."""

    module: str
    # The out-of-memory advice of a failed child ("lower batch_size...").
    out_of_memory_hint: str

    def logs_path(self, job: R) -> Path:
        """The job's ``logs.jsonl``."""
        ...

    async def prepare(self, job: R) -> Prepared:
        """The attempt's spec (and any file the child needs).

        Raises:
            JobFailed: the job cannot run (the error says why and what to do).
        """
        ...

    def decode(self, line: bytes) -> ChildEvent | Resumed | Failed | S:
        """One stdout line of the child.

        Raises:
            msgspec.DecodeError: not a message of this kind's child.
        """
        ...

    def record_change(self, message: ChildEvent | Resumed) -> tuple[str, Change[R]] | None:
        """How ``message`` changes the record: a coalescing key (the latest per key is written) and the change."""
        ...

    def restart_marker(self, job: R) -> int:
        """A number that grows when a crashed child may be started again (a run's latest checkpoint step)."""
        ...

    async def commit(self, job: R, outcome: S, log: JobLog) -> Change[R]:
        """Write the success's commit point (``manifest.json``) and return the record's change (its result).
        Called under a fresh check of the lease."""
        ...

    async def keep(self, job: R, fence: Fence) -> None:
        """Runs beside the attempt's child until cancelled: make what the child writes durable as it goes (a
        run's checkpoints uploaded to the object store). Call ``fence()`` before each write to shared storage:
        it raises ``LeaseLost`` once the job is another worker's. When cancelled, return only after any write
        under way has finished (``mt_storage.store.fenced``)."""
        ...

    async def settle(self, job: R, fence: Fence) -> None:
        """Before the attempt's ending is recorded, whichever it is: make everything the attempt wrote durable
        where other machines read it (with an object store: upload it), ``fence()`` before each write.

        Raises:
            StoreError: an upload failed (a success then fails ``storage_unavailable``; any other ending is
                written all the same).
            OSError: a local file could not be read.
        """
        ...


class RecordWriter(Generic[R]):
    """Writes a lease's non-terminal record changes in the background: the latest change per key, in the
    order keys first came, retried with a doubling wait while Redis is unreachable. ``on_lost`` is called once
    when the lease is lost."""

    def __init__(self, lease: Lease[R], on_lost: Callable[[LeaseLost], None]) -> None:
        self._lease = lease
        self._on_lost = on_lost
        self._pending: dict[str, Change[R]] = {}
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task = asyncio.create_task(self._run())

    def submit(self, key: str, change: Change[R]) -> None:
        self._pending.pop(key, None)
        self._pending[key] = change
        self._idle.clear()
        self._wake.set()

    async def flush(self) -> None:
        """Wait until every change submitted so far is written (or the lease is lost)."""
        if not self._task.done():
            await wait_idle(self._idle, self._task)

    async def aclose(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    def _writer(self, key: str, change: Change[R]) -> Callable[[], Awaitable[R]]:
        write = self._lease.checkpoint if key == "checkpoint" else self._lease.progress
        return lambda: write(change)

    async def _run(self) -> None:
        while True:
            if not self._pending:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            key = next(iter(self._pending))
            change = self._pending.pop(key)
            try:
                await retry_while_down(self._writer(key, change), f"{key} of {self._lease.job_id}")
            except LeaseLost as exc:
                self._on_lost(exc)
                self._pending.clear()
                self._idle.set()
                return


T = TypeVar("T")


async def retry_while_down(call: Callable[[], Awaitable[T]], what: str) -> T:
    """``call()``, tried again with a doubling wait for as long as Redis is unreachable."""
    wait = RETRY_FIRST_SECONDS
    while True:
        try:
            return await call()
        except REDIS_DOWN as exc:
            if wait == RETRY_FIRST_SECONDS:
                logger.warning("waiting for redis", extra={"event": "redis_waiting", "what": what, "error": str(exc)})
            await asyncio.sleep(wait)
            wait = min(RETRY_MAX_SECONDS, wait * 2)


class _Ending(msgspec.Struct, frozen=True):
    error: JobError | None = None


class _Attempt:
    """What one attempt learned while it ran: its lease lost (``abandon`` set: kill the child at once), or a
    cancel seen in the record."""

    def __init__(self) -> None:
        self.lost: LeaseLost | None = None
        self.cancel_seen = False
        self.abandon = asyncio.Event()
        self.keeper: asyncio.Task[None] | None = None

    async def stop_keeping(self) -> None:
        """Stop ``Work.keep`` (it returns once a write under way finished), before the ending's own writes."""
        if self.keeper is not None:
            self.keeper.cancel()
            await asyncio.gather(self.keeper, return_exceptions=True)


def _uncancel(task: asyncio.Task[None] | None) -> None:
    """Take back every cancel request of ``task`` (one handled here, not by arq)."""
    while task is not None and task.uncancel() > 0:
        continue


async def _shielded(work: Coroutine[object, object, T]) -> T:
    """Run ``work`` to its end whatever cancels arrive meanwhile; then re-raise the cancel, if one came."""
    inner = asyncio.ensure_future(work)
    cancelled = False
    while not inner.done():
        try:
            await asyncio.shield(inner)
        except asyncio.CancelledError:
            cancelled = True
    result = inner.result()
    if cancelled:
        raise asyncio.CancelledError
    return result


def _os_error(exc: OSError, roots: dict[str, str]) -> JobError:
    failed = os_failure(exc, roots)
    return JobError(code=failed.code, message=failed.message)


def _warn_lost(job_id: str, exc: LeaseLost) -> None:
    logger.warning(
        "lease lost; the attempt stopped without writing more",
        extra={"event": "lease_lost", "job_id": job_id, "error": str(exc)},
    )


class JobRunner(Generic[R, S]):
    """Runs the jobs of ``lifecycle`` with ``work``, one call of ``run`` per arq job; their children come
    from ``warm`` when it is given and has one ready (``mt_storage.process.WarmChild``)."""

    def __init__(
        self,
        lifecycle: Lifecycle[R],
        work: Work[R, S],
        settings: WorkerSettings,
        *,
        queue: Callable[[], JobQueue | None],
        publisher: LivePublisher | None,
        timeout_seconds: float,
        roots: dict[str, str] | None = None,
        warm: WarmChild | None = None,
    ) -> None:
        check_timing(lifecycle.stall_after_seconds, settings.heartbeat_interval)
        self.lifecycle = lifecycle
        self.work = work
        self.settings = settings
        self._queue = queue
        self._publisher = publisher
        self._timeout = timeout_seconds
        self._roots = roots or {}
        self._warm = warm

    def _publish(self, event: JobEvent, data: bytes) -> None:
        if self._publisher is not None:
            self._publisher.publish(event, data)

    async def _flush_events(self) -> None:
        if self._publisher is not None:
            await self._publisher.flush()

    async def run(self, job_id: str, job_try: int) -> None:
        """Run one attempt of job ``job_id`` (arq's ``job_try``-th) to its ending, or hand it back."""
        lease = await self.lifecycle.start(job_id)
        if lease is None:
            logger.info("job not started", extra={"event": "job_skipped", "job_id": job_id})
            return
        log = JobLog(self.work.logs_path(lease.job), job_id, self._publish)
        log.write("info", "started", f"attempt {lease.job.attempts}", attempt=lease.job.attempts)
        task = asyncio.current_task()
        state = _Attempt()

        def on_lost(exc: LeaseLost) -> None:
            # Another worker owns the job now: kill the child at once and write nothing more for it.
            if state.lost is None:
                state.lost = exc
                state.abandon.set()
                if task is not None:
                    task.cancel()

        def on_cancelling() -> None:
            # A cancel whose abort did not reach this worker still stops the attempt.
            if not state.cancel_seen:
                state.cancel_seen = True
                if task is not None:
                    task.cancel()

        writer = RecordWriter(lease, on_lost)
        beats = asyncio.create_task(self._heartbeats(lease, on_lost, on_cancelling))
        # The keeper's fence does not wait out a Redis outage: its next look tries again.
        state.keeper = asyncio.create_task(self.work.keep(lease.job, lease.heartbeat))
        try:
            try:
                async with asyncio.timeout(self._timeout):
                    ending = await self._attempt(lease, log, writer, state.abandon)
            except TimeoutError:
                message = f"the job ran longer than its timeout of {self._timeout:g} s; raise the worker's timeout"
                ending = _Ending(JobError(code="timeout", message=message))
            except asyncio.CancelledError:
                if state.lost is not None:
                    _uncancel(task)
                    _warn_lost(job_id, state.lost)
                    return
                outcome = await _shielded(self._handed_back(lease, log, writer, job_try, state))
                if outcome == "cancelled" and state.cancel_seen:
                    _uncancel(task)  # the cancel came from the record, not from arq: the job ends here
                    return
                raise
            except LeaseLost as exc:
                _warn_lost(job_id, exc)
                return
            except Exception as exc:
                logger.exception("job crashed", extra={"event": "job_crashed", "job_id": job_id})
                message = f"unexpected {type(exc).__name__} while running the job; see the worker log for job {job_id}"
                ending = _Ending(JobError(code="internal_error", message=message))
            # The ending is written whole even if a cancel or a shutdown arrives meanwhile (then re-raised).
            await _shielded(self._end(lease, log, writer, ending, state))
        finally:
            # Both tasks are told to stop before anything is awaited, and the waiting is shielded: a second
            # cancel arriving meanwhile must not leave the heartbeats renewing the lease of a finished attempt.
            beats.cancel()
            await _shielded(self._wind_down(beats, state, writer))

    @staticmethod
    async def _wind_down(beats: asyncio.Task[None], state: _Attempt, writer: RecordWriter[R]) -> None:
        """The attempt's last step: the keeper stopped (after a write under way), the heartbeats gone, the
        record writer's coalesced writes flushed."""
        await state.stop_keeping()
        await asyncio.gather(beats, return_exceptions=True)
        await writer.aclose()

    async def _heartbeats(
        self, lease: Lease[R], on_lost: Callable[[LeaseLost], None], on_cancelling: Callable[[], None]
    ) -> None:
        """Renew ``lease`` every heartbeat interval until cancelled; Redis errors are waited out. A renewal
        refused means the lease is lost; one that reads ``cancelling`` stops the attempt."""
        down = False
        while True:
            await asyncio.sleep(self.settings.heartbeat_interval)
            try:
                record = await lease.heartbeat()
            except REDIS_DOWN as exc:
                if not down:
                    logger.warning(
                        "heartbeat waiting for redis",
                        extra={"event": "heartbeat_failed", "job_id": lease.job_id, "error": str(exc)},
                    )
                down = True
                continue
            except LeaseLost as exc:
                on_lost(exc)
                return
            down = False
            if record.status == "cancelling":
                on_cancelling()

    async def _attempt(
        self, lease: Lease[R], log: JobLog, writer: RecordWriter[R], abandon: asyncio.Event
    ) -> _Ending | S:
        """Prepare and run the child, starting it again after a crash while ``Work.restart_marker`` grows."""
        try:
            prepared = await self.work.prepare(lease.job)
        except JobFailed as exc:
            return _Ending(exc.error)
        except OSError as exc:
            return _Ending(_os_error(exc, self._roots))
        launches = 0
        outcome: list[Failed | S] = []
        while True:
            launches += 1
            marker = self.work.restart_marker(lease.job)
            outcome.clear()

            async def handle(line: bytes) -> None:
                if abandon.is_set():
                    return  # the job is another worker's now: nothing of this child is kept
                try:
                    message = self.work.decode(line)
                except msgspec.DecodeError:
                    log.write("warning", "unknown_message", "the child process wrote a line that is not a message")
                    return
                if isinstance(message, (Failed, Resumed, LogEvent, ProgressEvent, ValidationEvent, CheckpointEvent)):
                    if isinstance(message, Failed):
                        outcome.append(message)
                        return
                    if not isinstance(message, Resumed):
                        log.emit(message)
                    change = self.work.record_change(message)
                    if change is not None:
                        writer.submit(*change)
                    return
                outcome.append(message)

            def spawned(pid: int) -> None:
                log.write("info", "process_started", f"child process {pid}", pid=pid)

            try:
                command = await prepared.launch() if prepared.launch is not None else None
            except JobFailed as exc:
                return _Ending(exc.error)
            try:
                return_code = await run_child(
                    self.work.module,
                    prepared.spec,
                    niceness=self.settings.niceness,
                    log_path=prepared.process_log,
                    on_line=handle,
                    grace=self.settings.shutdown_grace,
                    on_spawn=spawned,
                    abandon=abandon,
                    command=command,
                    warm=self._warm,
                )
            except OSError as exc:  # the process log or the child's TMPDIR could not be made
                return _Ending(_os_error(exc, self._roots))
            last_message = outcome[-1] if outcome else None
            if isinstance(last_message, Failed):
                return _Ending(JobError(code=last_message.code, message=last_message.message))
            if last_message is not None and return_code == 0:
                return last_message
            progressed = self.work.restart_marker(lease.job) > marker
            if progressed and launches < self.settings.max_tries:
                log.write(
                    "warning", "process_restarting",
                    f"the child process exited with code {return_code}; starting it again from its checkpoint",
                    return_code=return_code,
                )  # fmt: skip
                await retry_while_down(lease.restarted, f"restart of {lease.job_id}")
                continue
            message = f"the child process exited with code {return_code} without a result"
            last = tail(prepared.process_log, _TAIL_LINES)
            return _Ending(
                JobError(code="process_crashed", message=f"{message}; last output: {last}" if last else message)
            )

    async def _settle(self, lease: Lease[R], wait: float | None = None) -> None:
        """``Work.settle``, fenced by ``lease``: each check waits out a Redis outage (for at most ``wait``
        seconds when given, then raises ``TimeoutError``).

        Raises:
            LeaseLost: the job is another worker's now.
            StoreError, OSError: from ``Work.settle``.
        """

        async def fence() -> R:
            async with asyncio.timeout(wait):
                return await retry_while_down(lease.heartbeat, f"upload of {lease.job_id}")

        await self.work.settle(lease.job, fence)

    async def _settle_or_log(self, lease: Lease[R], wait: float | None = None) -> None:
        """``_settle`` before an ending that is written whatever the upload does (a failure, a cancel, a
        hand-back): a failed upload is logged. Raises ``LeaseLost`` only."""
        try:
            await self._settle(lease, wait)
        except (StoreError, OSError) as exc:  # OSError: TimeoutError too
            logger.error(
                "upload before the ending failed",
                extra={"event": "store_error", "job_id": lease.job_id, "error": str(exc) or type(exc).__name__},
            )

    async def _end(
        self, lease: Lease[R], log: JobLog, writer: RecordWriter[R], ending: _Ending | S, state: _Attempt
    ) -> None:
        """Write the attempt's ending after every event before it and after ``Work.settle`` (retried while
        Redis is unreachable). A success whose files cannot be settled fails instead."""
        await state.stop_keeping()
        await writer.flush()
        try:
            if isinstance(ending, _Ending):
                error = ending.error or JobError(code="internal_error", message="the job ended without a result")
                log.write("error", "failed", error.message, code=error.code)
                await self._settle_or_log(lease)
                await self._flush_events()
                await retry_while_down(lambda: lease.fail(error), f"failure of {lease.job_id}")
                return
            # Fenced commit: the artifacts' commit point is written only by the lease holder.
            await retry_while_down(lease.heartbeat, f"commit of {lease.job_id}")
            try:
                change = await self.work.commit(lease.job, ending, log)
                log.write("info", "succeeded", "the job succeeded")
                await self._settle(lease)
            except OSError as exc:
                await self._end(lease, log, writer, _Ending(_os_error(exc, self._roots)), state)
                return
            except StoreError as exc:
                message = (
                    f"the job's files could not be uploaded to the object store ({exc}); check the store "
                    "(GET /readyz) and run the job again"
                )
                await self._end(
                    lease, log, writer, _Ending(JobError(code="storage_unavailable", message=message)), state
                )
                return
            await self._flush_events()
            await retry_while_down(lambda: lease.succeed(change), f"success of {lease.job_id}")
        except LeaseLost as exc:
            log.write("warning", "lease_lost", f"{exc}; the ending of this attempt was not written")

    async def _handed_back(
        self, lease: Lease[R], log: JobLog, writer: RecordWriter[R], job_try: int, state: _Attempt
    ) -> str | None:
        """After a cancel or a worker shutdown stopped the child, and after ``Work.settle``: end a cancelled
        job ``cancelled`` (returns ``"cancelled"``); hand any other back to the queue (``"requeued"``), or fail
        it ``worker_lost`` on its last try (``"failed"``). ``None``: the lease was lost, or Redis stayed
        unreachable for the shutdown grace (the upload's own time not counted); then the record stays
        ``running`` and the reaper takes it over."""
        grace = self.settings.shutdown_grace
        await state.stop_keeping()
        try:
            async with asyncio.timeout(grace):
                await writer.flush()
                current = await retry_while_down(lease.heartbeat, f"stop of {lease.job_id}")
            error: JobError | None = None
            if current.status == "cancelling":
                log.write("info", "cancelled", "stopped on the user's cancel")
            elif job_try >= self.settings.max_tries:
                message = (
                    f"the worker stopped during the job on each of {self.settings.max_tries} tries; submit it again"
                )
                error = JobError(code="worker_lost", message=message)
                log.write("error", "failed", message, code=error.code)
            else:
                log.write("warning", "stopped", "the worker is shutting down; the job goes back on the queue")
            await self._settle_or_log(lease, grace)
            async with asyncio.timeout(grace):
                await self._flush_events()
                if current.status == "cancelling":
                    await retry_while_down(lease.finish_cancel, f"cancel of {lease.job_id}")
                    return "cancelled"
                if error is not None:
                    failure = error
                    await retry_while_down(lambda: lease.fail(failure), f"failure of {lease.job_id}")
                    return "failed"
                await retry_while_down(lease.requeue, f"requeue of {lease.job_id}")
                queue = self._queue()
                if queue is not None:
                    await queue.release(lease.job_id)
                return "requeued"
        except TimeoutError:
            logger.warning(
                "job not handed back: redis unreachable", extra={"event": "hand_back_failed", "job_id": lease.job_id}
            )
            return None
        except LeaseLost:
            return None
