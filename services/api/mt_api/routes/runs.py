"""Training run routes."""

from __future__ import annotations

from litestar import Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_202_ACCEPTED

from mt_api import NotFound
from mt_api.routes.common import accepted, cancel, enqueue, new_id
from mt_api.services import Services
from mt_api.validation import check_run_request
from mt_contracts.ids import is_run_id
from mt_contracts.jobs import JobAccepted, RunJob
from mt_contracts.queue import TRAIN_MODEL_TASK
from mt_contracts.requests import TrainRunRequest
from mt_storage.jobs import utcnow


@post("/runs/train", status_code=HTTP_202_ACCEPTED, tags=["runs"])
async def train_run(data: JSONBody[TrainRunRequest], services: NamedDependency[Services]) -> Response[JobAccepted]:
    """Queue a GPT-2 training run with a succeeded tokenizer. Answers 202 with the new ``run_`` id."""
    tokenizer = await services.tokenizers.get(data.tokenizer_id)
    check_run_request(data, tokenizer, services.layout.corpus_root)
    now = utcnow()
    job = RunJob(id=new_id("run"), status="queued", request=data, created_at=now, updated_at=now)
    await services.runs.create(job)
    await enqueue(services, services.runs, TRAIN_MODEL_TASK, job.id, services.settings.queue.training)
    return accepted(job.id, f"/runs/{job.id}")


@get("/runs/{run_id:str}", tags=["runs"])
async def get_run(run_id: FromPath[str], services: NamedDependency[Services]) -> RunJob:
    """The run: status, progress, heartbeat, last validation estimate, final metrics or error."""
    job = await services.runs.get(run_id) if is_run_id(run_id) else None
    if job is None:
        raise NotFound(f"no run {run_id}")
    return job


@post("/runs/{run_id:str}/cancel", status_code=200, tags=["runs"])
async def cancel_run(run_id: FromPath[str], services: NamedDependency[Services]) -> RunJob:
    """Cancel the run: a queued one ends ``cancelled`` at once; a running one turns ``cancelling`` and its
    worker stops it within seconds. 409 when it already ended."""
    if not is_run_id(run_id):
        raise NotFound(f"no run {run_id}")
    return await cancel(services, services.runs, run_id, "run")


ROUTES = [train_run, get_run, cancel_run]
