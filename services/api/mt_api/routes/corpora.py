"""Corpus routes: upload (streamed), list, show and delete uploaded corpora (``mt_storage.corpora``)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from litestar import Request, Response, delete, get, put
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.exceptions import ClientException, InternalServerException
from litestar.params import FromPath, HeaderParameter, QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_204_NO_CONTENT

from mt_api import Conflict, ContentTooLarge, InvalidField, NotFound, PreconditionFailed
from mt_api.services import Services
from mt_contracts.corpora import CorpusInfo, UploadFormat, is_corpus_name
from mt_storage.corpora import (
    CorpusExists,
    CorpusInUse,
    Staging,
    UploadRefused,
    UploadTooLarge,
)


def _name(name: str) -> str:
    if not is_corpus_name(name):
        raise InvalidField(
            f"corpus name {name!r} must be 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit",
            field="name",
        )
    return name


@put("/corpora/{name:str}", tags=["corpora"], request_max_body_size=None, status_code=HTTP_201_CREATED)
async def upload_corpus(
    name: FromPath[str],
    request: Request[object, object, State],
    services: NamedDependency[Services],
    upload_format: Annotated[
        UploadFormat | None,
        QueryParameter(
            name="format",
            description="txt, jsonl, tar.gz or zip; by default gzip and zip are recognised by their first "
            "bytes, JSONL by Content-Type application/jsonl or application/x-ndjson, and the rest is text.",
        ),
    ] = None,
    if_none_match: Annotated[
        str | None, HeaderParameter(name="If-None-Match", description="`*`: refuse (412) when the corpus exists.")
    ] = None,
) -> Response[CorpusInfo]:
    """Upload a corpus: a ``.txt`` or ``.jsonl`` file, or a ``.tar.gz``/``.zip`` of them, streamed to disk,
    validated as a job would read it (UTF-8, JSONL records; errors name the file and line), then committed
    whole. 201 when created, 200 when it replaced a corpus no job uses; an interrupted upload leaves nothing."""
    _name(name)
    if if_none_match is not None and if_none_match.strip() != "*":
        raise InvalidField("If-None-Match takes only '*' (refuse to replace an existing corpus)", field="If-None-Match")
    refuse_overwrite = if_none_match is not None
    corpora = services.corpora
    if refuse_overwrite and await asyncio.to_thread(corpora.exists, name):
        raise PreconditionFailed(f"corpus {name!r} exists (If-None-Match: *); delete it first or choose another name")
    declared = request.headers.get("content-length")
    staging = await asyncio.to_thread(Staging, corpora.root, name, services.settings.corpus)
    try:
        try:
            async for chunk in request.stream():
                await asyncio.to_thread(staging.write, chunk)
        except (ClientException, InternalServerException) as exc:  # the client went away mid-body
            raise InvalidField("the upload was interrupted; send it again", field="body") from exc
        if declared is not None and declared.isdigit() and int(declared) != staging.size:
            raise InvalidField(f"received {staging.size} of {declared} bytes; send the upload again", field="body")
        info = await asyncio.to_thread(staging.build, upload_format, request.content_type[0])
        overwrite = not refuse_overwrite
        # A replacement (and, with an object store, every commit: API pods share the name) takes the guard's
        # mark, so that no job reads the corpus meanwhile and two changes of one name never interleave.
        if corpora.shared or (overwrite and await asyncio.to_thread(corpora.exists, name)):
            async with services.corpus_guard.changing(name):
                replaced = await asyncio.to_thread(corpora.publish, staging, overwrite=overwrite)
        else:
            replaced = await asyncio.to_thread(corpora.publish, staging, overwrite=overwrite)
    except UploadTooLarge as exc:
        raise ContentTooLarge(str(exc), field="body") from exc
    except CorpusExists as exc:
        if refuse_overwrite:
            raise PreconditionFailed(str(exc)) from exc
        raise Conflict(str(exc), field="name") from exc
    except CorpusInUse as exc:
        raise Conflict(str(exc), field="name") from exc
    except UploadRefused as exc:
        raise InvalidField(str(exc), field="body") from exc
    finally:
        await asyncio.to_thread(staging.discard)
    location = f"/corpora/{name}"
    status = HTTP_200_OK if replaced else HTTP_201_CREATED
    return Response(info, status_code=status, headers={"Location": location})


@get("/corpora", tags=["corpora"])
async def list_uploaded(services: NamedDependency[Services]) -> list[CorpusInfo]:
    """The uploaded corpora by name: files, bytes, lines, sha256 and when each was created."""
    return await asyncio.to_thread(services.corpora.listing)


@get("/corpora/{name:str}", tags=["corpora"])
async def show_corpus(name: FromPath[str], services: NamedDependency[Services]) -> CorpusInfo:
    """One uploaded corpus: each file with size and sha256, bytes, lines, sha256, created time."""
    info = await asyncio.to_thread(services.corpora.read, _name(name))
    if info is None:
        raise NotFound(f"no uploaded corpus {name}; GET /corpora lists them")
    return info


@delete("/corpora/{name:str}", tags=["corpora"], status_code=HTTP_204_NO_CONTENT)
async def delete_corpus(name: FromPath[str], services: NamedDependency[Services]) -> None:
    """Delete an uploaded corpus. 409 while a queued or running job reads it."""
    corpora = services.corpora
    if await asyncio.to_thread(corpora.read, _name(name)) is None:
        raise NotFound(f"no uploaded corpus {name}; GET /corpora lists them")
    try:
        async with services.corpus_guard.changing(name):
            await asyncio.to_thread(corpora.remove, name)
    except CorpusInUse as exc:
        raise Conflict(str(exc), field="name") from exc


ROUTES = [upload_corpus, list_uploaded, show_corpus, delete_corpus]
