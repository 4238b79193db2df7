"""Atomic file writes and file digests.

A write goes to a temporary file in the destination's directory, is flushed and fsynced, then renamed over
the destination (``os.replace`` is atomic on POSIX), so a reader sees the old file or the new one, never a
half-written one.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from mt_contracts.manifests import FileEntry

_CHUNK = 1 << 20
FILE_MODE = 0o644


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, creating parent directories."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), FILE_MODE)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_move(source: Path, destination: Path) -> None:
    """Move a finished file into place atomically (same filesystem), fsyncing it first."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    with source.open("rb") as handle:
        os.fchmod(handle.fileno(), FILE_MODE)
        os.fsync(handle.fileno())
    os.replace(source, destination)
    fsync_dir(destination.parent)


def append_line(path: Path, line: bytes) -> None:
    """Append one complete line to ``path`` with a single ``write`` on an O_APPEND descriptor."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_entries(directory: Path, names: list[str]) -> list[FileEntry]:
    """Size and sha256 of each named file in ``directory``, in the order given."""
    return [
        FileEntry(path=name, size=(directory / name).stat().st_size, sha256=sha256_file(directory / name))
        for name in names
    ]


def fsync_dir(directory: Path) -> None:
    """Make a rename or a new entry in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
