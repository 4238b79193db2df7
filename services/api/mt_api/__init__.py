"""The HTTP gateway: validates requests, writes job records and enqueues jobs, streams job logs and serves
artifacts. It never trains.

Errors::

    ApiError                 an HTTP error with a status, a detail and, for bad input, the field
    ├── InvalidField         400: request fields are unusable; names each field and the fix
    ├── Unauthorized         401: no API key, or not a configured one (with ``WWW-Authenticate``)
    ├── Forbidden            403: a read-only API key on a route that changes something
    ├── NotFound             404: no such tokenizer, run or artifact file
    ├── Conflict             409: the request is valid but the referenced job is not ready
    ├── PreconditionFailed   412: ``If-None-Match: *`` and the corpus exists
    ├── ContentTooLarge      413: an upload passes a ``CORPUS__`` size or file-count limit
    ├── UnsupportedMediaType 415: a request body that is not ``application/json``
    ├── RangeNotSatisfiable  416: no requested byte range overlaps the file (``Content-Range: bytes */size``)
    └── Unavailable          503: the inference processes did not answer in time; retry later
"""

from __future__ import annotations


class ApiError(Exception):
    """Base of the gateway's HTTP errors; ``errors.py`` maps each to a problem JSON response."""

    status_code = 500
    slug = "internal-error"

    def __init__(
        self,
        detail: str,
        *,
        field: str | None = None,
        headers: dict[str, str] | None = None,
        problems: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field
        self.headers = headers or {}
        # Every (field, message) of a request with several unusable fields; else ``field`` alone.
        self.problems = problems if problems is not None else ([(field, detail)] if field else [])


class InvalidField(ApiError):
    status_code = 400
    slug = "invalid-field"


class Unauthorized(ApiError):
    status_code = 401
    slug = "unauthorized"


class Forbidden(ApiError):
    status_code = 403
    slug = "forbidden"


class NotFound(ApiError):
    status_code = 404
    slug = "not-found"


class Conflict(ApiError):
    status_code = 409
    slug = "conflict"


class PreconditionFailed(ApiError):
    status_code = 412
    slug = "precondition-failed"


class ContentTooLarge(ApiError):
    status_code = 413
    slug = "content-too-large"


class UnsupportedMediaType(ApiError):
    status_code = 415
    slug = "unsupported-media-type"


class RangeNotSatisfiable(ApiError):
    status_code = 416
    slug = "range-not-satisfiable"


class Unavailable(ApiError):
    status_code = 503
    slug = "unavailable"
