"""Shared set-up for the benchmarks: the corpus and a trained tokenizer."""

from __future__ import annotations

import statistics
from pathlib import Path

from mt_contracts.requests import TrainTokenizerRequest
from mt_contracts.tokenizers import resolve_config
from mt_tokenizer_worker.methods import METHODS

ROOT = Path(__file__).resolve().parents[2]
SHAKESPEARE = ROOT.parent / "shared" / "corpora" / "tinyshakespeare.txt"


def bpe_tokenizer(out_dir: Path, vocab_size: int) -> Path:
    """Train a byte-level BPE tokenizer on Tiny Shakespeare into ``out_dir``; returns its ``tokenizer.json``."""
    config = resolve_config(TrainTokenizerRequest(corpus_path=SHAKESPEARE.name, vocab_size=vocab_size))
    METHODS["bpe"].train(iter([SHAKESPEARE.read_text(encoding="utf-8").splitlines(keepends=True)]), config, out_dir)
    return out_dir / "tokenizer.json"


def median(values: list[float]) -> float:
    return float(statistics.median(values))
