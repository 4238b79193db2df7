"""Byte-level BPE with HF ``tokenizers`` (the GPT-2 scheme, Radford et al. 2019): the 256 byte values are
the base alphabet, so every UTF-8 string encodes without unknown tokens and decodes back exactly."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import ClassVar

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from mt_contracts.tokenizers import BpeConfig, TokenizerConfig
from mt_storage.files import atomic_write_bytes
from mt_tokenizer_worker import TokenizerTrainingError
from mt_tokenizer_worker.methods.base import TOKENIZER_JSON, TrainedTokenizer, write_hf_sidecars

BYTE_ALPHABET_SIZE = 256
# Lines reach the trainer joined into pieces of about this many characters (see ``pieces``).
PIECE_CHARS = 4096


class BpeMethod:
    """``method: "bpe"``."""

    name: ClassVar[str] = "bpe"

    def max_line_bytes(self, config: TokenizerConfig) -> int | None:
        return None

    def max_training_lines(self, config: TokenizerConfig) -> int | None:
        return None

    def train(self, batches: Iterator[list[str]], config: TokenizerConfig, out_dir: Path) -> TrainedTokenizer:
        """Learn merges until ``vocab_size`` or until no pair occurs ``min_frequency`` times.

        Raises:
            TokenizerTrainingError: ``no_merges_learned``; ``vocab_size_too_large`` (the corpus supports fewer
                tokens at this ``min_frequency``; the message gives how many).
        """
        if not isinstance(config, BpeConfig):
            raise TypeError(f"BpeMethod needs a BpeConfig, got {type(config).__name__}")
        special_tokens = config.special_tokens
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
        trainer = trainers.BpeTrainer(
            vocab_size=config.vocab_size,
            min_frequency=config.min_frequency,
            special_tokens=special_tokens,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            # tokenizers 0.23 keeps only tokens strictly shorter than its max_token_length.
            max_token_length=None if config.max_token_length is None else config.max_token_length + 1,
            show_progress=False,
        )
        tokenizer.train_from_iterator(pieces(batches, special_tokens), trainer=trainer)
        vocab_size = tokenizer.get_vocab_size()
        if vocab_size <= BYTE_ALPHABET_SIZE + len(special_tokens):
            raise TokenizerTrainingError(
                "no_merges_learned",
                f"no pair of symbols occurs at least min_frequency={config.min_frequency} times; "
                "lower min_frequency or use a larger corpus",
            )
        if vocab_size < config.vocab_size:
            limits = f"min_frequency={config.min_frequency}"
            if config.max_token_length is not None:
                limits += f" and max_token_length={config.max_token_length}"
            raise TokenizerTrainingError(
                "vocab_size_too_large",
                f"the corpus supports at most vocab_size={vocab_size} with {limits}; "
                "lower vocab_size or min_frequency, or use a larger corpus",
            )
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out_dir / TOKENIZER_JSON, tokenizer.to_str().encode())
        sidecars = write_hf_sidecars(out_dir, special_tokens)
        # Byte-level symbols stand for one byte each, so a token's length in symbols is its length in bytes.
        lengths = [len(token) for token in tokenizer.get_vocab() if token not in special_tokens]
        return TrainedTokenizer(
            vocab_size=vocab_size,
            special_tokens=special_tokens,
            files=[TOKENIZER_JSON, *sidecars],
            token_byte_lengths=sorted(lengths),
        )


def pieces(
    batches: Iterator[list[str]], special_tokens: Sequence[str] = (), piece_chars: int = PIECE_CHARS
) -> Iterator[str]:
    """The lines of ``batches`` joined, in order, into pieces of about ``piece_chars`` characters (whole lines),
    cut apart where a special token stands: encoding matches it whole, so its characters must not be learned as
    merges (a corpus of GPT-style documents holds ``<|endoftext|>`` between them).

    The trainer pre-tokenizes text as encoding will: data preparation encodes pieces of whole lines, so a
    run of whitespace that spans a line break (``"\\n    "`` before indented code) is one pre-token there and
    must be one here. It is also faster: each item costs the trainer a Python string and a task, and at one
    line per item that cost is a quarter of its time (50 MB of Tiny Shakespeare: 7.6 s by lines, 5.9 s by
    4 KiB pieces, in ``make bench``'s setting). Larger pieces save a little more time but not memory: the
    trainer buffers 256 items (8 KiB pieces: 5.7 s, 3 MB more at peak).
    """
    # Longest first, so that a token that contains another is matched whole.
    specials = sorted(special_tokens, key=len, reverse=True)
    special = re.compile("|".join(map(re.escape, specials))) if specials else None
    for batch in batches:
        if not batch:
            continue
        lines_per_piece = max(1, len(batch) * piece_chars // max(1, sum(map(len, batch))))
        for start in range(0, len(batch), lines_per_piece):
            piece = "".join(batch[start : start + lines_per_piece])
            # A substring test per token is far cheaper than a regular expression over every piece.
            if special is not None and any(token in piece for token in specials):
                yield from filter(None, special.split(piece))
            else:
                yield piece
