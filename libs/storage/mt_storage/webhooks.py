"""Webhooks: registered endpoints, the transactional outbox of job events, and their signed deliveries.

A job's terminal transition (and a reaper's take-back of a stalled run) writes a ``WebhookEvent`` to the
outbox stream ``mt:webhook:outbox`` in the same WATCH/MULTI transaction as the status change
(``mt_storage.lifecycle``), so an event exists exactly when its transition does, however many workers race.
The ``Dispatcher`` (in the webhook worker) reads the outbox, keeps each event, creates one ``Delivery`` per
subscribed endpoint (its id derived from the event's and the endpoint's, created with ``SET NX``) and
enqueues its first attempt on the webhook queue with a deterministic arq job id, then deletes the outbox
entry: after a crash anywhere in between, doing it all again duplicates nothing.

The ``Deliverer`` sends one attempt (arq job ``<delivery_id>:a<n>``, a redelivery ``<delivery_id>:r<n>``):
it records the attempt as ``sending``, resolves and checks the endpoint's address again (SSRF: a name can
re-point) and connects to the address it checked, POSTs the body with the Standard Webhooks headers
(``sign``), and records how the attempt ended; a scheduled attempt that did not succeed enqueues the next
one after ``WebhookSettings.retry_delay``. Scheduled attempts and redeliveries are two series, each attempt
recorded once under its own (number, redelivery) slot: a redelivery never uses a scheduled attempt's slot
nor ends the schedule, and the delivery's status follows from both (``_settled``).

Delivery is at least once. A worker killed mid-request leaves its attempt ``sending``; arq runs the job
again once its in-progress mark expires, and that run records the attempt ``interrupted`` (the receiver
may have got it) and, for a scheduled one, goes on to the next attempt with the same ``webhook-id``, so
a receiver that drops ids it has seen handles the event once.

Keys::

    mt:webhook:<wh_id>               the endpoint with its secret (JSON ``StoredWebhook``)
    mt:webhook:index                 sorted set of endpoint ids (lexical = creation order)
    mt:webhook:outbox                stream of encoded ``WebhookEvent``s not yet dispatched
    mt:webhook:event:<msg_id>        an encoded event, kept for its deliveries' attempts
    mt:webhook:delivery:<dlv_id>     a ``Delivery`` with its attempts
    mt:webhook:deliveries:<wh_id>    sorted set of an endpoint's delivery ids by creation time (ms)

Errors::

    StorageError
    └── AddressRefused    an endpoint URL is malformed or resolves to a non-public address (SSRF)
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import logging
import secrets
import socket
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TypeVar
from urllib.parse import urlsplit

import httpx
import msgspec
from redis.asyncio import Redis
from redis.exceptions import WatchError

from mt_contracts import codec
from mt_contracts.jobs import utcnow
from mt_contracts.settings import WebhookSettings
from mt_contracts.webhooks import (
    Delivery,
    DeliveryAttempt,
    DeliveryStatus,
    Webhook,
    WebhookEvent,
    WebhookEventType,
)
from mt_storage import StorageError
from mt_storage.events import REDIS_DOWN
from mt_storage.outbox import OUTBOX_KEY
from mt_storage.pipelines import pipeline
from mt_storage.queue import JobQueue

logger = logging.getLogger(__name__)
T = TypeVar("T", bound=msgspec.Struct)

DELIVER_TASK = "deliver_webhook"
_PREFIX = "mt:webhook:"
_INDEX = f"{_PREFIX}index"
# Events and deliveries are kept 30 days after their last write (the retry schedule spans about 30 hours).
RETENTION_SECONDS = 30 * 24 * 3600
SECRET_PREFIX = "whsec_"
# After a rotation the previous secret also signs for a day, so receivers can switch without losing events.
ROTATION_OVERLAP = timedelta(hours=24)


class AddressRefused(StorageError):
    """The endpoint URL is not usable: malformed, not http(s), unresolvable, or on a non-public address."""


class StoredWebhook(msgspec.Struct, frozen=True, kw_only=True):
    """An endpoint as kept in Redis: what users see, and the secrets that sign its deliveries."""

    webhook: Webhook
    secret: str
    previous_secret: str | None = None
    previous_until: datetime | None = None

    def signing_secrets(self, now: datetime) -> list[str]:
        """The current secret, then the previous one while its rotation overlap lasts."""
        keep = self.previous_secret is not None and self.previous_until is not None and now < self.previous_until
        return [self.secret, *([self.previous_secret] if keep and self.previous_secret else [])]


def new_secret() -> str:
    """A signing secret in the Standard Webhooks format: ``whsec_`` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One Standard Webhooks v1 signature: ``v1,`` + base64 of HMAC-SHA256 (key: the base64-decoded part of
    ``secret`` after ``whsec_``) over ``<msg_id>.<timestamp>.<body>``; ``timestamp`` in Unix seconds."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(signing: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt: one signature per secret, space-separated."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(sign(secret, msg_id, timestamp, body) for secret in signing),
    }


def is_public(address: str) -> bool:
    """True when ``address`` (an IPv4 or IPv6 literal) is globally routable: not private, loopback,
    link-local, multicast, reserved or unspecified (an IPv4-mapped IPv6 address is judged as IPv4)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def _host_and_port(url: str) -> tuple[str, int]:
    """The host and port of an ``http``/``https`` URL.

    Raises:
        AddressRefused: another scheme, no host, or an invalid port.
    """
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise AddressRefused(f"url must be an http:// or https:// URL with a host, not {url!r}")
    try:
        return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise AddressRefused(f"url has an invalid port: {exc}") from exc


async def resolve_endpoint(url: str, allow_private: bool) -> list[str]:
    """The addresses an endpoint URL's host resolves to now, in the resolver's order and, unless
    ``allow_private``, each public (``is_public``). A delivery connects to one of these and never resolves
    the name again, so a name that re-points between the check and the connection (DNS rebinding) cannot
    lead it to an address that was not checked.

    Raises:
        AddressRefused: why the URL is not usable (the message names the host and address).
    """
    host, port = _host_and_port(url)
    try:
        found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise AddressRefused(f"url's host {host!r} does not resolve: {exc.strerror}") from exc
    addresses = list(dict.fromkeys(str(sockaddr[0]) for *_, sockaddr in found))
    if not addresses:
        raise AddressRefused(f"url's host {host!r} resolves to no address")
    for address in addresses if not allow_private else []:
        if not is_public(address):
            raise AddressRefused(
                f"url's host {host!r} resolves to {address}, a private, loopback, link-local or otherwise "
                "non-public address; use a public endpoint (WEBHOOKS__ALLOW_PRIVATE_ADDRESSES=true allows it)"
            )
    return addresses


async def check_url(url: str, allow_private: bool) -> None:
    """Check an endpoint URL at registration: ``http``/``https`` with a host, and, unless ``allow_private``,
    every address its host resolves to now is public (``resolve_endpoint``; with ``allow_private`` the name
    is not looked up).

    Raises:
        AddressRefused: why the URL is not usable (the message names the host and address).
    """
    _host_and_port(url)
    if not allow_private:
        await resolve_endpoint(url, allow_private)


def delivery_id(event_id: str, webhook_id: str) -> str:
    """The id of ``event_id``'s delivery to ``webhook_id``: the same whoever computes it, so a repeated
    dispatch finds the delivery it made before."""
    return "dlv_" + hashlib.sha256(f"{event_id}:{webhook_id}".encode()).hexdigest()[:32]


def attempt_job_id(delivery: str, attempt: int, *, redelivery: bool = False) -> str:
    """The arq job id of attempt ``attempt`` (1-based) of ``delivery``: ``<delivery>:a<n>``, or ``:r<n>``
    for a redelivery a user asked for."""
    return f"{delivery}:{'r' if redelivery else 'a'}{attempt}"


def parse_attempt_job_id(job_id: str) -> tuple[str, int, bool]:
    """``(delivery id, attempt, redelivery)`` of an ``attempt_job_id``.

    Raises:
        ValueError: ``job_id`` is not one.
    """
    delivery, _, suffix = job_id.rpartition(":")
    if not delivery or suffix[:1] not in {"a", "r"} or not suffix[1:].isdigit():
        raise ValueError(f"not a webhook attempt job id: {job_id!r}")
    return delivery, int(suffix[1:]), suffix[0] == "r"


def _ids(values: Sequence[object]) -> list[str]:
    return [value.decode() if isinstance(value, bytes) else str(value) for value in values]


class WebhookStore:
    """Endpoints, events and deliveries in Redis (the keys of this module's docstring)."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    @staticmethod
    def _key(webhook_id: str) -> str:
        return f"{_PREFIX}{webhook_id}"

    @staticmethod
    def _delivery_key(delivery: str) -> str:
        return f"{_PREFIX}delivery:{delivery}"

    @staticmethod
    def _deliveries_key(webhook_id: str) -> str:
        return f"{_PREFIX}deliveries:{webhook_id}"

    @staticmethod
    def _event_key(event_id: str) -> str:
        return f"{_PREFIX}event:{event_id}"

    async def create(self, stored: StoredWebhook) -> None:
        """Store a new endpoint and index it, in one transaction."""
        async with pipeline(self.redis, transaction=True) as pipe:
            pipe.set(self._key(stored.webhook.id), codec.encode(stored), nx=True)
            pipe.zadd(_INDEX, {stored.webhook.id: 0})
            await pipe.execute()

    async def get(self, webhook_id: str) -> StoredWebhook | None:
        raw = await self.redis.get(self._key(webhook_id))
        return None if raw is None else _decode(raw, StoredWebhook)

    async def all(self) -> list[StoredWebhook]:
        """Every endpoint, newest first."""
        ids = _ids(await self.redis.zrevrangebylex(_INDEX, "+", "-"))
        if not ids:
            return []
        raws = await self.redis.mget([self._key(webhook_id) for webhook_id in ids])
        return [_decode(raw, StoredWebhook) for raw in raws if raw is not None]

    async def subscribed(self, event_type: WebhookEventType) -> list[StoredWebhook]:
        """The endpoints that receive ``event_type``, oldest first."""
        return [stored for stored in reversed(await self.all()) if event_type in stored.webhook.events]

    async def delete(self, webhook_id: str) -> bool:
        """Forget an endpoint (its pending deliveries end ``failed`` when their next attempt runs); False when
        there was none."""
        async with pipeline(self.redis, transaction=True) as pipe:
            pipe.delete(self._key(webhook_id))
            pipe.zrem(_INDEX, webhook_id)
            deleted, _ = await pipe.execute()
        return bool(deleted)

    async def rotate(self, webhook_id: str, secret: str) -> StoredWebhook | None:
        """Give an endpoint a new ``secret``; the previous one also signs for ``ROTATION_OVERLAP``. ``None``
        when there is no such endpoint."""
        now = utcnow()

        def change(stored: StoredWebhook) -> StoredWebhook:
            webhook = msgspec.structs.replace(stored.webhook, secret_rotated_at=now)
            return StoredWebhook(
                webhook=webhook, secret=secret, previous_secret=stored.secret, previous_until=now + ROTATION_OVERLAP
            )

        return await self._transact(self._key(webhook_id), StoredWebhook, change, retention=None)

    async def keep_event(self, event_id: str, raw: bytes) -> None:
        """Keep an event's encoded body for its deliveries (first write wins)."""
        await self.redis.set(self._event_key(event_id), raw, nx=True, ex=RETENTION_SECONDS)

    async def event_body(self, event_id: str) -> bytes | None:
        raw = await self.redis.get(self._event_key(event_id))
        return raw if isinstance(raw, bytes) else None

    async def create_delivery(self, delivery: Delivery) -> bool:
        """Store a new delivery and index it under its endpoint; False (nothing written) when it exists."""
        score = int(delivery.created_at.timestamp() * 1000)
        key = self._delivery_key(delivery.id)
        created = await self.redis.set(key, codec.encode(delivery), nx=True, ex=RETENTION_SECONDS)
        if created:
            await self.redis.zadd(self._deliveries_key(delivery.webhook_id), {delivery.id: score})
        return bool(created)

    async def get_delivery(self, delivery: str) -> Delivery | None:
        raw = await self.redis.get(self._delivery_key(delivery))
        return None if raw is None else _decode(raw, Delivery)

    async def deliveries(self, webhook_id: str, limit: int) -> list[Delivery]:
        """Up to ``limit`` deliveries of an endpoint, newest first."""
        ids = _ids(await self.redis.zrevrange(self._deliveries_key(webhook_id), 0, limit - 1))
        if not ids:
            return []
        raws = await self.redis.mget([self._delivery_key(found) for found in ids])
        return [_decode(raw, Delivery) for raw in raws if raw is not None]

    async def change_delivery(self, delivery: str, change: Callable[[Delivery], Delivery | None]) -> Delivery | None:
        """Replace a delivery with ``change(current)`` atomically (``None``: write nothing); ``None`` when
        there is no such delivery or nothing was written."""
        return await self._transact(self._delivery_key(delivery), Delivery, change, retention=RETENTION_SECONDS)

    async def _transact(
        self, key: str, kind: type[T], change: Callable[[T], T | None], retention: int | None
    ) -> T | None:
        async with pipeline(self.redis, transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    raw = await pipe.get(key)
                    updated = None if raw is None else change(_decode(raw, kind))
                    if updated is None:
                        await pipe.unwatch()
                        return None
                    pipe.multi()
                    pipe.set(key, codec.encode(updated), ex=retention)
                    await pipe.execute()
                    return updated
                except WatchError:
                    continue


def _decode(raw: object, kind: type[T]) -> T:
    if not isinstance(raw, bytes | str):
        raise StorageError(f"unexpected Redis value of type {type(raw).__name__}")
    try:
        return codec.decode(raw, kind)
    except msgspec.ValidationError as exc:
        raise StorageError(f"stored webhook record does not decode: {exc}") from exc


class Dispatcher:
    """Turns outbox entries into deliveries on ``queue_name`` (see the module docstring)."""

    def __init__(self, store: WebhookStore, queue: JobQueue, queue_name: str) -> None:
        self.store = store
        self.queue = queue
        self.queue_name = queue_name

    async def dispatch_once(self, block_ms: int = 0) -> int:
        """Dispatch the outbox's entries (waiting up to ``block_ms`` for one when it is empty); returns how
        many entries were dispatched."""
        found = await self.store.redis.xread({OUTBOX_KEY: "0-0"}, count=100, block=block_ms or None)
        entries = [entry for _, stream_entries in found for entry in stream_entries] if found else []
        for entry_id, fields in entries:
            raw = fields.get(b"event")
            if isinstance(raw, bytes):
                await self._dispatch(raw)
            await self.store.redis.xdel(OUTBOX_KEY, entry_id)
        return len(entries)

    async def _dispatch(self, raw: bytes) -> None:
        try:
            event = codec.decode(raw, WebhookEvent)
        except msgspec.ValidationError as exc:
            logger.error("undecodable outbox entry dropped", extra={"event": "webhook_bad_event", "error": str(exc)})
            return
        await self.store.keep_event(event.id, raw)
        for stored in await self.store.subscribed(event.type):
            now = utcnow()
            delivery = Delivery(
                id=delivery_id(event.id, stored.webhook.id),
                webhook_id=stored.webhook.id,
                event_id=event.id,
                event_type=event.type,
                created_at=now,
                updated_at=now,
                next_attempt_at=now,
            )
            await self.store.create_delivery(delivery)
            await self.queue.enqueue(DELIVER_TASK, attempt_job_id(delivery.id, 1), self.queue_name)

    async def run_forever(self) -> None:
        """Dispatch until cancelled, waiting on the outbox stream between entries; rides out Redis outages."""
        while True:
            try:
                await self.dispatch_once(block_ms=1000)
            except REDIS_DOWN as exc:
                logger.warning("webhook dispatcher waiting for redis", extra={"event": "dispatcher_waiting",
                                                                              "error": str(exc)})  # fmt: skip
                await asyncio.sleep(1.0)


class Deliverer:
    """Sends attempts of deliveries (``deliver``) with ``client``, under ``settings``."""

    def __init__(
        self,
        store: WebhookStore,
        queue: JobQueue,
        queue_name: str,
        settings: WebhookSettings,
        client: httpx.AsyncClient,
    ) -> None:
        self.store = store
        self.queue = queue
        self.queue_name = queue_name
        self.settings = settings
        self.client = client

    async def deliver(self, job_id: str) -> DeliveryAttempt | None:
        """Run the attempt ``job_id`` names (``attempt_job_id``) once: record it as ``sending``, check the
        address, POST the signed event, record how it ended and, when a scheduled attempt did not succeed and
        the schedule has attempts left, enqueue the next. Run again after its worker was killed mid-request
        (arq runs the job again), it records that attempt ``interrupted`` instead of sending anything, and a
        scheduled one goes on to the next attempt (the same ``webhook-id`` again). Returns the attempt as
        recorded, or ``None`` when there was nothing to do (the delivery or its endpoint is gone, it already
        succeeded, or this attempt had already ended).

        Raises:
            ValueError: ``job_id`` is not an attempt's job id.
        """
        delivery_ref, attempt, redelivery = parse_attempt_job_id(job_id)
        delivery = await self.store.get_delivery(delivery_ref)
        if delivery is None:
            return None
        earlier = _slot(delivery, attempt, redelivery)
        if earlier is not None:
            if earlier.outcome != "sending":
                return None
            # Started by a worker that never recorded the answer: arq gives the job to another only once the
            # first one's in-progress mark expired (it died), so this is no live attempt.
            return await self._finish(delivery.id, earlier, _interrupted(earlier))
        if delivery.status == "succeeded" and not redelivery:
            return None
        stored = await self.store.get(delivery.webhook_id)
        body = await self.store.event_body(delivery.event_id)
        if stored is None or body is None:
            gone = "its endpoint was deleted" if stored is None else "its event expired"
            await self.store.change_delivery(delivery.id, lambda d: _ended(d, gone, attempt, redelivery))
            return None
        started = DeliveryAttempt(attempt=attempt, started_at=utcnow(), redelivery=redelivery, outcome="sending")
        if await self.store.change_delivery(delivery.id, lambda d: _begun(d, started)) is None:
            return None  # another run of this job recorded it first
        clock = time.monotonic()
        status_code, error = await self._send(stored, delivery.event_id, body)
        done = msgspec.structs.replace(
            started,
            finished_at=utcnow(),
            duration_seconds=round(time.monotonic() - clock, 6),
            status_code=status_code,
            error=error,
            outcome="succeeded" if error is None else "failed",
        )
        return await self._finish(delivery.id, started, done)

    async def _finish(self, delivery: str, started: DeliveryAttempt, done: DeliveryAttempt) -> DeliveryAttempt:
        """Record ``done``, how the attempt recorded as ``started`` ended, and schedule what follows it."""
        delay = None if done.succeeded or done.redelivery else self.settings.retry_delay(done.attempt)
        if delay is not None:
            # Enqueued before the attempt is recorded: a crash in between repeats the attempt, never loses it.
            next_job = attempt_job_id(delivery, done.attempt + 1)
            await self.queue.enqueue(DELIVER_TASK, next_job, self.queue_name, delay)
        now = utcnow()
        next_at = now + timedelta(seconds=delay) if delay is not None else None

        def record(current: Delivery) -> Delivery | None:
            if not any(_same(found, started) for found in current.attempts):
                return None
            attempts = [done if _same(found, started) else found for found in current.attempts]
            changed = msgspec.structs.replace(current, updated_at=now, attempts=attempts)
            latest = max((found.attempt for found in attempts if not found.redelivery), default=0)
            if not done.redelivery and done.attempt == latest:
                changed = msgspec.structs.replace(changed, next_attempt_at=next_at)
            elif done.succeeded:
                # Delivered: the schedule's next attempt, if one is queued, will find nothing left to send.
                changed = msgspec.structs.replace(changed, next_attempt_at=None)
            return _settled(changed)

        await self.store.change_delivery(delivery, record)
        logger.info(
            "webhook attempt",
            extra={"event": "webhook_attempt", "delivery_id": delivery, "attempt": done.attempt,
                   "redelivery": done.redelivery, "outcome": done.outcome, "status_code": done.status_code,
                   "error": done.error},
        )  # fmt: skip
        return done

    async def _send(self, stored: StoredWebhook, event_id: str, body: bytes) -> tuple[int | None, str | None]:
        """POST ``body`` signed to the endpoint, at an address checked just before (``resolve_endpoint``):
        ``(status code, None)`` for a 2xx, else the code (if any) and why it is not a success."""
        url = stored.webhook.url
        try:
            addresses = await resolve_endpoint(url, self.settings.allow_private_addresses)
        except AddressRefused as exc:
            return None, f"refused: {exc}"
        now = utcnow()
        headers = {
            "content-type": "application/json",
            "user-agent": "model-trainer-webhooks/1",
            **signed_headers(stored.signing_secrets(now), event_id, int(now.timestamp()), body),
        }
        try:
            response = await self._post_pinned(httpx.URL(url), addresses, body, headers)
        except httpx.TimeoutException as exc:
            return None, f"timed out after {self.settings.timeout:g} s ({type(exc).__name__})"
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}"
        if 200 <= response.status_code < 300:
            return response.status_code, None
        return response.status_code, f"the endpoint answered {response.status_code}, not 2xx"

    async def _post_pinned(
        self, url: httpx.URL, addresses: list[str], body: bytes, headers: dict[str, str]
    ) -> httpx.Response:
        """POST to ``url`` connecting to the first of ``addresses`` that accepts, not to what its host
        resolves to now; the request keeps the URL's host in ``Host`` and, over TLS, as the SNI name that
        the certificate is checked against (httpx's ``sni_hostname`` extension).

        Raises:
            httpx.HTTPError: the last address's failure, or the request's.
        """
        pinned = {**headers, "host": url.netloc.decode("ascii")}

        async def post(address: str) -> httpx.Response:
            target = url.copy_with(host=address)
            return await self.client.post(target, content=body, headers=pinned, extensions={"sni_hostname": url.host})

        for address in addresses[:-1]:
            try:
                return await post(address)
            except httpx.ConnectError:
                continue  # refused or unreachable at once: the next address (a timeout is not retried here)
        return await post(addresses[-1])


async def redeliver(store: WebhookStore, queue: JobQueue, queue_name: str, delivery: Delivery) -> Delivery | None:
    """Queue one more attempt of ``delivery`` now: the next redelivery (with the same ``webhook-id``; it has
    no retries of its own, and the automatic schedule goes on beside it). Asking twice before it ran queues
    it once. ``None`` when the delivery is gone."""
    number = sum(attempt.redelivery for attempt in delivery.attempts) + 1
    await queue.enqueue(DELIVER_TASK, attempt_job_id(delivery.id, number, redelivery=True), queue_name)
    now = utcnow()
    return await store.change_delivery(
        delivery.id,
        lambda d: _settled(msgspec.structs.replace(d, updated_at=now, redeliveries=max(d.redeliveries, number))),
    )


def _slot(delivery: Delivery, attempt: int, redelivery: bool) -> DeliveryAttempt | None:
    """The recorded attempt ``attempt`` of the schedule (or of the redeliveries), if there is one."""
    return next((a for a in delivery.attempts if (a.attempt, a.redelivery) == (attempt, redelivery)), None)


def _same(attempt: DeliveryAttempt, other: DeliveryAttempt) -> bool:
    """Whether two records are of the same attempt (one as it started, the other as it ended)."""
    return (attempt.attempt, attempt.redelivery, attempt.started_at) == (
        other.attempt,
        other.redelivery,
        other.started_at,
    )


def _begun(delivery: Delivery, started: DeliveryAttempt) -> Delivery | None:
    """``delivery`` with ``started`` recorded as ``sending``; ``None`` when that attempt is recorded already."""
    if _slot(delivery, started.attempt, started.redelivery) is not None:
        return None
    return _settled(
        msgspec.structs.replace(delivery, updated_at=started.started_at, attempts=[*delivery.attempts, started])
    )


def _interrupted(started: DeliveryAttempt) -> DeliveryAttempt:
    """An attempt whose worker stopped after it started sending and before it recorded the answer."""
    return msgspec.structs.replace(
        started,
        outcome="interrupted",
        error="interrupted: the worker sending it stopped before it recorded an answer; the receiver may have "
        "received it (every attempt carries the same webhook-id)",
    )


def _settled(delivery: Delivery) -> Delivery:
    """``delivery`` with the status its attempts give: ``succeeded`` once one got a 2xx, else ``pending``
    while an attempt is being sent or a scheduled attempt or an asked-for redelivery is still to run, else
    ``failed``."""
    redelivered = sum(attempt.redelivery for attempt in delivery.attempts)
    sending = any(attempt.outcome == "sending" for attempt in delivery.attempts)
    if any(attempt.succeeded for attempt in delivery.attempts):
        status: DeliveryStatus = "succeeded"
    elif sending or delivery.next_attempt_at is not None or delivery.redeliveries > redelivered:
        status = "pending"
    else:
        status = "failed"
    return msgspec.structs.replace(delivery, status=status)


def _ended(delivery: Delivery, why: str, attempt: int, redelivery: bool) -> Delivery | None:
    """``delivery`` failed for good at attempt ``attempt`` without sending it (its endpoint or event is
    gone): nothing more is scheduled. ``None`` when that attempt is already recorded."""
    if _slot(delivery, attempt, redelivery) is not None:
        return None
    now = utcnow()
    record = DeliveryAttempt(
        attempt=attempt,
        started_at=now,
        finished_at=now,
        duration_seconds=0.0,
        error=why,
        redelivery=redelivery,
        outcome="failed",
    )
    ended = msgspec.structs.replace(
        delivery, updated_at=now, next_attempt_at=None, attempts=[*delivery.attempts, record]
    )
    return _settled(ended)
