"""Shared set-up for the benchmarks: the corpus and a trained tokenizer."""

from __future__ import annotations

import os
import statistics
from pathlib import Path

from mt_contracts.requests import TrainTokenizerRequest
from mt_contracts.tokenizers import resolve_config
from mt_storage.embedded_redis import free_port
from mt_tokenizer_worker.methods import METHODS

ROOT = Path(__file__).resolve().parents[2]
SHAKESPEARE = ROOT.parent / "shared" / "corpora" / "tinyshakespeare.txt"


def bpe_tokenizer(out_dir: Path, vocab_size: int) -> Path:
    """Train a byte-level BPE tokenizer on Tiny Shakespeare into ``out_dir``; returns its ``tokenizer.json``."""
    config = resolve_config(TrainTokenizerRequest(corpus_path=SHAKESPEARE.name, vocab_size=vocab_size))
    METHODS["bpe"].train(iter([SHAKESPEARE.read_text(encoding="utf-8").splitlines(keepends=True)]), config, out_dir)
    return out_dir / "tokenizer.json"


def stack_env(data: Path) -> dict[str, str]:
    """The environment of a whole stack (``scripts/stack.py``) on fresh roots under ``data``, reading Tiny
    Shakespeare's folder as its corpus root, on a free port, logging warnings and errors only."""
    return {
        **os.environ,
        "APP__CORPUS_ROOT": str(SHAKESPEARE.parent),
        "APP__ARTIFACTS_ROOT": str(data / "artifacts"),
        "APP__RUNS_ROOT": str(data / "runs"),
        "APP__LOG_LEVEL": "WARNING",
        "HTTP__PORT": str(free_port()),
    }


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def spread(values: list[float], digits: int = 1) -> str:
    """``median (min-max)`` of ``values``, rounded to ``digits``; the median alone for fewer than 5 values is
    not called one: it is then ``values a, b``."""
    if len(values) < 5:
        return "values " + ", ".join(f"{value:.{digits}f}" for value in values)
    return f"{median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def load() -> str:
    """The machine's 1-minute load average now (other engineers share this machine)."""
    return f"{os.getloadavg()[0]:.2f}"
