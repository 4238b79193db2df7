"""Job logs end to end through a real uvicorn server, the real workers and a private Redis: the tail, SSE
streams that end on the terminal status and resume without gap or duplicate, the WebSocket, and a client
that goes away."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import msgspec
import pytest
import uvicorn
from arq.worker import Worker
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from mt_api.app import create_app
from mt_api.auth import WS_UNAUTHORIZED
from mt_contracts.settings import ApiSettings, GatewaySettings, WorkerServiceSettings
from mt_storage.embedded_redis import free_port
from tests.helpers import running_workers, wait_for

TERMINAL = {"succeeded", "failed", "cancelled"}
Event = tuple[str, str, bytes]  # id, event, data


@pytest.fixture
async def server(api_settings: ApiSettings, redis: Redis) -> AsyncIterator[str]:
    settings = msgspec.structs.replace(api_settings, api=GatewaySettings(keepalive_seconds=0.3))
    async with _serving(settings) as url:
        yield url


@contextlib.asynccontextmanager
async def _serving(settings: ApiSettings) -> AsyncIterator[str]:
    port = free_port()
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_config=None, timeout_graceful_shutdown=2
    )
    instance = uvicorn.Server(config)
    task = asyncio.create_task(instance.serve())

    async def started() -> bool:
        return instance.started

    await wait_for(started, bool, 10)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        instance.should_exit = True
        await task


async def _read_events(
    lines: AsyncIterator[str], limit: int | None = None, comments: list[str] | None = None
) -> list[Event]:
    """Parse SSE events until the stream ends or ``limit`` events arrived."""
    events: list[Event] = []
    fields: dict[str, str] = {}
    async for line in lines:
        if line.startswith(":"):
            if comments is not None:
                comments.append(line[1:].strip())
            continue
        if line:
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
            continue
        if "data" in fields:
            events.append((fields["id"], fields["event"], fields["data"].encode()))
            if limit is not None and len(events) == limit:
                return events
        fields = {}
    return events


async def _stream(
    client: httpx.AsyncClient, url: str, headers: dict[str, str] | None = None, limit: int | None = None
) -> list[Event]:
    async with client.stream("GET", url, headers=headers) as response:
        assert response.status_code == 200
        return await _read_events(response.aiter_lines(), limit)


def _status(event: Event) -> str:
    value = msgspec.json.decode(event[2])
    assert isinstance(value, dict)
    return str(value["status"])


async def _idle(workers: list[Worker]) -> bool:
    """True once no worker holds a job task (arq finishes its bookkeeping after our record is terminal)."""
    return not any(worker.tasks for worker in workers)


def _key(event_id: str) -> tuple[int, int]:
    millis, _, sequence = event_id.partition("-")
    return int(millis), int(sequence)


async def _submit(client: httpx.AsyncClient, url: str, body: dict[str, object]) -> str:
    response = await client.post(url, json=body)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


async def test_tokenizer_stream_tail_and_websocket(
    server: str, worker_settings: WorkerServiceSettings, api_settings: ApiSettings
) -> None:
    async with (
        httpx.AsyncClient(base_url=server, timeout=60) as client,
        running_workers(worker_settings, trainer=False) as workers,
    ):
        job_id = await _submit(client, "/tokenizers/train", {"corpus_path": "small.txt", "vocab_size": 400})
        async with client.stream("GET", f"/tokenizers/{job_id}/logs/stream?tail=10000") as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["cache-control"].startswith("no-cache")
            assert response.headers["x-accel-buffering"] == "no"
            events = await _read_events(response.aiter_lines())
        await wait_for(lambda: _idle(workers), bool, 10)

    # Monotonic ids; queued first, the terminal status last, and the log events are logs.jsonl's lines.
    ids = [_key(event[0]) for event in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    statuses = [_status(event) for event in events if event[1] == "status"]
    assert statuses == ["queued", "running", "succeeded"]
    assert events[-1][1] == "status"
    log_file = Path(api_settings.app.artifacts_root) / "tokenizers" / job_id / "logs.jsonl"
    assert [event[2] for event in events if event[1] == "log"] == log_file.read_bytes().splitlines()

    async with httpx.AsyncClient(base_url=server, timeout=10) as client:
        tail = (await client.get(f"/tokenizers/{job_id}/logs?tail=2")).json()
        assert tail == {
            "job_id": job_id,
            "lines": [msgspec.json.decode(line) for line in log_file.read_bytes().splitlines()[-2:]],
        }
        # A resume past the terminal status answers 204, which also stops a browser's reconnects.
        done = await client.get(f"/tokenizers/{job_id}/logs/stream", headers={"Last-Event-ID": events[-1][0]})
        assert done.status_code == 204
        bad = await client.get(f"/tokenizers/{job_id}/logs/stream", headers={"Last-Event-ID": "yesterday"})
        assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "Last-Event-ID"

    # The WebSocket carries the same events; a resume starts right after the given id.
    ws_url = server.replace("http", "ws") + f"/tokenizers/{job_id}/logs/ws"
    middle = events[len(events) // 2][0]
    async with connect(f"{ws_url}?tail=10000") as socket:
        received = [msgspec.json.decode(message) async for message in socket]
    async with connect(f"{ws_url}?last_event_id={middle}") as socket:
        resumed = [msgspec.json.decode(message) async for message in socket]
    as_events = [(m["id"], m["event"], msgspec.json.encode(m["data"])) for m in received]
    assert [e[:2] for e in as_events] == [e[:2] for e in events]
    assert [m["id"] for m in resumed] == [e[0] for e in events[len(events) // 2 + 1 :]]


async def test_sse_resume_after_a_dropped_connection_has_no_gap_and_no_duplicate(
    server: str, worker_settings: WorkerServiceSettings
) -> None:
    async with httpx.AsyncClient(base_url=server, timeout=120) as client, running_workers(worker_settings) as workers:
        tokenizer_id = await _submit(client, "/tokenizers/train", {"corpus_path": "small.txt", "vocab_size": 300})
        await wait_for(lambda: client.get(f"/tokenizers/{tokenizer_id}"), lambda r: r.json()["status"] in TERMINAL, 60)
        run = {
            "tokenizer_id": tokenizer_id, "corpus_path": "small.txt", "n_layer": 1, "n_head": 2, "n_embd": 32,
            "block_size": 32, "batch_size": 4, "max_steps": 150, "warmup_steps": 5, "eval_interval": 50,
            "eval_iters": 2, "device": "cpu",
        }  # fmt: skip
        run_id = await _submit(client, "/runs/train", run)
        url = f"/runs/{run_id}/logs/stream?tail=10000"
        # Read until the first progress event, drop the connection while the run goes on, then resume.
        first: list[Event] = []
        while not any(event[1] == "progress" for event in first):
            first = await _stream(client, url, limit=len(first) + 1)
        await asyncio.sleep(1.0)
        rest = await _stream(client, url, headers={"Last-Event-ID": first[-1][0]})
        whole = await _stream(client, url)
        await wait_for(lambda: _idle(workers), bool, 10)
    assert first + rest == whole
    assert _status(whole[-1]) == "succeeded"
    assert any(event[1] == "progress" for event in rest)


def _live_streams(text: str) -> float:
    for family in text_string_to_metric_families(text):
        if family.name == "mt_live_streams":
            return family.samples[0].value
    raise AssertionError("mt_live_streams missing")


async def test_a_client_that_goes_away_stops_its_server_work(server: str, redis: Redis) -> None:
    async with httpx.AsyncClient(base_url=server, timeout=10) as client:
        # No workers: the job stays queued and its stream waits, sending keep-alives.
        job_id = await _submit(client, "/tokenizers/train", {"corpus_path": "small.txt", "vocab_size": 400})
        comments: list[str] = []
        async with client.stream("GET", f"/tokenizers/{job_id}/logs/stream") as response:
            lines = response.aiter_lines()
            (queued,) = await _read_events(lines, limit=1)
            assert _status(queued) == "queued"
            async for line in lines:
                if line.startswith(":"):
                    comments.append(line)
                    break
            assert _live_streams((await client.get("/metrics")).text) == 1
        assert comments == [": keep-alive"]

        async def blocked_reads() -> int:
            clients = await redis.client_list()
            return sum(1 for entry in clients if entry.get("cmd") == "xread")

        await wait_for(lambda: client.get("/metrics"), lambda r: _live_streams(r.text) == 0, 5)
        await wait_for(blocked_reads, lambda count: count == 0, 5)


FULL_KEY, READ_KEY = "full-key-0123456789", "read-key-0123456789"


async def test_live_streams_take_an_access_token_and_read_only_keys_only_read(
    api_settings: ApiSettings, redis: Redis
) -> None:
    keys = GatewaySettings(keys=FULL_KEY, read_only_keys=READ_KEY, keepalive_seconds=0.3)
    full, read = {"Authorization": f"Bearer {FULL_KEY}"}, {"Authorization": f"Bearer {READ_KEY}"}
    async with (
        _serving(msgspec.structs.replace(api_settings, api=keys)) as server,
        httpx.AsyncClient(base_url=server, timeout=10) as client,
    ):
        # No workers: the job stays queued.
        refused = await client.post(
            "/tokenizers/train", json={"corpus_path": "small.txt", "vocab_size": 400}, headers=read
        )
        assert refused.status_code == 403 and refused.json()["type"] == "urn:model-trainer:problem:forbidden"
        assert refused.headers["www-authenticate"] == 'Bearer realm="model-trainer", error="insufficient_scope"'
        client.headers.update(full)
        job_id = await _submit(client, "/tokenizers/train", {"corpus_path": "small.txt", "vocab_size": 400})
        client.headers.pop("Authorization")

        # Browsers cannot set headers on EventSource: the key comes as access_token, on streams only.
        stream = f"/tokenizers/{job_id}/logs/stream"
        assert (await client.get(stream)).status_code == 401
        assert (await client.get(f"{stream}?access_token=wrong")).status_code == 401
        assert (await client.get(f"/tokenizers/{job_id}?access_token={READ_KEY}")).status_code == 401
        (queued,) = await _stream(client, f"{stream}?access_token={READ_KEY}", limit=1)
        assert _status(queued) == "queued"
        assert (await client.get(f"/tokenizers/{job_id}", headers=read)).json()["status"] == "queued"

        ws_url = server.replace("http", "ws") + f"/tokenizers/{job_id}/logs/ws"
        # A wrong key: the handshake succeeds and the socket closes with 4401, the 401 of WebSockets.
        async with connect(f"{ws_url}?access_token=wrong") as refused_socket:
            with pytest.raises(ConnectionClosed) as closed:
                await refused_socket.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == WS_UNAUTHORIZED
        async with connect(f"{ws_url}?access_token={READ_KEY}") as socket:
            first = msgspec.json.decode(await socket.recv())
            assert first["event"] == "status" and first["data"]["status"] == "queued"
            assert (await client.post(f"/tokenizers/{job_id}/cancel", headers=read)).status_code == 403
            assert (await client.post(f"/tokenizers/{job_id}/cancel", headers=full)).status_code == 200
            rest = [msgspec.json.decode(message) async for message in socket]
        assert [message["data"]["status"] for message in rest if message["event"] == "status"] == ["cancelled"]
