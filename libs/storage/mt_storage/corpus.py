"""Corpus input: resolve a user's corpus path inside the corpus root (refusing anything that escapes it), and
read its ``.txt`` and ``.jsonl`` files as a stream of text lines with counts and a fingerprint."""

from __future__ import annotations

import codecs
import hashlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import NamedTuple, Protocol

import msgspec

from mt_contracts.requests import EncodingErrors
from mt_contracts.tokenizers import CorpusFile, CorpusFingerprint, CorpusStats
from mt_storage import CorpusPathError

CORPUS_SUFFIXES = frozenset({".txt", ".jsonl"})
_KINDS = "a .txt or .jsonl file"


class ResolvedCorpus(NamedTuple):
    """What a corpus path names: the files to read (resolved), and the names (relative to the root) of the
    symlinks below a folder that lead outside the root, which are skipped."""

    files: list[Path]
    skipped: list[str]


def resolve_corpus(corpus_root: Path, corpus_path: str) -> list[Path]:
    """The corpus files named by ``corpus_path`` (``resolve_corpus_files(...).files``).

    Raises:
        CorpusPathError: see ``resolve_corpus_files``.
    """
    return resolve_corpus_files(corpus_root, corpus_path).files


def resolve_corpus_files(corpus_root: Path, corpus_path: str) -> ResolvedCorpus:
    """The corpus files named by ``corpus_path``: one file, or every ``.txt``/``.jsonl`` file below a directory
    (recursive, sorted by relative path so the order is deterministic; symlinked folders are not entered).

    ``corpus_path`` is relative to ``corpus_root``; after resolving symlinks it must stay inside the root. Below
    a directory, a symlink to a corpus file or a folder outside the root is skipped and named in ``skipped``.

    Raises:
        CorpusPathError: absolute path, ``..`` component, escape through a symlink, missing path, a file
            of another kind, or a directory holding no ``.txt``/``.jsonl`` file.
    """
    pure = PurePosixPath(corpus_path)
    if pure.is_absolute() or "\\" in corpus_path or "\x00" in corpus_path:
        raise CorpusPathError(
            f"corpus_path {corpus_path!r} must be a relative path inside the corpus root (APP__CORPUS_ROOT)"
        )
    if ".." in pure.parts:
        raise CorpusPathError(f"corpus_path {corpus_path!r} may not contain '..'")
    root = corpus_root.resolve()
    try:
        target = (root / pure).resolve()
        exists = target.exists()
    except OSError as exc:  # a name longer than the filesystem allows, a symlink loop
        raise CorpusPathError(f"corpus_path {corpus_path!r} cannot be opened ({exc.strerror or exc})") from exc
    if not target.is_relative_to(root):
        raise CorpusPathError(f"corpus_path {corpus_path!r} resolves outside the corpus root")
    if not exists:
        raise CorpusPathError(f"corpus_path {corpus_path!r} does not exist in the corpus root {_holdings(root)}")
    if target.is_file():
        if target.suffix not in CORPUS_SUFFIXES:
            raise CorpusPathError(f"corpus_path {corpus_path!r} is not {_KINDS}")
        return ResolvedCorpus([target], [])
    files: list[Path] = []
    skipped: list[str] = []
    for path in sorted(target.rglob("*"), key=lambda p: p.relative_to(target).as_posix()):
        if path.is_symlink():
            resolved = path.resolve()
            if not resolved.is_relative_to(root):
                if resolved.is_dir() or path.suffix in CORPUS_SUFFIXES:
                    skipped.append(path.relative_to(root).as_posix())
                continue
        if path.suffix in CORPUS_SUFFIXES and path.is_file():
            files.append(path.resolve())
    if not files:
        raise CorpusPathError(f"corpus_path {corpus_path!r} is a directory with no .txt or .jsonl file inside")
    return ResolvedCorpus(files, skipped)


def _holdings(root: Path, shown: int = 5) -> str:
    """What the root holds, for a message: a few corpus names relative to it (never a server path)."""
    if not root.is_dir():
        return "(APP__CORPUS_ROOT), which does not exist on the server; create it or set APP__CORPUS_ROOT"
    names = sorted(
        f"{entry.name}/" if entry.is_dir() else entry.name
        for entry in root.iterdir()
        if not entry.name.startswith(".") and (entry.is_dir() or entry.suffix in CORPUS_SUFFIXES)
    )
    if not names:
        return "(APP__CORPUS_ROOT), which holds no .txt or .jsonl file yet; put the corpus there"
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return f"(APP__CORPUS_ROOT); it holds: {', '.join(names[:shown])}{more}"


class CorpusDecodeError(CorpusPathError):
    """A corpus file is not valid UTF-8; ``path`` and ``offset`` (bytes from the file start) say where."""

    def __init__(self, path: Path, offset: int) -> None:
        super().__init__(
            f"{path.name} is not valid UTF-8 at byte offset {offset}; fix the file or send encoding_errors='replace'"
        )
        self.path = path
        self.offset = offset


class CorpusFormatError(CorpusPathError):
    """A ``.jsonl`` line is not a JSON object with a string in the text field; ``path`` and ``line`` (1-based)
    say where."""

    def __init__(self, path: Path, line: int, problem: str) -> None:
        super().__init__(f"{path.name} line {line}: {problem}")
        self.path = path
        self.line = line


class _Digest(Protocol):
    def update(self, data: bytes, /) -> None: ...


_BOM = b"\xef\xbb\xbf"
_REPLACEMENT = "\ufffd"
_CHUNK = 1 << 20
# Lines are read a block at a time; a larger block saves no time and holds megabytes beside a tokenizer.
_LINE_BLOCK = 64 << 10
# A line longer than this is read in pieces of about this many bytes (see CorpusReader._text_lines).
_LONG_LINE_PIECE = 1 << 20


class CorpusReader:
    """Reads ``files`` in order as text lines, counting as it goes.

    ``.txt`` files yield their lines; ``.jsonl`` files yield the lines of each record's ``text_field`` (a
    record's last line always ends in ``\n``). A UTF-8 byte order mark at the start of a file is dropped;
    ``\r\n`` and lone ``\r`` become ``\n``; only these end a line. Invalid UTF-8 raises ``CorpusDecodeError`` with
    ``encoding_errors="strict"``; with ``"replace"`` each invalid sequence becomes U+FFFD and its bytes are
    counted. Empty and whitespace-only files are skipped (and listed). Lines longer than ``max_line_bytes``
    UTF-8 bytes are split, at the last whitespace that fits when there is one, and counted.

    Streams: memory does not grow with corpus size beyond a 64 KiB block (or the longest ``.jsonl`` record). A
    ``.txt`` line longer than 1 MiB comes in pieces of about 1 MiB, cut after a space or tab where there is
    one; each piece but the last lacks the ``\n``, and joined they are the line. The counters (``stats()``,
    ``fingerprint()``) are complete once ``lines()`` is exhausted.
    """

    def __init__(
        self,
        files: list[Path],
        *,
        root: Path | None = None,
        text_field: str = "text",
        encoding_errors: EncodingErrors = "strict",
        max_line_bytes: int | None = None,
        skipped: list[str] | None = None,
    ) -> None:
        self.files = files
        self.root = root
        self.text_field = text_field
        self.encoding_errors = encoding_errors
        self.max_line_bytes = max_line_bytes
        self.used_files = 0
        # Files not read: ``skipped`` (symlinks leaving the root, from ``resolve_corpus_files``), then blank ones.
        self.skipped_files: list[str] = list(skipped or [])
        self.bytes = 0
        self.characters = 0
        self.lines_read = 0
        self.replaced_bytes = 0
        self.split_lines = 0
        self.has_text = False
        self.finished = False
        # Whether the last batch ended inside a line (read in pieces, over 1 MiB) already counted in split_lines.
        self._open_line_split = False
        self._fingerprint: list[CorpusFile] = []

    def lines(self) -> Iterator[str]:
        """Every line of the corpus, as text ending in ``\n`` (the last line of a ``.txt`` file may not).

        Raises:
            CorpusDecodeError: invalid UTF-8 under ``encoding_errors="strict"``.
            CorpusFormatError: a ``.jsonl`` line is not an object with a string ``text_field``.
        """
        for batch in self.batches():
            yield from batch

    def batches(self) -> Iterator[list[str]]:
        """The lines of ``lines()`` in lists: a ``.txt`` file's come a block (64 KiB) at a time, since hashing,
        decoding and counting per line would cost a tokenizer job a tenth of its training time.

        Raises:
            CorpusDecodeError: invalid UTF-8 under ``encoding_errors="strict"``.
            CorpusFormatError: a ``.jsonl`` line is not an object with a string ``text_field``.
        """
        for path in self.files:
            digest = hashlib.sha256()
            size = path.stat().st_size
            if not _has_text(path):
                _hash_file(path, digest)
                self.skipped_files.append(self._name(path))
            else:
                self.used_files += 1
                self.bytes += size
                source = self._jsonl_lines(path, digest) if path.suffix == ".jsonl" else self._text_lines(path, digest)
                self._open_line_split = False
                for lines in source:
                    pieces = self._split(lines)
                    self.lines_read += len(pieces)
                    # all() stops at the first line that is not blank: after that, at once.
                    self.has_text = self.has_text or not all(map(str.isspace, pieces))
                    yield pieces
            self._fingerprint.append(CorpusFile(path=self._name(path), size=size, sha256=digest.hexdigest()))
        self.finished = True

    def stats(self) -> CorpusStats:
        """The counts so far (complete once ``lines()`` is exhausted)."""
        return CorpusStats(
            files=self.used_files,
            skipped_files=sorted(self.skipped_files),
            bytes=self.bytes,
            characters=self.characters,
            lines=self.lines_read,
            replaced_bytes=self.replaced_bytes,
            split_lines=self.split_lines,
        )

    def fingerprint(self) -> CorpusFingerprint:
        """Each file read with size and sha256, and one digest over all (complete once ``lines()`` is
        exhausted)."""
        overall = hashlib.sha256()
        for entry in self._fingerprint:
            overall.update(f"{entry.path}\0{entry.size}\0{entry.sha256}\n".encode())
        return CorpusFingerprint(files=list(self._fingerprint), sha256=overall.hexdigest())

    def _name(self, path: Path) -> str:
        if self.root is not None and path.is_relative_to(self.root):
            return path.relative_to(self.root).as_posix()
        return path.name

    def _text_lines(self, path: Path, digest: _Digest) -> Iterator[list[str]]:
        """The file's lines, one list per block of whole lines. A line longer than ``_LONG_LINE_PIECE`` bytes
        comes in pieces of about that size, cut after a space or tab where there is one (else between two
        characters); only the last piece ends in ``\n``."""
        offset = 0
        pending: list[bytes] = []
        pending_size = 0
        with path.open("rb") as handle:
            while block := handle.read(_LINE_BLOCK):
                digest.update(block)
                cut = _after_last_line_end(block)
                if cut == 0:
                    pending.append(block)
                    pending_size += len(block)
                    if pending_size < _LONG_LINE_PIECE:
                        continue
                    # A line without an end in sight: hand on a piece of it, so memory stays bounded.
                    data = b"".join(pending)
                    cut = _piece_end(data)
                    pending, pending_size = [data[cut:]], len(data) - cut
                    yield self._block_lines(data[:cut], path, offset)
                    offset += cut
                    continue
                data = b"".join([*pending, block[:cut]]) if pending else block[:cut]
                pending = [block[cut:]] if cut < len(block) else []
                pending_size = len(block) - cut
                yield self._block_lines(data, path, offset)
                offset += len(data)
        if pending:
            yield self._block_lines(b"".join(pending), path, offset)

    def _block_lines(self, data: bytes, path: Path, offset: int) -> list[str]:
        """The lines of ``data`` (whole lines found ``offset`` bytes into ``path``): split after each ``\n``,
        ``\r\n`` and lone ``\r``, which become ``\n``; no other character ends a line."""
        if offset == 0 and data.startswith(_BOM):
            data, offset = data[3:], 3
        text = self._decode(data, path, offset)
        lines = text.splitlines(keepends=True)
        self.characters += len(text) - text.count("\r\n") if "\r" in text else len(text)
        # Without \r, one line per \n (and one for a last line without it) means no other boundary split.
        if "\r" not in text and len(lines) == text.count("\n") + (not text.endswith("\n")):
            return lines
        parts = text.split("\n")
        lines = []
        for index, part in enumerate(parts):
            line = part if index == len(parts) - 1 else part + "\n"
            if "\r" in line:
                *ended, last = line.replace("\r\n", "\n").replace("\r", "\n").split("\n")
                lines.extend(piece + "\n" for piece in ended)
                if last:
                    lines.append(last)
            elif line:
                lines.append(line)
        return lines

    def _jsonl_lines(self, path: Path, digest: _Digest) -> Iterator[list[str]]:
        offset = 0
        with path.open("rb") as handle:
            for number, raw in enumerate(handle, start=1):
                digest.update(raw)
                chunk = raw[3:] if offset == 0 and raw.startswith(_BOM) else raw
                text = self._decode(chunk, path, offset + len(raw) - len(chunk))
                offset += len(raw)
                if not text.strip():
                    continue
                try:
                    record = msgspec.json.decode(text)
                except msgspec.DecodeError as exc:
                    raise CorpusFormatError(path, number, f"not valid JSON ({exc})") from exc
                value = record.get(self.text_field) if isinstance(record, dict) else None
                if not isinstance(value, str):
                    raise CorpusFormatError(
                        path, number, f"expected an object with a string field {self.text_field!r} (text_field)"
                    )
                if "\r" in value:
                    value = value.replace("\r\n", "\n").replace("\r", "\n")
                *ended, last = value.split("\n")
                lines = [line + "\n" for line in ended]
                if last:
                    lines.append(last + "\n")
                self.characters += sum(map(len, lines))
                yield lines

    def _decode(self, chunk: bytes, path: Path, offset: int) -> str:
        """``chunk`` as text; ``offset`` is where it starts in the file. Under ``"replace"`` each invalid
        sequence becomes one U+FFFD (Python's decoder finds them, in one pass) and its bytes are counted."""
        try:
            return chunk.decode("utf-8")
        except UnicodeDecodeError as exc:
            if self.encoding_errors == "strict":
                raise CorpusDecodeError(path, offset + exc.start) from exc
        text = chunk.decode("utf-8", errors="replace")
        # The decoded bytes are the valid ones; U+FFFD the chunk held itself (EF BF BD) is not a replacement.
        added = text.count(_REPLACEMENT) - chunk.count(_REPLACEMENT.encode())
        self.replaced_bytes += len(chunk) - (len(text.encode()) - len(_REPLACEMENT.encode()) * added)
        return text

    def _split(self, lines: list[str]) -> list[str]:
        """``lines`` with each line longer than ``max_line_bytes`` UTF-8 bytes split into pieces that fit. A line
        read in pieces (over 1 MiB) counts once in ``split_lines``, whichever of its pieces is split first."""
        limit = self.max_line_bytes
        if limit is None or not lines:
            return lines
        # The first line goes on from the last batch's, which was split already (never across files).
        already_counted = self._open_line_split
        if max(map(len, lines)) * 4 <= limit:
            self._open_line_split = already_counted and len(lines) == 1 and not lines[0].endswith("\n")
            return lines
        pieces: list[str] = []
        split = False  # whether the last line was split (or is a piece of a line counted before)
        for index, line in enumerate(lines):
            split = index == 0 and already_counted
            if len(line) * 4 <= limit or len(data := line.encode()) <= limit:
                pieces.append(line)
                continue
            if not split:
                self.split_lines += 1
                split = True
            start = 0
            while len(data) - start > limit:
                # The longest run of whole characters that fits in ``limit`` bytes, cut after its last space or
                # tab when it holds one (past its first byte).
                end = start + limit
                while data[end] & 0xC0 == 0x80:  # a UTF-8 continuation byte: back off to the character's start
                    end -= 1
                space = max(data.rfind(b" ", start, end), data.rfind(b"\t", start, end))
                end = space + 1 if space > start else end
                pieces.append(data[start:end].decode("utf-8"))
                start = end
            if start < len(data):
                pieces.append(data[start:].decode("utf-8"))
        self._open_line_split = split and not lines[-1].endswith("\n")
        return pieces


def _has_text(path: Path) -> bool:
    """True when the file holds a character that is not whitespace (``str.isspace``: U+3000 and no-break
    space are whitespace too) after its BOM; bytes that are not UTF-8 count as text, for reading to report.
    Stops at the first chunk that holds some."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    with path.open("rb") as handle:
        chunk = handle.read(_CHUNK)
        chunk = chunk[3:] if chunk.startswith(_BOM) else chunk
        while chunk:
            if chunk.strip():  # not all ASCII whitespace: decode to know
                text = decoder.decode(chunk)
                if text and not text.isspace():
                    return True
            chunk = handle.read(_CHUNK)
    return bool(decoder.decode(b"", final=True).strip())


def _after_last_line_end(block: bytes) -> int:
    """Where the last whole line of ``block`` ends: after its last ``\n``, else after its last ``\r`` that is
    not its last byte (one there may be the first half of ``\r\n``); 0 when it holds no line end."""
    newline = block.rfind(b"\n")
    if newline >= 0:
        return newline + 1
    return block.rfind(b"\r", 0, len(block) - 1) + 1


def _piece_end(data: bytes) -> int:
    """Where to cut a piece off the start of ``data``, a part of one long line: after its last space or tab,
    else before its last character (never inside a UTF-8 sequence); always between 1 and ``len(data) - 1``
    for ``data`` of at least 2 bytes."""
    space = max(data.rfind(b" ", 0, len(data) - 1), data.rfind(b"\t", 0, len(data) - 1))
    if space >= 0:
        return space + 1
    end = len(data) - 1
    # A UTF-8 character is at most 4 bytes: past 3 continuation bytes the data is not UTF-8 anyway.
    for _ in range(3):
        if end > 1 and data[end] & 0xC0 == 0x80:
            end -= 1
    return end


def _hash_file(path: Path, digest: _Digest) -> None:
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)


def count_lines(files: list[Path], max_line_bytes: int | None = None) -> int:
    """About how many lines ``CorpusReader(files, max_line_bytes=...)`` yields, from a quick pass over the bytes
    (line ends, and escaped ones in ``.jsonl``) rather than the reading itself: exact for ``.txt`` files without
    lines longer than ``max_line_bytes``, to which it adds one line per ``max_line_bytes // 2`` bytes (more than
    splitting makes of text with spaces). 50 MB: 0.04 s."""
    lines = 0
    for path in files:
        size = path.stat().st_size
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                lines += chunk.count(b"\n")
                if path.suffix == ".jsonl":
                    lines += chunk.count(b"\\n") + chunk.count(b"\\r") + chunk.count(b"\\u")
                elif b"\r" in chunk:
                    lines += chunk.count(b"\r") - chunk.count(b"\r\n")
        lines += 1 + size // _LONG_LINE_PIECE  # a last line without an end; pieces of lines over 1 MiB
        if max_line_bytes is not None:
            lines += size // max(1, max_line_bytes // 2)
    return lines


def iter_corpus_lines(
    files: list[Path],
    *,
    text_field: str = "text",
    encoding_errors: EncodingErrors = "strict",
    max_line_bytes: int | None = None,
) -> Iterator[str]:
    """Every line of ``files`` in order (see ``CorpusReader``), without the counts.

    Raises:
        CorpusDecodeError: a file holds bytes that are not UTF-8 (under ``encoding_errors="strict"``).
        CorpusFormatError: a ``.jsonl`` line is not an object with a string ``text_field``.
    """
    reader = CorpusReader(files, text_field=text_field, encoding_errors=encoding_errors, max_line_bytes=max_line_bytes)
    return reader.lines()
