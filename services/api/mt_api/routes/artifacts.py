"""Artifact routes: list an item's files, download one with RFC 9110 byte ranges (``HEAD`` too)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from litestar import Response, get, head
from litestar.di import NamedDependency
from litestar.params import FromPath, HeaderParameter, Parameter
from litestar.response import Stream

from mt_api import NotFound, RangeNotSatisfiable
from mt_api.artifacts import (
    ArtifactListing,
    ByteRange,
    FileInfo,
    content_range,
    item_dir,
    list_files,
    multipart_body,
    plan_multipart,
    plan_ranges,
    read_ranges,
    resolve_file,
)
from mt_api.services import Services

FilePath = Annotated[str, Parameter(description="A file path as listed, relative to the item.")]
RangeHeader = Annotated[str | None, HeaderParameter(name="Range")]
IfRangeHeader = Annotated[str | None, HeaderParameter(name="If-Range")]


@get("/artifacts/{kind:str}/{item_id:str}", tags=["artifacts"])
async def list_artifact(
    kind: FromPath[str], item_id: FromPath[str], services: NamedDependency[Services]
) -> ArtifactListing:
    """The item's files (``kind`` ``tokenizers`` or ``models``): relative path, size, sha256 and modified
    time, sorted by path."""
    await _fetch(services, kind, item_id, everything=True)
    directory = item_dir(services.layout, kind, item_id)
    files = await asyncio.to_thread(list_files, directory, services.digests)
    return ArtifactListing(kind=kind, id=item_id, files=files)


async def _fetch(services: Services, kind: str, item_id: str, *, everything: bool) -> None:
    """With an object store, bring the item into this API's cache first: its committed files (once; they
    never change), and with ``everything`` what else the store holds under it (logs, evaluations, exports)."""
    if not services.mirror.enabled:
        return
    try:
        directory = item_dir(services.layout, kind, item_id, must_exist=False)
    except NotFound:
        return  # an unknown kind or id: item_dir answers it below
    if not await services.pull(directory) or everything:
        await services.pull(directory, committed=False)


def _answer(
    file: FileInfo, range_header: str | None, if_range: str | None, *, with_body: bool
) -> Stream | Response[None]:
    headers = {
        "Accept-Ranges": "bytes",
        "ETag": file.etag,
        "Last-Modified": file.last_modified,
        "Cache-Control": "no-cache",
    }
    ranges = plan_ranges(range_header, if_range, file)
    multipart = plan_multipart(ranges, file) if ranges is not None and len(ranges) > 1 else None
    if ranges == []:
        raise RangeNotSatisfiable(
            f"no requested range overlaps the file's {file.size} bytes",
            headers={**headers, "Content-Range": f"bytes */{file.size}"},
        )
    status = 206
    if ranges is None:
        status, length = 200, file.size
        headers["Content-Type"] = file.media_type
    elif len(ranges) == 1:
        (part,) = ranges
        length = part.stop - part.start
        headers["Content-Type"] = file.media_type
        headers["Content-Range"] = content_range(part, file.size)
    elif multipart is not None:
        length = multipart.length
        headers["Content-Type"] = f"multipart/byteranges; boundary={multipart.boundary}"
    headers["Content-Length"] = str(length)
    if not with_body:
        return Response(None, status_code=status, headers=headers)
    if ranges is not None and multipart is not None:
        body = multipart_body(file.path, ranges, multipart)
    else:
        body = read_ranges(file.path, ranges or [ByteRange(0, file.size)])
    return Stream(body, status_code=status, headers=headers)


@get("/artifacts/{kind:str}/{item_id:str}/download", tags=["artifacts"])
async def download_artifact(
    kind: FromPath[str],
    item_id: FromPath[str],
    path: FilePath,
    services: NamedDependency[Services],
    range_header: RangeHeader = None,
    if_range: IfRangeHeader = None,
) -> Stream | Response[None]:
    """One file of the item, streamed; ``Range`` (single, open-ended, suffix, several as
    multipart/byteranges) and ``If-Range`` as RFC 9110 specifies. With an object store the file is served
    from this API's verified cache of the item (docs/deploy.md says why)."""
    await _fetch(services, kind, item_id, everything=False)
    file = resolve_file(item_dir(services.layout, kind, item_id), path)
    return _answer(file, range_header, if_range, with_body=True)


@head("/artifacts/{kind:str}/{item_id:str}/download", tags=["artifacts"])
async def head_artifact(
    kind: FromPath[str],
    item_id: FromPath[str],
    path: FilePath,
    services: NamedDependency[Services],
    range_header: RangeHeader = None,
    if_range: IfRangeHeader = None,
) -> Response[None]:
    """The download's headers without its body."""
    await _fetch(services, kind, item_id, everything=False)
    file = resolve_file(item_dir(services.layout, kind, item_id), path)
    answer = _answer(file, range_header, if_range, with_body=False)
    if isinstance(answer, Stream):
        raise TypeError("a HEAD answer has no body")
    return answer


ROUTES = [list_artifact, download_artifact, head_artifact]
