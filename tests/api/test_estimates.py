"""The tokenizer dry-run estimate has measured figures for every method and model type the contract admits,
and its numbers follow the documented line (base + per-MB slope) on a real corpus."""

from __future__ import annotations

import typing
from pathlib import Path

import msgspec
import pytest

from mt_api.estimates import MB, TOKENIZER_COSTS, estimate_tokenizer
from mt_contracts.requests import TokenizerMethodName, TrainTokenizerRequest
from mt_contracts.settings import EstimateSettings

BODIES = [
    *({"method": method} for method in typing.get_args(TokenizerMethodName)),
    {"method": "sentencepiece", "model_type": "unigram"},
    {"method": "sentencepiece", "model_type": "bpe"},
]


@pytest.mark.parametrize("body", BODIES, ids=lambda b: "-".join(str(v) for v in b.values()))
def test_every_method_is_estimated_from_its_own_measured_figures(body: dict[str, str], corpus_root: Path) -> None:
    request = msgspec.convert({"corpus_path": "small.txt", "vocab_size": 300, **body}, TrainTokenizerRequest)
    files = [corpus_root / "small.txt"]
    estimate = estimate_tokenizer(request, files, corpus_root, EstimateSettings())
    row = "-".join([body["method"], body.get("model_type", "unigram")]) if body["method"] == "sentencepiece" else None
    cost = TOKENIZER_COSTS[row or body["method"]]
    size = files[0].stat().st_size
    assert estimate.corpus_bytes == size
    assert estimate.seconds == pytest.approx(
        cost.base_seconds + cost.seconds_per_mb * estimate.training_bytes / MB, rel=1e-3
    )
