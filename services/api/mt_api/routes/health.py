"""Liveness and readiness."""

from __future__ import annotations

import msgspec
from litestar import Response, get
from litestar.di import NamedDependency
from litestar.status_codes import HTTP_503_SERVICE_UNAVAILABLE

from mt_api.services import Services


class Health(msgspec.Struct, frozen=True):
    """``status`` is ``ok`` or ``unavailable``; ``reasons`` says what is missing."""

    status: str
    reasons: list[str] = msgspec.field(default_factory=list)


@get("/healthz", tags=["health"])
async def healthz() -> Health:
    """The process is alive."""
    return Health(status="ok")


@get("/readyz", tags=["health"])
async def readyz(services: NamedDependency[Services]) -> Response[Health]:
    """200 when Redis answers and a live worker of each kind has a fresh health key; else 503 with reasons."""
    reasons = await services.readiness()
    if reasons:
        return Response(Health(status="unavailable", reasons=reasons), status_code=HTTP_503_SERVICE_UNAVAILABLE)
    return Response(Health(status="ok"))


ROUTES = [healthz, readyz]
