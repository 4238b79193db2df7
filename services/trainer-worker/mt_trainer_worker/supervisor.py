"""Launch the training process for a run and supervise it: relay its events into the job record and the
run's ``logs.jsonl``, keep ``heartbeat_at`` fresh, and always end the record in a terminal status.

The process is launched by ``mt_trainer_worker.process``: its own process group (so a cancel kills it and
anything it spawned), a lower CPU priority, so a co-located API stays responsive.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgspec

from mt_contracts import codec
from mt_contracts.jobs import JobError, RunJob
from mt_contracts.manifests import RunManifest
from mt_contracts.settings import WorkerSettings
from mt_contracts.training import (
    Checkpoint,
    Eval,
    Failed,
    Finished,
    Heartbeat,
    Progress,
    Resumed,
    RunSpec,
    Started,
    TrainingEvent,
    decode_event,
)
from mt_storage import CorpusPathError
from mt_storage.checkpoints import read_index
from mt_storage.corpus import resolve_corpus
from mt_storage.events import LivePublisher
from mt_storage.files import append_line, atomic_write_bytes
from mt_storage.joblog import JobLog
from mt_storage.jobs import JobStore, utcnow
from mt_storage.layout import LOGS, MANIFEST, Layout
from mt_trainer_worker.process import follow, start_process, tail

logger = logging.getLogger(__name__)

_STDERR_TAIL_LINES = 20


class RunSupervisor:
    """Runs training jobs for one worker process."""

    def __init__(
        self,
        store: JobStore[RunJob],
        layout: Layout,
        settings: WorkerSettings,
        publisher: LivePublisher | None = None,
        before_succeed: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self.store = store
        self.layout = layout
        self.settings = settings
        self.publisher = publisher
        # Runs once a run's folders are complete, before it is recorded succeeded (the object-store upload).
        self.before_succeed = before_succeed

    async def _flush(self) -> None:
        """Let every log line written so far reach the live stream before a terminal status follows it."""
        if self.publisher is not None:
            await self.publisher.flush()

    async def run(self, run_id: str) -> None:
        """Execute run ``run_id`` to a terminal status.

        ``asyncio.CancelledError`` (abort or worker shutdown) kills the process group and is re-raised.
        """
        job = await self.store.mark_running(run_id)
        if job is not None:
            # The clock of the stall check starts now; the process beats once it has imported torch.
            beat = utcnow()
            job = await self.store.update(run_id, lambda r: msgspec.structs.replace(r, heartbeat_at=beat))
        if job is None:
            logger.info("run already finished", extra={"event": "job_skipped", "job_id": run_id})
            return
        model_dir = self.layout.model_dir(run_id)
        log = JobLog(model_dir / LOGS, run_id, self.publisher.publish if self.publisher else None)
        log.write("info", "started", f"attempt {job.attempts}", attempt=job.attempts)
        try:
            spec = self._write_spec(job)
        except CorpusPathError as exc:
            await self.fail(run_id, JobError(code="corpus_unavailable", message=str(exc)), log)
            return
        except FileNotFoundError:
            message = f"tokenizer {job.request.tokenizer_id} has no artifacts; train it again"
            await self.fail(run_id, JobError(code="tokenizer_missing", message=message), log)
            return
        await self._launch_and_follow(job, spec, log)

    def _write_spec(self, job: RunJob) -> RunSpec:
        tokenizer_dir = self.layout.tokenizer_dir(job.request.tokenizer_id)
        if not (tokenizer_dir / MANIFEST).is_file():
            raise FileNotFoundError(tokenizer_dir / MANIFEST)
        files = resolve_corpus(self.layout.corpus_root, job.request.corpus_path)
        spec = RunSpec(
            run_id=job.id,
            tokenizer_id=job.request.tokenizer_id,
            request=job.request,
            tokenizer_dir=str(tokenizer_dir),
            corpus_files=[str(path) for path in files],
            model_dir=str(self.layout.model_dir(job.id)),
            work_dir=str(self.layout.run_work_dir(job.id)),
            run_dir=str(self.layout.run_dir(job.id)),
            dataset_cache=str(self.layout.dataset_cache()),
            heartbeat_interval=self.settings.heartbeat_interval,
            progress_interval=self.settings.progress_interval,
        )
        atomic_write_bytes(self.layout.run_spec(job.id), codec.encode(spec))
        return spec

    async def _launch_and_follow(self, job: RunJob, spec: RunSpec, log: JobLog) -> None:
        """Run the training process; when it dies without a result (killed, out of memory) after writing a
        checkpoint, start it again (it resumes from the checkpoint), up to ``max_tries`` processes."""
        run_id = job.id
        process_log = self.layout.run_process_log(run_id)
        process_log.parent.mkdir(parents=True, exist_ok=True)
        launches = 0
        while True:
            launches += 1
            checkpoint_before = _latest_checkpoint_step(self.layout, run_id)
            outcome, return_code = await self._run_process(run_id, process_log, log)
            match outcome:
                case Finished() if return_code == 0:
                    await self._succeed(run_id, spec, outcome, log)
                    return
                case Failed(code=code, message=message):
                    await self.fail(run_id, JobError(code=code, message=message), log)
                    return
            progressed = _latest_checkpoint_step(self.layout, run_id) > checkpoint_before
            if progressed and launches < self.settings.max_tries:
                log.write(
                    "warning", "process_restarting",
                    f"the training process exited with code {return_code}; resuming from its last checkpoint",
                    return_code=return_code,
                )  # fmt: skip
                await self.store.update(run_id, lambda r: msgspec.structs.replace(r, attempts=r.attempts + 1))
                continue
            last = tail(process_log, _STDERR_TAIL_LINES)
            message = f"the training process exited with code {return_code} without a result"
            if last:
                message += f"; last output: {last}"
            await self.fail(run_id, JobError(code="process_crashed", message=message), log)
            return

    async def _run_process(self, run_id: str, process_log: Path, log: JobLog) -> tuple[Finished | Failed | None, int]:
        """Start one training process and relay its events until it exits; returns its result event (if
        any) and exit code. Cancellation stops the process group and propagates."""
        process = await start_process(
            "mt_trainer_worker.training", self.layout.run_spec(run_id), self.settings.niceness, process_log
        )
        log.write("info", "process_started", f"training process {process.pid}", pid=process.pid)
        outcome: list[Finished | Failed] = []

        async def relay(raw: bytes) -> None:
            event = self._decode(raw, log)
            ended = None if event is None else await self._apply(run_id, event, log)
            if ended is not None:
                outcome.append(ended)

        try:
            return_code = await follow(process, relay, self.settings.shutdown_grace)
        except BaseException:
            log.write("warning", "process_stopped", "training process stopped by the worker")
            await self._flush()
            raise
        return (outcome[-1] if outcome else None), return_code

    def _decode(self, raw: bytes, log: JobLog) -> TrainingEvent | None:
        try:
            return decode_event(raw)
        except msgspec.DecodeError:
            log.write("warning", "unknown_event", "the training process wrote a line that is not an event")
            return None

    async def _apply(self, run_id: str, event: TrainingEvent, log: JobLog) -> Finished | Failed | None:
        now = utcnow()
        change: Callable[[RunJob], RunJob]
        match event:
            case Started():
                log.write(
                    "info", "training_started",
                    f"{event.n_params} parameters, {event.train_tokens} training tokens on {event.device}",
                    n_params=event.n_params, train_tokens=event.train_tokens, val_tokens=event.val_tokens,
                    vocab_size=event.vocab_size, device=event.device,
                )  # fmt: skip
                change = lambda r: msgspec.structs.replace(r, heartbeat_at=now, updated_at=now)  # noqa: E731
            case Heartbeat():
                change = lambda r: msgspec.structs.replace(r, heartbeat_at=now)  # noqa: E731
            case Resumed(step=step):
                log.write("info", "resumed", f"resuming from the checkpoint at step {step}", step=step)
                change = lambda r: msgspec.structs.replace(  # noqa: E731
                    r, resumed_from_step=step, heartbeat_at=now, updated_at=now
                )
            case Checkpoint(checkpoint=checkpoint):
                log.write(
                    "info", "checkpoint", f"checkpoint at step {checkpoint.step}",
                    step=checkpoint.step, path=checkpoint.path, size_bytes=checkpoint.size_bytes,
                )  # fmt: skip
                change = lambda r: msgspec.structs.replace(  # noqa: E731
                    r, checkpoint=checkpoint, heartbeat_at=now, updated_at=now
                )
            case Progress(progress=progress):
                append_line(self.layout.run_metrics(run_id), codec.encode(event) + b"\n")
                log.write(
                    "info", "progress",
                    f"step {progress.step}/{progress.max_steps} loss {progress.train_loss:.4f}",
                    **msgspec.structs.asdict(progress),
                )  # fmt: skip
                change = lambda r: msgspec.structs.replace(  # noqa: E731
                    r, progress=progress, heartbeat_at=now, updated_at=now
                )
            case Eval(point=point):
                append_line(self.layout.run_metrics(run_id), codec.encode(event) + b"\n")
                log.write(
                    "info", "eval", f"step {point.step} val_loss {point.val_loss:.4f}", **msgspec.structs.asdict(point)
                )
                change = lambda r: msgspec.structs.replace(r, last_eval=point, heartbeat_at=now, updated_at=now)  # noqa: E731
            case Finished() | Failed():
                return event
        await self.store.update(run_id, change)
        return None

    async def _succeed(self, run_id: str, spec: RunSpec, finished: Finished, log: JobLog) -> None:
        model_dir = Path(finished.model_dir)
        manifest = RunManifest(
            run_id=run_id,
            tokenizer_id=spec.tokenizer_id,
            spec_path=str(self.layout.run_spec(run_id)),
            model_dir=str(model_dir),
            model_manifest_path=str(model_dir / MANIFEST),
            logs_path=str(model_dir / LOGS),
            process_log_path=str(self.layout.run_process_log(run_id)),
        )
        atomic_write_bytes(self.layout.run_manifest(run_id), codec.encode(manifest))
        metrics = finished.metrics
        log.write(
            "info", "succeeded",
            f"val_loss {metrics.val_loss:.4f} val_bits_per_byte {metrics.val_bits_per_byte:.4f}",
            **msgspec.structs.asdict(metrics),
        )  # fmt: skip
        await self._flush()
        if self.before_succeed is not None:
            await self.before_succeed(run_id)
        now = utcnow()
        await self.store.update(
            run_id,
            lambda r: msgspec.structs.replace(
                r, status="succeeded", finished_at=now, updated_at=now, metrics=metrics, artifact_dir=str(model_dir)
            ),
        )

    async def fail(self, run_id: str, error: JobError, log: JobLog | None = None) -> None:
        """Record the run as ``failed`` with ``error`` (a no-op once the run is terminal)."""
        if log is not None:
            log.write("error", "failed", error.message, code=error.code)
            await self._flush()
        await self.store.mark_failed(run_id, error)


def _latest_checkpoint_step(layout: Layout, run_id: str) -> int:
    index = read_index(layout.run_dir(run_id))
    return index[-1].step if index else -1
