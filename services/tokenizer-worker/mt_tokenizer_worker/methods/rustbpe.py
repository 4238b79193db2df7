"""Byte-level BPE trained by karpathy's ``rustbpe`` after GPT-4's regex pre-tokenisation (tiktoken's scheme),
written as an HF ``tokenizer.json`` that encodes exactly as rustbpe does: a ``Split`` pre-tokenizer on the same
pattern, GPT-2's byte-to-symbol mapping, and the merges recovered from rustbpe's token ranks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import rustbpe
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

from mt_contracts.tokenizers import RustBpeConfig, TokenizerConfig
from mt_storage.files import atomic_write_bytes
from mt_tokenizer_worker import TokenizerTrainingError
from mt_tokenizer_worker.methods.base import TOKENIZER_JSON, TrainedTokenizer, write_hf_sidecars
from mt_tokenizer_worker.methods.bpe import BYTE_ALPHABET_SIZE, pieces

# Pieces rustbpe buffers before it pre-tokenizes them in parallel (its default; at our 4 KiB pieces, 32 MiB).
_BUFFER_PIECES = 8192


class RustBpeMethod:
    """``method: "rustbpe"``."""

    name: ClassVar[str] = "rustbpe"

    def max_line_bytes(self, config: TokenizerConfig) -> int | None:
        return None

    def max_training_lines(self, config: TokenizerConfig) -> int | None:
        return None

    def train(self, batches: Iterator[list[str]], config: TokenizerConfig, out_dir: Path) -> TrainedTokenizer:
        """Learn ``vocab_size - len(special_tokens) - 256`` merges; the special tokens take the last ids.

        Lines reach rustbpe as they reach the ``bpe`` method (``bpe.pieces``: 4 KiB pieces of whole lines, cut
        apart at special tokens), so the two learn from the same pre-tokens.

        Raises:
            TokenizerTrainingError: ``no_merges_learned``; ``vocab_size_too_large`` (the corpus holds fewer
                distinct pairs than merges asked for; the message gives how many tokens it supports).
        """
        if not isinstance(config, RustBpeConfig):
            raise TypeError(f"RustBpeMethod needs a RustBpeConfig, got {type(config).__name__}")
        special_tokens = config.special_tokens
        trainer = rustbpe.Tokenizer()
        trainer.train_from_iterator(
            pieces(batches, special_tokens),
            config.vocab_size - len(special_tokens),
            buffer_size=_BUFFER_PIECES,
            pattern=config.pattern,
        )
        ranks = dict(trainer.get_mergeable_ranks())
        vocab_size = len(ranks) + len(special_tokens)
        if len(ranks) <= BYTE_ALPHABET_SIZE:
            raise TokenizerTrainingError(
                "no_merges_learned", "no pair of symbols occurs in the training text; use a larger corpus"
            )
        if vocab_size < config.vocab_size:
            raise TokenizerTrainingError(
                "vocab_size_too_large",
                f"the corpus supports at most vocab_size={vocab_size}; lower vocab_size or use a larger corpus",
            )
        tokenizer = to_hf_tokenizer(ranks, config.pattern, special_tokens)
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out_dir / TOKENIZER_JSON, tokenizer.to_str().encode())
        sidecars = write_hf_sidecars(out_dir, special_tokens)
        return TrainedTokenizer(
            vocab_size=vocab_size,
            special_tokens=special_tokens,
            files=[TOKENIZER_JSON, *sidecars],
            token_byte_lengths=sorted(map(len, ranks)),
        )


def to_hf_tokenizer(ranks: dict[bytes, int], pattern: str, special_tokens: list[str]) -> Tokenizer:
    """An HF tokenizer that encodes as tiktoken does with ``ranks`` (token bytes -> id, the 256 single bytes
    included) and ``pattern``; ``special_tokens`` get the ids after the last rank, in order.

    tiktoken merges, within a pre-token, the adjacent pair whose concatenation has the lowest rank. HF's BPE
    merges the adjacent pair listed first among its merges, so every way of splitting a token into two tokens
    is listed, ordered by the rank of the token they make (the conversion transformers uses for tiktoken
    vocabularies, ``convert_slow_tokenizer.TikTokenConverter``).
    """
    # Latin-1 decoding maps each byte to the code point of its value, which translate() maps to its symbol.
    table = dict(enumerate(byte_symbols()))
    spelled = {token: token.decode("latin-1").translate(table) for token in ranks}
    merges: list[tuple[str, str]] = []
    for token in sorted(ranks, key=ranks.__getitem__):
        splits = [(token[:cut], token[cut:]) for cut in range(1, len(token))]
        valid = sorted(
            ((left, right) for left, right in splits if left in ranks and right in ranks),
            key=lambda pair: (ranks[pair[0]], ranks[pair[1]]),
        )
        merges.extend((spelled[left], spelled[right]) for left, right in valid)
    tokenizer = Tokenizer(models.BPE(vocab={spelled[token]: rank for token, rank in ranks.items()}, merges=merges))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
            # The pattern has split the text; ByteLevel only maps bytes to symbols.
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    tokenizer.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in special_tokens])
    return tokenizer


def byte_symbols() -> list[str]:
    """The printable character GPT-2's byte-level BPE writes for each byte value, indexed by byte: printable
    Latin-1 bytes stand for themselves, the other 68 take the code points from U+0100 on, in byte order
    (``bytes_to_unicode`` in openai/gpt-2 ``src/encoder.py``; HF's ``ByteLevel`` uses the same table)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    symbols: list[str] = []
    shifted = 0
    for byte in range(256):
        if byte in printable:
            symbols.append(chr(byte))
        else:
            symbols.append(chr(256 + shifted))
            shifted += 1
    return symbols
