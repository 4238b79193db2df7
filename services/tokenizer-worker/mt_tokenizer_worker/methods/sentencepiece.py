"""SentencePiece (Kudo & Richardson, 2018) with ``model_type`` ``unigram`` (Kudo, 2018) or ``bpe``, trained by
the ``sentencepiece`` package, then rebuilt as an HF ``tokenizers`` model so that ``tokenizer.json`` encodes
exactly as SentencePiece does and loads with ``transformers``.

Lossless by default: no whitespace clean-up, ``identity`` normalization and byte fallback, so
decode(encode(text)) == text for any text without special-token strings. ``nfkc`` normalization is lossy by
design. The trained ``sentencepiece.model`` is kept beside ``tokenizer.json``.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from itertools import chain
from pathlib import Path
from typing import ClassVar

import sentencepiece
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers

from mt_contracts.tokenizers import SentencePieceConfig, TokenizerConfig
from mt_storage.files import atomic_write_bytes
from mt_tokenizer_worker import TokenizerTrainingError
from mt_tokenizer_worker.methods.base import TOKENIZER_JSON, TrainedTokenizer, write_hf_sidecars

SENTENCEPIECE_MODEL = "sentencepiece.model"
UNK = "<unk>"
SPACE = "\u2581"  # "▁", SentencePiece's visible space
_TOO_LARGE = re.compile(r"Vocabulary size too high \((\d+)\)\. Please set it to a value <= (\d+)")
_TOO_SMALL = re.compile(r"Vocabulary size is smaller than required_chars\. (\d+) vs (\d+)")


class SentencePieceMethod:
    """``method: "sentencepiece"``."""

    name: ClassVar[str] = "sentencepiece"

    def max_line_bytes(self, config: TokenizerConfig) -> int | None:
        return config.max_sentence_length if isinstance(config, SentencePieceConfig) else None

    def train(self, batches: Iterator[list[str]], config: TokenizerConfig, out_dir: Path) -> TrainedTokenizer:
        """Train on the lines of ``batches`` (one sentence each, the final ``\\n`` removed), sampling
        ``input_sentence_size`` of them, and write ``tokenizer.json``, the HF sidecars and ``sentencepiece.model``.

        Raises:
            TokenizerTrainingError: ``vocab_size_too_large`` / ``vocab_size_too_small`` with the bound the
                corpus allows; ``training_failed`` for any other refusal by SentencePiece.
        """
        if not isinstance(config, SentencePieceConfig):
            raise TypeError(f"SentencePieceMethod needs a SentencePieceConfig, got {type(config).__name__}")
        # Control pieces are not used: the special tokens are user-defined symbols, so they take ids 0..n-1
        # in order (``<|endoftext|>`` is 0) and are matched in text like added tokens in HF.
        sentencepiece.set_random_generator_seed(config.seed)
        model = io.BytesIO()
        sentences = _Sentences(batches)
        try:
            sentencepiece.SentencePieceTrainer.train(
                sentence_iterator=iter(sentences),
                model_writer=model,
                model_type=config.model_type,
                vocab_size=config.vocab_size,
                character_coverage=config.character_coverage,
                byte_fallback=config.byte_fallback,
                split_digits=config.split_digits,
                normalization_rule_name=config.normalization,
                remove_extra_whitespaces=False,
                max_sentence_length=config.max_sentence_length,
                input_sentence_size=config.input_sentence_size,
                shuffle_input_sentence=True,
                user_defined_symbols=config.special_tokens,
                unk_id=len(config.special_tokens),
                unk_piece=UNK,
                bos_id=-1,
                eos_id=-1,
                pad_id=-1,
                hard_vocab_limit=True,
                minloglevel=2,
            )
        except RuntimeError as exc:
            raise _training_error(str(exc), config) from exc
        proto = model.getvalue()
        processor = sentencepiece.SentencePieceProcessor(model_proto=proto)
        tokenizer = to_hf_tokenizer(processor, config)
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out_dir / TOKENIZER_JSON, tokenizer.to_str().encode())
        atomic_write_bytes(out_dir / SENTENCEPIECE_MODEL, proto)
        sidecars = write_hf_sidecars(out_dir, config.special_tokens, unk_token=UNK, add_prefix_space=None)
        size = processor.get_piece_size()
        special = set(config.special_tokens)
        pieces = [processor.id_to_piece(i) for i in range(size)]
        byte_ids = [i for i in range(size) if processor.is_byte(i)]
        lengths = [
            1 if processor.is_byte(i) else len(piece.replace(SPACE, " ").encode())
            for i, piece in enumerate(pieces)
            if piece not in special and not processor.is_unknown(i)
        ]
        sampled = (
            sentences.count if config.input_sentence_size == 0 else min(sentences.count, config.input_sentence_size)
        )
        return TrainedTokenizer(
            vocab_size=size,
            special_tokens=config.special_tokens,
            files=[TOKENIZER_JSON, *sidecars, SENTENCEPIECE_MODEL],
            sampled_lines=sampled,
            unk_id=len(config.special_tokens),
            byte_fallback_ids=byte_ids,
            token_byte_lengths=sorted(lengths),
        )


def to_hf_tokenizer(processor: sentencepiece.SentencePieceProcessor, config: SentencePieceConfig) -> Tokenizer:
    """The trained model as an HF ``tokenizers.Tokenizer`` that encodes as SentencePiece does.

    SentencePiece prepends one ``▁`` to the text and writes every space as ``▁`` (its "dummy prefix"), then
    splits before each ``▁``; the decoder reverses that and strips the one leading space. Unigram keeps the
    pieces' log-probabilities; BPE merges are recovered from the pieces, ranked by the merged piece's id
    (the order SentencePiece learned them), as transformers' ``SentencePieceExtractor`` does.
    """
    size = processor.get_piece_size()
    pieces = [(processor.id_to_piece(i), processor.get_score(i)) for i in range(size)]
    unk_id = len(config.special_tokens)
    model: models.Model
    if config.model_type == "unigram":
        model = models.Unigram(pieces, unk_id=unk_id, byte_fallback=config.byte_fallback)
    else:
        vocab = {piece: i for i, (piece, _) in enumerate(pieces)}
        merges: list[tuple[str, str]] = []
        for piece in vocab:
            splits = [(piece[:k], piece[k:]) for k in range(1, len(piece)) if piece[:k] in vocab and piece[k:] in vocab]
            merges.extend(sorted(splits, key=lambda pair: (vocab[pair[0]], vocab[pair[1]])))
        model = models.BPE(vocab, merges, unk_token=UNK, byte_fallback=config.byte_fallback, fuse_unk=True)
    tokenizer = Tokenizer(model)
    steps: list[normalizers.Normalizer] = [normalizers.NFKC()] if config.normalization == "nfkc" else []
    tokenizer.normalizer = normalizers.Sequence([*steps, normalizers.Prepend(SPACE), normalizers.Replace(" ", SPACE)])
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme="never", split=True)
    tokenizer.decoder = decoders.Sequence(
        [decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tokenizer.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in config.special_tokens])
    return tokenizer


class _Sentences:
    """The lines of ``batches`` without their final ``\\n`` (SentencePiece trains on sentences), counted."""

    def __init__(self, batches: Iterator[list[str]]) -> None:
        self._batches = batches
        self.count = 0

    def __iter__(self) -> Iterator[str]:
        # SentencePiece pulls one sentence at a time; chain hands them out of each list without Python code.
        return chain.from_iterable(self._lists())

    def _lists(self) -> Iterator[list[str]]:
        for batch in self._batches:
            self.count += len(batch)
            text = "".join(batch)
            # Lines hold no \n but the last character, so one \n per line means each line ends in one.
            if text.count("\n") == len(batch):
                yield text.split("\n")[:-1]
            else:
                yield [line.removesuffix("\n") for line in batch]


def _training_error(message: str, config: SentencePieceConfig) -> TokenizerTrainingError:
    if match := _TOO_LARGE.search(message):
        return TokenizerTrainingError(
            "vocab_size_too_large",
            f"the corpus supports at most vocab_size={match.group(2)} with model_type={config.model_type!r}; "
            "lower vocab_size or use a larger corpus",
        )
    if match := _TOO_SMALL.search(message):
        return TokenizerTrainingError(
            "vocab_size_too_small",
            f"vocab_size={config.vocab_size} cannot hold the {match.group(2)} characters and pieces the corpus "
            f"requires; raise vocab_size above {match.group(2)} or lower character_coverage",
        )
    return TokenizerTrainingError("training_failed", f"SentencePiece refused the corpus: {message.strip()[-500:]}")
