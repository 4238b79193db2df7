"""The one place that maps errors to HTTP responses.

Every error body has Litestar's shape: ``status_code``, ``detail`` and, for a field error, ``extra`` with
``key`` (the field) and ``message`` (what to change), the same shape Litestar gives its own body
validation errors.
"""

from __future__ import annotations

import logging

import msgspec
from litestar import Request, Response
from litestar.datastructures import State
from litestar.types import ExceptionHandlersMap
from redis.exceptions import RedisError

from mt_api import ApiError

logger = logging.getLogger(__name__)


class FieldProblem(msgspec.Struct, frozen=True):
    key: str
    message: str
    source: str = "body"


class ErrorBody(msgspec.Struct, frozen=True, omit_defaults=True):
    status_code: int
    detail: str
    extra: list[FieldProblem] | None = None


def _api_error(_: Request[object, object, State], exc: ApiError) -> Response[ErrorBody]:
    extra = [FieldProblem(key=exc.field, message=exc.detail)] if exc.field else None
    return Response(ErrorBody(status_code=exc.status_code, detail=exc.detail, extra=extra), status_code=exc.status_code)


def _redis_error(request: Request[object, object, State], exc: RedisError) -> Response[ErrorBody]:
    logger.error("redis unavailable", extra={"event": "redis_error", "path": request.url.path, "error": str(exc)})
    detail = "the job store (Redis) is unavailable; nothing was enqueued, retry shortly"
    return Response(ErrorBody(status_code=503, detail=detail), status_code=503)


EXCEPTION_HANDLERS: ExceptionHandlersMap = {ApiError: _api_error, RedisError: _redis_error}
