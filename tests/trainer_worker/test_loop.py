from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mt_contracts.requests import TrainRunRequest
from mt_trainer_worker.training.loop import learning_rate_at, score_tokens
from mt_trainer_worker.training.models import build_model

REQUEST = TrainRunRequest(
    tokenizer_id="tok_01JDQ8ZQ0000000000000000AA",
    corpus_path="x.txt",
    n_layer=1,
    n_head=2,
    n_embd=16,
    block_size=8,
    max_steps=110,
    warmup_steps=10,
    learning_rate=1e-3,
    min_learning_rate=1e-4,
)


def test_learning_rate_warms_up_linearly_then_decays_by_cosine() -> None:
    assert learning_rate_at(0, REQUEST, 110) == pytest.approx(1e-4)
    assert learning_rate_at(9, REQUEST, 110) == pytest.approx(1e-3)
    assert learning_rate_at(10, REQUEST, 110) == pytest.approx(1e-3)
    assert learning_rate_at(60, REQUEST, 110) == pytest.approx(1e-4 + 0.5 * (1e-3 - 1e-4))
    assert learning_rate_at(110, REQUEST, 110) == pytest.approx(1e-4)


def test_score_tokens_scores_every_token_once_and_matches_a_direct_computation() -> None:
    torch.manual_seed(0)
    model = build_model(REQUEST, vocab_size=50, end_of_text_id=0)
    tokens = torch.randint(0, 50, (29,), dtype=torch.int64).to(torch.uint16)

    total, count = score_tokens(model, tokens, block_size=8, batch_size=2, device=torch.device("cpu"))

    assert count == 28
    expected = 0.0
    ids = tokens.to(torch.int64)
    model.train(False)
    with torch.no_grad():
        for start in range(0, 28, 8):
            window = ids[start : start + 9].unsqueeze(0)
            logits = model(input_ids=window[:, :-1]).logits
            expected += F.cross_entropy(logits[0], window[0, 1:], reduction="sum").item()
    assert total == pytest.approx(expected, rel=1e-5)
    assert math.isfinite(total)
