"""Dataset preparation: encode the corpus with the run's tokenizer into binary token files, once.

Layout of each split file: a flat array of token ids (``uint16`` when the vocabulary fits, else
``uint32``), read back through a memory map, so memory does not grow with corpus size. An
``<|endoftext|>`` token precedes every document, so each split file starts with one and every token of
its text is predicted from a context and scored.

The split is by document, deterministic from ``val_fraction`` and ``seed``: with several files, whole files
are held out (a seeded shuffle picks them); a single file is split by lines, its last ``val_fraction`` of
lines held out (as nanoGPT holds out the tail), so validation text is never training text.

Prepared data is cached under ``datasets/<key>`` where the key digests the corpus fingerprint (each file's
path, size and sha256), the tokenizer file's sha256 and the split parameters; a later run with the same key
reuses it. ``prepare_corpus`` encodes a whole corpus for evaluation the same way (all of it in the ``val``
file). The cache directory is built beside its final place and renamed into it, so it is complete or
absent.

A document is encoded in pieces of whole lines. A tokenizer that prepends a dummy prefix to every input
(SentencePiece's ``▁``: a ``Prepend`` normalizer, or a ``Metaspace`` pre-tokenizer that prepends) would
add one at every piece boundary, so pieces after a document's first are encoded by a copy of it without
the prefix: the token files then decode to exactly the corpus text.
"""

from __future__ import annotations

import itertools
import os
import shutil
import statistics
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import msgspec
import numpy as np
import torch
from tokenizers import Tokenizer

from mt_contracts import codec
from mt_contracts.requests import END_OF_TEXT
from mt_storage.corpus import iter_corpus_lines
from mt_storage.datasets import (
    PREPARED_JSON,
    corpus_fingerprint,
    dataset_key,
    held_out_files,
    pieces,
    run_split_key,
    val_line_count,
)
from mt_storage.files import sha256_file
from mt_trainer_worker.training import TrainingFailure

# Lines are encoded in batches of pieces of about this many characters: few calls into the tokenizer
# (encode_batch_fast runs a batch's pieces in parallel, without computing offsets), bounded memory (a batch
# is about 2 MB of text). Measured on 2 cores with a byte-level BPE of 8,192 tokens: 64 KiB pieces 32 at a
# time with encode_batch gave 1.5 MB/s, 2 KiB pieces 1,024 at a time with encode_batch_fast 3.2 MB/s (the
# pre-tokenizer and merges are faster on many short inputs spread over the thread pool).
_BATCH_PIECES = 1024


class PreparedData(msgspec.Struct, frozen=True, kw_only=True):
    """Token files of both splits. Counts are tokens (the end-of-text tokens included); ``val_bytes`` and
    ``train_bytes`` count the UTF-8 bytes of each split's text. ``key`` names the cache entry; ``reused``
    says whether this run found it ready. ``median_train_document_tokens`` (the median of the training
    documents' token counts, end-of-text excluded) and ``distinct_train_tokens`` (how many of the
    vocabulary's ids the training text uses) are what the dry run's warnings read (``None`` in a dataset
    prepared before they were recorded, or with no training split)."""

    train_path: str
    val_path: str
    dtype: str
    train_tokens: int
    val_tokens: int
    val_bytes: int
    train_documents: int
    val_documents: int
    vocab_size: int
    end_of_text_id: int
    key: str
    corpus_sha256: str
    tokenizer_sha256: str
    train_bytes: int = 0
    median_train_document_tokens: float | None = None
    distinct_train_tokens: int | None = None
    reused: bool = False


def load_tokenizer(tokenizer_dir: Path) -> Tokenizer:
    """The trained tokenizer from ``tokenizer_dir/tokenizer.json``."""
    return Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))


def without_prefix(tokenizer: Tokenizer) -> Tokenizer:
    """A copy of ``tokenizer`` that does not prepend a dummy prefix (``Prepend`` normalizer steps dropped,
    ``Metaspace`` pre-tokenizers set to ``prepend_scheme: never``), for text that continues a document; the
    tokenizer itself when it prepends nothing."""
    config = msgspec.json.decode(tokenizer.to_str())
    changed = False

    def strip(component: object) -> object:
        nonlocal changed
        if not isinstance(component, dict):
            return component
        kind = component.get("type")
        if kind == "Sequence":
            key = "normalizers" if "normalizers" in component else "pretokenizers"
            steps = [strip(step) for step in component.get(key, [])]
            kept = [step for step in steps if step is not None]
            return {**component, key: kept}
        if kind == "Prepend":
            changed = True
            return None
        if kind == "Metaspace" and component.get("prepend_scheme") != "never":
            changed = True
            return {**component, "prepend_scheme": "never"}
        return component

    if not isinstance(config, dict):
        return tokenizer
    config["normalizer"] = strip(config.get("normalizer"))
    config["pre_tokenizer"] = strip(config.get("pre_tokenizer"))
    return Tokenizer.from_str(msgspec.json.encode(config).decode()) if changed else tokenizer


def prepare_data(
    tokenizer_file: Path, corpus_files: list[Path], val_fraction: float, seed: int, cache_root: Path
) -> PreparedData:
    """Encode ``corpus_files`` with the tokenizer in ``tokenizer_file`` into a cached dataset (or reuse it).

    Raises:
        TrainingFailure: ``empty_corpus`` when the corpus cannot give both splits; ``tokenizer_incompatible``.
        CorpusDecodeError: a file is not UTF-8.
    """
    split_key = run_split_key(val_fraction, seed)
    return _prepare(tokenizer_file, corpus_files, split_key, cache_root, val_fraction, seed)


def prepare_corpus(tokenizer_file: Path, corpus_files: list[Path], cache_root: Path) -> PreparedData:
    """Encode all of ``corpus_files`` into the ``val`` file of a cached dataset (the ``train`` file stays
    empty): the text an evaluation on a custom corpus scores.

    Raises:
        TrainingFailure: ``empty_corpus`` when the corpus holds no text; ``tokenizer_incompatible``.
        CorpusDecodeError: a file is not UTF-8.
    """
    return _prepare(tokenizer_file, corpus_files, "whole", cache_root, None, 0)


def _prepare(
    tokenizer_file: Path,
    corpus_files: list[Path],
    split_key: str,
    cache_root: Path,
    val_fraction: float | None,
    seed: int,
) -> PreparedData:
    corpus_sha = corpus_fingerprint(corpus_files)
    tokenizer_sha = sha256_file(tokenizer_file)
    key = dataset_key(corpus_sha, tokenizer_sha, split_key)
    final = cache_root / key[:32]
    if (final / PREPARED_JSON).is_file():
        return _cached(final)
    cache_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=cache_root, prefix=f".{key[:32]}."))
    try:
        prepared = _encode(Tokenizer.from_file(str(tokenizer_file)), corpus_files, val_fraction, seed, staging)
        prepared = msgspec.structs.replace(
            prepared,
            train_path=str(final / "train.bin"),
            val_path=str(final / "val.bin"),
            key=key,
            corpus_sha256=corpus_sha,
            tokenizer_sha256=tokenizer_sha,
        )
        (staging / PREPARED_JSON).write_bytes(codec.encode(prepared))
        try:
            os.rename(staging, final)
        except OSError:
            # Another run prepared the same data first; theirs is complete, use it.
            if not (final / PREPARED_JSON).is_file():
                raise
            return _cached(final)
        return prepared
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _cached(directory: Path) -> PreparedData:
    return msgspec.structs.replace(codec.decode((directory / PREPARED_JSON).read_bytes(), PreparedData), reused=True)


def _encode(
    tokenizer: Tokenizer, files: list[Path], val_fraction: float | None, seed: int, out_dir: Path
) -> PreparedData:
    """Write the split files; ``val_fraction=None`` puts the whole corpus in ``val``."""
    end_of_text = tokenizer.token_to_id(END_OF_TEXT)
    if end_of_text is None:
        raise TrainingFailure("tokenizer_incompatible", f"the tokenizer has no {END_OF_TEXT} token")
    vocab_size = tokenizer.get_vocab_size()
    dtype: type[np.uint16] | type[np.uint32] = np.uint16 if vocab_size <= 65_535 else np.uint32
    writer = _SplitWriter(out_dir, dtype, end_of_text, without_prefix(tokenizer), vocab_size)
    try:
        if val_fraction is None:
            for path in files:
                writer.document(tokenizer, iter_corpus_lines([path]), val=True)
        elif len(files) == 1:
            total_lines = sum(1 for _ in iter_corpus_lines(files))
            val_lines = val_line_count(total_lines, val_fraction)
            if val_lines < 1 or total_lines - val_lines < 1:
                raise TrainingFailure(
                    "empty_corpus",
                    f"the corpus has {total_lines} line(s); at least {int(1 / val_fraction) + 1} are needed "
                    f"to hold out val_fraction={val_fraction}",
                )
            lines = iter_corpus_lines(files)
            writer.document(tokenizer, _take(lines, total_lines - val_lines), val=False)
            writer.document(tokenizer, lines, val=True)
        else:
            held_out = held_out_files(len(files), val_fraction, seed)
            for index, path in enumerate(files):
                writer.document(tokenizer, iter_corpus_lines([path]), val=index in held_out)
        writer.finish()
    finally:
        writer.close()
    if (val_fraction is not None and writer.tokens[False] <= 1) or writer.tokens[True] <= 1:
        raise TrainingFailure("empty_corpus", "the corpus holds no text to train or validate on")
    lengths = writer.train_document_tokens
    return PreparedData(
        train_path=str(out_dir / "train.bin"),
        val_path=str(out_dir / "val.bin"),
        dtype=np.dtype(dtype).name,
        train_tokens=writer.tokens[False],
        val_tokens=writer.tokens[True],
        val_bytes=writer.bytes[True],
        train_bytes=writer.bytes[False],
        train_documents=writer.documents[False],
        val_documents=writer.documents[True],
        median_train_document_tokens=float(statistics.median(lengths)) if lengths else None,
        distinct_train_tokens=int(writer.train_ids_seen.sum()) if lengths else None,
        vocab_size=vocab_size,
        end_of_text_id=end_of_text,
        key="",
        corpus_sha256="",
        tokenizer_sha256="",
    )


class _SplitWriter:
    """Appends documents to ``train.bin`` / ``val.bin`` with an end-of-text token before each document
    (so each file starts with one), counting tokens, documents and text bytes per split, each training
    document's text tokens and which ids the training text uses."""

    def __init__(
        self,
        out_dir: Path,
        dtype: type[np.uint16] | type[np.uint32],
        end_of_text: int,
        continuation: Tokenizer,
        vocab_size: int,
    ) -> None:
        self._continuation = continuation
        self._dtype = dtype
        self._end_of_text = end_of_text
        self._files: dict[bool, BinaryIO] = {
            False: (out_dir / "train.bin").open("wb"),
            True: (out_dir / "val.bin").open("wb"),
        }
        self.tokens = {False: 0, True: 0}
        self.documents = {False: 0, True: 0}
        self.bytes = {False: 0, True: 0}
        self.train_document_tokens: list[int] = []
        self.train_ids_seen = np.zeros(vocab_size, dtype=np.bool_)

    def document(self, tokenizer: Tokenizer, lines: Iterator[str], *, val: bool) -> None:
        self._write(val, [self._end_of_text], text=False)
        self.documents[val] += 1
        start = self.tokens[val]  # after the end-of-text: the document's text tokens are counted from here
        for number, batch in enumerate(piece_batches(lines)):
            if number == 0:
                # The document's first piece alone gets the tokenizer's dummy prefix, if it has one.
                first = tokenizer.encode_batch_fast(batch[:1], add_special_tokens=False)
                rest = self._continuation.encode_batch_fast(batch[1:], add_special_tokens=False)
                encodings = first + rest
            else:
                encodings = self._continuation.encode_batch_fast(batch, add_special_tokens=False)
            self._write(val, itertools.chain.from_iterable(encoding.ids for encoding in encodings))
            self.bytes[val] += sum(len(piece.encode()) for piece in batch)
        if not val:
            self.train_document_tokens.append(self.tokens[val] - start)

    def _write(self, val: bool, ids: Iterable[int], *, text: bool = True) -> None:
        array = np.fromiter(ids, dtype=self._dtype)
        array.tofile(self._files[val])
        self.tokens[val] += int(array.size)
        if text and not val:
            self.train_ids_seen[array] = True

    def finish(self) -> None:
        """Flush both files to disk."""
        for handle in self._files.values():
            handle.flush()
            os.fsync(handle.fileno())

    def close(self) -> None:
        for handle in self._files.values():
            handle.close()


def _take(lines: Iterator[str], count: int) -> Iterator[str]:
    for _ in range(count):
        line = next(lines, None)
        if line is None:
            return
        yield line


def piece_batches(lines: Iterable[str]) -> Iterator[list[str]]:
    """``lines`` joined into pieces of about ``PIECE_CHARS`` characters (whole lines; ``mt_storage.datasets``),
    ``_BATCH_PIECES`` pieces a batch: the inputs of one ``encode_batch_fast`` call."""
    batch: list[str] = []
    for piece in pieces(lines):
        batch.append(piece)
        if len(batch) == _BATCH_PIECES:
            yield batch
            batch = []
    if batch:
        yield batch


def open_tokens(path: str, dtype: str) -> torch.Tensor:
    """A token file written by ``prepare_data`` as a 1-D tensor over a memory map (copy-on-write, so the
    file is never modified and pages load on demand)."""
    return torch.from_numpy(np.memmap(path, dtype=np.dtype(dtype), mode="c"))


def gather_windows(tokens: torch.Tensor, starts: torch.Tensor, length: int) -> torch.Tensor:
    """The windows ``tokens[s : s + length]`` for every ``s`` in ``starts`` (``(count,) int64``), as one
    ``(count, length) int64`` tensor: a single vectorised gather through the token file's memory map (numpy
    fancy indexing; torch has no indexing on ``uint16``), no Python loop over windows."""
    offsets = starts.reshape(-1, 1) + torch.arange(length, dtype=torch.int64)
    return torch.from_numpy(tokens.numpy()[offsets.numpy()].astype(np.int64))


class WindowStream:
    """The training windows of a run as one seeded stream: window ``i`` starts at element ``i`` of a sequence
    of uniform draws in ``[0, len(tokens) - block_size)``, drawn ``CHUNK`` at a time from a generator seeded
    with ``(seed, chunk number)``. A process can read whichever stretch of it it needs, so rank ``r`` of ``W``
    reads its own ``batch_size`` rows of each global micro-batch of ``batch_size * W`` windows, the union being
    what one process with ``batch_size * W`` reads; and a checkpoint needs only the position, in windows (its
    tokens over ``block_size``), to continue the stream at every world size.
    """

    CHUNK = 4096

    def __init__(self, tokens: torch.Tensor, block_size: int, seed: int) -> None:
        self.tokens = tokens
        self.block_size = block_size
        self.seed = seed
        self._chunks: dict[int, torch.Tensor] = {}

    def _starts_of(self, chunk: int) -> torch.Tensor:
        """The ``CHUNK`` window starts of chunk ``chunk`` (``int64``); the last two chunks are kept."""
        starts = self._chunks.get(chunk)
        if starts is None:
            generator = torch.Generator().manual_seed((self.seed << 32) | chunk)
            starts = torch.randint(len(self.tokens) - self.block_size, (self.CHUNK,), generator=generator)
            self._chunks = {key: value for key, value in self._chunks.items() if key == chunk - 1}
            self._chunks[chunk] = starts
        return starts

    def batch(self, first: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Windows ``first .. first + count - 1``: inputs and next-token targets, each ``(count, block_size)
        int64``."""
        last = first + count - 1
        chunks = range(first // self.CHUNK, last // self.CHUNK + 1)
        starts = torch.cat([self._starts_of(chunk) for chunk in chunks])
        offset = first - chunks[0] * self.CHUNK
        batch = gather_windows(self.tokens, starts[offset : offset + count], self.block_size + 1)
        return batch[:, :-1], batch[:, 1:]
