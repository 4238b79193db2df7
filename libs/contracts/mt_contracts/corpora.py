"""Uploaded corpora (``PUT /corpora/{name}``) and the estimates a dry run answers with
(``POST /tokenizers/train?dry_run=true``, ``POST /runs/train?dry_run=true``)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal

import msgspec

from mt_contracts.tokenizers import CorpusFile

# A corpus name: one path component, so it is also the ``corpus_path`` that names the corpus in a job.
CORPUS_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
_NAME = re.compile(CORPUS_NAME_PATTERN)
UploadFormat = Literal["txt", "jsonl", "tar.gz", "zip"]


def is_corpus_name(name: str) -> bool:
    """Whether ``name`` is a usable corpus name (``CORPUS_NAME_PATTERN``)."""
    return bool(_NAME.fullmatch(name))


class CorpusInfo(msgspec.Struct, frozen=True, kw_only=True):
    """An uploaded corpus, also its ``manifest.json``. ``files`` lists each ``.txt``/``.jsonl`` file (path
    relative to the corpus folder, size in bytes, hex sha256); ``bytes`` and ``lines`` count what a job reads
    (``CorpusReader``); ``sha256`` digests every file's path, size and sha256 (``CorpusFingerprint.sha256``);
    ``upload_sha256`` is the sha256 of the bytes uploaded (the archive itself for an archive)."""

    name: str
    files: list[CorpusFile]
    bytes: int
    lines: int
    sha256: str
    upload_sha256: str
    upload_format: UploadFormat
    created_at: datetime


class TokenizerEstimate(msgspec.Struct, frozen=True, kw_only=True):
    """What a tokenizer job would cost, from per-MB figures measured on this machine (docs/estimates.md).

    ``corpus_bytes`` and ``corpus_lines`` count the corpus as a job reads it; ``training_bytes`` is what the
    method trains on (SentencePiece: the lines ``input_sentence_size`` samples). ``peak_memory_bytes`` is the
    training process's expected peak RSS, ``seconds`` its expected wall time.
    ``suggested_input_sentence_size`` is set when a SentencePiece unigram run would pass
    ``ESTIMATE__TOKENIZER_MEMORY_BYTES``: the lines to sample to stay below it."""

    kind: Literal["tokenizer"] = "tokenizer"
    method: str
    corpus_bytes: int
    corpus_lines: int
    training_bytes: int
    peak_memory_bytes: int
    seconds: float
    suggested_input_sentence_size: int | None = None
    warnings: list[str] = []


class RunEstimate(msgspec.Struct, frozen=True, kw_only=True):
    """What a training run would cost.

    ``n_params`` counts the model's parameters (embeddings included); ``train_tokens`` the tokens of the
    training split (``tokens_exact``: read from the prepared-dataset cache; else from encoding a sample of
    the training text with the run's tokenizer). ``flops_per_token = 6 * n_params`` (Kaplan et al. 2020,
    "Scaling Laws for Neural Language Models", eq. 2.1, forward + backward) plus the attention term
    ``6 * n_layer * block_size * n_embd`` (ibid., Table 1, 2·n_layer·n_ctx·d_attn forward, three times for
    the backward too). ``steps`` and ``tokens`` are the run's budget (tokens = steps · batch_size ·
    gradient_accumulation_steps · block_size) and ``epochs`` = tokens / train_tokens.
    ``flops_per_second`` is the worker pool's measured throughput (the median of its recent succeeded runs,
    ``throughput_runs`` of them; ``None`` before any), ``seconds`` = tokens · flops_per_token /
    flops_per_second. ``peak_memory_bytes``: weights, gradients and AdamW's two moments in fp32
    (16 bytes per parameter), activations (see ``mt_storage.estimates``) and the measured runtime base."""

    kind: Literal["run"] = "run"
    corpus_bytes: int
    corpus_lines: int
    n_params: int
    train_tokens: int
    tokens_exact: bool
    flops_per_token: int
    steps: int
    tokens: int
    epochs: float
    flops_per_second: float | None = None
    throughput_runs: int = 0
    seconds: float | None = None
    peak_memory_bytes: int
    warnings: list[str] = []
