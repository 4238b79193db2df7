"""Webhook signing checked by the Standard Webhooks reference library, the SSRF address rules, the
transactional outbox on a real Redis (one event per transition however many writers race, and a dispatch
repeated after a crash creates nothing twice), and attempts sent to a real receiver in a chosen order: a
redelivery and the retry schedule never take each other's attempts."""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import httpx
import msgspec
import pytest
from arq.constants import job_key_prefix
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from redis.asyncio import Redis
from standardwebhooks import Webhook as ReferenceWebhook
from standardwebhooks import WebhookVerificationError

from mt_contracts import codec
from mt_contracts.jobs import JobError, RunJob
from mt_contracts.requests import TrainRunRequest
from mt_contracts.settings import WebhookSettings
from mt_contracts.webhooks import Delivery, Webhook, WebhookEvent
from mt_storage.embedded_redis import EmbeddedRedis
from mt_storage.jobs import run_jobs
from mt_storage.lifecycle import Lifecycle
from mt_storage.outbox import OUTBOX_KEY
from mt_storage.queue import ArqJobQueue
from mt_storage.webhooks import (
    AddressRefused,
    Deliverer,
    Dispatcher,
    StoredWebhook,
    WebhookStore,
    check_url,
    delivery_id,
    is_public,
    new_secret,
    redeliver,
    sign,
    signed_headers,
)
from tests.helpers import receiver, wait_for

QUEUE = "mt:queue:test-webhooks"
RUN_ID = "run_01JDQ8ZQ00000000000000000A"
BODY = b'{"type":"run.succeeded","data":{"id":"run_1"}}'


def test_signatures_verify_with_the_reference_library() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_") and len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    timestamp = int(datetime.now(UTC).timestamp())
    headers = signed_headers([secret], "msg_1", timestamp, BODY)
    reference = ReferenceWebhook(secret)
    assert reference.verify(BODY, headers) == {"type": "run.succeeded", "data": {"id": "run_1"}}
    when = datetime.fromtimestamp(timestamp, UTC)
    assert sign(secret, "msg_1", timestamp, BODY) == reference.sign("msg_1", when, BODY.decode())
    with pytest.raises(WebhookVerificationError):
        reference.verify(BODY + b" ", headers)
    with pytest.raises(WebhookVerificationError):
        ReferenceWebhook(new_secret()).verify(BODY, headers)


def test_a_rotated_endpoint_signs_with_both_secrets_for_a_day() -> None:
    old, new = new_secret(), new_secret()
    now = datetime.now(UTC)
    webhook = Webhook(id="wh_1", url="https://example.com/hook", events=["run.succeeded"], created_at=now)
    rotated = StoredWebhook(webhook=webhook, secret=new, previous_secret=old, previous_until=now + timedelta(hours=24))
    headers = signed_headers(rotated.signing_secrets(now), "msg_2", int(now.timestamp()), BODY)
    assert len(headers["webhook-signature"].split(" ")) == 2
    ReferenceWebhook(old).verify(BODY, headers)
    ReferenceWebhook(new).verify(BODY, headers)
    assert rotated.signing_secrets(now + timedelta(hours=25)) == [new]


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.215.14", True),
        ("2606:2800:21f:cb07:6820:80da:af6b:8b2c", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),  # cloud metadata
        ("100.64.0.1", False),  # carrier-grade NAT
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("::1", False),
        ("fe80::1%eth0", False),
        ("fd00::1", False),
        ("::ffff:127.0.0.1", False),
    ],
)
def test_only_public_addresses_are_public(address: str, public: bool) -> None:
    assert is_public(address) is public


async def test_urls_are_checked_after_resolution() -> None:
    for url, fragment in [
        ("ftp://example.com/x", "http:// or https://"),
        ("http:///nohost", "http:// or https://"),
        ("http://127.0.0.1:9/hook", "resolves to 127.0.0.1"),
        ("http://localhost:9/hook", "non-public"),
        ("http://[::1]/hook", "resolves to ::1"),
    ]:
        with pytest.raises(AddressRefused, match=fragment):
            await check_url(url, allow_private=False)
    await check_url("http://127.0.0.1:9/hook", allow_private=True)
    await check_url("http://93.184.215.14/hook", allow_private=False)


def test_the_default_retry_schedule_spans_more_than_a_day() -> None:
    settings = WebhookSettings()
    delays = [settings.retry_delay(attempt) for attempt in range(1, settings.max_attempts + 1)]
    assert delays == [5.0, 20.0, 80.0, 320.0, 1280.0, 5120.0, 20480.0, 81920.0, None]
    assert sum(delay for delay in delays if delay is not None) > 24 * 3600


def _run() -> RunJob:
    now = datetime.now(UTC)
    request = TrainRunRequest(tokenizer_id="tok_01JDQ8ZQ00000000000000000A", corpus_path="a.txt")
    return RunJob(id=RUN_ID, request=request, created_at=now, updated_at=now)


async def _outbox(redis: Redis) -> list[WebhookEvent]:
    entries = await redis.xrange(OUTBOX_KEY)
    return [codec.decode(fields[b"event"], WebhookEvent) for _, fields in entries]


async def test_racing_terminal_transitions_write_one_event(redis: Redis, redis_server: EmbeddedRedis) -> None:
    # Eight writers on eight connections race to fail the same queued run: one transaction wins.
    clients = [Redis.from_url(redis_server.url) for _ in range(8)]
    try:
        lifecycles = [Lifecycle(run_jobs(client), "run", 60.0) for client in clients]
        await lifecycles[0].create(_run())
        error = JobError(code="enqueue_failed", message="x")
        written = await asyncio.gather(*(lifecycle.fail_queued(RUN_ID, error) for lifecycle in lifecycles))
    finally:
        for client in clients:
            await client.aclose()
    assert sum(record is not None for record in written) == 1
    events = await _outbox(redis)
    assert [(event.type, event.data.id, event.data.status) for event in events] == [("run.failed", RUN_ID, "failed")]
    assert events[0].data.error == error and events[0].data.location == f"/runs/{RUN_ID}"


async def test_a_reaped_stalled_run_emits_stalled_once(redis: Redis, redis_server: EmbeddedRedis) -> None:
    lifecycle = Lifecycle(run_jobs(redis), "run", 1.0)
    await lifecycle.create(_run())
    assert await lifecycle.start(RUN_ID) is not None
    beat = datetime.now(UTC) - timedelta(seconds=30)
    await lifecycle.store.transact(RUN_ID, lambda r: msgspec.structs.replace(r, heartbeat_at=beat))
    assert await _outbox(redis) == []  # writes that end nothing send nothing
    other = Redis.from_url(redis_server.url)
    try:
        rival = Lifecycle(run_jobs(other), "run", 1.0)
        error = JobError(code="worker_lost", message="gone")
        results = await asyncio.gather(lifecycle.reap(RUN_ID, "fail", error), rival.reap(RUN_ID, "fail", error))
    finally:
        await other.aclose()
    assert sum(result is not None for result in results) == 1
    assert [(e.type, e.data.status) for e in await _outbox(redis)] == [
        ("run.stalled", "stalled"),
        ("run.failed", "failed"),
    ]


@pytest.fixture
async def queue(redis: Redis, redis_server: EmbeddedRedis) -> AsyncIterator[ArqJobQueue]:
    queue = await ArqJobQueue.connect(redis_server.url)
    yield queue
    await queue.close()


async def test_a_repeated_dispatch_creates_one_delivery_and_one_job(redis: Redis, queue: ArqJobQueue) -> None:
    store = WebhookStore(redis)
    now = datetime.now(UTC)
    hook = Webhook(id="wh_01JDQ8ZQ00000000000000000A", url="http://x.test/", events=["run.failed"], created_at=now)
    other = Webhook(id="wh_01JDQ8ZQ00000000000000000B", url="http://y.test/", events=["run.succeeded"], created_at=now)
    for webhook in (hook, other):
        await store.create(StoredWebhook(webhook=webhook, secret=new_secret()))
    lifecycle = Lifecycle(run_jobs(redis), "run", 60.0)
    await lifecycle.create(_run())
    await lifecycle.fail_queued(RUN_ID, JobError(code="x", message="y"))
    (entry_id, fields), *_ = await redis.xrange(OUTBOX_KEY)
    dispatcher = Dispatcher(store, queue, QUEUE)
    assert await dispatcher.dispatch_once() == 1
    # A dispatcher that died before deleting the entry: the next one dispatches it again.
    await redis.xadd(OUTBOX_KEY, fields)
    assert await dispatcher.dispatch_once() == 1
    assert await redis.xlen(OUTBOX_KEY) == 0
    deliveries = await store.deliveries(hook.id, 10)
    event = codec.decode(fields[b"event"], WebhookEvent)
    assert [(d.id, d.event_id, d.status, d.attempts) for d in deliveries] == [
        (delivery_id(event.id, hook.id), event.id, "pending", [])
    ]
    assert await store.deliveries(other.id, 10) == []
    assert await redis.zcard(QUEUE) == 1
    assert await redis.exists(job_key_prefix + f"{deliveries[0].id}:a1") == 1
    assert entry_id is not None


@dataclass
class Sending:
    """A delivery of one event to a real receiver, driven attempt by attempt as the webhook worker runs them."""

    store: WebhookStore
    queue: ArqJobQueue
    deliverer: Deliverer
    delivery_id: str

    async def delivery(self) -> Delivery:
        found = await self.store.get_delivery(self.delivery_id)
        assert found is not None
        return found

    async def queued(self) -> set[str]:
        """The attempts' job ids waiting on the webhook queue."""
        return {job.decode() for job in await self.store.redis.zrange(QUEUE, 0, -1)}

    async def run(self, job_id: str) -> None:
        """Run a queued attempt now (as the worker does once it is due), and take it off the queue."""
        assert job_id in await self.queued()
        await self.queue.discard(job_id, QUEUE)
        assert await self.deliverer.deliver(job_id) is not None

    async def redeliver(self) -> str:
        """Ask for a redelivery as ``POST .../redeliver`` does; the job id it queued."""
        before = await self.queued()
        assert await redeliver(self.store, self.queue, QUEUE, await self.delivery()) is not None
        (job_id,) = await self.queued() - before
        return job_id


# Retries wait a minute on the queue (they run when a test says); at most three attempts.
SCHEDULE = WebhookSettings(allow_private_addresses=True, timeout=5.0, retry_first_seconds=60.0, max_attempts=3)


@asynccontextmanager
async def sending(
    redis: Redis,
    queue: ArqJobQueue,
    url: str,
    settings: WebhookSettings = SCHEDULE,
    verify: ssl.SSLContext | bool = True,
) -> AsyncIterator[Sending]:
    """A dispatched ``run.failed`` event to an endpoint at ``url``, whose first attempt is queued; the
    deliverer sends under ``settings``, checking TLS certificates with ``verify``."""
    store = WebhookStore(redis)
    now = datetime.now(UTC)
    hook = Webhook(id="wh_01JDQ8ZQ00000000000000000A", url=url, events=["run.failed"], created_at=now)
    await store.create(StoredWebhook(webhook=hook, secret=new_secret()))
    lifecycle = Lifecycle(run_jobs(redis), "run", 60.0)
    await lifecycle.create(_run())
    await lifecycle.fail_queued(RUN_ID, JobError(code="x", message="y"))
    assert await Dispatcher(store, queue, QUEUE).dispatch_once() == 1
    (delivery,) = await store.deliveries(hook.id, 10)
    async with httpx.AsyncClient(timeout=settings.timeout, follow_redirects=False, verify=verify) as client:
        yield Sending(store, queue, Deliverer(store, queue, QUEUE, settings, client), delivery.id)


def _attempts(delivery: Delivery) -> list[tuple[int, bool, int | None]]:
    return [(a.attempt, a.redelivery, a.status_code) for a in delivery.attempts]


async def test_a_failed_redelivery_leaves_the_retry_schedule_going(redis: Redis, queue: ArqJobQueue) -> None:
    with receiver([500, 502, 200]) as hook_receiver:
        async with sending(redis, queue, hook_receiver.url) as delivery:
            first = f"{delivery.delivery_id}:a1"
            await delivery.run(first)
            failed_once = await delivery.delivery()
            assert failed_once.status == "pending" and failed_once.next_attempt_at is not None
            assert await delivery.queued() == {f"{delivery.delivery_id}:a2"}
            # The user redelivers while the second scheduled attempt waits; the redelivery fails too.
            await delivery.run(await delivery.redeliver())
            after = await delivery.delivery()
            assert (after.status, after.next_attempt_at, after.redeliveries) == (
                "pending",
                failed_once.next_attempt_at,
                1,
            )
            # The scheduled attempt still runs, as attempt 2, and succeeds.
            await delivery.run(f"{delivery.delivery_id}:a2")
            done = await delivery.delivery()
    assert done.status == "succeeded" and done.next_attempt_at is None
    assert _attempts(done) == [(1, False, 500), (1, True, 502), (2, False, 200)]
    assert [r.answered for r in hook_receiver.requests] == [500, 502, 200]


async def test_a_redelivery_queued_before_a_scheduled_attempt_runs_after_it(redis: Redis, queue: ArqJobQueue) -> None:
    with receiver([500, 500, 200]) as hook_receiver:
        async with sending(redis, queue, hook_receiver.url) as delivery:
            await delivery.run(f"{delivery.delivery_id}:a1")
            redelivery = await delivery.redeliver()
            # Asking again before it ran queues nothing more.
            assert await redeliver(delivery.store, queue, QUEUE, await delivery.delivery()) is not None
            assert await delivery.queued() == {f"{delivery.delivery_id}:a2", redelivery}
            # The scheduled attempt runs first and fails (the third is scheduled); then the redelivery.
            await delivery.run(f"{delivery.delivery_id}:a2")
            assert (await delivery.delivery()).status == "pending"
            await delivery.run(redelivery)
            done = await delivery.delivery()
            # Delivered: the third scheduled attempt finds nothing left to send.
            assert await delivery.deliverer.deliver(f"{delivery.delivery_id}:a3") is None
    assert done.status == "succeeded" and done.next_attempt_at is None and done.redeliveries == 1
    assert _attempts(done) == [(1, False, 500), (2, False, 500), (1, True, 200)]
    assert len(hook_receiver.requests) == 3
    assert {r.headers["webhook-id"] for r in hook_receiver.requests} == {done.event_id}


async def test_a_redelivery_after_the_schedule_is_spent(redis: Redis, queue: ArqJobQueue) -> None:
    with receiver([500, 500, 500, 503, 200]) as hook_receiver:
        async with sending(redis, queue, hook_receiver.url) as delivery:
            for attempt in (1, 2, 3):
                await delivery.run(f"{delivery.delivery_id}:a{attempt}")
            spent = await delivery.delivery()
            assert (spent.status, spent.next_attempt_at, await delivery.queued()) == ("failed", None, set())
            await delivery.run(await delivery.redeliver())
            assert (await delivery.delivery()).status == "failed"
            await delivery.run(await delivery.redeliver())
            done = await delivery.delivery()
    assert done.status == "succeeded" and done.redeliveries == 2
    assert _attempts(done)[3:] == [(1, True, 503), (2, True, 200)]
    assert len(hook_receiver.requests) == 5


async def test_an_attempt_is_listed_while_it_is_sent_and_interrupted_once_its_worker_died(
    redis: Redis, queue: ArqJobQueue
) -> None:
    with receiver() as hook_receiver:
        hook_receiver.hold.set()
        async with sending(redis, queue, hook_receiver.url) as delivery:
            first = f"{delivery.delivery_id}:a1"
            await queue.discard(first, QUEUE)
            worker = asyncio.create_task(delivery.deliverer.deliver(first))
            assert await asyncio.to_thread(hook_receiver.arrived.wait, 30), "the attempt never arrived"
            during = await delivery.delivery()
            assert during.status == "pending"
            assert [(a.attempt, a.outcome, a.finished_at, a.status_code) for a in during.attempts] == [
                (1, "sending", None, None)
            ]
            # The worker stops mid-request, its answer unrecorded; the receiver answers 200 to no one.
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)
            hook_receiver.hold.clear()
            hook_receiver.release.set()

            async def answered() -> int:
                return len(hook_receiver.requests)

            await wait_for(answered, lambda count: count == 1, 30)
            # arq runs the job again (on another worker): the attempt is recorded interrupted, the next one
            # scheduled and sent.
            interrupted = await delivery.deliverer.deliver(first)
            assert interrupted is not None and interrupted.outcome == "interrupted"
            assert await delivery.deliverer.deliver(first) is None  # once
            await delivery.run(f"{delivery.delivery_id}:a2")
            done = await delivery.delivery()
    assert done.status == "succeeded"
    assert [(a.attempt, a.outcome, a.status_code) for a in done.attempts] == [
        (1, "interrupted", None),
        (2, "succeeded", 200),
    ]
    assert done.attempts[0].error is not None and "the receiver may have received it" in done.attempts[0].error
    # At least once: the receiver got the event twice with one webhook-id, and by dropping ids it has seen
    # it handles the event once.
    assert [(r.headers["webhook-id"], r.answered) for r in hook_receiver.requests] == [(done.event_id, 200)] * 2
    assert hook_receiver.successes() == {done.event_id}


# What socket.getaddrinfo answers (typeshed's spelling).
AddressInfo = list[
    tuple[Literal[socket.AddressFamily.AF_INET], socket.SocketKind, int, str, tuple[str, int]]
    | tuple[
        Literal[socket.AddressFamily.AF_INET6],
        socket.SocketKind,
        int,
        str,
        tuple[str, int, int, int] | tuple[int, bytes],
    ]
]


class Resolver:
    """The system resolver, except for the names in ``answers``: each lookup of one of those gets its next
    answer (the last one again once they run out), as a DNS server under an attacker's control would."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.lookups: list[str] = []
        self.system = socket.getaddrinfo

    def __call__(
        self,
        host: str | bytes | None,
        port: bytes | str | int | None,
        family: int = 0,
        type: int = 0,
        proto: int = 0,
        flags: int = 0,
    ) -> AddressInfo:
        name = host.decode() if isinstance(host, bytes) else host
        if name is None or name not in self.answers:
            return self.system(host, port, family, type, proto, flags)
        self.lookups.append(name)
        queue = self.answers[name]
        address = queue.pop(0) if len(queue) > 1 else queue[0]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, int(port or 0)))]


async def test_a_name_that_re_points_to_loopback_after_the_check_is_not_followed(
    redis: Redis, queue: ArqJobQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    # DNS rebinding: the first lookup answers a public address, every later one loopback, where the receiver
    # listens. The first attempt connects to the public address it checked (nothing answers there); the
    # second finds loopback and is refused. Neither reaches the receiver.
    resolver = Resolver({"rebind.test": ["93.184.215.14", "127.0.0.1"]})
    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    strict = WebhookSettings(allow_private_addresses=False, timeout=1.0, retry_first_seconds=60.0, max_attempts=2)
    with receiver() as hook_receiver:
        url = f"http://rebind.test:{hook_receiver.port}/hook"
        async with sending(redis, queue, url, strict) as delivery:
            await delivery.run(f"{delivery.delivery_id}:a1")
            await delivery.run(f"{delivery.delivery_id}:a2")
            done = await delivery.delivery()
    assert hook_receiver.requests == []
    assert resolver.lookups == ["rebind.test", "rebind.test"]  # one lookup an attempt, connected to as checked
    first, second = done.attempts
    assert first.status_code is None and first.error is not None and not first.error.startswith("refused")
    assert second.error is not None
    assert second.error.startswith("refused: url's host 'rebind.test' resolves to 127.0.0.1, a private, loopback")
    assert done.status == "failed"


async def test_a_name_that_resolves_to_loopback_is_refused_at_delivery(redis: Redis, queue: ArqJobQueue) -> None:
    strict = WebhookSettings(allow_private_addresses=False, timeout=1.0, max_attempts=1)
    with receiver() as hook_receiver:
        async with sending(redis, queue, f"http://localhost:{hook_receiver.port}/hook", strict) as delivery:
            await delivery.run(f"{delivery.delivery_id}:a1")
            done = await delivery.delivery()
    assert hook_receiver.requests == []
    (attempt,) = done.attempts
    assert attempt.error is not None and attempt.error.startswith("refused: url's host 'localhost' resolves to ")
    assert "non-public" in attempt.error and done.status == "failed"


def _certificate(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for the DNS name ``name`` only (no IP address), and its key: PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


async def test_a_pinned_attempt_keeps_the_host_name_in_host_and_tls(
    redis: Redis, queue: ArqJobQueue, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The certificate names hook.test only: the attempt connects to 127.0.0.1 yet checks it against the
    # URL's host, which it also sends as SNI and in Host.
    cert, key = _certificate(tmp_path, "hook.test")
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    names: list[str | None] = []
    server.sni_callback = lambda _socket, name, _context: names.append(name)
    client = ssl.create_default_context(cafile=str(cert))
    monkeypatch.setattr(socket, "getaddrinfo", Resolver({"hook.test": ["127.0.0.1"]}))
    with receiver(tls=server) as hook_receiver:
        url = f"https://hook.test:{hook_receiver.port}/hook"
        async with sending(redis, queue, url, verify=client) as delivery:
            await delivery.run(f"{delivery.delivery_id}:a1")
            done = await delivery.delivery()
    assert [(a.status_code, a.error) for a in done.attempts] == [(200, None)]
    (request,) = hook_receiver.requests
    assert request.headers["host"] == f"hook.test:{hook_receiver.port}"
    assert names == ["hook.test"]
