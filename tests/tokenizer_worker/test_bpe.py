from __future__ import annotations

from pathlib import Path

import pytest
from tokenizers import Tokenizer
from transformers import AutoTokenizer

from mt_contracts.requests import TrainTokenizerRequest
from mt_contracts.tokenizers import resolve_config
from mt_tokenizer_worker import TokenizerTrainingError
from mt_tokenizer_worker.methods import METHODS

MIXED = "Ünïcödé — naïve café 東京 🙂\n\ttabs  and  spaces\r\nend"


def test_bpe_learns_the_requested_vocabulary_and_round_trips_any_text(tmp_path: Path, shakespeare: str) -> None:
    config = resolve_config(TrainTokenizerRequest(corpus_path="x.txt", vocab_size=600))
    trained = METHODS["bpe"].train(iter([shakespeare[:50_000].splitlines(keepends=True)]), config, tmp_path)

    assert trained.vocab_size == 600
    assert trained.special_tokens == ["<|endoftext|>", "<|pad|>"]
    assert trained.files == ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]
    assert len(trained.token_byte_lengths) == 598 and min(trained.token_byte_lengths) == 1
    tokenizer = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert tokenizer.token_to_id("<|endoftext|>") == 0
    for text in (MIXED, shakespeare[:2000], "", " leading space"):
        assert tokenizer.decode(tokenizer.encode(text).ids) == text
    # Merges learned: common English compresses well below one token per byte.
    sample = shakespeare[:5000]
    assert len(tokenizer.encode(sample).ids) < 0.5 * len(sample.encode())


def test_max_token_length_bounds_the_learned_tokens(tmp_path: Path, shakespeare: str) -> None:
    config = resolve_config(TrainTokenizerRequest(corpus_path="x.txt", vocab_size=500, max_token_length=3))
    trained = METHODS["bpe"].train(iter([shakespeare[:50_000].splitlines(keepends=True)]), config, tmp_path)
    assert max(trained.token_byte_lengths) == 3


def test_transformers_loads_the_tokenizer_directory(tmp_path: Path, shakespeare: str) -> None:
    config = resolve_config(TrainTokenizerRequest(corpus_path="x.txt", vocab_size=400, special_tokens=["<|pad|>"]))
    METHODS["bpe"].train(iter([shakespeare[:20_000].splitlines(keepends=True)]), config, tmp_path)
    hf = AutoTokenizer.from_pretrained(tmp_path)
    assert (hf.eos_token, hf.pad_token) == ("<|endoftext|>", "<|pad|>")
    ids = hf(MIXED)["input_ids"]
    assert ids == Tokenizer.from_file(str(tmp_path / "tokenizer.json")).encode(MIXED).ids
    assert hf.decode(ids) == MIXED


def test_no_merges_is_an_error_not_a_success(tmp_path: Path) -> None:
    config = resolve_config(TrainTokenizerRequest(corpus_path="x.txt", vocab_size=1000, min_frequency=1000))
    with pytest.raises(TokenizerTrainingError) as info:
        METHODS["bpe"].train(iter([["a short line\n"]]), config, tmp_path)
    assert info.value.code == "no_merges_learned"
    assert not (tmp_path / "tokenizer.json").exists()


def test_a_vocabulary_larger_than_the_corpus_supports_names_the_largest(tmp_path: Path) -> None:
    config = resolve_config(TrainTokenizerRequest(corpus_path="x.txt", vocab_size=5000))
    with pytest.raises(TokenizerTrainingError) as info:
        METHODS["bpe"].train(iter([["abc abc abd abd\n"] * 3]), config, tmp_path)
    assert info.value.code == "vocab_size_too_large"
    assert "at most vocab_size=26" in info.value.message
    assert not (tmp_path / "tokenizer.json").exists()


def test_whitespace_that_spans_a_line_break_is_learned_as_encoding_sees_it(tmp_path: Path) -> None:
    # Encoding sees documents, where "\n" and the next line's indentation are one pre-token ("\n" + 7 spaces
    # before " return"); training on lone lines would never see that pre-token, so never merge it.
    code = "".join(f"def f{i}(x):\n        return x + {i}\n\n" for i in range(300))
    config = resolve_config(TrainTokenizerRequest(corpus_path="x.txt", vocab_size=320))
    METHODS["bpe"].train(iter([code.splitlines(keepends=True)]), config, tmp_path)
    tokenizer = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    newline_and_indent = "Ċ" + "Ġ" * 7  # byte-level symbols of "\n" and 7 spaces
    assert tokenizer.token_to_id(newline_and_indent) is not None
    assert tokenizer.encode("def f(x):\n        return x").tokens[5] == newline_and_indent


def test_special_tokens_in_the_corpus_are_not_learned_as_merges(tmp_path: Path, shakespeare: str) -> None:
    documents = shakespeare[:40_000].split("\n\n")
    corpus = "<|endoftext|>".join(documents)  # GPT-style: documents separated by the special token
    config = resolve_config(TrainTokenizerRequest(corpus_path="x.txt", vocab_size=600))
    METHODS["bpe"].train(iter([corpus.splitlines(keepends=True)]), config, tmp_path)
    tokenizer = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    learned = [token for token in tokenizer.get_vocab() if token not in ("<|endoftext|>", "<|pad|>")]
    assert [token for token in learned if "endof" in token or "<|" in token or "|>" in token] == []
    assert "<|endoftext|>" in tokenizer.encode("The end.<|endoftext|>Next").tokens
