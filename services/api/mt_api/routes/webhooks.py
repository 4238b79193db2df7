"""Webhook routes: register, list, show, rotate the secret of and delete endpoints; list and redeliver their
deliveries (``mt_storage.webhooks`` sends them)."""

from __future__ import annotations

import re
from typing import Annotated

from litestar import Response, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, Parameter
from litestar.status_codes import HTTP_201_CREATED, HTTP_202_ACCEPTED

from mt_api import InvalidField, NotFound
from mt_api.body import json_body
from mt_api.routes.common import new_id
from mt_api.services import Services
from mt_contracts.jobs import utcnow
from mt_contracts.webhooks import (
    DELIVERY_ID_PATTERN,
    WEBHOOK_ID_PATTERN,
    CreateWebhookRequest,
    Delivery,
    DeliveryPage,
    Webhook,
    WebhookPage,
    WebhookSecret,
)
from mt_storage.webhooks import AddressRefused, StoredWebhook, check_url, new_secret, redeliver

_WEBHOOK_ID = re.compile(WEBHOOK_ID_PATTERN)
_DELIVERY_ID = re.compile(DELIVERY_ID_PATTERN)


async def _find(services: Services, webhook_id: str) -> StoredWebhook:
    stored = await services.webhooks.get(webhook_id) if _WEBHOOK_ID.fullmatch(webhook_id) else None
    if stored is None:
        raise NotFound(f"no webhook {webhook_id}")
    return stored


@post(
    "/webhooks",
    status_code=HTTP_201_CREATED,
    tags=["webhooks"],
    dependencies={"payload": json_body(CreateWebhookRequest)},
)
async def create_webhook(
    payload: NamedDependency[CreateWebhookRequest], services: NamedDependency[Services]
) -> Response[WebhookSecret]:
    """Register an endpoint for the listed event types. 201 with the endpoint and its signing secret
    (``whsec_...``), shown this once; 400 naming ``url`` when it is not http(s) or resolves to a non-public
    address (unless ``WEBHOOKS__ALLOW_PRIVATE_ADDRESSES``), or naming ``events`` when one repeats."""
    if len(set(payload.events)) != len(payload.events):
        raise InvalidField("events lists an event type twice; list each once", field="events")
    try:
        await check_url(payload.url, services.settings.webhooks.allow_private_addresses)
    except AddressRefused as exc:
        raise InvalidField(str(exc), field="url") from exc
    webhook = Webhook(
        id=new_id("wh"), url=payload.url, events=payload.events, description=payload.description, created_at=utcnow()
    )
    secret = new_secret()
    await services.webhooks.create(StoredWebhook(webhook=webhook, secret=secret))
    location = f"/webhooks/{webhook.id}"
    return Response(
        WebhookSecret(webhook=webhook, secret=secret), status_code=HTTP_201_CREATED, headers={"Location": location}
    )


@get("/webhooks", tags=["webhooks"])
async def list_webhooks(services: NamedDependency[Services]) -> WebhookPage:
    """Every registered endpoint, newest first (without secrets)."""
    return WebhookPage(items=[stored.webhook for stored in await services.webhooks.all()])


@get("/webhooks/{webhook_id:str}", tags=["webhooks"])
async def get_webhook(webhook_id: FromPath[str], services: NamedDependency[Services]) -> Webhook:
    """One endpoint (its secret is never shown again; rotate it to get a new one)."""
    return (await _find(services, webhook_id)).webhook


@delete("/webhooks/{webhook_id:str}", tags=["webhooks"])
async def delete_webhook(webhook_id: FromPath[str], services: NamedDependency[Services]) -> None:
    """Forget an endpoint: nothing more is sent to it (pending retries end ``failed``). 204."""
    if not (_WEBHOOK_ID.fullmatch(webhook_id) and await services.webhooks.delete(webhook_id)):
        raise NotFound(f"no webhook {webhook_id}")


@post("/webhooks/{webhook_id:str}/rotate-secret", status_code=200, tags=["webhooks"])
async def rotate_secret(webhook_id: FromPath[str], services: NamedDependency[Services]) -> WebhookSecret:
    """Give the endpoint a new signing secret, shown this once. For 24 hours deliveries carry signatures of
    both the new and the previous secret, so the receiver can switch without dropping any."""
    await _find(services, webhook_id)
    secret = new_secret()
    stored = await services.webhooks.rotate(webhook_id, secret)
    if stored is None:
        raise NotFound(f"no webhook {webhook_id}")
    return WebhookSecret(webhook=stored.webhook, secret=secret)


@get("/webhooks/{webhook_id:str}/deliveries", tags=["webhooks"])
async def list_deliveries(
    webhook_id: FromPath[str],
    services: NamedDependency[Services],
    limit: Annotated[int, Parameter(ge=1, le=100, description="Deliveries to show.")] = 20,
) -> DeliveryPage:
    """The endpoint's deliveries, newest first, each with its status and every attempt (status code, error,
    duration and times)."""
    await _find(services, webhook_id)
    return DeliveryPage(items=await services.webhooks.deliveries(webhook_id, limit))


@post(
    "/webhooks/{webhook_id:str}/deliveries/{delivery_id:str}/redeliver",
    status_code=HTTP_202_ACCEPTED,
    tags=["webhooks"],
)
async def redeliver_delivery(
    webhook_id: FromPath[str], delivery_id: FromPath[str], services: NamedDependency[Services]
) -> Delivery:
    """Send the delivery's event again, now, with the same ``webhook-id`` (one attempt, no retries of its
    own). 202 with the delivery, ``pending`` until the attempt is recorded."""
    await _find(services, webhook_id)
    found = await services.webhooks.get_delivery(delivery_id) if _DELIVERY_ID.fullmatch(delivery_id) else None
    if found is None or found.webhook_id != webhook_id:
        raise NotFound(f"no delivery {delivery_id} of webhook {webhook_id}")
    queued = await redeliver(services.webhooks, services.queue, services.settings.queue.webhooks, found)
    if queued is None:
        raise NotFound(f"no delivery {delivery_id} of webhook {webhook_id}")
    return queued


ROUTES = [
    create_webhook,
    list_webhooks,
    get_webhook,
    delete_webhook,
    rotate_secret,
    list_deliveries,
    redeliver_delivery,
]
