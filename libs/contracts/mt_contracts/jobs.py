"""Job records as kept in Redis and returned by ``GET /tokenizers/{id}`` and ``GET /runs/{id}``.

Records are tolerant of unknown fields and every new field has a default, so a record written by a newer
service still decodes in an older one during a rolling deploy.

Status moves only through the named transitions of ``mt_contracts.lifecycle`` (one table per job kind),
applied by ``mt_storage.lifecycle`` alone. ``stalled`` is never stored: it is how ``GET /runs/{id}`` shows a
``running`` job whose heartbeat is too old.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal, get_args

import msgspec

from mt_contracts.corpora import RunEstimate, TokenizerEstimate
from mt_contracts.requests import EvalSplit, EvaluateRequest, TrainRunRequest, TrainTokenizerRequest
from mt_contracts.tokenizers import TokenizerStatistics

JobStatus = Literal["queued", "running", "cancelling", "succeeded", "failed", "cancelled", "stalled"]
JOB_STATUSES: tuple[JobStatus, ...] = get_args(JobStatus)
TERMINAL_STATUSES: frozenset[JobStatus] = frozenset({"succeeded", "failed", "cancelled"})


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class JobError(msgspec.Struct, frozen=True):
    """Why a job failed. ``code`` is stable and machine-readable (``empty_corpus``, ``worker_lost``...);
    ``message`` says what happened and what to change."""

    code: str
    message: str


class TokenizerResult(msgspec.Struct, frozen=True, kw_only=True):
    """What a finished tokenizer job produced. ``vocab_size`` is the size actually learned; ``corpus_bytes``
    the bytes of the corpus files used; ``statistics`` are also in the manifest."""

    vocab_size: int
    special_tokens: list[str]
    corpus_bytes: int
    training_seconds: float
    artifact_dir: str
    method: str = "bpe"
    statistics: TokenizerStatistics | None = None


class Job(msgspec.Struct, kw_only=True):
    """Fields every job record has. Times are UTC; ``attempts`` counts starts by a worker (a retry after a
    lost worker is a second attempt); ``restarts`` counts child processes its worker started again after a
    crash within one attempt. ``heartbeat_at`` is the last renewal of the attempt's lease by the worker
    supervising it, every ``WORKER__HEARTBEAT_INTERVAL`` seconds from before its child process starts; a job
    whose heartbeat is older than ``APP__STALL_AFTER_SECONDS`` may be reaped. ``owner`` is the lease's fencing
    token (``<attempt>:<random>``): every write of the attempt checks it, so a worker whose job was handed to
    another can no longer write. New records start ``queued``."""

    id: str
    status: JobStatus = "queued"
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempts: int = 0
    error: JobError | None = None
    heartbeat_at: datetime | None = None
    owner: str | None = None
    restarts: int = 0


class TokenizerJob(Job, kw_only=True):
    """A tokenizer training job."""

    request: TrainTokenizerRequest
    result: TokenizerResult | None = None
    # The dry-run estimate made when the job was submitted (compare with result.training_seconds).
    estimate: TokenizerEstimate | None = None


class TokenizerPage(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /tokenizers``: jobs newest first; pass ``next_cursor`` as ``cursor`` for the next page
    (``None`` on the last page)."""

    items: list[TokenizerJob]
    next_cursor: str | None


class RunProgress(msgspec.Struct, frozen=True, kw_only=True):
    """Latest training progress. ``train_loss`` is the mean cross-entropy (nats per token) since the last
    report; ``tokens_per_second`` counts training tokens over the same window; times are seconds."""

    step: int
    max_steps: int
    tokens_seen: int
    train_loss: float
    learning_rate: float
    tokens_per_second: float
    elapsed_seconds: float
    eta_seconds: float


class EvalPoint(msgspec.Struct, frozen=True, kw_only=True):
    """A validation estimate during training, on ``eval_iters`` random batches: ``val_loss`` in nats per
    token, ``val_bits_per_byte`` from it with the validation split's tokens-per-byte ratio. ``tokens_seen``
    counts the training tokens consumed by every process of the run up to ``step`` (not ``step`` times the
    current tokens per step: a run resumed at another world size took steps of another size before);
    ``None`` in records written before it was recorded."""

    step: int
    val_loss: float
    val_perplexity: float
    val_bits_per_byte: float | None = None
    tokens_seen: int | None = None


class CheckpointInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One kept checkpoint: ``path`` relative to the run folder, ``size_bytes``, the training loss (nats per
    token) of its step, and ``val_loss``, the validation estimate at that same step (``None`` when no
    validation ran at that step)."""

    step: int
    path: str
    size_bytes: int
    created_at: datetime
    train_loss: float | None = None
    val_loss: float | None = None


class RunMetrics(msgspec.Struct, frozen=True, kw_only=True):
    """Final metrics over the whole validation split.

    ``val_loss`` is the mean negative log-likelihood in nats per token; ``val_perplexity`` = exp(val_loss);
    ``val_bits_per_byte`` = val_loss * val_tokens / val_bytes / ln 2, comparable across tokenizers.
    """

    val_loss: float
    val_perplexity: float
    val_bits_per_byte: float
    val_tokens: int
    val_bytes: int
    train_loss: float
    steps: int
    tokens_seen: int
    n_params: int
    training_seconds: float
    train_tokens: int | None = None


class RunJob(Job, kw_only=True):
    """A model training run; its ``heartbeat_at`` comes from the training process."""

    request: TrainRunRequest
    progress: RunProgress | None = None
    last_eval: EvalPoint | None = None
    metrics: RunMetrics | None = None
    checkpoint: CheckpointInfo | None = None
    resumed_from_step: int | None = None
    artifact_dir: str | None = None
    # The dry-run estimate made when the run was submitted; ``metrics`` holds what it measured.
    estimate: RunEstimate | None = None


class EvalMetrics(msgspec.Struct, frozen=True, kw_only=True):
    """What one evaluation measured, also written to ``artifacts/models/<run_id>/eval/<eval_id>.json``.

    ``loss`` is the mean negative log-likelihood in nats per token over all ``tokens`` scored (every token
    of the text once, in non-overlapping windows of the run's ``block_size``); ``perplexity`` = exp(loss),
    capped at the largest finite float; ``bits_per_byte`` = loss * tokens / ln 2 / bytes, where ``bytes``
    counts the UTF-8 bytes of the text scored. ``checkpoint`` is the step asked for (``None``: the final
    weights) and ``step`` the training step of the weights scored. ``seconds`` is wall time of scoring.
    """

    eval_id: str
    run_id: str
    tokenizer_id: str
    split: EvalSplit
    corpus_path: str
    checkpoint: int | None
    step: int
    loss: float
    perplexity: float
    bits_per_byte: float
    tokens: int
    bytes: int
    seconds: float
    created_at: datetime


class EvalJob(Job, kw_only=True):
    """An evaluation of run ``run_id``; ``result`` once it succeeded."""

    run_id: str
    request: EvaluateRequest
    result: EvalMetrics | None = None


class JobAccepted(msgspec.Struct, frozen=True):
    """Answer to a POST that enqueued a job; ``location`` is where to poll it."""

    id: str
    status: JobStatus
    location: str


class RunSeries(msgspec.Struct, frozen=True):
    """``GET /runs/{id}/metrics``: the training-loss reports and validation estimates so far, by step."""

    train: list[RunProgress]
    val: list[EvalPoint]


class RunPage(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /runs``: runs newest first; pass ``next_cursor`` as ``cursor`` for the next page (``None`` on
    the last page)."""

    items: list[RunJob]
    next_cursor: str | None
