from __future__ import annotations

import os
import threading
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
from mt_tokenizer_worker.methods.sentencepiece import _Trainer, _write_sentences

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


def test_the_model_is_deterministic_and_keeps_no_temporary_path(tmp_path: Path, shakespeare: str) -> None:
    # SentencePiece reads its sentences from a temporary FIFO and records the input path in the model;
    # the path is removed, so the same corpus gives the same bytes.
    request = _request(vocab_size=400)
    for out in ("a", "b"):
        _train(tmp_path / out, shakespeare[:20_000], request)
    model = (tmp_path / "a" / "sentencepiece.model").read_bytes()
    assert model == (tmp_path / "b" / "sentencepiece.model").read_bytes()
    assert b"sentences.txt" not in model and b"mt-sentencepiece-" not in model
    assert sentencepiece.SentencePieceProcessor(model_proto=model).get_piece_size() == 400


def test_a_trainer_that_fails_before_reading_does_not_leave_the_writer_waiting(tmp_path: Path) -> None:
    feed = tmp_path / "sentences.txt"
    os.mkfifo(feed)
    trainer = _Trainer(feed, {"vocab_size": 0, "minloglevel": 2})  # refused before the input is opened
    trainer.start()
    assert _write_sentences(feed, iter([["a line\n"] * 1000] * 1000), trainer) == 0
    with pytest.raises(RuntimeError, match="vocab_size"):
        trainer.model()


def test_sentences_are_one_per_line_whatever_their_ending(tmp_path: Path) -> None:
    feed = tmp_path / "sentences.txt"
    os.mkfifo(feed)
    trainer = threading.Thread(target=lambda: received.append(feed.read_bytes()))
    received: list[bytes] = []
    trainer.start()
    # Two files, the first without a final newline: its last line must not run into the next file's first;
    # the pieces of a line split for max_sentence_length are sentences of their own.
    batches = [["first\n", "last line, no newline"], ["a long line ", "split in two\n", "next file\n"]]
    assert _write_sentences(feed, iter(batches), trainer) == 5
    trainer.join()
    assert received == [b"first\nlast line, no newline\na long line \nsplit in two\nnext file\n"]
