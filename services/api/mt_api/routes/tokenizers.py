"""Tokenizer job routes."""

from __future__ import annotations

from litestar import Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_202_ACCEPTED

from mt_api import NotFound
from mt_api.routes.common import accepted, cancel, enqueue, new_id
from mt_api.services import Services
from mt_api.validation import check_tokenizer_request
from mt_contracts.ids import is_tokenizer_id
from mt_contracts.jobs import JobAccepted, TokenizerJob
from mt_contracts.queue import TRAIN_TOKENIZER_TASK
from mt_contracts.requests import TrainTokenizerRequest
from mt_storage.jobs import utcnow


@post("/tokenizers/train", status_code=HTTP_202_ACCEPTED, tags=["tokenizers"])
async def train_tokenizer(
    data: JSONBody[TrainTokenizerRequest], services: NamedDependency[Services]
) -> Response[JobAccepted]:
    """Queue a tokenizer training job. Answers 202 with the new ``tok_`` id and its ``Location``."""
    check_tokenizer_request(data, services.layout.corpus_root)
    now = utcnow()
    job = TokenizerJob(id=new_id("tok"), status="queued", request=data, created_at=now, updated_at=now)
    await services.tokenizers.create(job)
    await enqueue(services, services.tokenizers, TRAIN_TOKENIZER_TASK, job.id, services.settings.queue.tokenizer)
    return accepted(job.id, f"/tokenizers/{job.id}")


@get("/tokenizers/{tokenizer_id:str}", tags=["tokenizers"])
async def get_tokenizer(tokenizer_id: FromPath[str], services: NamedDependency[Services]) -> TokenizerJob:
    """The tokenizer job: status, timestamps, result or error."""
    job = await services.tokenizers.get(tokenizer_id) if is_tokenizer_id(tokenizer_id) else None
    if job is None:
        raise NotFound(f"no tokenizer {tokenizer_id}")
    return job


@post("/tokenizers/{tokenizer_id:str}/cancel", status_code=200, tags=["tokenizers"])
async def cancel_tokenizer(tokenizer_id: FromPath[str], services: NamedDependency[Services]) -> TokenizerJob:
    """Cancel the tokenizer: a queued one ends ``cancelled`` at once; a running one turns ``cancelling`` and its
    worker stops it within seconds. 409 when it already ended."""
    if not is_tokenizer_id(tokenizer_id):
        raise NotFound(f"no tokenizer {tokenizer_id}")
    return await cancel(services, services.tokenizers, tokenizer_id, "tokenizer")


ROUTES = [train_tokenizer, get_tokenizer, cancel_tokenizer]
