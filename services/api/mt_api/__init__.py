"""The HTTP gateway: validates requests, writes job records and enqueues jobs. It never trains.

Errors::

    ApiError                 an HTTP error with a status, a detail and, for bad input, the field
    ├── InvalidField         400: a request field is unusable; names the field and the fix
    ├── NotFound             404: no such tokenizer or run
    ├── Conflict             409: the request is valid but the referenced job is not ready
    └── Unavailable          503: the inference processes did not answer in time; retry later
"""

from __future__ import annotations


class ApiError(Exception):
    """Base of the gateway's HTTP errors; ``errors.py`` maps each to a response."""

    status_code = 500

    def __init__(self, detail: str, *, field: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field


class InvalidField(ApiError):
    status_code = 400


class NotFound(ApiError):
    status_code = 404


class Conflict(ApiError):
    status_code = 409


class Unavailable(ApiError):
    status_code = 503
