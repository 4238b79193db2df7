"""Manifests written beside artifacts. A manifest is written last and atomically: an artifact directory
without one is incomplete, whatever else it holds."""

from __future__ import annotations

from datetime import datetime

import msgspec

from mt_contracts.jobs import RunMetrics
from mt_contracts.requests import TrainRunRequest, TrainTokenizerRequest
from mt_contracts.tokenizers import CorpusFingerprint, TokenizerConfig, TokenizerStatistics


class FileEntry(msgspec.Struct, frozen=True):
    """One artifact file: ``path`` relative to the manifest's directory, ``size`` in bytes, hex sha256."""

    path: str
    size: int
    sha256: str


class TokenizerManifest(msgspec.Struct, frozen=True, kw_only=True):
    """``artifacts/tokenizers/<id>/manifest.json``. Apart from ``created_at`` and the durations in
    ``statistics``, the same request on the same corpus gives the same manifest."""

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


class ModelManifest(msgspec.Struct, frozen=True, kw_only=True):
    """``artifacts/models/<run_id>/manifest.json``."""

    run_id: str
    tokenizer_id: str
    request: TrainRunRequest
    vocab_size: int
    metrics: RunMetrics
    files: list[FileEntry]
    created_at: datetime
    versions: dict[str, str]


class RunManifest(msgspec.Struct, frozen=True, kw_only=True):
    """``runs/<run_id>/manifest.json``: where everything of one run lives (paths absolute)."""

    run_id: str
    tokenizer_id: str
    spec_path: str
    model_dir: str
    model_manifest_path: str
    logs_path: str
    process_log_path: str
