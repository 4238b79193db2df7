"""Manifests written beside artifacts. A manifest is written last and atomically: an artifact directory
without one is incomplete, whatever else it holds."""

from __future__ import annotations

from datetime import datetime

import msgspec

from mt_contracts.corpora import RunEstimate, TokenizerEstimate
from mt_contracts.jobs import CheckpointInfo, RunMetrics
from mt_contracts.requests import TrainRunRequest, TrainTokenizerRequest
from mt_contracts.tokenizers import CorpusFingerprint, TokenizerConfig, TokenizerStatistics


class FileEntry(msgspec.Struct, frozen=True):
    """One artifact file: ``path`` relative to the manifest's directory, ``size`` in bytes, hex sha256."""

    path: str
    size: int
    sha256: str


class TokenizerManifest(msgspec.Struct, frozen=True, kw_only=True):
    """``artifacts/tokenizers/<id>/manifest.json``. Apart from ``created_at`` and the durations in
    ``statistics``, the same request on the same corpus gives the same manifest. ``estimate`` is the one made
    when the job was submitted (``None`` for a job submitted before estimates), beside what training measured
    in ``statistics`` (``training_seconds``, ``corpus.bytes``, ``sampled_lines``), as a run's manifest
    holds its estimate beside its metrics."""

    tokenizer_id: str
    method: str
    request: TrainTokenizerRequest
    config: TokenizerConfig
    seed: int
    vocab_size: int
    special_tokens: list[str]
    corpus: CorpusFingerprint
    statistics: TokenizerStatistics
    files: list[FileEntry]
    created_at: datetime
    versions: dict[str, str]
    estimate: TokenizerEstimate | None = None


class DatasetInfo(msgspec.Struct, frozen=True, kw_only=True):
    """The prepared token data a run trained on: its cache ``key``, the corpus fingerprint and tokenizer
    file digests (sha256) it derives from, and token and document counts per split."""

    key: str
    corpus_sha256: str
    tokenizer_sha256: str
    train_tokens: int
    val_tokens: int
    train_documents: int
    val_documents: int
    val_bytes: int
    reused: bool


class Timings(msgspec.Struct, frozen=True, kw_only=True):
    """Seconds spent in each phase of the last training process (training spans resumes)."""

    data_preparation: float
    training: float
    evaluation: float
    saving: float


class ParentRun(msgspec.Struct, frozen=True, kw_only=True):
    """The run whose weights a run started from (its ``init_from``): ``checkpoint`` is the step asked for
    (``None``: its final weights), ``step`` the training step those weights come from, ``weights`` the file
    loaded (relative to the parent's run folder for a checkpoint, its model folder for final weights) and
    ``sha256`` that file's hex digest when the run started."""

    run_id: str
    checkpoint: int | None
    step: int
    weights: str
    sha256: str


class ModelManifest(msgspec.Struct, frozen=True, kw_only=True):
    """``artifacts/models/<run_id>/manifest.json``: the resolved request (seed included), data, device,
    threads, timings, training tokens per second, final metrics, kept checkpoints, every file, and the
    ``parent`` run whose weights it started from (``init_from``; ``None`` when it started from scratch)."""

    run_id: str
    tokenizer_id: str
    request: TrainRunRequest
    total_steps: int
    vocab_size: int
    metrics: RunMetrics
    files: list[FileEntry]
    created_at: datetime
    versions: dict[str, str]
    dataset: DatasetInfo | None = None
    device: str = "cpu"
    threads: int = 0
    # Training processes (torchrun ranks) of the run's last launch; ``threads`` is per process.
    world_size: int = 1
    timings: Timings | None = None
    tokens_per_second: float = 0.0
    checkpoints: list[CheckpointInfo] = msgspec.field(default_factory=list)
    parent: ParentRun | None = None


class RunManifest(msgspec.Struct, frozen=True, kw_only=True):
    """``runs/<run_id>/manifest.json``: where everything of one run lives (paths absolute)."""

    run_id: str
    tokenizer_id: str
    spec_path: str
    model_dir: str
    model_manifest_path: str
    logs_path: str
    process_log_path: str
    # The estimate made at submission and the metrics the run measured, side by side.
    estimate: RunEstimate | None = None
    metrics: RunMetrics | None = None
