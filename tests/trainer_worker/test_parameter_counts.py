"""The API's torch-free parameter count of each model family (``mt_api.estimates.PARAMETER_COUNTS``, what a
dry run reports) equals the parameters of the family's real model, built on the ``meta`` device (no memory)."""

from __future__ import annotations

import msgspec
import pytest
import torch

from mt_api.estimates import PARAMETER_COUNTS
from mt_contracts.requests import TrainRunRequest
from mt_trainer_worker.training.models import MODEL_FAMILIES

SHAPES = [
    {"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 32},
    {"n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 256},
    {"n_layer": 12, "n_head": 12, "n_embd": 768, "block_size": 1024},
]


@pytest.mark.parametrize("family", sorted(MODEL_FAMILIES))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s['n_layer']}x{s['n_embd']}")
def test_every_family_has_a_parameter_count_that_matches_its_model(family: str, shape: dict[str, int]) -> None:
    assert family in PARAMETER_COUNTS, f"add a parameter count for {family} to mt_api.estimates.PARAMETER_COUNTS"
    fields = {"tokenizer_id": "tok_01JDQ8ZQ0000000000000000AA", "corpus_path": "c.txt", "model": family, **shape}
    request = msgspec.convert(fields, TrainRunRequest)
    with torch.device("meta"):
        model = MODEL_FAMILIES[family].build(request, 5000, 0)
    assert PARAMETER_COUNTS[family](request, 5000) == sum(p.numel() for p in model.parameters())
