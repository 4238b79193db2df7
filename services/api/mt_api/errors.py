"""The one place that maps errors to HTTP responses: every error, Litestar's own included, is RFC 9457
problem JSON (``application/problem+json``)::

    {"type": "urn:model-trainer:problem:invalid-field", "title": "Bad Request", "status": 400,
     "detail": "...", "instance": "/tokenizers/train", "request_id": "...",
     "errors": [{"field": "vocab_size", "message": "...", "source": "body"}]}

``type`` names the error class (``about:blank`` for plain HTTP errors such as 405); ``errors`` appears for
bad input only. A 5xx body never holds a path, an exception message or a traceback: the log has them, under
the same ``request_id``.
"""

from __future__ import annotations

import logging
from http import HTTPStatus

import msgspec
from litestar import Request, Response
from litestar.datastructures import State
from litestar.exceptions import HTTPException, ValidationException
from litestar.types import ExceptionHandlersMap
from redis.exceptions import RedisError

from mt_api import ApiError
from mt_api.tracing import request_id
from mt_contracts.bodies import InvalidBody
from mt_storage.store import StoreError

logger = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
_TYPE_PREFIX = "urn:model-trainer:problem:"


class FieldProblem(msgspec.Struct, frozen=True):
    """One unusable input: ``field`` is its path (``vocab_size``, ``special_tokens[1]``, ``limit``)."""

    field: str
    message: str
    source: str = "body"


class Problem(msgspec.Struct, frozen=True, omit_defaults=True):
    """An RFC 9457 problem details object."""

    type: str
    title: str
    status: int
    detail: str
    instance: str
    request_id: str
    errors: list[FieldProblem] | None = None


def problem_response(
    request: Request[object, object, State],
    status: int,
    detail: str,
    *,
    slug: str | None = None,
    errors: list[FieldProblem] | None = None,
    headers: dict[str, str] | None = None,
) -> Response[Problem]:
    """A problem JSON response for ``request``."""
    body = Problem(
        type=_TYPE_PREFIX + slug if slug else "about:blank",
        title=HTTPStatus(status).phrase,
        status=status,
        detail=detail,
        instance=request.url.path,
        request_id=request_id(request.scope),
        errors=errors,
    )
    return Response(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


def _api_error(request: Request[object, object, State], exc: ApiError) -> Response[Problem]:
    errors = [FieldProblem(field=field, message=message) for field, message in exc.problems] or None
    return problem_response(request, exc.status_code, exc.detail, slug=exc.slug, errors=errors, headers=exc.headers)


def _invalid_body(request: Request[object, object, State], exc: InvalidBody) -> Response[Problem]:
    errors = [FieldProblem(field=problem.field, message=problem.message) for problem in exc.problems]
    count = len(errors)
    detail = "the request body is not valid: " + (errors[0].message if count == 1 else f"{count} problems, see errors")
    return problem_response(request, 400, detail, slug="validation", errors=errors)


def _validation_errors(extra: object) -> list[FieldProblem]:
    problems = []
    for item in extra if isinstance(extra, list) else []:
        if isinstance(item, dict):
            key, message, source = item.get("key"), item.get("message"), item.get("source")
            problems.append(
                FieldProblem(
                    field=str(key) if key is not None else "",
                    message=str(message) if message is not None else "invalid value",
                    source=str(source) if source is not None else "body",
                )
            )
    return problems


def _http_exception(request: Request[object, object, State], exc: HTTPException) -> Response[Problem]:
    status = exc.status_code
    if status >= 500:
        return _internal(request, exc)
    if isinstance(exc, ValidationException):
        return problem_response(
            request,
            status,
            str(exc.detail),
            slug="validation",
            errors=_validation_errors(exc.extra),
            headers=exc.headers,
        )
    return problem_response(request, status, str(exc.detail), headers=exc.headers)


def _unavailable(request: Request[object, object, State], event: str, exc: Exception, detail: str) -> Response[Problem]:
    """503 problem JSON for a dependency that failed this request (logged with ``event``)."""
    logger.error(
        f"{event.replace('_', ' ')}",
        extra={"event": event, "path": request.url.path, "error": str(exc), "request_id": request_id(request.scope)},
    )
    return problem_response(request, 503, detail, slug="unavailable")


def _redis_error(request: Request[object, object, State], exc: RedisError) -> Response[Problem]:
    detail = "the job store (Redis) is unavailable; nothing was enqueued, retry shortly"
    return _unavailable(request, "redis_error", exc, detail)


def _store_error(request: Request[object, object, State], exc: StoreError) -> Response[Problem]:
    detail = "the artifact store (STORAGE__BACKEND=s3) failed this request; retry shortly or check the store"
    return _unavailable(request, "store_error", exc, detail)


def _internal(request: Request[object, object, State], exc: Exception) -> Response[Problem]:
    logger.error(
        "unhandled error",
        exc_info=exc,
        extra={"event": "internal_error", "path": request.url.path, "request_id": request_id(request.scope)},
    )
    detail = "the server failed to answer this request; report the request_id to the operator"
    return problem_response(request, 500, detail, slug="internal-error")


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    ApiError: _api_error,
    InvalidBody: _invalid_body,
    HTTPException: _http_exception,
    RedisError: _redis_error,
    StoreError: _store_error,
    Exception: _internal,
}
