"""Artifact listing and downloads through the app: every RFC 9110 range form against exact bytes, and
every way a ``path`` could leave its artifact folder. Each test runs twice: on the shared filesystem
(``local``), and with an object store (``s3``: the item is written under another root, as by a worker in its
own pod, and uploaded to a bucket on the harness's S3 server; the API starts with an empty cache)."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import AsyncIterator
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path

import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from redis.asyncio import Redis

from mt_api.app import create_app
from mt_contracts.settings import ApiSettings
from mt_storage.layout import Layout
from mt_storage.store import Mirror, open_store

TOK = "tok_01JDQ8ZQ0000000000000000AA"
DATA = bytes(range(256)) * 40  # 10,240 bytes, every offset distinguishable within 256
URL = f"/artifacts/tokenizers/{TOK}/download?path=blob.bin"


@pytest.fixture(params=["local", "s3"])
def served(request: pytest.FixtureRequest, api_settings: ApiSettings, tmp_path: Path) -> ApiSettings:
    """The settings of the API under test: ``api_settings`` itself (local), or an API with its own empty
    cache root and the object store (s3)."""
    if request.param == "local":
        return api_settings
    storage = request.getfixturevalue("s3_settings")
    app = msgspec.structs.replace(
        api_settings.app,
        artifacts_root=str(tmp_path / "api-pod" / "artifacts"),
        runs_root=str(tmp_path / "api-pod" / "runs"),
    )
    return msgspec.structs.replace(api_settings, app=app, storage=storage)


@pytest.fixture
def item(api_settings: ApiSettings, served: ApiSettings) -> Path:
    """The item as its worker wrote it (under ``api_settings``' root), uploaded when there is a store."""
    directory = Path(api_settings.app.artifacts_root) / "tokenizers" / TOK
    (directory / "sub").mkdir(parents=True)
    (directory / "blob.bin").write_bytes(DATA)
    (directory / "sub" / "nested.json").write_bytes(b'{"a": 1}\n')
    (directory / ".blob.bin.tmp").write_bytes(b"partial")
    Mirror(open_store(served.storage), Layout.from_settings(api_settings.app)).push(directory)
    return directory


@pytest.fixture
async def client(served: ApiSettings, redis: Redis) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(app=create_app(served)) as client:
        yield client


async def test_listing_gives_sorted_paths_sizes_and_digests(client: AsyncTestClient[Litestar], item: Path) -> None:
    response = await client.get(f"/artifacts/tokenizers/{TOK}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["kind"], body["id"]) == ("tokenizers", TOK)
    files = [(f["path"], f["size"], f["sha256"]) for f in body["files"]]
    assert files == [
        ("blob.bin", len(DATA), hashlib.sha256(DATA).hexdigest()),
        ("sub/nested.json", 9, hashlib.sha256(b'{"a": 1}\n').hexdigest()),
    ]
    assert all(f["modified_at"].endswith("Z") for f in body["files"])


async def test_whole_file_with_validators(client: AsyncTestClient[Litestar], item: Path) -> None:
    response = await client.get(URL)
    assert response.status_code == 200
    assert response.content == DATA
    assert response.headers["content-length"] == str(len(DATA))
    assert response.headers["accept-ranges"] == "bytes"
    assert response.headers["etag"].startswith('"') and response.headers["last-modified"].endswith("GMT")


@pytest.mark.parametrize(
    ("header", "start", "stop"),
    [
        ("bytes=0-0", 0, 1),
        ("bytes=10-99", 10, 100),
        ("bytes=10000-", 10000, len(DATA)),
        ("bytes=-300", len(DATA) - 300, len(DATA)),
        ("bytes=-999999", 0, len(DATA)),
        ("bytes=10200-999999", 10200, len(DATA)),
        ("bytes=10239-10239", 10239, 10240),
        ("bytes=-0, 10-99", 10, 100),  # a zero-length suffix beside a satisfiable range is left out
    ],
)
async def test_single_ranges(client: AsyncTestClient[Litestar], item: Path, header: str, start: int, stop: int) -> None:
    response = await client.get(URL, headers={"Range": header})
    assert response.status_code == 206, response.text
    assert response.content == DATA[start:stop]
    assert response.headers["content-range"] == f"bytes {start}-{stop - 1}/{len(DATA)}"
    assert response.headers["content-length"] == str(stop - start)


@pytest.mark.parametrize("header", ["bytes=10240-", "bytes=20000-30000", "bytes=-0", "bytes=-000", "bytes=-0,-0"])
async def test_unsatisfiable_range_is_416_with_the_size(
    client: AsyncTestClient[Litestar], item: Path, header: str
) -> None:
    response = await client.get(URL, headers={"Range": header})
    assert response.status_code == 416
    assert response.headers["content-range"] == f"bytes */{len(DATA)}"
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 416
    head = await client.head(URL, headers={"Range": header})
    assert (head.status_code, head.headers["content-range"]) == (416, f"bytes */{len(DATA)}")


async def test_a_failed_if_range_sends_the_whole_file_even_for_bytes_minus_zero(
    client: AsyncTestClient[Litestar], item: Path
) -> None:
    response = await client.get(URL, headers={"Range": "bytes=-0", "If-Range": '"stale"'})
    assert (response.status_code, response.content) == (200, DATA)


@pytest.mark.parametrize("header", ["bytes=abc", "lines=0-5", "bytes=9-2", "bytes=5-9,0-1"])
async def test_unusable_range_headers_get_the_whole_file(
    client: AsyncTestClient[Litestar], item: Path, header: str
) -> None:
    response = await client.get(URL, headers={"Range": header})
    assert (response.status_code, response.content) == (200, DATA)


async def test_multiple_ranges_are_multipart_byteranges(client: AsyncTestClient[Litestar], item: Path) -> None:
    response = await client.get(URL, headers={"Range": "bytes=0-9,100-199,-5"})
    assert response.status_code == 206
    assert response.headers["content-length"] == str(len(response.content))
    match = re.fullmatch(r"multipart/byteranges; boundary=(\w+)", response.headers["content-type"])
    assert match is not None
    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + response.headers["content-type"].encode() + b"\r\n\r\n" + response.content
    )
    parts = [(part["Content-Range"], part.get_payload(decode=True)) for part in message.iter_parts()]
    size = len(DATA)
    assert parts == [
        (f"bytes 0-9/{size}", DATA[0:10]),
        (f"bytes 100-199/{size}", DATA[100:200]),
        (f"bytes {size - 5}-{size - 1}/{size}", DATA[-5:]),
    ]


async def test_if_range_with_etag_or_date(client: AsyncTestClient[Litestar], item: Path) -> None:
    first = await client.get(URL)
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    for validator in (etag, modified):
        response = await client.get(URL, headers={"Range": "bytes=5-9", "If-Range": validator})
        assert (response.status_code, response.content) == (206, DATA[5:10])
    for stale in ('"0-0"', f"W/{etag}", "Wed, 21 Oct 2015 07:28:00 GMT"):
        response = await client.get(URL, headers={"Range": "bytes=5-9", "If-Range": stale})
        assert (response.status_code, response.content) == (200, DATA)


async def test_head_has_the_headers_of_get_and_no_body(client: AsyncTestClient[Litestar], item: Path) -> None:
    whole = await client.head(URL)
    assert (whole.status_code, whole.content) == (200, b"")
    assert whole.headers["content-length"] == str(len(DATA))
    part = await client.head(URL, headers={"Range": "bytes=-10"})
    assert part.status_code == 206
    assert (part.headers["content-length"], part.headers["content-range"]) == ("10", "bytes 10230-10239/10240")


@pytest.mark.parametrize(
    "path",
    [
        "../" + TOK + "/blob.bin",
        "sub/../../secret.txt",
        "/etc/passwd",
        "%2e%2e/secret.txt",
        "%252e%252e%252fsecret.txt",
        "..%2fsecret.txt",
        "sub\\..\\..\\secret.txt",
        "escape",
        "sibling_link/secret.txt",
        "../" + TOK + "evil/secret.txt",
        "",
        ".",
    ],
)
async def test_paths_that_leave_the_folder_are_refused(
    client: AsyncTestClient[Litestar], item: Path, served: ApiSettings, path: str
) -> None:
    # The folder the API serves from: the item itself, or (s3) this API's cache of it, filled by a listing.
    assert (await client.get(f"/artifacts/tokenizers/{TOK}")).status_code == 200
    root = Path(served.app.artifacts_root)
    served_item = root / "tokenizers" / TOK
    (root / "secret.txt").write_text("secret")
    sibling = root / "tokenizers" / (TOK + "evil")
    sibling.mkdir(exist_ok=True)
    (sibling / "secret.txt").write_text("secret")
    if not (served_item / "escape").exists():
        os.symlink(root / "secret.txt", served_item / "escape")
        os.symlink(sibling, served_item / "sibling_link")
    response = await client.get(f"/artifacts/tokenizers/{TOK}/download", params={"path": path})
    assert 400 <= response.status_code < 500, response.text
    assert "secret" not in response.text
    assert str(root) not in response.text and str(root.parent) not in response.text
    assert response.json()["errors"][0]["field"] == "path"


async def test_percent_encoding_in_the_raw_query_is_decoded_once_then_refused(
    client: AsyncTestClient[Litestar], item: Path
) -> None:
    for raw in ("%2e%2e%2fsecret.txt", "%2E%2E/secret.txt", "sub%2f..%2f..%2fsecret.txt"):
        response = await client.get(f"/artifacts/tokenizers/{TOK}/download?path={raw}")
        assert response.status_code == 400, (raw, response.text)


@pytest.mark.parametrize(
    "url",
    [
        "/artifacts/tokenizers/not-an-id",
        "/artifacts/tokenizers/tok_01JDQ8ZQ0000000000000000AB",
        "/artifacts/models/" + TOK,
        "/artifacts/datasets/" + TOK,
        f"/artifacts/tokenizers/{TOK}/download?path=missing.bin",
        f"/artifacts/tokenizers/{TOK}/download?path=sub",
    ],
)
async def test_unknown_items_and_files_are_404(client: AsyncTestClient[Litestar], item: Path, url: str) -> None:
    response = await client.get(url)
    assert response.status_code == 404, response.text
    assert response.headers["content-type"] == "application/problem+json"
