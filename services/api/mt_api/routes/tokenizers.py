"""Tokenizer job routes."""

from __future__ import annotations

import asyncio
from typing import Annotated

from litestar import Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, Parameter
from litestar.status_codes import HTTP_200_OK, HTTP_202_ACCEPTED

from mt_api import Conflict, NotFound, Unavailable
from mt_api.body import json_body
from mt_api.routes.common import DRY_RUN, accepted, cancel, create_admitted, enqueue, new_id, page
from mt_api.services import Services
from mt_api.validation import check_tokenizer_request
from mt_contracts.corpora import TokenizerEstimate
from mt_contracts.ids import is_tokenizer_id
from mt_contracts.jobs import JobAccepted, JobStatus, TokenizerJob, TokenizerPage, utcnow
from mt_contracts.queue import TRAIN_TOKENIZER_TASK
from mt_contracts.requests import EncodeRequest, TrainTokenizerRequest
from mt_contracts.tokenizers import EncodeResponse
from mt_storage.layout import MANIFEST
from mt_storage.lifecycle import shown


@post(
    "/tokenizers/train",
    status_code=HTTP_202_ACCEPTED,
    tags=["tokenizers"],
    dependencies={"payload": json_body(TrainTokenizerRequest)},
)
async def train_tokenizer(
    payload: NamedDependency[TrainTokenizerRequest],
    services: NamedDependency[Services],
    dry_run: Annotated[bool, Parameter(description=DRY_RUN)] = False,
) -> Response[JobAccepted] | Response[TokenizerEstimate]:
    """Queue a tokenizer training job. Answers 202 with the new ``tok_`` id and its ``Location``; with
    ``dry_run=true``, 200 with the estimate and nothing queued or written."""
    # Resolving the corpus walks folders and opens files: off the event loop.
    await services.fetch_corpus(payload.corpus_path)
    files = await asyncio.to_thread(check_tokenizer_request, payload, services.layout.corpus_root)
    estimate = await services.tokenizer_estimate(payload, files)
    if dry_run:
        return Response(estimate, status_code=HTTP_200_OK)
    now = utcnow()
    job = TokenizerJob(id=new_id("tok"), request=payload, created_at=now, updated_at=now, estimate=estimate)
    await create_admitted(services, services.tokenizer_lifecycle, job, payload.corpus_path)
    await enqueue(
        services, services.tokenizer_lifecycle, TRAIN_TOKENIZER_TASK, job.id, services.settings.queue.tokenizer
    )
    return accepted(job.id, f"/tokenizers/{job.id}")


@get("/tokenizers", tags=["tokenizers"])
async def list_tokenizers(
    services: NamedDependency[Services],
    limit: Annotated[int, Parameter(ge=1, le=100, description="Jobs per page.")] = 20,
    cursor: Annotated[str | None, Parameter(description="next_cursor of the previous page.")] = None,
    status: Annotated[
        JobStatus | None,
        Parameter(description="Only jobs in this stored status; stalled: the active jobs whose heartbeat is too old."),
    ] = None,
) -> TokenizerPage:
    """Tokenizer jobs, newest first, ``limit`` per page; follow ``next_cursor`` for older ones. ``stalled`` is
    shown but never stored, so a ``status=running`` page also holds the stalled jobs; ``status=stalled`` holds
    only them."""
    items, next_cursor = await page(
        services, services.tokenizers, "tokenizer", is_tokenizer_id, limit=limit, cursor=cursor, status=status
    )
    return TokenizerPage(items=items, next_cursor=next_cursor)


@get("/tokenizers/{tokenizer_id:str}", tags=["tokenizers"])
async def get_tokenizer(tokenizer_id: FromPath[str], services: NamedDependency[Services]) -> TokenizerJob:
    """The tokenizer job: status (``stalled`` when its worker has sent no heartbeat for
    ``APP__STALL_AFTER_SECONDS``), timestamps, result with statistics, or error."""
    job = await services.tokenizers.get(tokenizer_id) if is_tokenizer_id(tokenizer_id) else None
    if job is None:
        raise NotFound(f"no tokenizer {tokenizer_id}")
    return shown(job, utcnow(), services.settings.app.stall_after_seconds)


@post(
    "/tokenizers/{tokenizer_id:str}/encode",
    status_code=200,
    tags=["tokenizers"],
    dependencies={"payload": json_body(EncodeRequest)},
)
async def encode_text(
    tokenizer_id: FromPath[str], payload: NamedDependency[EncodeRequest], services: NamedDependency[Services]
) -> EncodeResponse:
    """Encode ``text`` with a succeeded tokenizer: ids, token strings and the decoded text. 409 while the
    tokenizer is not ``succeeded``."""
    job = await services.tokenizers.get(tokenizer_id) if is_tokenizer_id(tokenizer_id) else None
    if job is None:
        raise NotFound(f"no tokenizer {tokenizer_id}")
    if job.status != "succeeded":
        raise Conflict(f"tokenizer {tokenizer_id} is {job.status}; only a succeeded tokenizer encodes")
    directory = services.layout.tokenizer_dir(tokenizer_id)
    await services.pull(directory)
    if not await asyncio.to_thread((directory / MANIFEST).is_file):
        raise Unavailable(
            f"tokenizer {tokenizer_id} succeeded, but its files are not in this API's artifact storage "
            f"({directory}); the API must mount the workers' storage (see /readyz and docs/deploy.md)"
        )
    return await services.tokenizer_cache.encode(tokenizer_id, directory, payload.text)


@post("/tokenizers/{tokenizer_id:str}/cancel", status_code=200, tags=["tokenizers"])
async def cancel_tokenizer(tokenizer_id: FromPath[str], services: NamedDependency[Services]) -> TokenizerJob:
    """Cancel the tokenizer: a queued one ends ``cancelled`` at once; a running one turns ``cancelling`` and its
    worker stops it within seconds. 409 when it already ended."""
    if not is_tokenizer_id(tokenizer_id):
        raise NotFound(f"no tokenizer {tokenizer_id}")
    return await cancel(services, services.tokenizer_lifecycle, tokenizer_id, "tokenizer")


ROUTES = [train_tokenizer, list_tokenizers, get_tokenizer, encode_text, cancel_tokenizer]
