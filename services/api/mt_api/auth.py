"""API keys: with ``API__KEYS`` set, every route except those marked ``opt={"public": True}`` (``/healthz``,
``/readyz``) needs ``Authorization: Bearer <key>``. Keys are compared in constant time (RFC 6750 errors:
a missing key answers 401 with a bare challenge, a wrong one 401 with ``error="invalid_token"``)."""

from __future__ import annotations

import hmac

from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.handlers.base import BaseRouteHandler
from litestar.types import Guard

from mt_api import Unauthorized

PUBLIC = {"public": True}
_REALM = 'Bearer realm="model-trainer"'


def key_guard(keys: list[str]) -> Guard:
    """A Litestar guard accepting ``keys``; with no keys it admits every request."""
    encoded = [key.encode() for key in keys]

    def guard(connection: ASGIConnection[object, object, object, State], handler: BaseRouteHandler) -> None:
        if not encoded or handler.opt.get("public"):
            return
        scheme, _, token = connection.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized(
                "this endpoint needs an API key: send 'Authorization: Bearer <key>'",
                headers={"WWW-Authenticate": _REALM},
            )
        sent = token.strip().encode()
        # Compare against every key so the time taken does not say which key came close.
        matched = False
        for key in encoded:
            matched |= hmac.compare_digest(sent, key)
        if not matched:
            raise Unauthorized(
                "the API key is not valid; check API__KEYS on the server",
                headers={"WWW-Authenticate": f'{_REALM}, error="invalid_token"'},
            )

    return guard
