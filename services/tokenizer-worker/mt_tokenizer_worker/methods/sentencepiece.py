"""SentencePiece (Kudo & Richardson, 2018) with ``model_type`` ``unigram`` (Kudo, 2018) or ``bpe``, trained by
the ``sentencepiece`` package, then rebuilt as an HF ``tokenizers`` model so that ``tokenizer.json`` encodes
exactly as SentencePiece does and loads with ``transformers``.

Lossless by default: no whitespace clean-up, ``identity`` normalization and byte fallback, so
decode(encode(text)) == text for any text without special-token strings or ``▁`` (U+2581): SentencePiece
writes a space as that character, so it decodes as a space. ``nfkc`` normalization is lossy by design. The
trained ``sentencepiece.model`` is kept beside ``tokenizer.json``.
"""

from __future__ import annotations

import errno
import io
import os
import re
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import sentencepiece
from sentencepiece import sentencepiece_model_pb2
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers

from mt_contracts.tokenizers import SENTENCEPIECE_UNK, SentencePieceConfig, TokenizerConfig
from mt_storage.files import atomic_write_bytes
from mt_tokenizer_worker import TokenizerTrainingError
from mt_tokenizer_worker.methods.base import TOKENIZER_JSON, TrainedTokenizer, write_hf_sidecars

SENTENCEPIECE_MODEL = "sentencepiece.model"
UNK = SENTENCEPIECE_UNK
Option = str | int | float | bool | list[str]
SPACE = "\u2581"  # "▁", SentencePiece's visible space
_TOO_LARGE = re.compile(r"Vocabulary size too high \((\d+)\)\. Please set it to a value <= (\d+)")
_TOO_SMALL = re.compile(r"Vocabulary size is smaller than required_chars\. (\d+) vs (\d+)")


class SentencePieceMethod:
    """``method: "sentencepiece"``."""

    name: ClassVar[str] = "sentencepiece"

    def max_line_bytes(self, config: TokenizerConfig) -> int | None:
        return config.max_sentence_length if isinstance(config, SentencePieceConfig) else None

    def max_training_lines(self, config: TokenizerConfig) -> int | None:
        if isinstance(config, SentencePieceConfig) and config.input_sentence_size > 0:
            return config.input_sentence_size
        return None

    def train(self, batches: Iterator[list[str]], config: TokenizerConfig, out_dir: Path) -> TrainedTokenizer:
        """Train on the lines of ``batches`` (one sentence each; the pipeline has sampled
        ``input_sentence_size`` of them), and write ``tokenizer.json``, the HF sidecars and ``sentencepiece.model``.

        Raises:
            TokenizerTrainingError: ``vocab_size_too_large`` / ``vocab_size_too_small`` with the bound the
                corpus allows; ``training_failed`` for any other refusal by SentencePiece.
        """
        if not isinstance(config, SentencePieceConfig):
            raise TypeError(f"SentencePieceMethod needs a SentencePieceConfig, got {type(config).__name__}")
        options = trainer_options(config)
        sentencepiece.set_random_generator_seed(config.seed)
        with tempfile.TemporaryDirectory(prefix="mt-sentencepiece-") as tmp:
            feed = Path(tmp) / "sentences.txt"
            if "," in str(feed):
                raise TokenizerTrainingError(
                    "training_failed",
                    f"the worker's temporary directory {tmp!r} holds a comma, which SentencePiece reads as a list "
                    "of input files; set TMPDIR to a directory without one",
                )
            os.mkfifo(feed, 0o600)
            trainer = _Trainer(feed, options)
            trainer.start()
            lines = _write_sentences(feed, batches, trainer)
            try:
                proto = without_input_paths(trainer.model())
            except RuntimeError as exc:
                raise _training_error(str(exc), config) from exc
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
        return TrainedTokenizer(
            vocab_size=size,
            special_tokens=config.special_tokens,
            files=[TOKENIZER_JSON, *sidecars, SENTENCEPIECE_MODEL],
            sampled_lines=lines,
            unk_id=len(config.special_tokens),
            byte_fallback_ids=byte_ids,
            token_byte_lengths=sorted(lengths),
        )


def trainer_options(config: SentencePieceConfig) -> dict[str, Option]:
    """The ``SentencePieceTrainer.train`` options for ``config``, but the input (the benchmark hands the same
    ones to the library alone)."""
    # Control pieces are not used: the special tokens are user-defined symbols, so they take ids 0..n-1 in
    # order (``<|endoftext|>`` is 0) and are matched in text like added tokens in HF.
    return {
        "model_type": config.model_type,
        "vocab_size": config.vocab_size,
        "character_coverage": config.character_coverage,
        "byte_fallback": config.byte_fallback,
        "split_digits": config.split_digits,
        "normalization_rule_name": config.normalization,
        "remove_extra_whitespaces": False,
        "max_sentence_length": config.max_sentence_length,
        # The pipeline samples input_sentence_size lines (max_training_lines): SentencePiece's own sampling
        # draws differently on every run, whatever set_random_generator_seed says.
        "input_sentence_size": 0,
        "shuffle_input_sentence": False,
        "user_defined_symbols": config.special_tokens,
        "unk_id": len(config.special_tokens),
        "unk_piece": UNK,
        "bos_id": -1,
        "eos_id": -1,
        "pad_id": -1,
        "hard_vocab_limit": True,
        "minloglevel": 2,
    }


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


class _Trainer(threading.Thread):
    """``SentencePieceTrainer.train`` on the FIFO ``feed``, off the calling thread. SentencePiece reads its input
    in C++ without holding the GIL, so it loads sentences while the caller still reads the corpus into the FIFO:
    the two overlap on two cores, where a Python ``sentence_iterator`` would run them one after the other.
    (50 MB, ``model_type="bpe"``: 2.6 s against 2.9 s with the iterator; the library alone on the file: 2.4 s.)
    """

    def __init__(self, feed: Path, options: dict[str, Option]) -> None:
        super().__init__(name="sentencepiece-trainer", daemon=True)
        self._feed = feed
        self._options = options
        self._model = io.BytesIO()
        self._error: RuntimeError | None = None

    def run(self) -> None:
        try:
            sentencepiece.SentencePieceTrainer.train(input=str(self._feed), model_writer=self._model, **self._options)
        except RuntimeError as exc:  # SentencePiece's errors; model() hands them to the caller
            self._error = exc

    def model(self) -> bytes:
        """The trained ``ModelProto``, serialized, once training ends.

        Raises:
            RuntimeError: SentencePiece refused the options or the corpus.
        """
        self.join()
        if self._error is not None:
            raise self._error
        if not self._model.tell():
            raise RuntimeError("SentencePiece ended without writing a model (see the process's stderr)")
        return self._model.getvalue()


def _write_sentences(feed: Path, batches: Iterator[list[str]], trainer: threading.Thread) -> int:
    """Write the lines of ``batches`` into the FIFO ``feed`` (SentencePiece reads one sentence per line) until they
    end or ``trainer`` (the thread that reads ``feed``) stops reading; return how many lines were written.

    A corpus error (invalid UTF-8, a bad ``.jsonl`` record) is raised at once. The trainer then sees its input
    end and finishes on what it read, in its daemon thread; its model is never used.
    """
    descriptor = _open_for_writing(feed, trainer)
    if descriptor is None:
        return 0  # the trainer failed before reading, and says why
    lines = 0
    try:
        with open(descriptor, "wb") as pipe:
            for batch in batches:
                lines += len(batch)
                text = "".join(batch)
                # Lines hold no \n but the last character. Lines without one (a file's last line, the pieces of
                # a line split for max_sentence_length) are sentences of their own, so they get one.
                if text.count("\n") != len(batch):
                    text = "".join(line if line.endswith("\n") else line + "\n" for line in batch)
                pipe.write(text.encode())
    except BrokenPipeError:
        return lines  # the trainer stopped reading: it failed, and model() says why
    return lines


def _open_for_writing(feed: Path, trainer: threading.Thread) -> int | None:
    """The FIFO's write end once ``trainer`` has opened its read end, or ``None`` if it ends first. A blocking
    open would wait forever for a trainer that failed before opening its input."""
    while True:
        try:
            descriptor = os.open(feed, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # ENXIO: no reader yet
                raise
            if not trainer.is_alive():
                return None
            trainer.join(timeout=0.002)
            continue
        os.set_blocking(descriptor, True)
        return descriptor


def without_input_paths(proto: bytes) -> bytes:
    """``proto`` (a serialized ``ModelProto``) without ``trainer_spec.input``, the temporary FIFO's path:
    the same request on the same corpus must give a byte-identical ``sentencepiece.model``."""
    model = sentencepiece_model_pb2.ModelProto()
    model.ParseFromString(proto)
    model.trainer_spec.ClearField("input")
    return model.SerializeToString(deterministic=True)


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
