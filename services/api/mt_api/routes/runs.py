"""Training run routes."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from typing import Annotated

import msgspec
from litestar import Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, Parameter
from litestar.status_codes import HTTP_200_OK, HTTP_202_ACCEPTED

from mt_api import Conflict, InvalidField, NotFound
from mt_api.body import json_body
from mt_api.routes.common import DRY_RUN, accepted, admit, cancel, create_admitted, enqueue, new_id, page
from mt_api.services import Services
from mt_api.validation import Problems, check_init_from, check_launcher, check_run_request
from mt_contracts.corpora import RunEstimate
from mt_contracts.events import ProgressEvent, ValidationEvent, decode_job_event
from mt_contracts.ids import is_run_id
from mt_contracts.jobs import (
    CheckpointInfo,
    EvalPoint,
    JobAccepted,
    JobStatus,
    RunJob,
    RunPage,
    RunProgress,
    RunSeries,
    utcnow,
)
from mt_contracts.queue import TRAIN_MODEL_TASK
from mt_contracts.requests import ResumeRunRequest, TrainRunRequest
from mt_storage.checkpoints import INDEX, read_index
from mt_storage.lifecycle import shown


@post("/runs/train", status_code=HTTP_202_ACCEPTED, tags=["runs"], dependencies={"payload": json_body(TrainRunRequest)})
async def train_run(
    payload: NamedDependency[TrainRunRequest],
    services: NamedDependency[Services],
    dry_run: Annotated[bool, Parameter(description=DRY_RUN)] = False,
) -> Response[JobAccepted] | Response[RunEstimate]:
    """Queue a training run with a succeeded tokenizer, from scratch or from another run's weights
    (``init_from``). Answers 202 with the new ``run_`` id; with ``dry_run=true``, 200 with the estimate and
    nothing queued or written."""
    tokenizer = await services.tokenizers.get(payload.tokenizer_id)
    await services.fetch_corpus(payload.corpus_path)
    # Resolving the corpus walks folders: off the event loop, once (the estimate reads the files found here).
    files = await asyncio.to_thread(check_run_request, payload, tokenizer, services.layout.corpus_root)
    if payload.init_from is not None:
        parent = await services.runs.get(payload.init_from.run_id)
        if parent is not None:
            await services.fetch_weights(parent.id, parent.request.tokenizer_id, payload.init_from.checkpoint)
        check_init_from(services.layout, payload, parent)
    estimate = await services.run_estimate(payload, files, strict=dry_run)
    if dry_run and estimate is not None:
        return Response(estimate, status_code=HTTP_200_OK)
    now = utcnow()
    job = RunJob(id=new_id("run"), request=payload, created_at=now, updated_at=now, estimate=estimate)
    await create_admitted(services, services.run_lifecycle, job, payload.corpus_path)
    await enqueue(services, services.run_lifecycle, TRAIN_MODEL_TASK, job.id, services.settings.queue.training)
    return accepted(job.id, f"/runs/{job.id}")


@get("/runs", tags=["runs"])
async def list_runs(
    services: NamedDependency[Services],
    limit: Annotated[int, Parameter(ge=1, le=100, description="Runs per page.")] = 20,
    cursor: Annotated[str | None, Parameter(description="next_cursor of the previous page.")] = None,
    status: Annotated[
        JobStatus | None,
        Parameter(description="Only runs in this stored status; stalled: the active runs whose heartbeat is too old."),
    ] = None,
) -> RunPage:
    """Runs, newest first, ``limit`` per page; follow ``next_cursor`` for older ones. ``stalled`` is shown
    but never stored, so a ``status=running`` page also holds the stalled runs; ``status=stalled`` holds only
    them."""
    items, next_cursor = await page(
        services, services.runs, "run", is_run_id, limit=limit, cursor=cursor, status=status
    )
    return RunPage(items=items, next_cursor=next_cursor)


def _shown(services: Services, job: RunJob, now: datetime) -> RunJob:
    """The record as clients see it: ``stalled`` when its heartbeat is too old."""
    return shown(job, now, services.settings.app.stall_after_seconds)


async def _get(services: Services, run_id: str) -> RunJob:
    job = await services.runs.get(run_id) if is_run_id(run_id) else None
    if job is None:
        raise NotFound(f"no run {run_id}")
    return job


@get("/runs/{run_id:str}", tags=["runs"])
async def get_run(run_id: FromPath[str], services: NamedDependency[Services]) -> RunJob:
    """The run: status, progress, heartbeat, last validation estimate, latest checkpoint, final metrics or
    error. A running run whose heartbeat is older than ``APP__STALL_AFTER_SECONDS`` shows ``stalled``."""
    return _shown(services, await _get(services, run_id), utcnow())


@post(
    "/runs/{run_id:str}/resume",
    status_code=HTTP_202_ACCEPTED,
    tags=["runs"],
    dependencies={"payload": json_body(ResumeRunRequest)},
)
async def resume_run(
    run_id: FromPath[str], payload: NamedDependency[ResumeRunRequest], services: NamedDependency[Services]
) -> Response[JobAccepted]:
    """Put a failed or cancelled run back on the queue; it continues from its last checkpoint. 409 when
    the run has not ended that way or has no checkpoint; 400 when ``max_steps`` is not past it."""
    job = await _get(services, run_id)
    if job.status not in {"failed", "cancelled"}:
        raise Conflict(f"run {run_id} is {job.status}; only a failed or cancelled run can be resumed")
    await services.pull_file(services.layout.run_dir(run_id) / INDEX)
    checkpoints = read_index(services.layout.run_dir(run_id))
    if not checkpoints:
        raise Conflict(f"run {run_id} has no checkpoint to resume from; submit it again with POST /runs/train")
    last = checkpoints[-1].step
    request = job.request
    if payload.max_steps is not None:
        if payload.max_steps <= last:
            raise InvalidField(f"max_steps must be past the last checkpoint (step {last})", field="max_steps")
        request = msgspec.structs.replace(request, max_steps=payload.max_steps, max_tokens=None)
    request = msgspec.structs.replace(
        request,
        launcher=payload.launcher or request.launcher,
        nnodes=payload.nnodes or request.nnodes,
        nproc_per_node=payload.nproc_per_node or request.nproc_per_node,
    )
    launch_problems = Problems()
    check_launcher(request, launch_problems)
    launch_problems.raise_any()
    resumed = await services.run_lifecycle.resume(run_id, lambda r: msgspec.structs.replace(r, request=request))
    if resumed is None:
        raise Conflict(f"run {run_id} changed while resuming; try again")
    await admit(services, services.run_lifecycle, run_id, request.corpus_path)
    await services.queue.requeue(TRAIN_MODEL_TASK, run_id, services.settings.queue.training)
    return accepted(run_id, f"/runs/{run_id}")


@get("/runs/{run_id:str}/checkpoints", tags=["runs"])
async def list_checkpoints(run_id: FromPath[str], services: NamedDependency[Services]) -> list[CheckpointInfo]:
    """The run's kept checkpoints, oldest first: step, path, size in bytes, time, losses."""
    await _get(services, run_id)
    await services.pull_file(services.layout.run_dir(run_id) / INDEX)
    return read_index(services.layout.run_dir(run_id))


@get("/runs/{run_id:str}/metrics", tags=["runs"])
async def run_metrics(run_id: FromPath[str], services: NamedDependency[Services]) -> RunSeries:
    """The training loss (averaged between reports) and validation results by step, for plotting; the last
    validation is the final one over the whole split. Read from the run's ``logs.jsonl``, where each event is
    stored once."""
    await _get(services, run_id)
    await services.pull_file(services.layout.run_logs(run_id))
    return await asyncio.to_thread(_read_series, services.layout.run_logs(run_id))


def _read_series(path: Path) -> RunSeries:
    train: list[RunProgress] = []
    val: list[EvalPoint] = []
    if path.is_file():
        with path.open("rb") as handle:
            for line in handle:
                try:
                    event = decode_job_event(line)
                except msgspec.DecodeError:
                    continue  # a line being written, or cut short by a full disk
                match event:
                    case ProgressEvent(progress=progress):
                        train.append(progress)
                    case ValidationEvent(point=point):
                        val.append(point)
                    case _:
                        continue
    return RunSeries(train=train, val=val)


@post("/runs/{run_id:str}/cancel", status_code=200, tags=["runs"])
async def cancel_run(run_id: FromPath[str], services: NamedDependency[Services]) -> RunJob:
    """Cancel the run: a queued one ends ``cancelled`` at once; a running one turns ``cancelling`` and its
    worker stops it within seconds. 409 when it already ended."""
    if not is_run_id(run_id):
        raise NotFound(f"no run {run_id}")
    return await cancel(services, services.run_lifecycle, run_id, "run")


ROUTES = [train_run, list_runs, get_run, cancel_run, resume_run, list_checkpoints, run_metrics]
