"""Held-out statistics against an independent computation: real tokenizers trained by the pipeline, a small
held-out set with newlines, rare characters and a line without its newline, and every field of
``HeldOutStats`` worked out here one line at a time (coverage from the vocabulary's single-character pieces,
not from offsets)."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import msgspec
import pytest
from tokenizers import Tokenizer

from mt_contracts.requests import TrainTokenizerRequest
from mt_contracts.tokenizer_process import TokenizerSpec, TokenizerTrained
from mt_contracts.tokenizers import HeldOutStats, TokenCount
from mt_storage.joblog import JobLog
from mt_tokenizer_worker.methods import TrainedTokenizer
from mt_tokenizer_worker.process import run
from mt_tokenizer_worker.statistics import TOP_TOKENS, heldout_statistics

TOKENIZER_ID = "tok_01JDQ8ZQ0000000000000000AA"
HELDOUT = [
    "First Citizen:\n",
    "Before we proceed any further, hear me speak.\n",
    "naïve café — €5 🙂\n",
    "\n",
    "  spaced   out  words\n",
    "end without newline",
]
_BYTE_TOKEN = re.compile(r"<0x[0-9A-F]{2}>")


def _train(corpus_root: Path, tmp_path: Path, request: TrainTokenizerRequest) -> Tokenizer:
    out = tmp_path / "art" / TOKENIZER_ID
    spec = TokenizerSpec(
        tokenizer_id=TOKENIZER_ID,
        request=request,
        corpus_root=str(corpus_root),
        out_dir=str(out),
        log_path=str(out / "logs.jsonl"),
    )
    outcome = run(spec, JobLog(Path(spec.log_path), TOKENIZER_ID))
    assert isinstance(outcome, TokenizerTrained), outcome
    return Tokenizer.from_file(str(out / "tokenizer.json"))


def _expected(tokenizer: Tokenizer, lines: list[str], *, byte_level: bool) -> HeldOutStats:
    vocab = tokenizer.get_vocab()
    unk = vocab.get("<unk>")
    ids = [tokenizer.encode(line, add_special_tokens=False).ids for line in lines]
    tokens = [tokenizer.id_to_token(i) or "" for line_ids in ids for i in line_ids]
    n_tokens, n_bytes, n_chars = len(tokens), len("".join(lines).encode()), len("".join(lines))
    words = len(" ".join(lines).split())
    if byte_level:  # every byte has a token: nothing is uncovered
        uncovered = 0
    else:  # a character is covered when the vocabulary has it as a piece of its own (a space is "▁")
        pieces = {piece for piece in vocab if len(piece) == 1}
        uncovered = sum(1 for line in lines for char in line if ("▁" if char == " " else char) not in pieces)
    counts = Counter(i for line_ids in ids for i in line_ids)
    top = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:TOP_TOKENS]
    return HeldOutStats(
        lines=len(lines),
        bytes=n_bytes,
        characters=n_chars,
        words=words,
        tokens=n_tokens,
        bytes_per_token=n_bytes / n_tokens,
        chars_per_token=n_chars / n_tokens,
        tokens_per_word=n_tokens / words,
        unk_rate=sum(1 for line_ids in ids for i in line_ids if i == unk) / n_tokens,
        byte_fallback_rate=sum(1 for token in tokens if _BYTE_TOKEN.fullmatch(token)) / n_tokens,
        char_coverage=1.0 - uncovered / n_chars,
        roundtrip_exact_rate=sum(
            tokenizer.decode(line_ids, skip_special_tokens=False) == line
            for line, line_ids in zip(lines, ids, strict=True)
        )
        / len(lines),
        top_tokens=[TokenCount(token=tokenizer.id_to_token(i) or "", id=i, count=c) for i, c in top],
    )


def _trained(tokenizer: Tokenizer) -> TrainedTokenizer:
    vocab = tokenizer.get_vocab()
    return TrainedTokenizer(
        vocab_size=tokenizer.get_vocab_size(),
        special_tokens=[],
        files=[],
        unk_id=vocab.get("<unk>"),
        byte_fallback_ids=sorted(i for token, i in vocab.items() if _BYTE_TOKEN.fullmatch(token)),
    )


@pytest.mark.parametrize(
    ("options", "byte_level"),
    [
        ({"method": "bpe"}, True),
        ({"method": "sentencepiece"}, False),
        ({"method": "sentencepiece", "byte_fallback": False}, False),
        ({"method": "sentencepiece", "model_type": "bpe"}, False),
    ],
    ids=["bpe", "sentencepiece", "sentencepiece-no-byte-fallback", "sentencepiece-bpe"],
)
def test_heldout_statistics_match_an_independent_count(
    corpus_root: Path, tmp_path: Path, options: dict[str, object], byte_level: bool
) -> None:
    request = msgspec.convert({"corpus_path": "small.txt", "vocab_size": 400, **options}, TrainTokenizerRequest)
    tokenizer = _train(corpus_root, tmp_path, request)
    stats = heldout_statistics(tokenizer, HELDOUT, _trained(tokenizer))
    expected = _expected(tokenizer, HELDOUT, byte_level=byte_level)
    assert stats == expected
    # The held-out set is chosen so that no field is trivially 0 or 1 where the method can show otherwise.
    assert 0 < expected.chars_per_token < expected.bytes_per_token and expected.tokens_per_word > 1
    if options["method"] == "sentencepiece":
        assert expected.char_coverage < 1.0
        assert (expected.roundtrip_exact_rate < 1.0) == (options.get("byte_fallback") is False)
        newline = "<unk>" if options.get("byte_fallback") is False else "<0x0A>"
        # SentencePiece learns lines without their newline, so each newline is a byte-fallback (or unknown) token.
        last = [tokenizer.id_to_token(tokenizer.encode(line, add_special_tokens=False).ids[-1]) for line in HELDOUT]
        assert last[:5] == [newline] * 5
        assert (expected.unk_rate > 0) == (options.get("byte_fallback") is False)
        assert (expected.byte_fallback_rate > 0) == (options.get("byte_fallback") is not False)
    else:
        assert expected.char_coverage == 1.0 and expected.roundtrip_exact_rate == 1.0
        assert expected.unk_rate == 0.0 and expected.byte_fallback_rate == 0.0
