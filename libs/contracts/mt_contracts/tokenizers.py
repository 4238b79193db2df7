"""Tokenizer jobs beyond the request: the fully resolved configuration (a tagged union on ``method``), the
corpus and held-out statistics, the corpus fingerprint, and what the worker and its training process say to
each other (a spec on stdin, one outcome line on stdout)."""

from __future__ import annotations

from typing import Literal

import msgspec

from mt_contracts.requests import EncodingErrors, TrainTokenizerRequest, with_end_of_text

BPE_MIN_FREQUENCY = 2
SENTENCEPIECE_MODEL_TYPE: Literal["unigram", "bpe"] = "unigram"
SENTENCEPIECE_CHARACTER_COVERAGE = 0.9995
SENTENCEPIECE_MAX_SENTENCE_LENGTH = 4192
SENTENCEPIECE_INPUT_SENTENCE_SIZE = 2_000_000
# SentencePiece's unknown piece; with byte fallback, pieces <0x00>..<0xFF> are reserved too.
SENTENCEPIECE_UNK = "<unk>"
# GPT-4's pre-tokenisation (tiktoken's cl100k_base), rustbpe's default: words with their leading space or
# punctuation, numbers in groups of up to three digits, punctuation runs, newlines apart from other spaces.
GPT4_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""
)


class BpeConfig(msgspec.Struct, frozen=True, kw_only=True, tag_field="method", tag="bpe"):
    """Byte-level BPE, every option resolved. ``special_tokens`` starts with ``<|endoftext|>``;
    ``max_token_length`` is the longest token in bytes (``None``: unbounded)."""

    vocab_size: int
    special_tokens: list[str]
    min_frequency: int
    max_token_length: int | None
    seed: int
    holdout_fraction: float
    text_field: str
    encoding_errors: EncodingErrors


class SentencePieceConfig(msgspec.Struct, frozen=True, kw_only=True, tag_field="method", tag="sentencepiece"):
    """SentencePiece (Kudo & Richardson, 2018), every option resolved. ``max_sentence_length`` is in bytes;
    ``input_sentence_size`` is the number of non-blank training lines sampled, uniformly by ``seed`` (0: all)."""

    vocab_size: int
    special_tokens: list[str]
    model_type: Literal["unigram", "bpe"]
    character_coverage: float
    byte_fallback: bool
    split_digits: bool
    normalization: Literal["nfkc", "identity"]
    max_sentence_length: int
    input_sentence_size: int
    seed: int
    holdout_fraction: float
    text_field: str
    encoding_errors: EncodingErrors


class RustBpeConfig(msgspec.Struct, frozen=True, kw_only=True, tag_field="method", tag="rustbpe"):
    """Byte-level BPE trained by ``rustbpe`` after regex pre-tokenisation with ``pattern`` (GPT-4's, as
    tiktoken's ``cl100k_base`` splits text), every option resolved. ``special_tokens`` starts with
    ``<|endoftext|>`` and takes the last ids."""

    vocab_size: int
    special_tokens: list[str]
    pattern: str
    seed: int
    holdout_fraction: float
    text_field: str
    encoding_errors: EncodingErrors


TokenizerConfig = BpeConfig | SentencePieceConfig | RustBpeConfig


def resolve_config(request: TrainTokenizerRequest) -> TokenizerConfig:
    """The request with every default filled in for its method."""
    special_tokens = with_end_of_text(request.special_tokens)
    if request.method == "rustbpe":
        return RustBpeConfig(
            vocab_size=request.vocab_size,
            special_tokens=special_tokens,
            pattern=GPT4_PATTERN,
            seed=request.seed,
            holdout_fraction=request.holdout_fraction,
            text_field=request.text_field,
            encoding_errors=request.encoding_errors,
        )
    if request.method == "bpe":
        return BpeConfig(
            vocab_size=request.vocab_size,
            special_tokens=special_tokens,
            min_frequency=BPE_MIN_FREQUENCY if request.min_frequency is None else request.min_frequency,
            max_token_length=request.max_token_length,
            seed=request.seed,
            holdout_fraction=request.holdout_fraction,
            text_field=request.text_field,
            encoding_errors=request.encoding_errors,
        )
    return SentencePieceConfig(
        vocab_size=request.vocab_size,
        special_tokens=special_tokens,
        model_type=request.model_type or SENTENCEPIECE_MODEL_TYPE,
        character_coverage=request.character_coverage or SENTENCEPIECE_CHARACTER_COVERAGE,
        byte_fallback=True if request.byte_fallback is None else request.byte_fallback,
        split_digits=bool(request.split_digits),
        normalization=request.normalization or "identity",
        max_sentence_length=request.max_sentence_length or SENTENCEPIECE_MAX_SENTENCE_LENGTH,
        input_sentence_size=(
            SENTENCEPIECE_INPUT_SENTENCE_SIZE if request.input_sentence_size is None else request.input_sentence_size
        ),
        seed=request.seed,
        holdout_fraction=request.holdout_fraction,
        text_field=request.text_field,
        encoding_errors=request.encoding_errors,
    )


class CorpusStats(msgspec.Struct, frozen=True, kw_only=True):
    """What was read. ``bytes`` are the raw bytes of the files used; ``characters`` and ``lines`` count the
    decoded text; ``replaced_bytes`` are invalid UTF-8 bytes replaced by U+FFFD (``encoding_errors:
    replace``); ``split_lines`` are lines longer than the method's limit, split rather than dropped;
    ``skipped_files`` are empty or whitespace-only files and, in a folder, symlinks that lead outside the
    corpus root (paths relative to the corpus root)."""

    files: int
    skipped_files: list[str]
    bytes: int
    characters: int
    lines: int
    replaced_bytes: int
    split_lines: int


class CorpusFile(msgspec.Struct, frozen=True):
    """One corpus file: ``path`` relative to the corpus root, ``size`` in bytes, hex sha256."""

    path: str
    size: int
    sha256: str


class CorpusFingerprint(msgspec.Struct, frozen=True, kw_only=True):
    """Every file read (used or skipped), in reading order; ``sha256`` digests the lines
    ``path\\0size\\0sha256\\n`` of all of them."""

    files: list[CorpusFile]
    sha256: str


class TokenCount(msgspec.Struct, frozen=True):
    """A token and how often it occurs in the held-out text."""

    token: str
    id: int
    count: int


class LengthBin(msgspec.Struct, frozen=True):
    """``count`` vocabulary tokens (special tokens excluded) decode to ``bytes`` UTF-8 bytes."""

    bytes: int
    count: int


class HeldOutStats(msgspec.Struct, frozen=True, kw_only=True):
    """The tokenizer measured on held-out lines (never seen in training).

    ``bytes_per_token`` = bytes / tokens (compression); ``chars_per_token`` = characters / tokens;
    ``tokens_per_word`` = tokens / words, words split on whitespace (fertility, Rust et al. 2021);
    ``unk_rate`` and ``byte_fallback_rate`` are shares of tokens; ``char_coverage`` is the share of
    characters encoded by neither an unknown nor a byte-fallback token; ``roundtrip_exact_rate`` is the share
    of lines with decode(encode(line)) == line.

    Lines are encoded with their final newline, as a training corpus is. SentencePiece learns from lines
    without it, so its tokenizers encode every newline as the byte token ``<0x0A>`` (as Llama's does): on
    plain English text about one token in ten is then a byte-fallback newline, which ``byte_fallback_rate``
    and ``char_coverage`` include.
    """

    lines: int
    bytes: int
    characters: int
    words: int
    tokens: int
    bytes_per_token: float
    chars_per_token: float
    tokens_per_word: float
    unk_rate: float
    byte_fallback_rate: float
    char_coverage: float
    roundtrip_exact_rate: float
    top_tokens: list[TokenCount]


class TokenizerStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """``vocab_size`` actually learned; ``training_lines`` fed to the method, of which ``sampled_lines`` were
    used (SentencePiece samples ``input_sentence_size``); ``heldout`` is ``None`` when nothing was held out;
    ``training_seconds`` is wall time from the first line read to the trained tokenizer and
    ``megabytes_per_second`` = corpus bytes / 10^6 / training_seconds."""

    vocab_size: int
    corpus: CorpusStats
    training_lines: int
    sampled_lines: int
    heldout: HeldOutStats | None
    token_length_histogram: list[LengthBin]
    training_seconds: float
    megabytes_per_second: float


class EncodeResponse(msgspec.Struct, frozen=True, kw_only=True):
    """The text as the tokenizer sees it: token ``ids`` (no special tokens added), each id's ``tokens``
    string as stored in the vocabulary, and ``decoded`` = decode(ids) with special tokens kept."""

    ids: list[int]
    tokens: list[str]
    decoded: str
