"""Text generation and export answers, and the calls the gateway hands to its inference processes.

A call travels to the inference process as JSON and its answer comes back as JSON: ``Generated``,
``Exported`` or ``InferenceFailed`` (a tagged union on ``outcome``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

from mt_contracts.evaluation import Weights
from mt_contracts.manifests import FileEntry
from mt_contracts.requests import GenerateRequest


class GenerateCall(msgspec.Struct, frozen=True, kw_only=True, tag_field="call", tag="generate"):
    """Sample with ``weights``; ``seed`` is the one to use (drawn by the gateway when the request had none)."""

    weights: Weights
    request: GenerateRequest
    seed: int


class ExportCall(msgspec.Struct, frozen=True, kw_only=True, tag_field="call", tag="export"):
    """Write the ``save_pretrained`` folder of checkpoint ``weights`` into ``export_dir``."""

    weights: Weights
    export_dir: str


class Sample(msgspec.Struct, frozen=True, kw_only=True):
    """One continuation: ``text`` (the prompt excluded, decoded without loss), the ``tokens`` generated and
    why it stopped (``length``: ``max_new_tokens`` reached; ``end_of_text``: the model ended the document,
    that token not included)."""

    text: str
    tokens: int
    finish_reason: Literal["length", "end_of_text"]


class GenerateResponse(msgspec.Struct, frozen=True, kw_only=True):
    """``POST /runs/{id}/generate``: the samples, the ``seed`` used, ``prompt_tokens`` (the prompt's length
    in tokens, 1 for an empty prompt: the end-of-text token) and the step of the weights used.
    ``seconds`` is sampling wall time, model loading excluded."""

    run_id: str
    checkpoint: int | None
    step: int
    seed: int
    prompt_tokens: int
    samples: list[Sample]
    seconds: float


class ExportManifest(msgspec.Struct, frozen=True, kw_only=True):
    """``export/step-<n>/manifest.json``, written last: every file's size and sha256."""

    run_id: str
    tokenizer_id: str
    checkpoint: int
    files: list[FileEntry]
    created_at: datetime
    versions: dict[str, str]


class ExportResponse(msgspec.Struct, frozen=True, kw_only=True):
    """``POST /runs/{id}/export``: ``directory`` loads with ``AutoModelForCausalLM.from_pretrained`` and
    ``AutoTokenizer.from_pretrained``; ``files`` are those of its manifest."""

    run_id: str
    checkpoint: int | None
    step: int
    directory: str
    files: list[FileEntry]


class Generated(msgspec.Struct, frozen=True, tag_field="outcome", tag="generated"):
    response: GenerateResponse


class Exported(msgspec.Struct, frozen=True, tag_field="outcome", tag="exported"):
    manifest: ExportManifest


class InferenceFailed(msgspec.Struct, frozen=True, tag_field="outcome", tag="failed"):
    """``code``: ``weights_missing`` (the files went away), ``internal_error``."""

    code: str
    message: str


InferenceCall = GenerateCall | ExportCall
InferenceOutcome = Generated | Exported | InferenceFailed
