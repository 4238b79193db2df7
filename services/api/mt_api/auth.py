"""API keys: with ``API__KEYS`` or ``API__READ_ONLY_KEYS`` set, every route except those marked
``opt={"public": True}`` (``/healthz``, ``/readyz``, the dashboard's pages and assets under ``/ui``) needs
``Authorization: Bearer <key>``.

Errors follow RFC 6750 section 3: a request without a key answers 401 with a bare challenge, a key that is
not configured 401 with ``error="invalid_token"``, and a read-only key on a route that changes something
(any method but ``GET`` and ``HEAD``) 403 with ``error="insufficient_scope"``. Keys are compared in
constant time.

Browsers cannot set headers on ``EventSource`` or ``WebSocket`` connections, so the live-stream routes
(marked ``opt=QUERY_TOKEN``) also take the key as an ``access_token`` query parameter (RFC 6750 section
2.3); every log line redacts it (``mt_contracts.logs.redact``, on the one handler every logger shares).

A WebSocket connection is upgraded before it is refused, so that the client sees why: it is closed with
code 4401 (``WS_UNAUTHORIZED``, the HTTP status plus 4000, the private range of RFC 6455 section 7.4.2) and
the 401's detail as the reason; browsers cannot read the HTTP status of a refused handshake.
"""

from __future__ import annotations

import hmac
import re
from typing import Literal

from litestar.connection import ASGIConnection, WebSocket
from litestar.datastructures import State
from litestar.exceptions import WebSocketException
from litestar.handlers.base import BaseRouteHandler
from litestar.types import Guard

from mt_api import Forbidden, Unauthorized

PUBLIC = {"public": True}
QUERY_TOKEN = {"query_token": True}
# WebSocket close codes with the meaning of HTTP 401 and 403 (4000 + the status, RFC 6455's private range).
WS_UNAUTHORIZED = 4401
WS_FORBIDDEN = 4403
READ_METHODS = frozenset({"GET", "HEAD"})
_REALM = 'Bearer realm="model-trainer"'
_ACCESS_TOKEN = re.compile(r"(?<=[?&]access_token=)[^&#\s]*")


def _matches(sent: bytes, keys: list[bytes]) -> bool:
    # Compare against every key so the time taken does not say which key came close.
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(sent, key)
    return matched


def bearer_key(authorization: str) -> str:
    """The key of an ``Authorization: Bearer <key>`` header's value; empty for any other."""
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _sent_key(connection: ASGIConnection[object, object, object, State], handler: BaseRouteHandler) -> str:
    if key := bearer_key(connection.headers.get("authorization", "")):
        return key
    if handler.opt.get("query_token"):
        return connection.query_params.get("access_token", "").strip()
    return ""


def key_scope(sent: str, full: list[bytes], read_only: list[bytes]) -> Literal["write", "read"] | None:
    """What key ``sent`` may do: ``write`` for one of ``full`` (``API__KEYS``), ``read`` for one of
    ``read_only``, ``None`` for any other; compared in constant time."""
    encoded = sent.encode()
    if _matches(encoded, full):
        return "write"
    return "read" if _matches(encoded, read_only) else None


def key_guard(keys: list[str], read_only_keys: list[str]) -> Guard:
    """A Litestar guard accepting ``keys`` for every route and ``read_only_keys`` for reads (``GET``,
    ``HEAD`` and WebSocket streams); with no keys at all it admits every request."""
    full = [key.encode() for key in keys]
    read_only = [key.encode() for key in read_only_keys]

    async def guard(connection: ASGIConnection[object, object, object, State], handler: BaseRouteHandler) -> None:
        if not (full or read_only) or handler.opt.get("public"):
            return
        try:
            _check(connection, handler)
        except (Unauthorized, Forbidden) as exc:
            if not isinstance(connection, WebSocket):
                raise
            # Accept, then close with the 401's meaning and detail: a refused handshake would reach the
            # client as a bare 403 it cannot read.
            await connection.accept()
            code = WS_UNAUTHORIZED if isinstance(exc, Unauthorized) else WS_FORBIDDEN
            # A close frame's reason holds at most 123 bytes (RFC 6455 section 5.5).
            reason = exc.detail.encode()[:123].decode(errors="ignore")
            raise WebSocketException(detail=reason, code=code) from exc

    def _check(connection: ASGIConnection[object, object, object, State], handler: BaseRouteHandler) -> None:
        sent = _sent_key(connection, handler)
        if not sent:
            where = " (or an access_token query parameter)" if handler.opt.get("query_token") else ""
            raise Unauthorized(
                f"this endpoint needs an API key: send 'Authorization: Bearer <key>'{where}",
                headers={"WWW-Authenticate": _REALM},
            )
        scope = key_scope(sent, full, read_only)
        if scope == "write":
            return
        if scope is None:
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
