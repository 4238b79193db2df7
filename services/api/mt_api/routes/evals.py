"""Evaluation routes: queue an evaluation of a run, read the latest or all of them."""

from __future__ import annotations

import asyncio

from litestar import Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.status_codes import HTTP_202_ACCEPTED

from mt_api import NotFound
from mt_api.body import json_body
from mt_api.routes.common import accepted, create_admitted, enqueue, find_run, new_id
from mt_api.services import Services
from mt_api.validation import check_eval_request, check_weights
from mt_contracts.ids import is_eval_id
from mt_contracts.jobs import EvalJob, JobAccepted, utcnow
from mt_contracts.queue import EVALUATE_MODEL_TASK
from mt_contracts.requests import EvaluateRequest


@post(
    "/runs/{run_id:str}/evaluate",
    status_code=HTTP_202_ACCEPTED,
    tags=["evaluation"],
    dependencies={"payload": json_body(EvaluateRequest)},
)
async def evaluate_run(
    run_id: FromPath[str], payload: NamedDependency[EvaluateRequest], services: NamedDependency[Services]
) -> Response[JobAccepted]:
    """Queue an evaluation on the training queue: loss (nats per token), perplexity and bits per byte of a
    split or a corpus, with the final weights or a kept checkpoint. 202 with the ``eval_`` id; 409 when the
    run has no final weights yet; 404 for an unknown run or checkpoint."""
    run = await find_run(services, run_id)
    await services.fetch_corpus(payload.corpus_path if payload.split == "corpus" else None)
    await asyncio.to_thread(check_eval_request, payload, services.layout.corpus_root)  # walks the corpus
    await services.fetch_weights_index(run.id, payload.checkpoint)
    check_weights(services.layout, run, payload.checkpoint)
    now = utcnow()
    job = EvalJob(id=new_id("eval"), run_id=run.id, request=payload, created_at=now, updated_at=now)
    corpus_path = payload.corpus_path or run.request.corpus_path
    await create_admitted(services, services.eval_lifecycle, job, corpus_path, group=run.id)
    await enqueue(services, services.eval_lifecycle, EVALUATE_MODEL_TASK, job.id, services.settings.queue.training)
    return accepted(job.id, f"/runs/{run.id}/evals/{job.id}")


@get("/runs/{run_id:str}/eval", tags=["evaluation"])
async def latest_eval(run_id: FromPath[str], services: NamedDependency[Services]) -> EvalJob:
    """The run's newest evaluation, in whatever status; 404 when it has none."""
    await find_run(services, run_id)
    evals = await services.evals.list_group(run_id)
    if not evals:
        raise NotFound(f"run {run_id} has no evaluation yet; POST /runs/{run_id}/evaluate")
    return evals[0]


@get("/runs/{run_id:str}/evals", tags=["evaluation"])
async def list_evals(run_id: FromPath[str], services: NamedDependency[Services]) -> list[EvalJob]:
    """Every evaluation of the run, newest first."""
    await find_run(services, run_id)
    return await services.evals.list_group(run_id)


@get("/runs/{run_id:str}/evals/{eval_id:str}", tags=["evaluation"])
async def get_eval(run_id: FromPath[str], eval_id: FromPath[str], services: NamedDependency[Services]) -> EvalJob:
    """One evaluation: status, timestamps, ``result`` (the metrics) or ``error``."""
    job = await services.evals.get(eval_id) if is_eval_id(eval_id) else None
    if job is None or job.run_id != run_id:
        raise NotFound(f"no evaluation {eval_id} of run {run_id}")
    return job


ROUTES = [evaluate_run, latest_eval, list_evals, get_eval]
