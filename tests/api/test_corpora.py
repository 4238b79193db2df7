"""Corpus uploads through the real app and a real Redis: plain files and archives, refused archives,
``If-None-Match``, listing, the delete refused while a queued job reads the corpus, and a job refused while
its corpus is being deleted or replaced."""

from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from redis.asyncio import Redis

from mt_api.app import create_app
from mt_contracts import codec
from mt_contracts.corpora import CorpusInfo
from mt_contracts.settings import ApiSettings, CorpusSettings
from mt_storage.corpora import UPLOADS, CorpusGuard
from mt_storage.jobs import eval_jobs, run_jobs, tokenizer_jobs

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n"


@pytest.fixture
async def client(api_settings: ApiSettings, redis: Redis) -> AsyncIterator[AsyncTestClient[Litestar]]:
    limits = CorpusSettings(max_upload_bytes=200_000, max_expanded_bytes=300_000, max_files=5)
    settings = msgspec.structs.replace(api_settings, corpus=limits)
    async with AsyncTestClient(app=create_app(settings)) as client:
        yield client


def _tar(members: list[tarfile.TarInfo], data: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for member in members:
            content = data.get(member.name)
            archive.addfile(member, io.BytesIO(content) if content is not None else None)
    return buffer.getvalue()


def _file(name: str, content: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = len(content)
    return info


def _left(corpus_root: Path) -> list[str]:
    uploads = corpus_root / UPLOADS
    return sorted(p.name for p in uploads.iterdir()) if uploads.is_dir() else []


async def test_plain_upload_is_listed_shown_and_deleted(client: AsyncTestClient[Litestar], corpus_root: Path) -> None:
    body = TEXT.encode()
    response = await client.put("/corpora/citizens", content=body, headers={"content-type": "text/plain"})
    assert response.status_code == 201, response.text
    assert response.headers["location"] == "/corpora/citizens"
    info = codec.decode(response.content, CorpusInfo)
    assert (info.name, info.bytes, info.lines, info.upload_format) == ("citizens", len(body), 5, "txt")
    assert info.upload_sha256 == hashlib.sha256(body).hexdigest()
    assert [(f.path, f.size, f.sha256) for f in info.files] == [
        ("citizens.txt", len(body), hashlib.sha256(body).hexdigest())
    ]
    assert (corpus_root / "citizens" / "citizens.txt").read_bytes() == body
    listed = codec.decode((await client.get("/corpora")).content, list[CorpusInfo])
    assert listed == [info]
    assert codec.decode((await client.get("/corpora/citizens")).content, CorpusInfo) == info

    again = await client.put("/corpora/citizens", content=body, headers={"if-none-match": "*"})
    assert again.status_code == 412, again.text
    replaced = await client.put("/corpora/citizens", content=body + b"More.\n")
    assert replaced.status_code == 200, replaced.text
    assert codec.decode(replaced.content, CorpusInfo).lines == 6

    assert (await client.delete("/corpora/citizens")).status_code == 204
    assert (await client.get("/corpora/citizens")).status_code == 404
    assert not (corpus_root / "citizens").exists()
    assert (await client.delete("/corpora/citizens")).status_code == 404
    assert _left(corpus_root) == []


async def test_archives_expand_into_one_corpus(client: AsyncTestClient[Litestar], corpus_root: Path) -> None:
    jsonl = b'{"text": "one record"}\n{"text": "two\\nlines"}\n'
    tar = _tar(
        [_file("a/part1.txt", b"hello\n"), _file("a/b/part2.jsonl", jsonl)],
        {"a/part1.txt": b"hello\n", "a/b/part2.jsonl": jsonl},
    )
    response = await client.put("/corpora/mixed", content=tar, headers={"content-type": "application/gzip"})
    assert response.status_code == 201, response.text
    info = codec.decode(response.content, CorpusInfo)
    assert [f.path for f in info.files] == ["a/b/part2.jsonl", "a/part1.txt"]
    assert (info.lines, info.upload_format) == (4, "tar.gz")

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("x.txt", "zipped text\n")
    response = await client.put("/corpora/zipped", content=buffer.getvalue())
    assert response.status_code == 201, response.text
    assert codec.decode(response.content, CorpusInfo).upload_format == "zip"
    assert [c.name for c in codec.decode((await client.get("/corpora")).content, list[CorpusInfo])] == [
        "mixed",
        "zipped",
    ]


def _symlink() -> tarfile.TarInfo:
    info = tarfile.TarInfo("link.txt")
    info.type = tarfile.SYMTYPE
    info.linkname = "/etc/passwd"
    return info


def _device() -> tarfile.TarInfo:
    info = tarfile.TarInfo("null.txt")
    info.type = tarfile.CHRTYPE
    return info


def _hardlink(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE
    info.linkname = target
    return info


def _zip(name: str, mode: int) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        info = zipfile.ZipInfo(name)
        info.external_attr = mode << 16
        archive.writestr(info, "target.txt")
    return buffer.getvalue()


def _zip_files(names: list[str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in names:
            archive.writestr(name, "text\n")
    return buffer.getvalue()


def _tar_files(names: list[str]) -> bytes:
    return _tar([_file(name, b"text\n") for name in names], dict.fromkeys(names, b"text\n"))


BIG = b"x" * 100_000 + b"\n"
MALICIOUS: list[tuple[str, bytes, int, str]] = [
    ("absolute", _tar([_file("/tmp/evil.txt", b"x\n")], {"/tmp/evil.txt": b"x\n"}), 400, "absolute path"),
    ("dotdot", _tar([_file("../evil.txt", b"x\n")], {"../evil.txt": b"x\n"}), 400, "contains '..'"),
    ("symlink", _tar([_symlink()], {}), 400, "is a link"),
    # A hard link to a member before it, and one to a file outside the archive.
    (
        "hardlink",
        _tar([_file("a.txt", b"x\n"), _hardlink("b.txt", "a.txt")], {"a.txt": b"x\n"}),
        400,
        "'b.txt' is a link",
    ),
    ("hardlink-out", _tar([_hardlink("passwd.txt", "/etc/passwd")], {}), 400, "'passwd.txt' is a link"),
    ("file-then-folder", _tar_files(["a.txt", "a.txt/b.txt"]), 400, "'a.txt/b.txt' lies in 'a.txt', which the"),
    ("folder-then-file", _tar_files(["a.txt/b.txt", "a.txt"]), 400, "'a.txt' is a file where other members made"),
    ("deep-file-then-folder", _tar_files(["d/a.txt", "d/a.txt/e/b.txt"]), 400, "lies in 'd/a.txt', which"),
    ("long-name", _tar_files(["x" * 300 + ".txt"]), 400, "has a name too long for this file system"),
    ("zip-file-then-folder", _zip_files(["a.txt", "a.txt/b.txt"]), 400, "'a.txt/b.txt' lies in 'a.txt', which"),
    ("device", _tar([_device()], {}), 400, "device"),
    ("zip-symlink", _zip("link.txt", 0o120777), 400, "is a link"),
    ("zip-dotdot", _zip("a/../../evil.txt", 0o100644), 400, "contains '..'"),
    ("other-kind", _tar([_file("run.sh", b"x\n")], {"run.sh": b"x\n"}), 400, "not a .txt or .jsonl"),
    (
        "too-many",
        _tar([_file(f"f{i}.txt", b"x\n") for i in range(6)], {f"f{i}.txt": b"x\n" for i in range(6)}),
        413,
        "CORPUS__MAX_FILES",
    ),
    (
        "too-big-expanded",
        _tar([_file(f"b{i}.txt", BIG) for i in range(4)], {f"b{i}.txt": BIG for i in range(4)}),
        413,
        "CORPUS__MAX_EXPANDED_BYTES",
    ),
    ("too-big-upload", b"y" * 200_001, 413, "CORPUS__MAX_UPLOAD_BYTES"),
    ("not-utf8", b"fine\nbad \xff byte\n", 400, "evil.txt line 2 is not valid UTF-8"),
    ("bad-jsonl", b'{"text": "ok"}\nnot json\n', 400, "evil.jsonl line 2: not valid JSON"),
]


@pytest.mark.parametrize(("case", "body", "status", "message"), MALICIOUS, ids=[case[0] for case in MALICIOUS])
async def test_refused_uploads_leave_nothing(
    client: AsyncTestClient[Litestar], corpus_root: Path, case: str, body: bytes, status: int, message: str
) -> None:
    kind = "application/jsonl" if case == "bad-jsonl" else "application/octet-stream"
    response = await client.put("/corpora/evil", content=body, headers={"content-type": kind})
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]
    assert not (corpus_root / "evil").exists()
    assert not Path("/tmp/evil.txt").exists() or case != "absolute"
    assert _left(corpus_root) == []


async def test_bad_names_are_refused(client: AsyncTestClient[Litestar]) -> None:
    response = await client.put("/corpora/.hidden", content=b"x\n")
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "name"


async def test_delete_is_refused_while_a_queued_job_reads_the_corpus(
    client: AsyncTestClient[Litestar], corpus_root: Path
) -> None:
    assert (await client.put("/corpora/used", content=TEXT.encode() * 50)).status_code == 201
    # No worker runs: the job stays queued.
    queued = await client.post("/tokenizers/train", json={"corpus_path": "used", "vocab_size": 300})
    assert queued.status_code == 202, queued.text
    job_id = queued.json()["id"]
    refused = await client.delete("/corpora/used")
    assert refused.status_code == 409, refused.text
    assert job_id in refused.json()["detail"]
    assert (await client.put("/corpora/used", content=b"other\n")).status_code == 409
    assert (corpus_root / "used" / "used.txt").is_file()
    assert (await client.post(f"/tokenizers/{job_id}/cancel")).status_code == 200
    assert (await client.delete("/corpora/used")).status_code == 204


async def test_a_job_on_a_corpus_being_changed_is_failed_and_never_enqueued(
    client: AsyncTestClient[Litestar], api_settings: ApiSettings, redis: Redis
) -> None:
    assert (await client.put("/corpora/moving", content=TEXT.encode() * 50)).status_code == 201
    guard = CorpusGuard(redis, tokenizer_jobs(redis), run_jobs(redis), eval_jobs(redis))
    async with guard.changing("moving"):  # what a delete or a replacement of the corpus holds
        refused = await client.post("/tokenizers/train", json={"corpus_path": "moving", "vocab_size": 300})
    assert refused.status_code == 409, refused.text
    body = refused.json()
    assert body["errors"] == [{"field": "corpus_path", "message": body["detail"], "source": "body"}]
    assert "being deleted or replaced" in body["detail"]
    (failed,) = (await client.get("/tokenizers", params={"status": "failed"})).json()["items"]
    assert failed["error"]["code"] == "corpus_changing"
    assert failed["request"]["corpus_path"] == "moving"
    assert await redis.zcard(api_settings.queue.tokenizer) == 0
    # The change over, the same request is queued.
    queued = await client.post("/tokenizers/train", json={"corpus_path": "moving", "vocab_size": 300})
    assert queued.status_code == 202, queued.text
    assert await redis.zcard(api_settings.queue.tokenizer) == 1
