"""API keys: with ``API__KEYS`` or ``API__READ_ONLY_KEYS`` set, every route except those marked
``opt={"public": True}`` (``/healthz``, ``/readyz``) needs ``Authorization: Bearer <key>``.

Errors follow RFC 6750 section 3: a request without a key answers 401 with a bare challenge, a key that is
not configured 401 with ``error="invalid_token"``, and a read-only key on a route that changes something
(any method but ``GET`` and ``HEAD``) 403 with ``error="insufficient_scope"``. Keys are compared in
constant time.

Browsers cannot set headers on ``EventSource`` or ``WebSocket`` connections, so the live-stream routes
(marked ``opt=QUERY_TOKEN``) also take the key as an ``access_token`` query parameter (RFC 6750 section
2.3); the access log redacts it (``redact_access_tokens``).
"""

from __future__ import annotations

import hmac
import logging
import re

from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.handlers.base import BaseRouteHandler
from litestar.types import Guard

from mt_api import Forbidden, Unauthorized

PUBLIC = {"public": True}
QUERY_TOKEN = {"query_token": True}
READ_METHODS = frozenset({"GET", "HEAD"})
_REALM = 'Bearer realm="model-trainer"'
_ACCESS_TOKEN = re.compile(r"(?<=[?&]access_token=)[^&#\s]*")


def _matches(sent: bytes, keys: list[bytes]) -> bool:
    # Compare against every key so the time taken does not say which key came close.
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(sent, key)
    return matched


def _sent_key(connection: ASGIConnection[object, object, object, State], handler: BaseRouteHandler) -> str:
    scheme, _, token = connection.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    if handler.opt.get("query_token"):
        return connection.query_params.get("access_token", "").strip()
    return ""


def key_guard(keys: list[str], read_only_keys: list[str]) -> Guard:
    """A Litestar guard accepting ``keys`` for every route and ``read_only_keys`` for reads (``GET``,
    ``HEAD`` and WebSocket streams); with no keys at all it admits every request."""
    full = [key.encode() for key in keys]
    read_only = [key.encode() for key in read_only_keys]

    def guard(connection: ASGIConnection[object, object, object, State], handler: BaseRouteHandler) -> None:
        if not (full or read_only) or handler.opt.get("public"):
            return
        sent = _sent_key(connection, handler)
        if not sent:
            where = " (or an access_token query parameter)" if handler.opt.get("query_token") else ""
            raise Unauthorized(
                f"this endpoint needs an API key: send 'Authorization: Bearer <key>'{where}",
                headers={"WWW-Authenticate": _REALM},
            )
        encoded = sent.encode()
        if _matches(encoded, full):
            return
        if not _matches(encoded, read_only):
            raise Unauthorized(
                "the API key is not valid; check API__KEYS and API__READ_ONLY_KEYS on the server",
                headers={"WWW-Authenticate": f'{_REALM}, error="invalid_token"'},
            )
        method = connection.scope.get("method", "GET")
        if method not in READ_METHODS:
            raise Forbidden(
                f"this API key is read-only (API__READ_ONLY_KEYS): {method} needs a key from API__KEYS",
                headers={"WWW-Authenticate": f'{_REALM}, error="insufficient_scope"'},
            )

    return guard


def redact_access_tokens(text: str) -> str:
    """``text`` with the value of every ``access_token`` query parameter replaced by ``***``."""
    return _ACCESS_TOKEN.sub("***", text)


class RedactAccessTokens(logging.Filter):
    """Removes ``access_token`` values from uvicorn's access log lines (their arguments hold the path with
    its query string)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact_access_tokens(arg) if isinstance(arg, str) else arg for arg in record.args)
        return True
