"""The training process's data preparation works with every tokenizer method."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pytest

from mt_contracts.requests import TrainTokenizerRequest
from mt_contracts.tokenizers import resolve_config
from mt_tokenizer_worker.methods import METHODS
from mt_trainer_worker.training.data import load_tokenizer, prepare_data


@pytest.mark.parametrize("method", ["bpe", "sentencepiece"])
def test_prepare_data_encodes_the_corpus_with_the_trained_tokenizer(
    tmp_path: Path, shakespeare: str, method: Literal["bpe", "sentencepiece"]
) -> None:
    text = shakespeare[:20_000]
    corpus = tmp_path / "small.txt"
    corpus.write_text(text, encoding="utf-8")
    config = resolve_config(TrainTokenizerRequest(corpus_path="small.txt", method=method, vocab_size=400))
    METHODS[method].train(iter(text.splitlines(keepends=True)), config, tmp_path / "tok")

    tokenizer = load_tokenizer(tmp_path / "tok")
    data = prepare_data(tokenizer, [corpus], 0.1, tmp_path / "work")

    assert (data.end_of_text_id, data.vocab_size) == (0, 400)
    lines = text.splitlines(keepends=True)
    held_out = "".join(lines[len(lines) - int(len(lines) * 0.1) :])
    assert data.val_bytes == len(held_out.encode())
    train_ids = np.fromfile(data.train_path, dtype=data.dtype).tolist()
    assert len(train_ids) == data.train_tokens
    assert tokenizer.decode(train_ids) == text[: len(text) - len(held_out)]
