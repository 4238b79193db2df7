from __future__ import annotations

from pathlib import Path

import pytest

from mt_contracts.requests import TrainTokenizerRequest
from mt_contracts.tokenizers import resolve_config
from mt_tokenizer_worker.methods import METHODS


@pytest.fixture
def tokenizer_dir(tmp_path: Path, shakespeare: str) -> Path:
    """A byte-level BPE of 300 tokens trained on the first 30,000 characters of Tiny Shakespeare."""
    out = tmp_path / "tokenizer"
    config = resolve_config(TrainTokenizerRequest(corpus_path="small.txt", vocab_size=300))
    METHODS["bpe"].train(iter([shakespeare[:30_000].splitlines(keepends=True)]), config, out)
    return out
