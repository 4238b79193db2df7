"""What names a prepared dataset and how a corpus is split, shared by the training process that prepares it
(``mt_trainer_worker.training.data``) and the API's dry run that looks it up and estimates it.

The split is by document: with several files, whole files are held out (a seeded shuffle picks them); a
single file is split by lines, its last ``val_fraction`` of lines held out.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import msgspec

from mt_storage.files import sha256_file

# 2: every document (the first training one too) is preceded by <|endoftext|>; train_bytes is counted.
# 3: pieces of 2 KiB characters (token boundaries between pieces moved).
FORMAT_VERSION = 3
PREPARED_JSON = "prepared.json"
# A document is encoded in pieces of whole lines of about this many characters.
PIECE_CHARS = 2 * 1024


def corpus_fingerprint(files: list[Path], file_digest: Callable[[Path], str] = sha256_file) -> str:
    """sha256 over each file's name, size and content digest (``file_digest``, hex sha256), in order."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.name}\0{path.stat().st_size}\0{file_digest(path)}\n".encode())
    return digest.hexdigest()


def dataset_key(corpus_sha256: str, tokenizer_sha256: str, split_key: str) -> str:
    """The cache key of a prepared dataset (its folder is ``datasets/<key[:32]>``); ``split_key`` is
    ``"<val_fraction>:<seed>"`` for a run's split, ``"whole"`` for an evaluation corpus."""
    return hashlib.sha256(f"{FORMAT_VERSION}:{corpus_sha256}:{tokenizer_sha256}:{split_key}".encode()).hexdigest()


def run_split_key(val_fraction: float, seed: int) -> str:
    return f"{val_fraction}:{seed}"


def held_out_files(count: int, val_fraction: float, seed: int) -> set[int]:
    """Indexes of the files a corpus of ``count`` (> 1) files holds out for validation."""
    order = list(range(count))
    random.Random(seed).shuffle(order)
    return set(order[: max(1, min(count - 1, round(count * val_fraction)))])


def val_line_count(total_lines: int, val_fraction: float) -> int:
    """Lines a single-file corpus of ``total_lines`` holds out: its last ``int(total_lines * val_fraction)``."""
    return int(total_lines * val_fraction)


class PreparedCounts(msgspec.Struct, frozen=True, kw_only=True):
    """The counts of a prepared dataset's ``prepared.json`` (tokens include one end-of-text per document;
    ``median_train_document_tokens`` and ``distinct_train_tokens`` count the training text's tokens only,
    ``None`` in a dataset prepared before they were recorded)."""

    train_tokens: int
    val_tokens: int
    train_documents: int
    train_bytes: int = 0
    median_train_document_tokens: float | None = None
    distinct_train_tokens: int | None = None


def cached_counts(cache_root: Path, key: str) -> PreparedCounts | None:
    """The counts of prepared dataset ``key`` under ``cache_root``, or ``None`` when it is not prepared."""
    path = cache_root / key[:32] / PREPARED_JSON
    try:
        return msgspec.json.decode(path.read_bytes(), type=PreparedCounts)
    except (OSError, msgspec.DecodeError):
        return None


def pieces(lines: Iterable[str]) -> Iterator[str]:
    """``lines`` joined into pieces of about ``PIECE_CHARS`` characters of whole lines, as a document is
    encoded (the training process's dataset preparation and the dry run's sample alike)."""
    parts: list[str] = []
    size = 0
    for line in lines:
        parts.append(line)
        size += len(line)
        if size >= PIECE_CHARS:
            yield "".join(parts)
            parts, size = [], 0
    if parts:
        yield "".join(parts)
