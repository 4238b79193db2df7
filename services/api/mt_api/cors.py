"""Cross-origin requests: CORS headers only for the origins ``API__CORS_ORIGINS`` lists, and no change made
for a page of any other site.

CORS keeps other sites' pages from reading answers and from sending JSON (a preflighted request), but a
browser still sends a "simple" cross-site ``POST`` (no body, or a form) and only hides the answer: with API
keys unset, any page a user visits could cancel, resume or evaluate their runs. Browsers name the page's
origin in ``Origin`` on every such request, so a request that changes something (any method but ``GET``,
``HEAD`` and ``OPTIONS``) from an origin that is neither the API's own nor listed is refused with 403.
Clients that are not browsers send no ``Origin`` and are not affected. The API's own origin is the one in
the ``Host`` header: behind a proxy that rewrites it, list the public origin in ``API__CORS_ORIGINS``.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from litestar.config.cors import CORSConfig
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.handlers.base import BaseRouteHandler
from litestar.types import Guard

from mt_api import Forbidden

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def cors_config(origins: list[str]) -> CORSConfig | None:
    """Litestar's CORS settings for ``origins``; ``None`` (no CORS header at all) when there are none."""
    if not origins:
        return None
    return CORSConfig(allow_origins=origins, allow_headers=["Authorization", "Content-Type", "Last-Event-ID"])


def origin_guard(origins: list[str]) -> Guard:
    """A Litestar guard refusing writes from an ``Origin`` that is neither the API's own nor in ``origins``."""
    allowed = frozenset(origin.rstrip("/").lower() for origin in origins)

    # A coroutine: Litestar runs a plain function guard in a worker thread, a hop every request would pay.
    async def guard(connection: ASGIConnection[object, object, object, State], handler: BaseRouteHandler) -> None:
        del handler
        origin = connection.headers.get("origin")
        method = connection.scope.get("method", "GET")
        if origin is None or method in SAFE_METHODS or origin.rstrip("/").lower() in allowed:
            return
        host = connection.headers.get("host", "").lower()
        if origin != "null" and urlsplit(origin).netloc.lower() == host:
            return
        raise Forbidden(
            f"a page of {origin} may not change anything here; list that origin in API__CORS_ORIGINS to allow it"
        )

    return guard
