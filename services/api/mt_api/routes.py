"""HTTP handlers: decode, call one function, encode."""

from __future__ import annotations

import msgspec
from litestar import Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_202_ACCEPTED, HTTP_503_SERVICE_UNAVAILABLE
from ulid import ULID

from mt_api import NotFound
from mt_api.services import Services
from mt_api.validation import check_run_request, check_tokenizer_request
from mt_contracts.ids import is_run_id, is_tokenizer_id
from mt_contracts.jobs import JobAccepted, JobError, RunJob, TokenizerJob
from mt_contracts.queue import TRAIN_MODEL_TASK, TRAIN_TOKENIZER_TASK
from mt_contracts.requests import TrainRunRequest, TrainTokenizerRequest
from mt_storage.jobs import JobStore, R, utcnow


class Health(msgspec.Struct, frozen=True):
    """``status`` is ``ok`` or ``unavailable``; ``reasons`` says what is missing."""

    status: str
    reasons: list[str] = msgspec.field(default_factory=list)


def _new_id(prefix: str) -> str:
    # ULID: 48-bit millisecond time + 80 random bits, Crockford base32; sortable, collision-free.
    return f"{prefix}_{ULID()}"


def _accepted(job_id: str, location: str) -> Response[JobAccepted]:
    return Response(
        JobAccepted(id=job_id, status="queued", location=location),
        status_code=HTTP_202_ACCEPTED,
        headers={"Location": location},
    )


async def _enqueue(services: Services, store: JobStore[R], task: str, job_id: str, queue_name: str) -> None:
    """Enqueue, or fail the fresh record if the queue refuses, so no record waits for a job that never runs."""
    try:
        enqueued = await services.queue.enqueue(task, job_id, queue_name)
    except Exception:
        error = JobError(code="enqueue_failed", message="the job could not be queued; submit it again")
        await store.mark_failed(job_id, error)
        raise
    if not enqueued:
        raise RuntimeError(f"job id {job_id} was already queued")


@post("/tokenizers/train", status_code=HTTP_202_ACCEPTED, tags=["tokenizers"])
async def train_tokenizer(
    data: JSONBody[TrainTokenizerRequest], services: NamedDependency[Services]
) -> Response[JobAccepted]:
    """Queue a tokenizer training job. Answers 202 with the new ``tok_`` id and its ``Location``."""
    check_tokenizer_request(data, services.layout.corpus_root)
    now = utcnow()
    job = TokenizerJob(id=_new_id("tok"), status="queued", request=data, created_at=now, updated_at=now)
    await services.tokenizers.create(job)
    await _enqueue(services, services.tokenizers, TRAIN_TOKENIZER_TASK, job.id, services.settings.queue.tokenizer)
    return _accepted(job.id, f"/tokenizers/{job.id}")


@get("/tokenizers/{tokenizer_id:str}", tags=["tokenizers"])
async def get_tokenizer(tokenizer_id: FromPath[str], services: NamedDependency[Services]) -> TokenizerJob:
    """The tokenizer job: status, timestamps, result or error."""
    job = await services.tokenizers.get(tokenizer_id) if is_tokenizer_id(tokenizer_id) else None
    if job is None:
        raise NotFound(f"no tokenizer {tokenizer_id}")
    return job


@post("/runs/train", status_code=HTTP_202_ACCEPTED, tags=["runs"])
async def train_run(data: JSONBody[TrainRunRequest], services: NamedDependency[Services]) -> Response[JobAccepted]:
    """Queue a GPT-2 training run with a succeeded tokenizer. Answers 202 with the new ``run_`` id."""
    tokenizer = await services.tokenizers.get(data.tokenizer_id)
    check_run_request(data, tokenizer, services.layout.corpus_root)
    now = utcnow()
    job = RunJob(id=_new_id("run"), status="queued", request=data, created_at=now, updated_at=now)
    await services.runs.create(job)
    await _enqueue(services, services.runs, TRAIN_MODEL_TASK, job.id, services.settings.queue.training)
    return _accepted(job.id, f"/runs/{job.id}")


@get("/runs/{run_id:str}", tags=["runs"])
async def get_run(run_id: FromPath[str], services: NamedDependency[Services]) -> RunJob:
    """The run: status, progress, heartbeat, last validation estimate, final metrics or error."""
    job = await services.runs.get(run_id) if is_run_id(run_id) else None
    if job is None:
        raise NotFound(f"no run {run_id}")
    return job


@get("/healthz", tags=["health"])
async def healthz() -> Health:
    """The process is alive."""
    return Health(status="ok")


@get("/readyz", tags=["health"])
async def readyz(services: NamedDependency[Services]) -> Response[Health]:
    """200 when Redis answers and a live worker of each kind has a fresh health key; else 503 with reasons."""
    reasons = await services.readiness()
    if reasons:
        return Response(Health(status="unavailable", reasons=reasons), status_code=HTTP_503_SERVICE_UNAVAILABLE)
    return Response(Health(status="ok"))


ROUTES = [train_tokenizer, get_tokenizer, train_run, get_run, healthz, readyz]
