"""``create_app``: the one wiring point of the gateway."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.di import Provide
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from redis.asyncio import Redis

from mt_api.auth import key_guard
from mt_api.cors import cors_config, origin_guard
from mt_api.errors import EXCEPTION_HANDLERS
from mt_api.metrics import Metrics, MetricsMiddleware
from mt_api.openapi import RefinedJson, SwaggerUI, static_router
from mt_api.routes import ROUTES
from mt_api.services import Services
from mt_api.tracing import add_request_id
from mt_api.ui import template_config, ui_routes
from mt_contracts.settings import ApiSettings
from mt_storage.queue import ArqJobQueue


def create_app(settings: ApiSettings) -> Litestar:
    """The Litestar app. Redis and the arq pool open at startup and close at shutdown, with the inference
    processes (started on the first generation or export). Every response gets ``X-Request-ID``; every error
    is problem JSON (``errors.py``); with ``API__KEYS`` set every route but the health checks and the dashboard's
    page shells and assets (``/ui``: they hold no data) needs a key."""
    holder: list[Services] = []
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        redis = Redis.from_url(settings.redis.dsn)
        queue = await ArqJobQueue.connect(settings.redis.dsn)
        services = Services(settings, redis, queue, metrics)
        holder.append(services)
        try:
            yield
        finally:
            holder.clear()
            await services.live.close()
            await services.inference.close()
            await queue.close()
            await redis.aclose()

    def services() -> Services:
        return holder[0]

    origins = settings.api.cors_origin_list
    return Litestar(
        cors_config=cors_config(origins),
        route_handlers=[*ROUTES, static_router(), *ui_routes()],
        template_config=template_config(),
        dependencies={"services": Provide(services, sync_to_thread=False)},
        exception_handlers=EXCEPTION_HANDLERS,
        guards=[key_guard(settings.api.key_list, settings.api.read_only_key_list), origin_guard(origins)],
        middleware=[DefineMiddleware(MetricsMiddleware, metrics=metrics)],
        before_send=[add_request_id],
        lifespan=[lifespan],
        openapi_config=OpenAPIConfig(
            title="Model Trainer", version="0.1.0", path="/schema", render_plugins=[SwaggerUI(), RefinedJson()]
        ),
        logging_config=None,  # logging is configured once, as JSON, by the entry point
    )
