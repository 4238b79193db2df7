"""The seam every tokenizer method implements, and the HF sidecar files every method writes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar, Protocol

import msgspec

from mt_contracts import codec
from mt_contracts.requests import END_OF_TEXT, PAD
from mt_contracts.tokenizers import TokenizerConfig
from mt_storage.files import atomic_write_bytes

TOKENIZER_JSON = "tokenizer.json"
TOKENIZER_CONFIG_JSON = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_JSON = "special_tokens_map.json"


class TrainedTokenizer(msgspec.Struct, frozen=True, kw_only=True):
    """What a method wrote into its output directory; ``files`` are names relative to it.

    ``sampled_lines`` is how many training lines the method used (``None``: all of them); ``unk_id`` the
    unknown token's id (``None`` when nothing can be unknown); ``byte_fallback_ids`` the ids of byte-fallback
    tokens; ``token_byte_lengths`` the UTF-8 length in bytes of each non-special vocabulary token, for the
    length histogram.
    """

    vocab_size: int
    special_tokens: list[str]
    files: list[str]
    sampled_lines: int | None = None
    unk_id: int | None = None
    byte_fallback_ids: list[int] = msgspec.field(default_factory=list)
    token_byte_lengths: list[int] = msgspec.field(default_factory=list)


class TokenizerMethod(Protocol):
    """Trains one kind of tokenizer from a stream of text lines, given in lists (a corpus block at a time, so
    that no Python code runs per line), and writes an HF-loadable ``tokenizer.json`` (with
    ``tokenizer_config.json`` and ``special_tokens_map.json``) into ``out_dir``.

    ``max_line_bytes`` is the longest line the method accepts (UTF-8 bytes; longer ones are split by the
    corpus reader), ``None`` for no limit. ``max_training_lines`` is the most lines it trains on: the
    pipeline hands it a seeded uniform sample of that many non-blank lines when the corpus has more
    (``mt_tokenizer_worker.sampling``); ``None`` for all.

    Raises:
        TokenizerTrainingError: the corpus cannot produce the requested tokenizer.
    """

    name: ClassVar[str]

    def max_line_bytes(self, config: TokenizerConfig) -> int | None: ...

    def max_training_lines(self, config: TokenizerConfig) -> int | None: ...

    def train(self, batches: Iterator[list[str]], config: TokenizerConfig, out_dir: Path) -> TrainedTokenizer: ...


class _SpecialTokensMap(msgspec.Struct, frozen=True, omit_defaults=True):
    bos_token: str
    eos_token: str
    unk_token: str
    pad_token: str | None = None


class _TokenizerConfig(msgspec.Struct, frozen=True, omit_defaults=True):
    tokenizer_class: str
    bos_token: str
    eos_token: str
    unk_token: str
    model_max_length: int
    clean_up_tokenization_spaces: bool
    pad_token: str | None = None
    add_prefix_space: bool | None = None


def write_hf_sidecars(
    out_dir: Path, special_tokens: list[str], *, unk_token: str = END_OF_TEXT, add_prefix_space: bool | None = False
) -> list[str]:
    """Write ``tokenizer_config.json`` and ``special_tokens_map.json`` so that
    ``transformers.AutoTokenizer.from_pretrained(out_dir)`` loads ``tokenizer.json`` as a fast tokenizer with
    ``<|endoftext|>`` as BOS/EOS, ``unk_token`` as UNK and ``<|pad|>`` as pad when present.
    ``add_prefix_space`` is left out of the config when ``None`` (the tokenizer.json decides). Returns the
    file names written."""
    pad = PAD if PAD in special_tokens else None
    tokens = _SpecialTokensMap(bos_token=END_OF_TEXT, eos_token=END_OF_TEXT, unk_token=unk_token, pad_token=pad)
    config = _TokenizerConfig(
        tokenizer_class="PreTrainedTokenizerFast",
        bos_token=END_OF_TEXT,
        eos_token=END_OF_TEXT,
        unk_token=unk_token,
        pad_token=pad,
        model_max_length=1_000_000_000,
        # Decoding must give back the exact text; HF's clean-up would remove spaces before punctuation.
        clean_up_tokenization_spaces=False,
        add_prefix_space=add_prefix_space,
    )
    atomic_write_bytes(out_dir / TOKENIZER_CONFIG_JSON, codec.encode(config))
    atomic_write_bytes(out_dir / SPECIAL_TOKENS_MAP_JSON, codec.encode(tokens))
    return [TOKENIZER_CONFIG_JSON, SPECIAL_TOKENS_MAP_JSON]
