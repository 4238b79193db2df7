"""Dataset preparation: encode the corpus with the run's tokenizer into binary token files.

Layout of each split file: a flat array of token ids (``uint16`` when the vocabulary fits, else
``uint32``), read back through ``numpy.memmap`` so memory does not grow with corpus size. An
``<|endoftext|>`` token separates documents (files); the validation file starts with one, so that every
validation token is predicted from a context and scored.

The split is by line: the last ``val_fraction`` of the corpus's lines (nanoGPT holds out the tail the same
way), so validation text is never training text.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import msgspec
import numpy as np
import torch
from tokenizers import Tokenizer

from mt_contracts.requests import END_OF_TEXT
from mt_storage.corpus import iter_corpus_lines
from mt_trainer_worker.training import TrainingFailure

# Lines are encoded in chunks of about this many characters: few calls into the tokenizer, bounded memory.
_CHUNK_CHARS = 1 << 20


class PreparedData(msgspec.Struct, frozen=True, kw_only=True):
    """Token files of both splits. ``val_bytes`` counts the UTF-8 bytes of the validation text."""

    train_path: str
    val_path: str
    dtype: str
    train_tokens: int
    val_tokens: int
    val_bytes: int
    vocab_size: int
    end_of_text_id: int


def load_tokenizer(tokenizer_dir: Path) -> Tokenizer:
    """The trained tokenizer from ``tokenizer_dir/tokenizer.json``."""
    return Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))


def prepare_data(tokenizer: Tokenizer, corpus_files: list[Path], val_fraction: float, out_dir: Path) -> PreparedData:
    """Encode ``corpus_files`` into ``out_dir/{train,val}.bin``.

    Raises:
        TrainingFailure: ``empty_corpus`` when the corpus has too few lines to hold out a validation split.
        CorpusDecodeError: a file is not UTF-8.
    """
    end_of_text = tokenizer.token_to_id(END_OF_TEXT)
    if end_of_text is None:
        raise TrainingFailure("tokenizer_incompatible", f"the tokenizer has no {END_OF_TEXT} token")
    vocab_size = tokenizer.get_vocab_size()
    dtype = np.uint16 if vocab_size <= 65_535 else np.uint32
    line_counts = [sum(1 for _ in iter_corpus_lines([path])) for path in corpus_files]
    total_lines = sum(line_counts)
    val_lines = int(total_lines * val_fraction)
    if val_lines < 1 or total_lines - val_lines < 1:
        raise TrainingFailure(
            "empty_corpus",
            f"the corpus has {total_lines} line(s); at least {int(1 / val_fraction) + 1} are needed "
            f"to hold out val_fraction={val_fraction}",
        )
    first_val_line = total_lines - val_lines
    out_dir.mkdir(parents=True, exist_ok=True)
    train_path, val_path = out_dir / "train.bin", out_dir / "val.bin"
    train_tokens = val_tokens = val_bytes = 0
    with train_path.open("wb") as train_out, val_path.open("wb") as val_out:
        val_tokens += _write(val_out, [end_of_text], dtype)
        line_index = 0
        for file_index, path in enumerate(corpus_files):
            for in_val, chunk in _chunks(iter_corpus_lines([path]), line_index, first_val_line):
                ids = tokenizer.encode(chunk, add_special_tokens=False).ids
                if in_val:
                    val_tokens += _write(val_out, ids, dtype)
                    val_bytes += len(chunk.encode())
                else:
                    train_tokens += _write(train_out, ids, dtype)
            line_index += line_counts[file_index]
            if file_index < len(corpus_files) - 1:
                eot_out = val_out if line_index > first_val_line else train_out
                count = _write(eot_out, [end_of_text], dtype)
                if eot_out is val_out:
                    val_tokens += count
                else:
                    train_tokens += count
    return PreparedData(
        train_path=str(train_path),
        val_path=str(val_path),
        dtype=np.dtype(dtype).name,
        train_tokens=train_tokens,
        val_tokens=val_tokens,
        val_bytes=val_bytes,
        vocab_size=vocab_size,
        end_of_text_id=end_of_text,
    )


def open_tokens(path: str, dtype: str) -> torch.Tensor:
    """A token file written by ``prepare_data`` as a 1-D tensor over a memory map (copy-on-write, so the
    file is never modified and pages load on demand)."""
    return torch.from_numpy(np.memmap(path, dtype=np.dtype(dtype), mode="c"))


def _chunks(lines: Iterator[str], first_index: int, first_val_line: int) -> Iterator[tuple[bool, str]]:
    """Group consecutive lines into ``(is_validation, text)`` chunks of about ``_CHUNK_CHARS`` characters,
    never mixing the splits in one chunk."""
    parts: list[str] = []
    size = 0
    in_val = first_index >= first_val_line
    for index, line in enumerate(lines, start=first_index):
        line_in_val = index >= first_val_line
        if parts and (line_in_val != in_val or size >= _CHUNK_CHARS):
            yield in_val, "".join(parts)
            parts, size = [], 0
        in_val = line_in_val
        parts.append(line)
        size += len(line)
    if parts:
        yield in_val, "".join(parts)


def _write(handle: BinaryIO, ids: list[int], dtype: type[np.uint16] | type[np.uint32]) -> int:
    array = np.asarray(ids, dtype=dtype)
    array.tofile(handle)
    return int(array.size)
