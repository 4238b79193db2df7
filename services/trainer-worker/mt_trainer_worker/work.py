"""What training runs and evaluations run, for the one job runner of ``mt_storage.runner``: the child module,
the spec, how the child's events change the record, and how a success is committed.

A run's child restarts within its attempt when it died after writing a newer checkpoint (it resumes from it);
an evaluation is read-only and simply runs again on its next attempt.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec

from mt_contracts import codec
from mt_contracts.evaluation import EvalMessage, EvalSpec, Evaluated, Weights, decode_eval_message
from mt_contracts.events import CheckpointEvent, ChildEvent, LogEvent, ProgressEvent, Resumed, ValidationEvent
from mt_contracts.jobs import EvalJob, RunJob
from mt_contracts.manifests import ParentRun, RunManifest
from mt_contracts.settings import LauncherSettings, WorkerSettings
from mt_contracts.training import Finished, RunSpec, TrainingMessage, decode_message
from mt_storage import CorpusPathError, StorageError
from mt_storage.checkpoints import WEIGHTS_FILE, read_index, resolve_weights
from mt_storage.child import os_failure
from mt_storage.corpora import corpus_name_of
from mt_storage.corpus import resolve_corpus
from mt_storage.files import atomic_write_bytes, sha256_file
from mt_storage.joblog import JobLog
from mt_storage.jobs import JobStore
from mt_storage.layout import LOGS, MANIFEST, Layout
from mt_storage.lifecycle import Change
from mt_storage.runner import JobFailed, Prepared
from mt_storage.store import Fence, Mirror, fenced
from mt_trainer_worker.launchers import LaunchContext, launchers


def _write(layout: Layout, path: Path, data: bytes) -> None:
    """Write a spec file, a disk error becoming the job's failure."""
    try:
        atomic_write_bytes(path, data)
    except OSError as exc:
        failed = os_failure(exc, layout.roots())
        raise JobFailed(failed.code, failed.message) from exc


def run_folders(layout: Layout, job: RunJob) -> list[Path]:
    """The folders a run reads and writes (its run and model folders, its tokenizer, its corpus, the run its
    weights come from), which the object store's cache keeps while it runs."""
    folders = [
        layout.run_dir(job.id),
        layout.model_dir(job.id),
        layout.tokenizer_dir(job.request.tokenizer_id),
        layout.corpus_root / corpus_name_of(job.request.corpus_path),
    ]
    if job.request.init_from is not None:
        folders += [layout.run_dir(job.request.init_from.run_id), layout.model_dir(job.request.init_from.run_id)]
    return folders


class RunWork:
    """A training run: ``mt_trainer_worker.training`` on a ``RunSpec``, started by the run's launcher
    (``mt_trainer_worker.launchers``)."""

    module = "mt_trainer_worker.training"
    out_of_memory_hint = "lower batch_size, block_size or n_embd"

    def __init__(
        self,
        layout: Layout,
        settings: WorkerSettings,
        mirror: Mirror | None = None,
        launch: LaunchContext | None = None,
    ) -> None:
        self.layout = layout
        self.settings = settings
        self.mirror = mirror
        self.launch = launch or LaunchContext(
            settings=LauncherSettings(), niceness=settings.niceness, layout=layout, training_queue=""
        )

    def logs_path(self, job: RunJob) -> Path:
        return self.layout.run_logs(job.id)

    async def prepare(self, job: RunJob) -> Prepared:
        tokenizer_dir = self.layout.tokenizer_dir(job.request.tokenizer_id)
        if self.mirror is not None:
            # The tokenizer, and the run's folder when the store's checkpoints are ahead of this machine's
            # (a run another pod started or resumed), so it resumes from the latest checkpoint.
            await asyncio.to_thread(self.mirror.pull_run, job.id, job.request.tokenizer_id)
        if not (tokenizer_dir / MANIFEST).is_file():
            raise JobFailed(
                "tokenizer_missing", f"tokenizer {job.request.tokenizer_id} has no artifacts; train it again"
            )
        if self.mirror is not None:  # an uploaded corpus comes from the object store
            await asyncio.to_thread(self.mirror.pull_corpus, job.request.corpus_path)
        try:
            files = resolve_corpus(self.layout.corpus_root, job.request.corpus_path)
        except CorpusPathError as exc:
            raise JobFailed("corpus_unavailable", str(exc)) from exc
        init_weights, parent = await self._init_from(job)
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
            progress_interval=self.settings.progress_interval,
            runs_root=str(self.layout.runs_root),
            artifacts_root=str(self.layout.artifacts_root),
            init_weights=init_weights,
            parent=parent,
        )
        launcher = launchers()[job.request.launcher](self.launch)
        problem = launcher.check(job.request)
        if problem is not None:
            raise JobFailed("launcher_unavailable", problem)
        data = codec.encode(spec)
        spec_path = self.layout.run_spec(job.id)
        _write(self.layout, spec_path, data)
        return Prepared(
            data, self.layout.run_process_log(job.id), launch=lambda: launcher.command(job, self.module, spec_path)
        )

    async def _init_from(self, job: RunJob) -> tuple[Weights | None, ParentRun | None]:
        """The weights of the request's ``init_from`` run and what the manifest records of them (the file
        and its sha256 now), brought from the object store first when there is one; on an attempt that
        resumes from the run's own checkpoint, no weights and the record of the first attempt.

        Raises:
            JobFailed: ``weights_missing`` when they are gone (a checkpoint pruned since the API checked it).
        """
        init_from = job.request.init_from
        if init_from is None:
            return None, None
        spec_path = self.layout.run_spec(job.id)
        if read_index(self.layout.run_dir(job.id)) and spec_path.is_file():
            # A later attempt resumes from this run's own checkpoint: the parent's weights (which a still
            # running parent may have pruned since) are not loaded again, and the record of them is kept.
            previous = codec.decode(spec_path.read_bytes(), RunSpec)
            if previous.parent is not None:
                return None, previous.parent
        tokenizer_id = job.request.tokenizer_id  # the API checked that the parent run has the same one
        if self.mirror is not None:
            await asyncio.to_thread(self.mirror.pull_run, init_from.run_id, tokenizer_id)
        try:
            weights = resolve_weights(self.layout, init_from.run_id, tokenizer_id, init_from.checkpoint)
        except StorageError as exc:
            raise JobFailed("weights_missing", f"the init_from weights are gone: {exc}") from exc
        if weights.checkpoint is None:
            path, root = Path(weights.model_dir) / WEIGHTS_FILE, Path(weights.model_dir)
        else:
            path, root = Path(weights.checkpoint_path), self.layout.run_dir(init_from.run_id)
        try:
            sha256 = await asyncio.to_thread(sha256_file, path)
        except FileNotFoundError as exc:
            raise JobFailed("weights_missing", f"the init_from weights {path.name} are gone") from exc
        parent = ParentRun(
            run_id=weights.run_id,
            checkpoint=weights.checkpoint,
            step=weights.step,
            weights=str(path.relative_to(root)),
            sha256=sha256,
        )
        return weights, parent

    def decode(self, line: bytes) -> TrainingMessage:
        return decode_message(line)

    def record_change(self, message: ChildEvent | Resumed) -> tuple[str, Change[RunJob]] | None:
        match message:
            case ProgressEvent(progress=progress):
                return "progress", lambda r: msgspec.structs.replace(r, progress=progress)
            case ValidationEvent(point=point):
                return "validation", lambda r: msgspec.structs.replace(r, last_eval=point)
            case CheckpointEvent(checkpoint=checkpoint):
                return "checkpoint", lambda r: msgspec.structs.replace(r, checkpoint=checkpoint)
            case Resumed(step=step):
                return "resumed", lambda r: msgspec.structs.replace(r, resumed_from_step=step)
            case LogEvent():
                return None

    def restart_marker(self, job: RunJob) -> int:
        index = read_index(self.layout.run_dir(job.id))
        return index[-1].step if index else -1

    async def commit(self, job: RunJob, outcome: Finished, log: JobLog) -> Change[RunJob]:
        model_dir = Path(outcome.model_dir)
        manifest = RunManifest(
            run_id=job.id,
            tokenizer_id=job.request.tokenizer_id,
            spec_path=str(self.layout.run_spec(job.id)),
            model_dir=str(model_dir),
            model_manifest_path=str(model_dir / MANIFEST),
            logs_path=str(model_dir / LOGS),
            process_log_path=str(self.layout.run_process_log(job.id)),
            estimate=job.estimate,
            metrics=outcome.metrics,
        )
        atomic_write_bytes(self.layout.run_manifest(job.id), codec.encode(manifest))
        atomic_write_bytes(model_dir / MANIFEST, codec.encode(outcome.manifest))
        metrics = outcome.metrics
        log.write(
            "info", "trained",
            f"val_loss {metrics.val_loss:.4f} val_bits_per_byte {metrics.val_bits_per_byte:.4f}",
            **msgspec.structs.asdict(metrics),
        )  # fmt: skip
        return lambda r: msgspec.structs.replace(r, metrics=metrics, artifact_dir=str(model_dir))

    async def keep(self, job: RunJob, fence: Fence) -> None:
        """With an object store: each new checkpoint uploaded within a heartbeat interval of its write."""
        if self.mirror is not None:
            await self.mirror.follow_checkpoints(job.id, fence, self.settings.heartbeat_interval)

    async def settle(self, job: RunJob, fence: Fence) -> None:
        """With an object store: the run's folders (checkpoints, index, log, model, datasets) uploaded before
        its ending is recorded, so a cancelled or failed run lists the checkpoints it stopped with."""
        if self.mirror is not None:
            mirror = self.mirror
            await fenced(lambda check: mirror.push_run(job.id, check), fence)


class EvalWork:
    """An evaluation: ``mt_trainer_worker.training.evaluate`` on an ``EvalSpec``; its events go to the run's
    ``logs.jsonl``."""

    module = "mt_trainer_worker.training.evaluate"
    out_of_memory_hint = "evaluate with a smaller max_tokens"

    def __init__(self, layout: Layout, runs: JobStore[RunJob], mirror: Mirror | None = None) -> None:
        self.layout = layout
        self.runs = runs
        self.mirror = mirror

    def logs_path(self, job: EvalJob) -> Path:
        return self.layout.run_logs(job.run_id)

    async def prepare(self, job: EvalJob) -> Prepared:
        run = await self.runs.get(job.run_id)
        if run is None:
            raise JobFailed("run_missing", f"run {job.run_id} is gone")
        if self.mirror is not None:  # the run's tokenizer, checkpoints and weights
            await asyncio.to_thread(self.mirror.pull_run, run.id, run.request.tokenizer_id)
        request = job.request
        try:
            weights = resolve_weights(self.layout, run.id, run.request.tokenizer_id, request.checkpoint)
        except StorageError as exc:
            raise JobFailed("weights_missing", str(exc)) from exc
        corpus_path = (
            request.corpus_path if request.split == "corpus" and request.corpus_path else run.request.corpus_path
        )
        if self.mirror is not None:
            await asyncio.to_thread(self.mirror.pull_corpus, corpus_path)
        try:
            files = resolve_corpus(self.layout.corpus_root, corpus_path)
        except CorpusPathError as exc:
            raise JobFailed("corpus_unavailable", str(exc)) from exc
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
            precision=run.request.precision,
        )
        data = codec.encode(spec)
        _write(self.layout, self.layout.eval_spec(run.id, job.id), data)
        return Prepared(data, self.layout.eval_process_log(job.run_id, job.id))

    def decode(self, line: bytes) -> EvalMessage:
        return decode_eval_message(line)

    def record_change(self, message: ChildEvent | Resumed) -> tuple[str, Change[EvalJob]] | None:
        return None

    def restart_marker(self, job: EvalJob) -> int:
        return 0

    async def commit(self, job: EvalJob, outcome: Evaluated, log: JobLog) -> Change[EvalJob]:
        metrics = outcome.metrics
        data = codec.encode(metrics)
        atomic_write_bytes(self.layout.eval_result(job.run_id, job.id), data)
        atomic_write_bytes(self.layout.eval_latest(job.run_id), data)
        log.write(
            "info", "eval_succeeded",
            f"{metrics.split}: loss {metrics.loss:.4f} bits_per_byte {metrics.bits_per_byte:.4f}",
            **msgspec.structs.asdict(metrics),
        )  # fmt: skip
        return lambda r: msgspec.structs.replace(r, result=metrics)

    async def keep(self, job: EvalJob, fence: Fence) -> None:
        """Nothing to upload while an evaluation runs."""

    async def settle(self, job: EvalJob, fence: Fence) -> None:
        """With an object store: the evaluation's result, spec, process log and the run's log."""
        if self.mirror is not None:
            mirror = self.mirror
            await fenced(lambda check: mirror.push_evaluation(job.run_id, job.id, check), fence)
