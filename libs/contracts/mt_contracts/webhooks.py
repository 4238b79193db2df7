"""Webhooks: the endpoints a user registers, the events a job's ending sends them, and each delivery with its
attempts, as returned by ``/webhooks``.

Deliveries follow the Standard Webhooks specification (https://www.standardwebhooks.com/, v1): the body is a
``WebhookEvent`` (``type``, ``timestamp``, ``data``), signed with HMAC-SHA256 over ``<webhook-id>.<webhook-
timestamp>.<body>`` and sent with the ``webhook-id``, ``webhook-timestamp`` and ``webhook-signature``
(``v1,<base64>``) headers; the secret is ``whsec_<base64 of 32 random bytes>``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal, get_args

import msgspec

from mt_contracts.jobs import JobError, JobStatus

WebhookEventType = Literal[
    "tokenizer.succeeded",
    "tokenizer.failed",
    "tokenizer.cancelled",
    "run.succeeded",
    "run.failed",
    "run.cancelled",
    "run.stalled",
    "eval.succeeded",
    "eval.failed",
]
WEBHOOK_EVENT_TYPES: tuple[WebhookEventType, ...] = get_args(WebhookEventType)
DeliveryStatus = Literal["pending", "succeeded", "failed"]
AttemptOutcome = Literal["sending", "succeeded", "failed", "interrupted"]
WEBHOOK_ID_PATTERN = "^wh_[0-9A-HJKMNP-TV-Z]{26}$"
DELIVERY_ID_PATTERN = "^dlv_[0-9a-f]{32}$"


class CreateWebhookRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``POST /webhooks``: where to send (an ``http``/``https`` URL on a public address unless
    ``WEBHOOKS__ALLOW_PRIVATE_ADDRESSES``) and which events (at least one, no repeats)."""

    url: Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]
    events: Annotated[list[WebhookEventType], msgspec.Meta(min_length=1, max_length=len(WEBHOOK_EVENT_TYPES))]
    description: Annotated[str, msgspec.Meta(max_length=500)] = ""


class Webhook(msgspec.Struct, frozen=True, kw_only=True):
    """A registered endpoint as ``GET /webhooks/{id}`` shows it (never its secret)."""

    id: str
    url: str
    events: list[WebhookEventType]
    description: str = ""
    created_at: datetime
    secret_rotated_at: datetime | None = None


class WebhookSecret(msgspec.Struct, frozen=True, kw_only=True):
    """The endpoint and its signing secret, answered once by ``POST /webhooks`` and by each rotation."""

    webhook: Webhook
    secret: str


class WebhookJob(msgspec.Struct, frozen=True, kw_only=True):
    """``data`` of an event: the job that ended (``kind`` ``tokenizer``, ``run`` or ``evaluation``), its status
    (``stalled`` for ``run.stalled``: the status it was taken back from is ``running`` or ``cancelling``), its
    error when it failed, and where to read the whole record (``location``, a path of this API)."""

    id: str
    kind: str
    status: JobStatus
    location: str
    error: JobError | None = None
    finished_at: datetime | None = None
    attempts: int = 0


class WebhookEvent(msgspec.Struct, frozen=True, kw_only=True):
    """The body of a delivery (Standard Webhooks' recommended shape). ``id`` is the event's id, sent as
    ``webhook-id``: the same on every attempt and redelivery, so a receiver can drop repeats."""

    id: str
    type: WebhookEventType
    timestamp: datetime
    data: WebhookJob


class DeliveryAttempt(msgspec.Struct, frozen=True, kw_only=True):
    """One HTTP attempt, recorded as it starts (``outcome`` ``sending``) and again when it ends:
    ``succeeded`` (a 2xx), ``failed`` (``error`` says why: a non-2xx answer, a timeout, a refused address) or
    ``interrupted`` (the worker sending it stopped, killed, before it recorded an answer: the receiver may
    have received it; the attempt counts as failed). ``status_code`` is the receiver's answer (``None`` when
    none came), ``duration_seconds`` from the request's start to its answer or failure (``None``, as is
    ``finished_at``, until it ended, and for an interrupted attempt). ``attempt`` numbers it in its own
    series: the automatic schedule's attempts 1, 2, ... (``WEBHOOKS__MAX_ATTEMPTS``), or, with
    ``redelivery``, the redeliveries a user asked for, 1, 2, ... (a redelivery neither uses nor ends an
    automatic attempt). ``outcome`` is ``None`` in an attempt recorded before outcomes were (then ``error``
    tells)."""

    attempt: int
    started_at: datetime
    finished_at: datetime | None = None
    duration_seconds: float | None = None
    status_code: int | None = None
    error: str | None = None
    redelivery: bool = False
    outcome: AttemptOutcome | None = None

    @property
    def succeeded(self) -> bool:
        """Whether the receiver answered it with a 2xx."""
        return self.outcome == "succeeded" or (self.outcome is None and self.error is None)


class Delivery(msgspec.Struct, frozen=True, kw_only=True):
    """An event's delivery to one endpoint. ``status`` is ``succeeded`` once an attempt got a 2xx,
    ``pending`` while an automatic attempt is scheduled or a redelivery is queued, ``failed`` once neither
    is left; ``next_attempt_at`` is when the next automatic attempt runs (``None`` when none is scheduled);
    ``redeliveries`` counts the redeliveries asked for."""

    id: str
    webhook_id: str
    event_id: str
    event_type: WebhookEventType
    status: DeliveryStatus = "pending"
    created_at: datetime
    updated_at: datetime
    next_attempt_at: datetime | None = None
    attempts: list[DeliveryAttempt] = msgspec.field(default_factory=list)
    redeliveries: int = 0


class WebhookPage(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /webhooks``: every endpoint, newest first."""

    items: list[Webhook]


class DeliveryPage(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /webhooks/{id}/deliveries``: the endpoint's deliveries, newest first (at most ``limit``)."""

    items: list[Delivery]
