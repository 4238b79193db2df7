"""The rustbpe method: its tokenizer.json encodes exactly as rustbpe itself does, loads with AutoTokenizer and
round-trips."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
import rustbpe
from tokenizers import Tokenizer, pre_tokenizers
from transformers import AutoTokenizer

from mt_contracts.requests import TrainTokenizerRequest
from mt_contracts.tokenizers import GPT4_PATTERN, RustBpeConfig, resolve_config
from mt_tokenizer_worker import TokenizerTrainingError
from mt_tokenizer_worker.methods import METHODS
from mt_tokenizer_worker.methods.bpe import pieces
from mt_tokenizer_worker.methods.rustbpe import byte_symbols

TRICKY = [
    "Ünïcödé — naïve café 東京 🙂\n",
    "\ttabs\tand  double  spaces \n",
    "    indented code():\n        return {'a': 1_000_000}\n",
    "digits 123456789012345678901234567890 and 3.14159\n",
    "combining e\u0301 a\u0308 and NUL \x00 end\r\n",
    "DON'T you'll WE'VE they'RE\n",
    "\n\n\n",
]


def _config(vocab_size: int) -> RustBpeConfig:
    config = resolve_config(TrainTokenizerRequest(corpus_path="x.txt", method="rustbpe", vocab_size=vocab_size))
    assert isinstance(config, RustBpeConfig)
    return config


def test_the_tokenizer_json_encodes_held_out_text_as_rustbpe_does(tmp_path: Path, shakespeare: str) -> None:
    lines = shakespeare.splitlines(keepends=True)
    training, heldout = lines[:-3000], lines[-3000:]
    config = _config(1000)
    trained = METHODS["rustbpe"].train(iter([training]), config, tmp_path)
    assert trained.vocab_size == 1000
    assert trained.files == ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]
    assert len(trained.token_byte_lengths) == 998 and trained.token_byte_lengths[:256] == [1] * 256
    # rustbpe itself, trained on the same pieces: training is deterministic, so these are the method's merges.
    reference = rustbpe.Tokenizer()
    reference.train_from_iterator(pieces(iter([training]), config.special_tokens), 998, pattern=GPT4_PATTERN)
    assert reference.get_pattern() == GPT4_PATTERN

    tokenizer = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    symbols = byte_symbols()
    assert {"".join(symbols[b] for b in token): rank for token, rank in reference.get_mergeable_ranks()} == {
        token: rank for token, rank in tokenizer.get_vocab().items() if rank < 998
    }
    assert (tokenizer.token_to_id("<|endoftext|>"), tokenizer.token_to_id("<|pad|>")) == (998, 999)
    texts = [*heldout, *TRICKY, "".join(heldout[:200])]
    encodings = tokenizer.encode_batch(texts, add_special_tokens=False)
    assert [encoding.ids for encoding in encodings] == reference.batch_encode(texts)
    assert tokenizer.decode_batch([e.ids for e in encodings], skip_special_tokens=False) == texts
    # Special tokens are matched whole, never split into learned pieces.
    assert tokenizer.encode("a<|endoftext|>b").ids == [*reference.encode("a"), 998, *reference.encode("b")]

    hf = AutoTokenizer.from_pretrained(tmp_path)
    assert (hf.eos_token, hf.bos_token, hf.pad_token) == ("<|endoftext|>", "<|endoftext|>", "<|pad|>")
    for text in TRICKY:
        ids = hf(text)["input_ids"]
        assert ids == reference.encode(text)
        assert hf.decode(ids) == text


def test_byte_symbols_are_the_byte_level_alphabet() -> None:
    symbols = byte_symbols()
    assert len(set(symbols)) == 256 and set(symbols) == set(pre_tokenizers.ByteLevel.alphabet())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    text = "".join(map(chr, range(128))) + "é東🙂"
    assert byte_level.pre_tokenize_str(text)[0][0] == "".join(symbols[b] for b in text.encode())


def test_special_tokens_in_the_corpus_are_not_learned(tmp_path: Path, shakespeare: str) -> None:
    text = "<|endoftext|>".join(shakespeare[i : i + 300] for i in range(0, 30_000, 300))
    METHODS["rustbpe"].train(iter([text.splitlines(keepends=True)]), _config(400), tmp_path)
    vocab = Tokenizer.from_file(str(tmp_path / "tokenizer.json")).get_vocab()
    learned = [token for token in vocab if len(token) > 1 and ("|" in token or "endof" in token)]
    assert sorted(learned) == ["<|endoftext|>", "<|pad|>"]


def test_a_vocab_larger_than_the_corpus_supports_fails_with_a_stable_code(tmp_path: Path) -> None:
    with pytest.raises(TokenizerTrainingError) as raised:
        METHODS["rustbpe"].train(iter([["ab ab ab\n"] * 10]), _config(400), tmp_path)
    assert raised.value.code == "vocab_size_too_large"
    assert "supports at most vocab_size=" in str(raised.value)
    assert not (tmp_path / "tokenizer.json").exists()


def test_the_config_is_recorded_whole() -> None:
    config = _config(500)
    assert msgspec.to_builtins(config) == {
        "method": "rustbpe", "vocab_size": 500, "special_tokens": ["<|endoftext|>", "<|pad|>"],
        "pattern": GPT4_PATTERN, "seed": 1337, "holdout_fraction": 0.01, "text_field": "text",
        "encoding_errors": "strict",
    }  # fmt: skip
