"""Request bodies: ``application/json`` only (415 otherwise, so a page on another site cannot start a job
with a CORS-free ``text/plain`` POST) and decoded strictly by ``mt_contracts.bodies``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import msgspec
from litestar import Request
from litestar.datastructures import State
from litestar.di import Provide

from mt_api import UnsupportedMediaType
from mt_contracts.bodies import BodyDecoder

T = TypeVar("T", bound=msgspec.Struct)

JSON = "application/json"


def check_json(request: Request[object, object, State]) -> None:
    """Raises ``UnsupportedMediaType`` unless the body is ``application/json`` (``charset=utf-8`` allowed)."""
    media_type, options = request.content_type
    charset = options.get("charset", "utf-8").lower()
    if media_type.lower() != JSON or charset not in {"utf-8", "utf8"}:
        sent = request.headers.get("content-type") or "no content type"
        raise UnsupportedMediaType(
            f"request bodies must be JSON: send 'Content-Type: application/json' (UTF-8), not {sent!r}"
        )


def json_body(struct_type: type[T]) -> Provide:
    """A dependency (name it ``payload``) that reads the request body as ``struct_type``.

    A route whose request has no required field also takes an empty body, of any content type, as ``{}``.
    """
    decoder = BodyDecoder(struct_type)

    async def provide(request: Request[object, object, State]) -> T:
        body = await request.body()
        if body.strip() or not decoder.allow_empty:
            check_json(request)
        return decoder.decode(body)

    provider: Callable[[Request[object, object, State]], Awaitable[T]] = provide
    return Provide(provider)
