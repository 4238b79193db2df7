"""Resolve a user's corpus path inside the corpus root, refusing anything that escapes it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from mt_storage import CorpusPathError

CORPUS_SUFFIXES = frozenset({".txt"})


def resolve_corpus(corpus_root: Path, corpus_path: str) -> list[Path]:
    """The corpus files named by ``corpus_path``: one file, or every ``.txt`` file below a directory
    (recursive, sorted by relative path so the order is deterministic).

    ``corpus_path`` is relative to ``corpus_root``; after resolving symlinks it must stay inside the root.

    Raises:
        CorpusPathError: absolute path, ``..`` component, escape through a symlink, missing path, a file
            of another kind, or a directory holding no ``.txt`` file.
    """
    pure = PurePosixPath(corpus_path)
    if pure.is_absolute() or "\\" in corpus_path or "\x00" in corpus_path:
        raise CorpusPathError(
            f"corpus_path {corpus_path!r} must be a relative path inside the corpus root (APP__CORPUS_ROOT)"
        )
    if ".." in pure.parts:
        raise CorpusPathError(f"corpus_path {corpus_path!r} may not contain '..'")
    root = corpus_root.resolve()
    target = (root / pure).resolve()
    if not target.is_relative_to(root):
        raise CorpusPathError(f"corpus_path {corpus_path!r} resolves outside the corpus root")
    if not target.exists():
        raise CorpusPathError(f"corpus_path {corpus_path!r} does not exist in the corpus root")
    if target.is_file():
        if target.suffix not in CORPUS_SUFFIXES:
            raise CorpusPathError(f"corpus_path {corpus_path!r} is not a .txt file")
        return [target]
    files = sorted(
        (p for p in target.rglob("*") if p.suffix in CORPUS_SUFFIXES and p.is_file()),
        key=lambda p: p.relative_to(target).as_posix(),
    )
    inside = [p for p in files if p.resolve().is_relative_to(root)]
    if not inside:
        raise CorpusPathError(f"corpus_path {corpus_path!r} is a directory with no .txt file inside")
    return [p.resolve() for p in inside]


class CorpusDecodeError(CorpusPathError):
    """A corpus file is not valid UTF-8; ``path`` and ``offset`` (bytes from the file start) say where."""

    def __init__(self, path: Path, offset: int) -> None:
        super().__init__(f"{path.name} is not valid UTF-8 at byte offset {offset}")
        self.path = path
        self.offset = offset


_BOM = b"\xef\xbb\xbf"


def iter_corpus_lines(files: list[Path]) -> Iterator[str]:
    """Every line of ``files`` in order, as text ending in ``\\n`` (the last line of a file may not).

    Streams: memory does not grow with file size beyond the longest line. A UTF-8 byte order mark at the
    start of a file is dropped; ``\\r\\n`` and lone ``\\r`` become ``\\n``.

    Raises:
        CorpusDecodeError: a file holds bytes that are not UTF-8.
    """
    for path in files:
        offset = 0
        with path.open("rb") as handle:
            for raw in handle:
                chunk = raw[3:] if offset == 0 and raw.startswith(_BOM) else raw
                try:
                    text = chunk.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise CorpusDecodeError(path, offset + (len(raw) - len(chunk)) + exc.start) from exc
                offset += len(raw)
                if "\r" in text:
                    text = text.replace("\r\n", "\n").replace("\r", "\n")
                yield text
