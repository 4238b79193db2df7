from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from mt_contracts.tokenizers import CorpusFile, CorpusStats
from mt_storage import CorpusPathError
from mt_storage.corpus import (
    CorpusDecodeError,
    CorpusFormatError,
    CorpusReader,
    ResolvedCorpus,
    count_lines,
    iter_corpus_lines,
    resolve_corpus,
    resolve_corpus_files,
)


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
        ("books/notes.md", "is not a .txt or .jsonl file"),
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


def test_symlinks_in_a_folder_that_leave_the_root_are_skipped_and_named(root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret\n")
    os.symlink(outside / "secret.txt", root / "books" / "leak.txt")
    os.symlink(outside, root / "books" / "elsewhere")
    os.symlink(root / "one.txt", root / "books" / "inside.txt")  # stays inside: read
    assert resolve_corpus_files(root, "books") == ResolvedCorpus(
        files=[(root / "books/b/a.txt").resolve(), (root / "one.txt").resolve(), (root / "books/z.txt").resolve()],
        skipped=["books/elsewhere", "books/leak.txt"],
    )
    assert resolve_corpus(root, "books") == resolve_corpus_files(root, "books").files
    reader = CorpusReader(resolve_corpus(root, "books"), root=root.resolve(), skipped=["books/leak.txt"])
    assert list(reader.lines()) == ["a\n", "hello\n", "z\n"]
    assert reader.stats().skipped_files == ["books/leak.txt"]


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
    assert list(iter_corpus_lines([path])) == ["first\n", "second\n", "third\n", "last"]


def test_invalid_utf8_names_the_file_and_byte_offset(tmp_path: Path) -> None:
    path = tmp_path / "bad.txt"
    path.write_bytes(b"fine line\nbroken \xff here\n")
    with pytest.raises(CorpusDecodeError) as info:
        list(iter_corpus_lines([path]))
    assert info.value.offset == 17
    assert str(info.value) == (
        "bad.txt is not valid UTF-8 at byte offset 17; fix the file or send encoding_errors='replace'"
    )


def test_a_directory_includes_jsonl_files(root: Path) -> None:
    (root / "books" / "c.jsonl").write_text('{"text": "c"}\n')
    assert resolve_corpus(root, "books") == [
        (root / "books/b/a.txt").resolve(),
        (root / "books/c.jsonl").resolve(),
        (root / "books/z.txt").resolve(),
    ]


def test_reader_counts_skips_replaces_and_fingerprints(tmp_path: Path) -> None:
    files = {
        "a.txt": b"\xef\xbb\xbfcaf\xc3\xa9\r\nbad \xff\xfe byte\n",
        "b.txt": b" \n\t\n",
        "c.jsonl": b'{"text": "one\\ntwo", "id": 1}\n\n{"body": "x", "text": "three"}\n',
        "d.txt": b"",
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    reader = CorpusReader(
        [tmp_path / name for name in files], root=tmp_path, encoding_errors="replace", max_line_bytes=None
    )
    lines = list(reader.lines())
    assert lines == ["caf\u00e9\n", "bad \ufffd\ufffd byte\n", "one\n", "two\n", "three\n"]
    used_bytes = len(files["a.txt"]) + len(files["c.jsonl"])
    assert reader.stats() == CorpusStats(
        files=2,
        skipped_files=["b.txt", "d.txt"],
        bytes=used_bytes,
        characters=sum(len(line) for line in lines),
        lines=5,
        replaced_bytes=2,
        split_lines=0,
    )
    fingerprint = reader.fingerprint()
    assert fingerprint.files == [
        CorpusFile(path=name, size=len(data), sha256=hashlib.sha256(data).hexdigest()) for name, data in files.items()
    ]
    again = CorpusReader([tmp_path / name for name in files], root=tmp_path, encoding_errors="replace")
    list(again.lines())
    assert again.fingerprint().sha256 == fingerprint.sha256


def test_long_lines_are_split_at_whitespace_not_dropped(tmp_path: Path) -> None:
    path = tmp_path / "long.txt"
    line = "word " * 10 + "東京" * 10 + "\n"
    path.write_text("short\n" + line, encoding="utf-8")
    reader = CorpusReader([path], max_line_bytes=16)
    pieces = list(reader.lines())
    assert "".join(pieces) == "short\n" + line
    assert all(len(piece.encode()) <= 16 for piece in pieces)
    assert pieces[1:4] == ["word word word ", "word word word ", "word word word "]
    assert (reader.stats().split_lines, reader.stats().lines) == (1, len(pieces))


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b'{"text": "ok"}\n{"text": 3}\n', "line 2: expected an object with a string field 'text'"),
        (b"not json\n", "line 1: not valid JSON"),
    ],
)
def test_bad_jsonl_names_file_and_line(tmp_path: Path, content: bytes, problem: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    with pytest.raises(CorpusFormatError, match=problem):
        list(iter_corpus_lines([path]))


def _lines_one_by_one(data: bytes) -> list[str]:
    """The reading rules applied a line at a time: split after each ``\\n``, replace bad bytes, and split a
    line holding ``\\r`` after each ``\\r\\n`` and lone ``\\r``, which become ``\\n``."""
    lines: list[str] = []
    parts = data.removeprefix(b"\xef\xbb\xbf").split(b"\n")
    for index, part in enumerate(parts):
        raw = part if index == len(parts) - 1 else part + b"\n"
        text = raw.decode("utf-8", errors="replace")
        if "\r" in text:
            *ended, last = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
            lines.extend(piece + "\n" for piece in ended)
            lines.extend([last] if last else [])
        elif text:
            lines.append(text)
    return lines


def test_lines_across_read_blocks_match_reading_line_by_line(tmp_path: Path) -> None:
    # Over 2 MiB so that lines, a \r\n pair and a bad byte sit across the reader's 64 KiB blocks; \v, \x1c and
    # \u2028 end no line, even in a line that holds \r.
    rows = [f"line {i} caf\u00e9 \u6771\u4eac".encode() for i in range(120_000)]
    rows[1000] += b"\x0bvertical tab\x1cfile sep \xe2\x80\xa8 ls"
    rows[2000] += b"\r\x0bboth"
    rows[70_000] += b" bad \xff\xe6\x9d byte"
    data = b"\xef\xbb\xbf" + b"\n".join(rows) + b"\r\n" + b"x" * (300 << 10) + b"\rlast\r"
    path = tmp_path / "big.txt"
    path.write_bytes(data)
    reader = CorpusReader([path], encoding_errors="replace")
    lines = list(reader.lines())
    assert lines == _lines_one_by_one(data)
    assert reader.stats() == CorpusStats(
        files=1,
        skipped_files=[],
        bytes=len(data),
        characters=sum(len(line) for line in lines),
        lines=len(lines),
        replaced_bytes=3,
        split_lines=0,
    )
    assert reader.fingerprint().files == [
        CorpusFile(path="big.txt", size=len(data), sha256=hashlib.sha256(data).hexdigest())
    ]


def test_only_newlines_end_the_lines_of_a_jsonl_record(tmp_path: Path) -> None:
    # Form feed, U+2028 and NEL are text: str.splitlines would end lines at them.
    path = tmp_path / "pages.jsonl"
    path.write_bytes(b'{"text": "page1\\u000cpage2 x\\u2028y\\u0085z\\r\\nlast"}\n')
    reader = CorpusReader([path])
    assert list(reader.lines()) == ["page1\x0cpage2 x\u2028y\x85z\n", "last\n"]
    assert reader.stats().characters == 23


def test_count_lines_is_exact_for_text_files_and_a_bound_for_jsonl(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(b"\xef\xbb\xbfone\r\ntwo\rthree\n\nno end")
    (tmp_path / "b.jsonl").write_bytes(b'{"text": "x\\ny"}\n{"text": "z"}\n')
    files = [tmp_path / "a.txt", tmp_path / "b.jsonl"]
    read = len(list(CorpusReader(files).lines()))
    assert read == 8
    assert read <= count_lines(files) <= read + 2  # one line "without an end" counted per file


def test_files_of_unicode_whitespace_are_skipped_and_invalid_bytes_are_not(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("\u3000 \u00a0\n\u2003\t\n", encoding="utf-8")  # ideographic, no-break, em
    (tmp_path / "b.txt").write_bytes(b"  \xff\n")
    (tmp_path / "c.txt").write_text("text\n", encoding="utf-8")
    reader = CorpusReader(sorted(tmp_path.iterdir()), root=tmp_path, encoding_errors="replace")
    assert list(reader.lines()) == ["  \ufffd\n", "text\n"]
    assert reader.stats().skipped_files == ["a.txt"]


def test_a_file_with_only_cr_line_ends_is_read_a_block_at_a_time(tmp_path: Path) -> None:
    rows = [f"old mac line {i}" for i in range(200_000)]  # 3.4 MB
    path = tmp_path / "cr.txt"
    path.write_bytes("\r".join(rows).encode() + b"\r")
    batches = list(CorpusReader([path]).batches())
    assert len(batches) > 40 and max(map(len, batches)) < 5_000  # 64 KiB blocks, not one 3.4 MB block
    assert [line for batch in batches for line in batch] == [row + "\n" for row in rows]


@pytest.mark.parametrize(
    "line",
    [
        " ".join(f"word{i}" for i in range(700_000)),  # 6.7 MB of words
        "\u6771\u4eac\u00e9" * 800_000,  # 6.4 MB without a space: cut between characters
    ],
)
def test_a_line_longer_than_a_megabyte_comes_in_pieces(tmp_path: Path, line: str) -> None:
    path = tmp_path / "long.txt"
    path.write_text(f"short\n{line}\nend\n", encoding="utf-8")
    reader = CorpusReader([path])
    lines = list(reader.lines())
    pieces = lines[1:-1]
    assert lines[0] == "short\n" and lines[-1] == "end\n"
    assert "".join(pieces) == line + "\n"
    assert len(pieces) >= 6 and max(len(piece.encode()) for piece in pieces) <= (1 << 20) + (64 << 10)
    assert [piece.endswith("\n") for piece in pieces] == [False] * (len(pieces) - 1) + [True]
    if " " in line:
        assert all(piece.endswith(" ") for piece in pieces[:-1])
    assert reader.stats().split_lines == 0 and reader.stats().characters == len(line) + 11
    # With a line length limit, the pieces are split further; the long line counts once.
    limited = CorpusReader([path], max_line_bytes=4_000)
    assert "".join(limited.lines()) == f"short\n{line}\nend\n"
    assert limited.stats().split_lines == 1


def test_a_long_line_counts_once_as_split_whichever_piece_is_split_first(tmp_path: Path) -> None:
    path = tmp_path / "long.txt"
    path.write_bytes(b"a " + b"x" * (2 << 20) + b"\nshort\n")  # its first 1 MiB piece is "a "
    reader = CorpusReader([path], max_line_bytes=4192)
    assert "".join(reader.lines()) == path.read_text()
    assert reader.stats().split_lines == 1


def test_a_long_run_of_invalid_bytes_is_still_read_in_bounded_pieces(tmp_path: Path) -> None:
    path = tmp_path / "junk.txt"
    path.write_bytes(b"x" + b"\x80" * (3 << 20))  # continuation bytes without a lead byte, no line end
    reader = CorpusReader([path], encoding_errors="replace")
    pieces = list(reader.lines())
    assert max(map(len, pieces)) <= (1 << 20) + (64 << 10)
    assert "".join(pieces) == "x" + "\ufffd" * (3 << 20)
    assert reader.stats().replaced_bytes == 3 << 20


def test_invalid_utf8_far_into_a_file_names_its_byte_offset(tmp_path: Path) -> None:
    path = tmp_path / "bad.txt"
    data = b"\xef\xbb\xbf" + b"ok line\n" * 300_000 + b"broken \xff\n"
    path.write_bytes(data)
    with pytest.raises(CorpusDecodeError) as info:
        list(iter_corpus_lines([path]))
    assert info.value.offset == data.index(b"\xff")
