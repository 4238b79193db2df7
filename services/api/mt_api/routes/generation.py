"""Generation and export routes: both run in the gateway's inference processes, never on its event loop."""

from __future__ import annotations

import secrets

from litestar import post
from litestar.di import NamedDependency
from litestar.params import FromPath

from mt_api import Conflict
from mt_api.body import json_body
from mt_api.routes.common import find_run
from mt_api.services import Services
from mt_api.validation import check_weights
from mt_contracts import codec
from mt_contracts.generation import (
    ExportCall,
    Exported,
    ExportResponse,
    GenerateCall,
    Generated,
    GenerateResponse,
    InferenceFailed,
    InferenceOutcome,
)
from mt_contracts.manifests import ModelManifest
from mt_contracts.requests import ExportRequest, GenerateRequest
from mt_storage.layout import MANIFEST


@post(
    "/runs/{run_id:str}/generate",
    status_code=200,
    tags=["generation"],
    dependencies={"payload": json_body(GenerateRequest)},
)
async def generate_text(
    run_id: FromPath[str], payload: NamedDependency[GenerateRequest], services: NamedDependency[Services]
) -> GenerateResponse:
    """Sample continuations of ``prompt`` with the final weights or a kept checkpoint. 409 when the run has
    no final weights yet; 404 for an unknown run or checkpoint; 503 when the inference process does not
    answer within ``INFERENCE__TIMEOUT`` seconds."""
    run = await find_run(services, run_id)
    await services.fetch_weights(run.id, run.request.tokenizer_id, payload.checkpoint)
    weights = check_weights(services.layout, run, payload.checkpoint)
    seed = payload.seed if payload.seed is not None else secrets.randbelow(2**32)
    outcome = await services.inference.call(GenerateCall(weights=weights, request=payload, seed=seed))
    match outcome:
        case Generated(response=response):
            return response
    raise _failure(outcome)


@post(
    "/runs/{run_id:str}/export",
    status_code=200,
    tags=["generation"],
    dependencies={"payload": json_body(ExportRequest)},
)
async def export_model(
    run_id: FromPath[str], payload: NamedDependency[ExportRequest], services: NamedDependency[Services]
) -> ExportResponse:
    """The ``save_pretrained`` folder of the final weights (the model folder) or of a kept checkpoint
    (written once, under ``export/step-<n>/``), with its files' sizes and sha256. 409 when the run has no
    final weights yet; 404 for an unknown run or checkpoint."""
    run = await find_run(services, run_id)
    await services.fetch_weights(run.id, run.request.tokenizer_id, payload.checkpoint)
    weights = check_weights(services.layout, run, payload.checkpoint)
    if weights.checkpoint is None:
        manifest = codec.decode((services.layout.model_dir(run.id) / MANIFEST).read_bytes(), ModelManifest)
        return ExportResponse(
            run_id=run.id, checkpoint=None, step=weights.step, directory=weights.model_dir, files=manifest.files
        )
    export_dir = services.layout.export_dir(run.id, weights.checkpoint)
    outcome = await services.inference.call(ExportCall(weights=weights, export_dir=str(export_dir)))
    match outcome:
        case Exported(manifest=exported):
            await services.push(export_dir)  # shared through the object store, when there is one
            return ExportResponse(
                run_id=run.id,
                checkpoint=weights.checkpoint,
                step=weights.step,
                directory=str(export_dir),
                files=exported.files,
            )
    raise _failure(outcome)


def _failure(outcome: InferenceOutcome) -> Exception:
    match outcome:
        case InferenceFailed(code="weights_missing", message=message):
            return Conflict(f"{message}; the checkpoint may have been pruned, list them again")
        case InferenceFailed(code=code, message=message):
            return RuntimeError(f"inference failed ({code}): {message}")
    return RuntimeError(f"unexpected inference answer {type(outcome).__name__}")


ROUTES = [generate_text, export_model]
