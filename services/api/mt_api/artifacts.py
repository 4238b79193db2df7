"""Artifact files over HTTP: listing an item's folder, confining a requested path to it, and planning
RFC 9110 byte-range answers (parsing by Werkzeug's ``parse_range_header``).

Containment: the kind is ``tokenizers`` or ``models`` and the id must match its kind's pattern; ``path``
is relative, has no ``.``/``..`` component, no backslash, NUL or ``%`` (a percent-encoded dot or slash that
survived the query's one decoding), and must resolve, symlinks followed, to a regular file inside the item
folder (component-wise, so a sibling folder sharing the id as a prefix is outside). Messages never name a
server path.
"""

from __future__ import annotations

import asyncio
import mimetypes
import os
import re
import secrets
import stat
from collections import OrderedDict
from collections.abc import AsyncGenerator
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import NamedTuple

import msgspec
from werkzeug.http import http_date, parse_if_range_header, parse_range_header

from mt_api import InvalidField, NotFound
from mt_contracts.ids import is_run_id, is_tokenizer_id
from mt_storage.files import sha256_file
from mt_storage.layout import Layout

CHUNK = 256 * 1024
MAX_RANGES = 32
KINDS = ("tokenizers", "models")


class ArtifactFile(msgspec.Struct, frozen=True, kw_only=True):
    """One file: ``path`` relative to the item folder (``/``-separated), ``size`` in bytes, hex ``sha256``,
    ``modified_at`` UTC."""

    path: str
    size: int
    sha256: str
    modified_at: datetime


class ArtifactListing(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /artifacts/{kind}/{id}``: the item's files sorted by path."""

    kind: str
    id: str
    files: list[ArtifactFile]


class FileInfo(NamedTuple):
    """What a download answer is planned from: the resolved file, its size, validators and media type."""

    path: Path
    size: int
    etag: str
    last_modified: str
    media_type: str


class ByteRange(NamedTuple):
    """Bytes ``start`` to ``stop`` (exclusive)."""

    start: int
    stop: int


def item_dir(layout: Layout, kind: str, item_id: str, *, must_exist: bool = True) -> Path:
    """The item's folder.

    Raises:
        NotFound: an unknown kind, an id not matching its kind's pattern, or (``must_exist``) no such folder.
    """
    if kind == "tokenizers" and is_tokenizer_id(item_id):
        directory = layout.tokenizer_dir(item_id)
    elif kind == "models" and is_run_id(item_id):
        directory = layout.model_dir(item_id)
    elif kind not in KINDS:
        raise NotFound(f"no artifact kind {kind!r}; use tokenizers or models")
    else:
        raise NotFound(f"no {kind} artifact {item_id}")
    if must_exist and not directory.is_dir():
        raise NotFound(f"no {kind} artifact {item_id}")
    return directory


class DigestCache:
    """sha256 digests by (path, inode, size, modification time), so a listing hashes each file once."""

    def __init__(self, capacity: int = 4096) -> None:
        self._capacity = capacity
        self._digests: OrderedDict[tuple[str, int, int, int], str] = OrderedDict()

    def digest(self, path: Path, info: os.stat_result) -> str:
        key = (str(path), info.st_ino, info.st_size, info.st_mtime_ns)
        known = self._digests.get(key)
        if known is None:
            known = sha256_file(path)
            self._digests[key] = known
            if len(self._digests) > self._capacity:
                self._digests.popitem(last=False)
        self._digests.move_to_end(key)
        return known


def list_files(directory: Path, digests: DigestCache) -> list[ArtifactFile]:
    """Regular files under ``directory`` (symlinks and hidden temporary files left out), sorted by path.
    Blocking: call it in a thread."""
    files = []
    for root, dirs, names in os.walk(directory):
        dirs[:] = [name for name in dirs if not name.startswith(".")]
        for name in names:
            full = Path(root) / name
            info = full.lstat()
            if name.startswith(".") or not stat.S_ISREG(info.st_mode):
                continue
            files.append(
                ArtifactFile(
                    path=full.relative_to(directory).as_posix(),
                    size=info.st_size,
                    sha256=digests.digest(full, info),
                    modified_at=datetime.fromtimestamp(info.st_mtime, UTC),
                )
            )
    return sorted(files, key=lambda entry: entry.path)


def resolve_file(directory: Path, path: str) -> FileInfo:
    """The file ``path`` names inside ``directory``.

    Raises:
        InvalidField: ``path`` is empty, absolute, has a ``.``/``..`` component, a backslash, NUL or ``%``, or
            resolves outside the folder.
        NotFound: no regular file there.
    """
    if not path:
        raise InvalidField("path is required: a file path relative to the artifact folder", field="path")
    if any(char in path for char in "%\\\x00"):
        raise InvalidField("path may not contain '%', '\\' or NUL; send the path as listed", field="path")
    pure = PurePosixPath(path)
    if pure.is_absolute():
        raise InvalidField("path must be relative to the artifact folder, as listed", field="path")
    if any(part in {".", ".."} for part in path.split("/")):
        raise InvalidField("path may not contain '.' or '..' components", field="path")
    base = directory.resolve()
    target = (base / pure).resolve()
    if not target.is_relative_to(base) or target == base:
        raise InvalidField("path leads outside the artifact folder", field="path")
    try:
        info = target.stat()
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise NotFound(f"no file {path!r} in this artifact") from exc
    if not stat.S_ISREG(info.st_mode):
        raise NotFound(f"no file {path!r} in this artifact")
    media_type = mimetypes.guess_type(pure.name)[0] or "application/octet-stream"
    return FileInfo(
        path=target,
        size=info.st_size,
        etag=f'"{info.st_size:x}-{info.st_mtime_ns:x}"',
        last_modified=http_date(info.st_mtime),
        media_type=media_type,
    )


def plan_ranges(range_header: str | None, if_range: str | None, file: FileInfo) -> list[ByteRange] | None:
    """The byte ranges to send: ``None`` for the whole file (no usable ``Range``, a failed ``If-Range``,
    more than ``MAX_RANGES`` ranges), an empty list when none is satisfiable (416), else the ranges with
    suffixes resolved and ends clamped to the file."""
    if range_header is None:
        return None
    if if_range is not None and not _if_range_holds(if_range, file):
        return None
    range_header = _without_empty_suffixes(range_header)
    if range_header is None:
        return []
    parsed = parse_range_header(range_header)
    if parsed is None or parsed.units != "bytes" or len(parsed.ranges) > MAX_RANGES:
        return None
    size = file.size
    ranges = []
    for start, stop in parsed.ranges:
        if start < 0:
            begin, end = max(0, size + start), size
        else:
            begin, end = start, size if stop is None else min(stop, size)
        if begin < end:
            ranges.append(ByteRange(begin, end))
    return ranges


_EMPTY_SUFFIX = re.compile(r"-0+")


def _without_empty_suffixes(range_header: str) -> str | None:
    """``range_header`` less its zero-length suffix ranges (``-0``), which are valid syntax but satisfy no byte
    (RFC 9110 §14.1.1; Werkzeug refuses the whole header for them); ``None`` when only such ranges remain."""
    units, sep, spec = range_header.partition("=")
    if not sep or units.strip().lower() != "bytes":
        return range_header
    parts = [part.strip() for part in spec.split(",")]
    kept = [part for part in parts if not _EMPTY_SUFFIX.fullmatch(part)]
    if len(kept) == len(parts):
        return range_header
    return f"bytes={','.join(kept)}" if kept else None


def _if_range_holds(if_range: str, file: FileInfo) -> bool:
    """RFC 9110 §13.1.5: a strong ETag equal to the file's, or a date equal to its Last-Modified."""
    value = if_range.strip()
    if value.startswith("W/"):
        return False
    if value.startswith('"'):
        return value == file.etag
    condition = parse_if_range_header(value)
    return condition.date is not None and http_date(condition.date) == file.last_modified


def content_range(part: ByteRange, size: int) -> str:
    return f"bytes {part.start}-{part.stop - 1}/{size}"


class Multipart(NamedTuple):
    """A multipart/byteranges body plan: the boundary, each part's header bytes and the exact length."""

    boundary: str
    heads: list[bytes]
    length: int


def plan_multipart(ranges: list[ByteRange], file: FileInfo) -> Multipart:
    boundary = secrets.token_hex(16)
    heads = [
        (
            f"--{boundary}\r\nContent-Type: {file.media_type}\r\n"
            f"Content-Range: {content_range(part, file.size)}\r\n\r\n"
        ).encode()
        for part in ranges
    ]
    closing = f"--{boundary}--\r\n".encode()
    length = sum(len(head) + (part.stop - part.start) + 2 for head, part in zip(heads, ranges, strict=True))
    return Multipart(boundary=boundary, heads=heads, length=length + len(closing))


async def read_ranges(path: Path, ranges: list[ByteRange]) -> AsyncGenerator[bytes, None]:
    """The bytes of ``ranges`` of ``path`` in ``CHUNK``-sized pieces, each read in a thread, so memory stays
    constant whatever the file size."""
    fd = await asyncio.to_thread(os.open, path, os.O_RDONLY)
    try:
        for part in ranges:
            position = part.start
            while position < part.stop:
                chunk = await asyncio.to_thread(os.pread, fd, min(CHUNK, part.stop - position), position)
                if not chunk:
                    return
                yield chunk
                position += len(chunk)
    finally:
        os.close(fd)


async def multipart_body(path: Path, ranges: list[ByteRange], plan: Multipart) -> AsyncGenerator[bytes, None]:
    """A multipart/byteranges body for ``ranges`` of ``path``."""
    for head, part in zip(plan.heads, ranges, strict=True):
        yield head
        async for chunk in read_ranges(path, [part]):
            yield chunk
        yield b"\r\n"
    yield f"--{plan.boundary}--\r\n".encode()
