"""Liveness, readiness and metrics."""

from __future__ import annotations

import msgspec
from litestar import Response, get
from litestar.di import NamedDependency
from litestar.status_codes import HTTP_503_SERVICE_UNAVAILABLE

from mt_api.auth import PUBLIC
from mt_api.services import Services, WorkerPool


class Health(msgspec.Struct, frozen=True):
    """``status`` is ``ok`` or ``unavailable``; ``reasons`` says what is missing."""

    status: str
    reasons: list[str] = msgspec.field(default_factory=list)


class Readiness(msgspec.Struct, frozen=True):
    """``Health`` plus ``workers``: each worker kind's queue and live worker count (empty when Redis did not
    answer), which never changes the status."""

    status: str
    reasons: list[str]
    workers: dict[str, WorkerPool]


@get("/healthz", tags=["health"], opt=PUBLIC)
async def healthz() -> Health:
    """The process is alive."""
    return Health(status="ok")


@get("/readyz", tags=["health"], opt=PUBLIC)
async def readyz(services: NamedDependency[Services]) -> Response[Readiness]:
    """200 when Redis answers and the artifact storage is the workers' (the storage marker matches); else 503
    with reasons. ``workers`` counts each kind's live workers; none alive is reported, not a 503."""
    reasons = await services.readiness()
    workers = await services.worker_pools() if not any(r.startswith("redis") for r in reasons) else {}
    if reasons:
        readiness = Readiness(status="unavailable", reasons=reasons, workers=workers)
        return Response(readiness, status_code=HTTP_503_SERVICE_UNAVAILABLE)
    return Response(Readiness(status="ok", reasons=[], workers=workers))


@get("/metrics", tags=["health"], media_type="text/plain; version=0.0.4; charset=utf-8")
async def metrics(services: NamedDependency[Services]) -> bytes:
    """Prometheus text format: HTTP requests by route, live streams, jobs by kind and status, queue depth,
    live workers per kind, training tokens per second."""
    queues = [services.settings.queue.tokenizer, services.settings.queue.training]
    pools = {kind: pool.live for kind, pool in (await services.worker_pools()).items()}
    return await services.metrics.render(services.redis, services.tokenizers, services.runs, queues, pools)


ROUTES = [healthz, readyz, metrics]
