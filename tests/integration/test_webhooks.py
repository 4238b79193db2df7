"""Webhooks end to end: the real API, the real tokenizer, trainer and webhook workers on the private Redis,
and a real HTTP receiver on loopback (allowed by ``WEBHOOKS__ALLOW_PRIVATE_ADDRESSES``) whose signatures
are verified with the Standard Webhooks reference library."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from redis.asyncio import Redis
from standardwebhooks import Webhook as ReferenceWebhook

from mt_api.app import create_app
from mt_contracts import codec
from mt_contracts.settings import ApiSettings, WebhookSettings, WorkerServiceSettings
from mt_contracts.webhooks import Delivery, DeliveryPage, Webhook, WebhookEvent, WebhookPage, WebhookSecret
from mt_webhook_worker.worker import create_worker
from tests.helpers import close_workers, receiver, running_workers, wait_for, worker_process
from tests.integration.jobs import RUN, finished_run, submit_run, trained_tokenizer, worker_env

FAST = WebhookSettings(allow_private_addresses=True, timeout=2.0, retry_first_seconds=0.2, retry_factor=2.0)


@pytest.fixture
def hook_api(api_settings: ApiSettings) -> ApiSettings:
    return msgspec.structs.replace(api_settings, webhooks=FAST)


@pytest.fixture
def hook_workers(worker_settings: WorkerServiceSettings) -> WorkerServiceSettings:
    return msgspec.structs.replace(worker_settings, webhooks=FAST)


@asynccontextmanager
async def webhook_worker(settings: WorkerServiceSettings) -> AsyncIterator[None]:
    worker = create_worker(settings, handle_signals=False)
    task = asyncio.create_task(worker.main())
    try:
        yield
    finally:
        await close_workers([worker], [task])


async def register(client: AsyncTestClient[Litestar], url: str, events: list[str]) -> WebhookSecret:
    response = await client.post("/webhooks", json={"url": url, "events": events, "description": "test"})
    assert response.status_code == 201, response.text
    created = codec.decode(response.content, WebhookSecret)
    assert response.headers["location"] == f"/webhooks/{created.webhook.id}"
    return created


async def deliveries(client: AsyncTestClient[Litestar], webhook_id: str) -> list[Delivery]:
    response = await client.get(f"/webhooks/{webhook_id}/deliveries")
    assert response.status_code == 200, response.text
    return codec.decode(response.content, DeliveryPage).items


async def settled(
    client: AsyncTestClient[Litestar], webhook_id: str, count: int, timeout: float = 60
) -> list[Delivery]:
    """The endpoint's deliveries once ``count`` exist and none is pending."""
    return await wait_for(
        lambda: deliveries(client, webhook_id),
        lambda found: len(found) == count and all(d.status != "pending" for d in found),
        timeout,
    )


async def test_a_tokenizer_and_a_run_send_signed_events_listed_and_redelivered(
    hook_api: ApiSettings, hook_workers: WorkerServiceSettings, redis: Redis
) -> None:
    with receiver() as hook_receiver:
        async with (
            AsyncTestClient(app=create_app(hook_api)) as client,
            running_workers(hook_workers),
            webhook_worker(hook_workers),
        ):
            created = await register(client, hook_receiver.url, ["tokenizer.succeeded", "run.succeeded"])
            webhook = created.webhook
            # The secret is answered once: never by the reads.
            shown = (await client.get(f"/webhooks/{webhook.id}")).content
            assert created.secret.encode() not in shown and codec.decode(shown, Webhook) == webhook
            listed = codec.decode((await client.get("/webhooks")).content, WebhookPage)
            assert created.secret.encode() not in (await client.get("/webhooks")).content
            assert [item.id for item in listed.items] == [webhook.id]

            tokenizer_id = await trained_tokenizer(client)
            run_id = await submit_run(client, {**RUN, "tokenizer_id": tokenizer_id, "max_steps": 10})
            run = await finished_run(client, run_id)
            assert run.status == "succeeded", run.error
            found = await settled(client, webhook.id, 2)

            verifier = ReferenceWebhook(created.secret)
            events = []
            for request in hook_receiver.requests:
                verifier.verify(request.body, request.headers, json_parse=False)
                events.append(codec.decode(request.body, WebhookEvent))
                assert request.headers["webhook-id"] == events[-1].id
            assert sorted((e.type, e.data.id, e.data.status) for e in events) == [
                ("run.succeeded", run_id, "succeeded"),
                ("tokenizer.succeeded", tokenizer_id, "succeeded"),
            ]
            assert {e.data.location for e in events} == {f"/runs/{run_id}", f"/tokenizers/{tokenizer_id}"}
            for delivery in found:
                assert delivery.status == "succeeded"
                assert [(a.attempt, a.outcome, a.status_code, a.error) for a in delivery.attempts] == [
                    (1, "succeeded", 200, None)
                ]
                (attempt,) = delivery.attempts
                assert attempt.duration_seconds is not None and attempt.duration_seconds >= 0
                assert attempt.finished_at is not None and attempt.started_at <= attempt.finished_at

            newest = found[0]
            response = await client.post(f"/webhooks/{webhook.id}/deliveries/{newest.id}/redeliver")
            assert response.status_code == 202, response.text
            again = await wait_for(
                lambda: deliveries(client, webhook.id),
                lambda ds: len(next(d for d in ds if d.id == newest.id).attempts) == 2,
                60,
            )
            redelivered = next(d for d in again if d.id == newest.id)
            assert redelivered.status == "succeeded"
            assert [(a.attempt, a.status_code, a.redelivery) for a in redelivered.attempts] == [
                (1, 200, False),
                (1, 200, True),
            ]
            assert len(hook_receiver.requests) == 3
            assert hook_receiver.requests[-1].headers["webhook-id"] == newest.event_id
            verifier.verify(hook_receiver.requests[-1].body, hook_receiver.requests[-1].headers)

            assert (await client.delete(f"/webhooks/{webhook.id}")).status_code == 204
            assert (await client.get(f"/webhooks/{webhook.id}")).status_code == 404
            assert (await client.delete(f"/webhooks/{webhook.id}")).status_code == 404


async def test_a_receiver_that_fails_twice_gets_the_event_on_the_third_try(
    hook_api: ApiSettings, hook_workers: WorkerServiceSettings, redis: Redis
) -> None:
    with receiver([500, 503]) as hook_receiver:
        async with (
            AsyncTestClient(app=create_app(hook_api)) as client,
            running_workers(hook_workers, trainer=False),
            webhook_worker(hook_workers),
        ):
            created = await register(client, hook_receiver.url, ["tokenizer.succeeded"])
            await trained_tokenizer(client)
            (delivery,) = await settled(client, created.webhook.id, 1)
    assert delivery.status == "succeeded"
    assert [(a.attempt, a.status_code) for a in delivery.attempts] == [(1, 500), (2, 503), (3, 200)]
    assert [a.error for a in delivery.attempts] == [
        "the endpoint answered 500, not 2xx",
        "the endpoint answered 503, not 2xx",
        None,
    ]
    # Backoff: at least 0.2 s, then 0.4 s between the attempts (WEBHOOKS__RETRY_FIRST_SECONDS, _FACTOR).
    first, second, third = delivery.attempts
    assert first.finished_at is not None and second.finished_at is not None
    assert (second.started_at - first.finished_at).total_seconds() >= 0.2
    assert (third.started_at - second.finished_at).total_seconds() >= 0.4
    assert len({r.headers["webhook-id"] for r in hook_receiver.requests}) == 1
    assert hook_receiver.successes() == {delivery.event_id}


async def test_private_endpoints_are_refused_unless_allowed(
    api_settings: ApiSettings, hook_api: ApiSettings, hook_workers: WorkerServiceSettings, redis: Redis
) -> None:
    with receiver() as hook_receiver:
        async with AsyncTestClient(app=create_app(api_settings)) as strict:
            response = await strict.post("/webhooks", json={"url": hook_receiver.url, "events": ["run.failed"]})
            assert response.status_code == 400, response.text
            problem = json.loads(response.content)
            assert [error["field"] for error in problem["errors"]] == ["url"]
            assert "127.0.0.1" in problem["errors"][0]["message"]
            assert "WEBHOOKS__ALLOW_PRIVATE_ADDRESSES" in problem["errors"][0]["message"]
            assert codec.decode((await strict.get("/webhooks")).content, WebhookPage).items == []
            twice = {"url": "https://93.184.215.14/x", "events": ["run.failed", "run.failed"]}
            response = await strict.post("/webhooks", json=twice)
            assert response.status_code == 400 and json.loads(response.content)["errors"][0]["field"] == "events"
        # Registered where the API allows it, but the worker checks again at delivery time and refuses.
        strict_workers = msgspec.structs.replace(hook_workers, webhooks=WebhookSettings(max_attempts=1))
        async with (
            AsyncTestClient(app=create_app(hook_api)) as client,
            running_workers(strict_workers, trainer=False),
            webhook_worker(strict_workers),
        ):
            created = await register(client, hook_receiver.url, ["tokenizer.succeeded"])
            await trained_tokenizer(client)
            (delivery,) = await settled(client, created.webhook.id, 1)
    assert delivery.status == "failed"
    (attempt,) = delivery.attempts
    assert attempt.status_code is None and attempt.error is not None
    assert attempt.error.startswith("refused: url's host '127.0.0.1' resolves to 127.0.0.1")
    assert hook_receiver.requests == []


async def test_a_worker_killed_mid_delivery_leads_to_one_event_handled_by_a_deduplicating_receiver(
    hook_api: ApiSettings, hook_workers: WorkerServiceSettings, redis: Redis
) -> None:
    env = worker_env(
        hook_workers,
        WEBHOOKS__ALLOW_PRIVATE_ADDRESSES="true",
        WEBHOOKS__TIMEOUT="2",
        WEBHOOKS__RETRY_FIRST_SECONDS="0.2",
        WEBHOOKS__RETRY_FACTOR="2",
    )
    with receiver() as hook_receiver:
        hook_receiver.hold.set()
        async with AsyncTestClient(app=create_app(hook_api)) as client, running_workers(hook_workers, trainer=False):
            created = await register(client, hook_receiver.url, ["tokenizer.succeeded"])
            with worker_process("mt_webhook_worker", env) as first:
                await trained_tokenizer(client)
                assert await asyncio.to_thread(hook_receiver.arrived.wait, 60), "the first attempt never arrived"
                # Recorded before it was sent: the attempt is listed while the receiver holds it.
                (sending,) = await deliveries(client, created.webhook.id)
                assert [(a.attempt, a.outcome) for a in sending.attempts] == [(1, "sending")]
                os.kill(first.pid, signal.SIGKILL)  # mid-delivery: the receiver holds the request
                first.wait(30)
            hook_receiver.hold.clear()
            hook_receiver.release.set()  # the held request is answered 200, to a worker that is gone
            with worker_process("mt_webhook_worker", env):
                # arq hands the killed attempt's job to another worker once its in-progress mark expires
                # (about 80 s: the task's timeout, plus arq's margins), which records it interrupted and
                # sends the next attempt, with the same webhook-id.
                (delivery,) = await wait_for(
                    lambda: deliveries(client, created.webhook.id),
                    lambda found: len(found) == 1 and found[0].status == "succeeded",
                    240,
                )
    # The killed attempt is listed, interrupted (its answer never recorded); the next one succeeded.
    assert [(a.attempt, a.outcome, a.status_code) for a in delivery.attempts] == [
        (1, "interrupted", None),
        (2, "succeeded", 200),
    ]
    # Delivery is at least once: the receiver answered both requests, which carry the same webhook-id, so a
    # receiver that drops ids it has seen handles the event exactly once.
    assert [(r.headers["webhook-id"], r.answered) for r in hook_receiver.requests] == [(delivery.event_id, 200)] * 2
    assert hook_receiver.successes() == {delivery.event_id}
