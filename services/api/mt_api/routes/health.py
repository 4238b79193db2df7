"""Liveness, readiness and metrics."""

from __future__ import annotations

import msgspec
from litestar import Response, get
from litestar.di import NamedDependency
from litestar.status_codes import HTTP_503_SERVICE_UNAVAILABLE

from mt_api.auth import PUBLIC
from mt_api.services import Services


class Health(msgspec.Struct, frozen=True):
    """``status`` is ``ok`` or ``unavailable``; ``reasons`` says what is missing."""

    status: str
    reasons: list[str] = msgspec.field(default_factory=list)


@get("/healthz", tags=["health"], opt=PUBLIC)
async def healthz() -> Health:
    """The process is alive."""
    return Health(status="ok")


@get("/readyz", tags=["health"], opt=PUBLIC)
async def readyz(services: NamedDependency[Services]) -> Response[Health]:
    """200 when Redis answers and a live worker of each kind has a fresh health key; else 503 with reasons."""
    reasons = await services.readiness()
    if reasons:
        return Response(Health(status="unavailable", reasons=reasons), status_code=HTTP_503_SERVICE_UNAVAILABLE)
    return Response(Health(status="ok"))


@get("/metrics", tags=["health"], media_type="text/plain; version=0.0.4; charset=utf-8")
async def metrics(services: NamedDependency[Services]) -> bytes:
    """Prometheus text format: HTTP requests by route, live streams, jobs by kind and status, queue depth,
    training tokens per second."""
    queues = [services.settings.queue.tokenizer, services.settings.queue.training]
    return await services.metrics.render(services.redis, services.tokenizers, services.runs, queues)


ROUTES = [healthz, readyz, metrics]
