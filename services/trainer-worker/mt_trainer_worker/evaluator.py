"""Evaluation jobs: resolve the weights and the text, launch the evaluation process, relay its heartbeats,
write its metrics (``eval/<eval_id>.json`` and ``eval/metrics.json``, atomically) and end the record."""

from __future__ import annotations

import logging

import msgspec

from mt_contracts import codec
from mt_contracts.evaluation import EvalSpec, Evaluated, decode_eval_event
from mt_contracts.jobs import EvalJob, EvalMetrics, JobError, RunJob
from mt_contracts.settings import WorkerSettings
from mt_contracts.training import Failed, Heartbeat
from mt_storage import CorpusPathError, StorageError
from mt_storage.checkpoints import resolve_weights
from mt_storage.corpus import resolve_corpus
from mt_storage.files import atomic_write_bytes
from mt_storage.joblog import JobLog
from mt_storage.jobs import JobStore, utcnow
from mt_storage.layout import LOGS, Layout
from mt_trainer_worker.process import follow, start_process, tail

logger = logging.getLogger(__name__)
_TAIL_LINES = 20


class EvalSupervisor:
    """Runs evaluation jobs for one worker process."""

    def __init__(
        self, evals: JobStore[EvalJob], runs: JobStore[RunJob], layout: Layout, settings: WorkerSettings
    ) -> None:
        self.evals = evals
        self.runs = runs
        self.layout = layout
        self.settings = settings

    async def run(self, eval_id: str) -> None:
        """Execute evaluation ``eval_id`` to a terminal status.

        ``asyncio.CancelledError`` (worker shutdown) stops the process and is re-raised.
        """
        job = await self.evals.mark_running(eval_id)
        if job is None:
            logger.info("evaluation already finished", extra={"event": "job_skipped", "job_id": eval_id})
            return
        log = JobLog(self.layout.model_dir(job.run_id) / LOGS, job.run_id)
        log.write("info", "eval_started", f"evaluation {eval_id} of split {job.request.split}", eval_id=eval_id)
        run = await self.runs.get(job.run_id)
        if run is None:
            await self._fail(job, JobError(code="run_missing", message=f"run {job.run_id} is gone"), log)
            return
        try:
            spec = self._write_spec(job, run)
        except CorpusPathError as exc:
            await self._fail(job, JobError(code="corpus_unavailable", message=str(exc)), log)
            return
        except StorageError as exc:
            await self._fail(job, JobError(code="weights_missing", message=str(exc)), log)
            return
        process_log = self.layout.eval_process_log(job.run_id, eval_id)
        process = await start_process(
            "mt_trainer_worker.training.evaluate", self.layout.eval_spec(job.run_id, eval_id),
            self.settings.niceness, process_log,
        )  # fmt: skip
        outcome: list[Evaluated | Failed] = []

        async def relay(raw: bytes) -> None:
            try:
                event = decode_eval_event(raw)
            except msgspec.DecodeError:
                log.write("warning", "unknown_event", "the evaluation process wrote a line that is not an event")
                return
            match event:
                case Heartbeat():
                    now = utcnow()
                    await self.evals.update(eval_id, lambda r: msgspec.structs.replace(r, heartbeat_at=now))
                case Evaluated() | Failed():
                    outcome.append(event)

        return_code = await follow(process, relay, self.settings.shutdown_grace)
        match outcome[-1] if outcome else None:
            case Evaluated(metrics=metrics) if return_code == 0:
                await self._succeed(job, spec, metrics, log)
            case Failed(code=code, message=message):
                await self._fail(job, JobError(code=code, message=message), log)
            case _:
                message = f"the evaluation process exited with code {return_code} without a result"
                last = tail(process_log, _TAIL_LINES)
                await self._fail(
                    job,
                    JobError(code="process_crashed", message=f"{message}; last output: {last}" if last else message),
                    log,
                )

    def _write_spec(self, job: EvalJob, run: RunJob) -> EvalSpec:
        request = job.request
        weights = resolve_weights(self.layout, run.id, run.request.tokenizer_id, request.checkpoint)
        corpus_path = (
            request.corpus_path if request.split == "corpus" and request.corpus_path else run.request.corpus_path
        )
        files = resolve_corpus(self.layout.corpus_root, corpus_path)
        spec = EvalSpec(
            eval_id=job.id,
            weights=weights,
            split=request.split,
            corpus_path=corpus_path,
            corpus_files=[str(path) for path in files],
            val_fraction=run.request.val_fraction,
            seed=run.request.seed,
            block_size=run.request.block_size,
            batch_size=run.request.batch_size,
            dataset_cache=str(self.layout.dataset_cache()),
            device=run.request.device,
            max_tokens=request.max_tokens,
            heartbeat_interval=self.settings.heartbeat_interval,
        )
        atomic_write_bytes(self.layout.eval_spec(run.id, job.id), codec.encode(spec))
        return spec

    async def _succeed(self, job: EvalJob, spec: EvalSpec, metrics: EvalMetrics, log: JobLog) -> None:
        data = codec.encode(metrics)
        atomic_write_bytes(self.layout.eval_result(job.run_id, job.id), data)
        atomic_write_bytes(self.layout.eval_latest(job.run_id), data)
        log.write(
            "info", "eval_succeeded",
            f"{spec.split}: loss {metrics.loss:.4f} bits_per_byte {metrics.bits_per_byte:.4f}",
            **msgspec.structs.asdict(metrics),
        )  # fmt: skip
        now = utcnow()
        await self.evals.update(
            job.id,
            lambda r: msgspec.structs.replace(r, status="succeeded", finished_at=now, updated_at=now, result=metrics),
        )

    async def _fail(self, job: EvalJob, error: JobError, log: JobLog) -> None:
        log.write("error", "eval_failed", error.message, code=error.code, eval_id=job.id)
        await self.evals.mark_failed(job.id, error)
