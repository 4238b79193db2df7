"""Request ids: every response carries ``X-Request-ID``, the client's own when it sent one (printable
ASCII, at most 128 characters), else a fresh one; error bodies repeat it as ``request_id``."""

from __future__ import annotations

import re
import uuid

from litestar.datastructures import MutableScopeHeaders
from litestar.types import Message, Scope

REQUEST_ID_HEADER = "x-request-id"
_STATE_KEY = "request_id"
_ACCEPTED = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")


def request_id(scope: Scope) -> str:
    """The request's id: decided once per connection and kept in the scope's state."""
    state = scope.setdefault("state", {})
    known = state.get(_STATE_KEY)
    if isinstance(known, str):
        return known
    sent = next((value.decode("latin-1") for name, value in scope.get("headers", []) if name == b"x-request-id"), "")
    chosen = sent if _ACCEPTED.fullmatch(sent) else uuid.uuid4().hex
    state[_STATE_KEY] = chosen
    return chosen


async def add_request_id(message: Message, scope: Scope) -> None:
    """``before_send`` hook: stamp ``X-Request-ID`` on every HTTP response, errors and 404s included."""
    if message["type"] == "http.response.start":
        headers = MutableScopeHeaders.from_message(message)
        headers[REQUEST_ID_HEADER] = request_id(scope)
