"""The client's one error tree; every message says what happened and what to check::

ClientError
├── Unreachable            no answer from the API after the retries (connection refused, DNS, timeout)
├── IntegrityError         a downloaded file's sha256 differs from the artifact listing's
├── ProtocolError          the API answered something this client cannot read (a newer or other server)
└── ApiError               the API answered with an RFC 9457 problem (``problem`` keeps every field)
    ├── BadRequest         400: ``errors`` names each field and the fix
    ├── Unauthorized       401: no or unknown API key
    ├── Forbidden          403: a read-only key tried to write
    ├── NotFound           404
    ├── Conflict           409: the job is in the wrong state for the call
    ├── RangeNotSatisfiable 416
    ├── Unavailable        503 (still so after the retries)
    └── ServerError        any other 5xx
"""

from __future__ import annotations

import msgspec

PROBLEM_JSON = "application/problem+json"


class FieldError(msgspec.Struct, frozen=True):
    """One unusable input: ``field`` is its path (``vocab_size``, ``special_tokens[1]``, ``limit``),
    ``source`` where it came from (``body``, ``query``, ``header``, ``path``)."""

    field: str
    message: str
    source: str = "body"


class Problem(msgspec.Struct, frozen=True, kw_only=True):
    """An RFC 9457 problem details object as the API sends it (unknown fields tolerated)."""

    type: str = "about:blank"
    title: str = ""
    status: int = 0
    detail: str = ""
    instance: str = ""
    request_id: str = ""
    errors: list[FieldError] = msgspec.field(default_factory=list)


_problem_decoder = msgspec.json.Decoder(Problem)


class ClientError(Exception):
    """Base of every error this client raises."""


class Unreachable(ClientError):
    """The API could not be reached: check ``--url`` / ``MT_URL`` and that the stack runs (``make dev``)."""


class IntegrityError(ClientError):
    """A downloaded file does not match the sha256 of the artifact listing; it was not kept."""


class ProtocolError(ClientError):
    """The API's answer does not decode into the expected contract type."""


class ApiError(ClientError):
    """The API refused or failed a request; ``problem`` is its problem JSON, ``status`` the HTTP status."""

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        self.status = problem.status
        self.errors = problem.errors
        lines = [f"{problem.status} {problem.title}: {problem.detail}".strip()]
        lines += [f"  {error.field}: {error.message}" for error in problem.errors]
        if problem.request_id:
            lines.append(f"  (request_id {problem.request_id})")
        super().__init__("\n".join(lines))


class BadRequest(ApiError):
    """400: the input was refused; nothing was queued or written."""


class Unauthorized(ApiError):
    """401: send an API key (``--api-key`` / ``MT_API_KEY``)."""


class Forbidden(ApiError):
    """403: the key may only read."""


class NotFound(ApiError):
    """404: no such job, evaluation, checkpoint or file."""


class Conflict(ApiError):
    """409: the job is not in a state that allows the call."""


class RangeNotSatisfiable(ApiError):
    """416: no requested byte range overlaps the file."""


class Unavailable(ApiError):
    """503: Redis or the inference process did not answer; retry shortly."""


class ServerError(ApiError):
    """5xx: the server failed; report the ``request_id`` to the operator."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    416: RangeNotSatisfiable,
    503: Unavailable,
}


def api_error(status: int, content_type: str, body: bytes, path: str) -> ApiError:
    """The typed error for an answer with ``status`` >= 400: its problem JSON decoded, or, when the body is
    not problem JSON (a proxy's page), a problem built from the status."""
    problem: Problem | None = None
    if content_type.split(";", maxsplit=1)[0].strip() in {PROBLEM_JSON, "application/json"}:
        try:
            problem = _problem_decoder.decode(body)
        except msgspec.DecodeError:
            problem = None
    if problem is None or problem.status == 0:
        text = body.decode("utf-8", "replace").strip()[:500]
        problem = Problem(status=status, title="HTTP error", detail=text or f"HTTP {status}", instance=path)
    cls = _BY_STATUS.get(status, ServerError if status >= 500 else ApiError)
    return cls(problem)
