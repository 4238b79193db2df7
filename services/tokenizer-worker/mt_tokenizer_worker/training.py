"""Run one tokenizer job for the arq task in ``worker.py``: move the record to ``running``, train in a child
process (``mt_tokenizer_worker.process``), record ``succeeded`` or ``failed``.

Training runs in its own process group rather than a thread, so that a cancel (arq abort) or the job's
timeout kills it at once while this event loop keeps the worker's health key fresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from pathlib import Path

import msgspec
from redis.exceptions import RedisError

from mt_contracts import codec
from mt_contracts.jobs import JobError, TokenizerJob, TokenizerResult
from mt_contracts.settings import WorkerSettings
from mt_contracts.tokenizers import TokenizerFailed, TokenizerOutcome, TokenizerSpec, TokenizerTrained
from mt_storage.events import LivePublisher
from mt_storage.joblog import JobLog
from mt_storage.jobs import JobStore, utcnow
from mt_storage.layout import LOGS, MANIFEST, Layout

logger = logging.getLogger(__name__)

_PROCESS_ENV = {"HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
SCRATCH_PREFIX = "mt-tokenizer-"
_TAIL_CHARS = 2000
# The longest stdout line read from the training process, in bytes (the outcome line carries statistics).
_LINE_LIMIT = 16 << 20
_outcome_decoder: msgspec.json.Decoder[TokenizerOutcome] = msgspec.json.Decoder(TokenizerOutcome)


class _LogLine(msgspec.Struct):
    """What marks a stdout line as a ``logs.jsonl`` line (see ``mt_contracts.logs``)."""

    event: str


_log_line_decoder = msgspec.json.Decoder(_LogLine)


def _read_line(line: bytes) -> TokenizerOutcome | _LogLine | None:
    """A training process's stdout line: its outcome, a log line to publish, or ``None`` for anything else."""
    try:
        return _outcome_decoder.decode(line)
    except msgspec.DecodeError:
        return _read_log_line(line)


def _read_log_line(line: bytes) -> _LogLine | None:
    try:
        return _log_line_decoder.decode(line)
    except msgspec.DecodeError:
        return None


async def run_tokenizer_job(
    store: JobStore[TokenizerJob],
    layout: Layout,
    tokenizer_id: str,
    settings: WorkerSettings,
    *,
    publisher: LivePublisher | None = None,
    before_succeed: Callable[[Path], Awaitable[None]] | None = None,
) -> None:
    """Move the job to ``running``, train, and record ``succeeded`` or ``failed`` with an actionable error.
    ``before_succeed(out_dir)`` runs once the artifact folder is complete, before the job is recorded
    ``succeeded`` (the object-store upload).

    Log lines go to the job's ``logs.jsonl`` and, with ``publisher``, to its live event stream: this
    process's own and those the training process hands over on its stdout; every line reaches the stream
    before the terminal status.

    ``asyncio.CancelledError`` (a cancel, the job's timeout, worker shutdown) kills the training process,
    removes any ``manifest.json`` it wrote (so no artifact looks complete) unless the job already succeeded,
    and is re-raised; ``mt_storage.queue.build_worker`` records the ending.
    """
    job = await store.mark_running(tokenizer_id)
    if job is None:
        logger.info("job already finished", extra={"event": "job_skipped", "job_id": tokenizer_id})
        return
    out_dir = layout.tokenizer_dir(tokenizer_id)
    log = JobLog(out_dir / LOGS, tokenizer_id, publisher.publish if publisher else None)

    async def flush() -> None:
        if publisher is not None:
            await publisher.flush()

    log.write("info", "started", f"attempt {job.attempts}", attempt=job.attempts)
    spec = TokenizerSpec(
        tokenizer_id=tokenizer_id,
        request=job.request,
        corpus_root=str(layout.corpus_root),
        out_dir=str(out_dir),
        log_path=str(out_dir / LOGS),
    )
    try:
        forward = (lambda line: publisher.publish(tokenizer_id, line)) if publisher is not None else None
        async with _heartbeats(store, tokenizer_id, settings.heartbeat_interval):
            outcome = await train_in_process(spec, settings.niceness, forward)
        match outcome:
            case TokenizerTrained():
                result = TokenizerResult(
                    vocab_size=outcome.vocab_size,
                    special_tokens=outcome.special_tokens,
                    corpus_bytes=outcome.statistics.corpus.bytes,
                    training_seconds=outcome.statistics.training_seconds,
                    artifact_dir=str(out_dir),
                    method=job.request.method,
                    statistics=outcome.statistics,
                )
                log.write("info", "succeeded", f"vocab_size={outcome.vocab_size}", artifact_dir=str(out_dir))
                await flush()
                if before_succeed is not None:
                    await before_succeed(out_dir)
                done = utcnow()
                await store.update(
                    tokenizer_id,
                    lambda r: msgspec.structs.replace(
                        r, status="succeeded", finished_at=done, updated_at=done, result=result
                    ),
                )
            case TokenizerFailed(code=code, message=message):
                await _fail(store, log, tokenizer_id, JobError(code=code, message=message), flush)
    except asyncio.CancelledError:
        current = await asyncio.shield(store.get(tokenizer_id))
        if current is None or current.status != "succeeded":
            (out_dir / MANIFEST).unlink(missing_ok=True)
        log.write("warning", "stopped", "the training process was stopped by the worker")
        await flush()
        raise
    except TrainingProcessError as exc:
        logger.error("tokenizer process crashed", extra={"event": "job_crashed", "job_id": tokenizer_id})
        await _fail(store, log, tokenizer_id, JobError(code="internal_error", message=str(exc)), flush)
    except Exception as exc:
        logger.exception("tokenizer job crashed", extra={"event": "job_crashed", "job_id": tokenizer_id})
        message = f"unexpected {type(exc).__name__} while training; see the worker log for job {tokenizer_id}"
        await _fail(store, log, tokenizer_id, JobError(code="internal_error", message=message), flush)


@contextlib.asynccontextmanager
async def _heartbeats(store: JobStore[TokenizerJob], tokenizer_id: str, interval: float) -> AsyncIterator[None]:
    """Refresh the record's ``heartbeat_at`` every ``interval`` seconds while the block runs, so the reaper
    (``mt_storage.reaper``) can tell a job whose worker died from a long one."""

    async def beat() -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await store.update(tokenizer_id, _beaten(utcnow()))
            except (RedisError, OSError) as exc:
                logger.warning("heartbeat not written", extra={"event": "heartbeat_failed", "error": str(exc)})

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def _beaten(at: datetime) -> Callable[[TokenizerJob], TokenizerJob]:
    return lambda record: msgspec.structs.replace(record, heartbeat_at=at)


class TrainingProcessError(Exception):
    """The training process ended without an outcome line; the message holds its exit code and stderr tail."""


async def train_in_process(
    spec: TokenizerSpec, niceness: int = 0, on_log_line: Callable[[bytes], None] | None = None
) -> TokenizerOutcome:
    """Run ``python -m mt_tokenizer_worker.process`` on ``spec`` in a new process group, with a temporary
    directory of its own (``TMPDIR``, removed when it ends), and return its outcome; ``on_log_line`` receives
    each log line it writes (already in ``logs.jsonl``) as it comes. On cancellation the whole group is killed
    (SIGKILL: artifacts are written atomically, so there is nothing to flush) before ``CancelledError``
    propagates.

    Raises:
        TrainingProcessError: the process exited without an outcome line.
    """
    # The process's own temporary directory (SentencePiece's input FIFO lives there), removed however the
    # process ends: a killed one cannot clean up after itself.
    scratch = tempfile.mkdtemp(prefix=SCRATCH_PREFIX)
    try:
        return await _train(spec, niceness, on_log_line, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


async def _train(
    spec: TokenizerSpec, niceness: int, on_log_line: Callable[[bytes], None] | None, scratch: str
) -> TokenizerOutcome:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mt_tokenizer_worker.process", "--nice", str(niceness),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
        env={**os.environ, **_PROCESS_ENV, "TMPDIR": scratch},
        limit=_LINE_LIMIT,
    )  # fmt: skip
    if process.stdin is None or process.stdout is None or process.stderr is None:
        raise RuntimeError("the training process has no stdin, stdout or stderr pipe")
    stderr = asyncio.ensure_future(process.stderr.read())
    outcome: TokenizerOutcome | None = None
    try:
        process.stdin.write(codec.encode(spec))
        await process.stdin.drain()
        process.stdin.close()
        async for line in process.stdout:
            match _read_line(line):
                case _LogLine():
                    if on_log_line is not None:
                        on_log_line(line if line.endswith(b"\n") else line + b"\n")
                case TokenizerTrained() | TokenizerFailed() as read:
                    outcome = read
                case None:
                    logger.warning("unexpected output line", extra={"event": "unexpected_output", "line": line[:200]})
        await process.wait()
        errors = await stderr
    except BaseException:
        if process.returncode is None:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                logger.info("training process already gone", extra={"event": "process_gone", "pid": process.pid})
            await asyncio.shield(process.wait())
        stderr.cancel()
        raise
    if outcome is not None:
        return outcome
    tail = errors.decode(errors="replace").strip()[-_TAIL_CHARS:]
    raise TrainingProcessError(
        f"the tokenizer training process exited with code {process.returncode} without a result"
        + (f"; last output: {tail}" if tail else "")
    )


async def _fail(
    store: JobStore[TokenizerJob],
    log: JobLog,
    tokenizer_id: str,
    error: JobError,
    flush: Callable[[], Awaitable[None]],
) -> None:
    log.write("error", "failed", error.message, code=error.code)
    await flush()
    await store.mark_failed(tokenizer_id, error)
