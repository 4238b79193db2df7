"""Checks a request body needs beyond its Struct's bounds: across fields, against the corpus root and
against other jobs. Each raises an ``ApiError`` naming the field and the fix, before anything is written."""

from __future__ import annotations

import re
from pathlib import Path

from mt_api import Conflict, InvalidField, NotFound
from mt_contracts.evaluation import Weights
from mt_contracts.families import check_model, family_of
from mt_contracts.jobs import RunJob, TokenizerJob
from mt_contracts.requests import (
    SENTENCEPIECE_ONLY_OPTIONS,
    EvaluateRequest,
    TrainRunRequest,
    TrainTokenizerRequest,
    with_end_of_text,
)
from mt_contracts.tokenizers import SENTENCEPIECE_UNK
from mt_storage import CorpusPathError
from mt_storage.checkpoints import CheckpointNotKept, NoWeights, resolve_weights
from mt_storage.corpus import resolve_corpus
from mt_storage.layout import Layout

BYTE_ALPHABET_SIZE = 256
_BYTE_PIECE = re.compile(r"<0x[0-9A-F]{2}>")


class Problems:
    """The unusable fields of one request, collected so that one answer names them all."""

    def __init__(self) -> None:
        self.found: list[tuple[str, str]] = []

    def add(self, field: str, message: str) -> None:
        self.found.append((field, message))

    def raise_any(self) -> None:
        """Raises ``InvalidField`` (400) listing every problem found, if any."""
        if self.found:
            field, message = self.found[0]
            detail = message if len(self.found) == 1 else f"{len(self.found)} fields are not valid; see errors"
            raise InvalidField(detail, field=field, problems=list(self.found))


def check_corpus(corpus_root: Path, corpus_path: str, problems: Problems | None = None) -> list[Path]:
    """The corpus files, or ``InvalidField('corpus_path')`` (added to ``problems`` instead when given)."""
    try:
        return resolve_corpus(corpus_root, corpus_path)
    except CorpusPathError as exc:
        if problems is None:
            raise InvalidField(str(exc), field="corpus_path") from exc
        problems.add("corpus_path", str(exc))
        return []


def check_tokenizer_request(request: TrainTokenizerRequest, corpus_root: Path) -> list[Path]:
    """Only the options of the request's method; special tokens unique, not blank and not pieces SentencePiece
    reserves; ``vocab_size`` room for the method's fixed symbols (the byte alphabet, the special tokens,
    SentencePiece's unknown piece) and one learned token; the corpus inside the root. Every problem found is
    listed in the one ``InvalidField``. Returns the corpus files (``resolve_corpus``), which the estimate
    reads."""
    problems = Problems()
    for name in request.options_for_other_method():
        other = "sentencepiece" if name in SENTENCEPIECE_ONLY_OPTIONS else "bpe"
        problems.add(name, f"{name} applies to method {other!r} only; remove it or send method={other!r}")
    for index, token in enumerate(request.special_tokens):
        if not token.strip():
            problems.add(f"special_tokens[{index}]", "special tokens may not be empty or whitespace")
        elif token in request.special_tokens[:index]:
            problems.add(f"special_tokens[{index}]", f"special tokens must be unique; remove the duplicate {token!r}")
        elif request.method == "sentencepiece" and (
            token == SENTENCEPIECE_UNK or (request.byte_fallback is not False and _BYTE_PIECE.fullmatch(token))
        ):
            problems.add(
                f"special_tokens[{index}]",
                f"{token!r} is a piece SentencePiece reserves (its unknown piece {SENTENCEPIECE_UNK!r}, and with "
                "byte_fallback the pieces <0x00> to <0xFF>); choose another special token",
            )
    specials = len(with_end_of_text(request.special_tokens))
    if request.method in ("bpe", "rustbpe"):
        needed = BYTE_ALPHABET_SIZE + specials + 1
        parts = f"256 byte symbols, {specials} special token(s) and one merge"
    elif request.byte_fallback is False:
        needed = specials + 2
        parts = f"{specials} special token(s), the unknown piece and one learned piece"
    else:
        needed = BYTE_ALPHABET_SIZE + specials + 2
        parts = f"256 byte-fallback pieces, {specials} special token(s), the unknown piece and one learned piece"
    if request.vocab_size < needed:
        problems.add("vocab_size", f"vocab_size must be at least {needed}: {parts}")
    files = check_corpus(corpus_root, request.corpus_path, problems)
    problems.raise_any()
    return files


def check_launcher(request: TrainRunRequest, problems: Problems) -> None:
    """``local`` runs one process: ``nnodes`` and ``nproc_per_node`` above 1 need ``torchrun`` or
    ``k8s-trainjob``."""
    if request.launcher != "local":
        return
    for name in ("nnodes", "nproc_per_node"):
        value = getattr(request, name)
        if value > 1:
            problems.add(
                name, f"{name}={value} needs launcher torchrun (or k8s-trainjob); launcher local runs one process"
            )


def check_run_request(request: TrainRunRequest, tokenizer: TokenizerJob | None, corpus_root: Path) -> list[Path]:
    """Model sizes usable by its family (``mt_contracts.families``), schedule consistent, corpus inside the
    root (every problem listed in one 400), then the tokenizer: known (else 404) and finished (else 409).
    Returns the corpus files (``resolve_corpus``), which the estimate reads."""
    problems = Problems()
    for field, message in check_model(request):
        problems.add(field, message)
    if request.max_steps is not None and request.max_tokens is not None:
        problems.add("max_tokens", "give max_steps or max_tokens, not both")
    if request.warmup_steps > request.total_steps:
        problems.add(
            "warmup_steps", f"warmup_steps={request.warmup_steps} exceeds the run's {request.total_steps} steps"
        )
    if request.min_learning_rate > request.learning_rate:
        problems.add(
            "min_learning_rate",
            f"min_learning_rate={request.min_learning_rate} exceeds learning_rate={request.learning_rate}",
        )
    check_launcher(request, problems)
    files = check_corpus(corpus_root, request.corpus_path, problems)
    problems.raise_any()
    if tokenizer is None:
        raise NotFound(
            f"no tokenizer {request.tokenizer_id}; train one with POST /tokenizers/train", field="tokenizer_id"
        )
    if tokenizer.status != "succeeded":
        raise Conflict(
            f"tokenizer {tokenizer.id} is {tokenizer.status}; a run needs a succeeded tokenizer",
            field="tokenizer_id",
        )
    return files


def check_eval_request(request: EvaluateRequest, corpus_root: Path) -> None:
    """``corpus_path`` given exactly when ``split`` is ``corpus``, and inside the root."""
    if request.split == "corpus":
        if request.corpus_path is None:
            raise InvalidField("split 'corpus' needs a corpus_path to score", field="corpus_path")
        check_corpus(corpus_root, request.corpus_path)
    elif request.corpus_path is not None:
        raise InvalidField(
            f"corpus_path applies to split 'corpus' only; remove it or send split='corpus' (got {request.split!r})",
            field="corpus_path",
        )


def check_weights(layout: Layout, run: RunJob, checkpoint: int | None, field: str = "checkpoint") -> Weights:
    """The run's final weights or its kept ``checkpoint``: ``Conflict`` (409) when the run has no final
    weights yet, ``NotFound`` (404, on ``field``) when no kept checkpoint has that step."""
    try:
        return resolve_weights(layout, run.id, run.request.tokenizer_id, checkpoint)
    except NoWeights as exc:
        raise Conflict(f"run {run.id} is {run.status} and has no final weights yet; name a kept checkpoint") from exc
    except CheckpointNotKept as exc:
        raise NotFound(str(exc), field=field) from exc


def check_init_from(layout: Layout, request: TrainRunRequest, parent: RunJob | None) -> Weights | None:
    """The weights of ``request.init_from`` (``None`` without one): the run known (else ``NotFound``, 404, on
    ``init_from.run_id``), its weights there (``check_weights``: 409, or 404 on ``init_from.checkpoint``), and
    the same tokenizer, family and shapes (else one ``InvalidField``, 400, naming every field that differs)."""
    init_from = request.init_from
    if init_from is None:
        return None
    if parent is None:
        raise NotFound(f"no run {init_from.run_id} to start from", field="init_from.run_id")
    theirs = parent.request
    problems = Problems()
    if theirs.tokenizer_id != request.tokenizer_id:
        problems.add(
            "tokenizer_id",
            f"init_from run {parent.id} was trained with tokenizer {theirs.tokenizer_id}; send that tokenizer_id",
        )
    if theirs.model != request.model:
        problems.add("model", f"init_from run {parent.id} is a {theirs.model!r} model; send model={theirs.model!r}")
    else:
        ours, shape = family_of(request).shape(request), family_of(theirs).shape(theirs)
        for field, value in shape.items():
            if ours[field] != value:
                problems.add(
                    field,
                    f"init_from run {parent.id} has {field}={value} and this run {field}={ours[field]}: weights of "
                    f"another shape cannot be loaded; send {field}={value}",
                )
    problems.raise_any()
    return check_weights(layout, parent, init_from.checkpoint, field="init_from.checkpoint")
