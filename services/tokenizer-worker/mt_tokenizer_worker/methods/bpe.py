"""Byte-level BPE with HF ``tokenizers`` (the GPT-2 scheme, Radford et al. 2019): the 256 byte values are
the base alphabet, so every UTF-8 string encodes without unknown tokens and decodes back exactly."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from mt_contracts.requests import TrainTokenizerRequest, with_end_of_text
from mt_storage.files import atomic_write_bytes
from mt_tokenizer_worker import TokenizerTrainingError
from mt_tokenizer_worker.methods.base import TOKENIZER_JSON, TrainedTokenizer, write_hf_sidecars

BYTE_ALPHABET_SIZE = 256


class BpeMethod:
    """``method: "bpe"``."""

    name: ClassVar[str] = "bpe"

    def train(self, lines: Iterator[str], request: TrainTokenizerRequest, out_dir: Path) -> TrainedTokenizer:
        special_tokens = with_end_of_text(request.special_tokens)
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
        trainer = trainers.BpeTrainer(
            vocab_size=request.vocab_size,
            min_frequency=request.min_frequency,
            special_tokens=special_tokens,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tokenizer.train_from_iterator(lines, trainer=trainer)
        vocab_size = tokenizer.get_vocab_size()
        if vocab_size <= BYTE_ALPHABET_SIZE + len(special_tokens):
            raise TokenizerTrainingError(
                "no_merges_learned",
                f"no pair of symbols occurs at least min_frequency={request.min_frequency} times; "
                "lower min_frequency or use a larger corpus",
            )
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out_dir / TOKENIZER_JSON, tokenizer.to_str().encode())
        sidecars = write_hf_sidecars(out_dir, special_tokens)
        return TrainedTokenizer(vocab_size=vocab_size, special_tokens=special_tokens, files=[TOKENIZER_JSON, *sidecars])
