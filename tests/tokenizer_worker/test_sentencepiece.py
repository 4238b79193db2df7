from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest
import sentencepiece
from tokenizers import Tokenizer
from transformers import AutoTokenizer

from mt_contracts.requests import TrainTokenizerRequest
from mt_contracts.tokenizers import resolve_config
from mt_tokenizer_worker import TokenizerTrainingError
from mt_tokenizer_worker.methods import METHODS

TRICKY = [
    "Ünïcödé — naïve café 東京 🙂",
    "\ttabs\tand  double  spaces ",
    " leading space",
    "digits 123456789012345678901234567890",
    "combining e\u0301 a\u0308 and NUL \x00 end",
    "",
]


def _train(tmp_path: Path, text: str, request: TrainTokenizerRequest) -> Tokenizer:
    METHODS["sentencepiece"].train(iter([text.splitlines(keepends=True)]), resolve_config(request), tmp_path)
    return Tokenizer.from_file(str(tmp_path / "tokenizer.json"))


def _request(
    *,
    vocab_size: int,
    normalization: Literal["nfkc", "identity"] | None = None,
    byte_fallback: bool | None = None,
    special_tokens: list[str] | None = None,
) -> TrainTokenizerRequest:
    return TrainTokenizerRequest(
        corpus_path="x.txt",
        method="sentencepiece",
        vocab_size=vocab_size,
        normalization=normalization,
        byte_fallback=byte_fallback,
        special_tokens=["<|endoftext|>"] if special_tokens is None else special_tokens,
    )


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_sentencepiece_round_trips_and_encodes_as_sentencepiece_does(
    tmp_path: Path, shakespeare: str, model_type: Literal["unigram", "bpe"]
) -> None:
    request = TrainTokenizerRequest(corpus_path="x.txt", method="sentencepiece", model_type=model_type, vocab_size=600)
    trained = METHODS["sentencepiece"].train(
        iter([shakespeare[:40_000].splitlines(keepends=True)]), resolve_config(request), tmp_path
    )
    assert trained.vocab_size == 600
    assert trained.files == [
        "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "sentencepiece.model",
    ]  # fmt: skip
    assert len(trained.byte_fallback_ids) == 256
    tokenizer = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert (tokenizer.token_to_id("<|endoftext|>"), tokenizer.token_to_id("<|pad|>")) == (0, 1)
    processor = sentencepiece.SentencePieceProcessor(model_proto=(tmp_path / "sentencepiece.model").read_bytes())
    for text in [*TRICKY, "\n".join(TRICKY), shakespeare[:3000]]:
        ids = tokenizer.encode(text).ids
        assert tokenizer.decode(ids) == text
        assert ids == processor.encode(text)
    hf = AutoTokenizer.from_pretrained(tmp_path)
    assert hf.eos_token == "<|endoftext|>"
    for text in TRICKY:
        assert hf(text)["input_ids"] == tokenizer.encode(text).ids
        assert hf.decode(hf(text)["input_ids"]) == text


def test_nfkc_normalizes_compatibility_characters(tmp_path: Path, shakespeare: str) -> None:
    tokenizer = _train(tmp_path, shakespeare[:20_000], _request(vocab_size=400, normalization="nfkc"))
    assert tokenizer.decode(tokenizer.encode("\uff21\uff22\uff23 \ufb01").ids) == "ABC fi"


def test_a_vocabulary_larger_than_the_corpus_supports_names_the_largest(tmp_path: Path, shakespeare: str) -> None:
    with pytest.raises(TokenizerTrainingError) as info:
        _train(tmp_path, shakespeare[:3000], _request(vocab_size=50_000))
    assert info.value.code == "vocab_size_too_large"
    assert "the corpus supports at most vocab_size=" in info.value.message
    assert not (tmp_path / "tokenizer.json").exists()


def test_a_vocabulary_too_small_for_the_characters_is_an_error(tmp_path: Path, shakespeare: str) -> None:
    with pytest.raises(TokenizerTrainingError) as info:
        _train(tmp_path, shakespeare[:3000], _request(vocab_size=20, byte_fallback=False, special_tokens=[]))
    assert info.value.code == "vocab_size_too_small"
