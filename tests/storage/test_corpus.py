from __future__ import annotations

import os
from pathlib import Path

import pytest

from mt_storage import CorpusPathError
from mt_storage.corpus import CorpusDecodeError, iter_corpus_lines, resolve_corpus


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    (root / "books" / "b").mkdir(parents=True)
    (root / "one.txt").write_text("hello\n")
    (root / "books" / "z.txt").write_text("z\n")
    (root / "books" / "b" / "a.txt").write_text("a\n")
    (root / "books" / "notes.md").write_text("skip\n")
    return root


def test_a_file_resolves_to_itself(root: Path) -> None:
    assert resolve_corpus(root, "one.txt") == [(root / "one.txt").resolve()]


def test_a_directory_resolves_to_its_txt_files_sorted(root: Path) -> None:
    assert resolve_corpus(root, "books") == [(root / "books/b/a.txt").resolve(), (root / "books/z.txt").resolve()]


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("../outside.txt", "may not contain '..'"),
        ("books/../../outside.txt", "may not contain '..'"),
        ("/etc/passwd", "must be a relative path"),
        ("missing.txt", "does not exist"),
        ("books/notes.md", "is not a .txt file"),
    ],
)
def test_unusable_paths_are_refused_with_the_reason(root: Path, path: str, reason: str) -> None:
    with pytest.raises(CorpusPathError, match=reason):
        resolve_corpus(root, path)


def test_symlink_escape_is_refused(root: Path, tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("secret\n")
    os.symlink(tmp_path / "secret.txt", root / "link.txt")
    with pytest.raises(CorpusPathError, match="outside the corpus root"):
        resolve_corpus(root, "link.txt")


def test_sibling_folder_sharing_the_prefix_is_outside(tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    root.mkdir()
    sibling = tmp_path / "corpus-private"
    sibling.mkdir()
    (sibling / "x.txt").write_text("x\n")
    os.symlink(sibling, root / "shared")
    with pytest.raises(CorpusPathError, match="outside the corpus root"):
        resolve_corpus(root, "shared")


def test_lines_drop_the_bom_and_normalise_newlines(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_bytes(b"\xef\xbb\xbffirst\r\nsecond\rthird\nlast")
    assert list(iter_corpus_lines([path])) == ["first\n", "second\nthird\n", "last"]


def test_invalid_utf8_names_the_file_and_byte_offset(tmp_path: Path) -> None:
    path = tmp_path / "bad.txt"
    path.write_bytes(b"fine line\nbroken \xff here\n")
    with pytest.raises(CorpusDecodeError) as info:
        list(iter_corpus_lines([path]))
    assert info.value.offset == 17
    assert str(info.value) == "bad.txt is not valid UTF-8 at byte offset 17"
