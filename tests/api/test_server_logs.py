"""What a real ``python -m mt_api`` (uvicorn, uvloop, httptools) writes to its log, read from its output:
no API key and no Redis password in any line, whichever logger wrote it (``uvicorn.access`` for HTTP requests,
``uvicorn.error`` for WebSocket handshakes, ours). The server runs against a password-protected Redis, so the
password setting is exercised end to end. A WebSocket without a valid key is closed with code 4401."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from mt_api.auth import WS_UNAUTHORIZED
from mt_contracts.logs import JsonFormatter
from mt_storage.embedded_redis import EmbeddedRedis, free_port

KEY = "k3y-that-must-never-be-logged-4242"
WRONG = "wr0ng-key-that-must-never-be-logged"
PASSWORD = "redis-pass-that-must-never-be-logged"
RUN = "run_01JDQ8ZQ0000000000000000AA"


class Server:
    def __init__(self, base: str, output: Path) -> None:
        self.base = base
        self.output = output


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    with EmbeddedRedis(tmp_path / "redis", persistent=False, password=PASSWORD) as redis_server:
        port = free_port()
        env = {
            **os.environ,
            "REDIS__URL": redis_server.url,
            "REDIS__PASSWORD": PASSWORD,
            "API__KEYS": KEY,
            "HTTP__HOST": "127.0.0.1",
            "HTTP__PORT": str(port),
            "APP__ARTIFACTS_ROOT": str(tmp_path / "artifacts"),
            "APP__RUNS_ROOT": str(tmp_path / "runs"),
            "APP__CORPUS_ROOT": str(tmp_path),
            "APP__LOG_LEVEL": "INFO",
        }
        output = tmp_path / "api.log"
        with output.open("wb") as sink:
            process = subprocess.Popen([sys.executable, "-m", "mt_api"], env=env, stdout=sink, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    if time.monotonic() > deadline or process.poll() is not None:
                        raise AssertionError(f"the API did not start: {output.read_text()}") from None
                    time.sleep(0.1)
            yield Server(base, output)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(30)


async def _close_code(url: str) -> tuple[int, str]:
    async with connect(url) as socket:
        try:
            await socket.recv()
        except ConnectionClosed as closed:
            assert closed.rcvd is not None
            return closed.rcvd.code, closed.rcvd.reason
    raise AssertionError("the socket sent a message instead of closing")


async def test_no_secret_reaches_the_log_of_a_real_server_and_websockets_close_4401(server: Server) -> None:
    ws_base = server.base.replace("http://", "ws://")
    async with httpx.AsyncClient(base_url=server.base) as client:
        # Redis answered with the password from REDIS__PASSWORD.
        ready = await client.get("/readyz")
        assert (ready.status_code, ready.json()["reasons"]) == (200, [])
        assert (await client.get(f"/runs/{RUN}/logs/stream?tail=1&access_token={KEY}")).status_code == 404
        assert (await client.get(f"/runs/{RUN}/logs/stream?access_token={WRONG}")).status_code == 401
        assert (await client.get("/tokenizers")).status_code == 401
    # A valid key passes the guard: the handshake is accepted (then the unknown run ends the stream).
    code, _ = await _close_code(f"{ws_base}/runs/{RUN}/logs/ws?access_token={KEY}")
    assert code != WS_UNAUTHORIZED
    assert await _close_code(f"{ws_base}/runs/{RUN}/logs/ws") == (
        WS_UNAUTHORIZED,
        "this endpoint needs an API key: send 'Authorization: Bearer <key>' (or an access_token query parameter)",
    )
    assert await _close_code(f"{ws_base}/runs/{RUN}/logs/ws?tail=2&access_token={WRONG}") == (
        WS_UNAUTHORIZED,
        "the API key is not valid; check API__KEYS and API__READ_ONLY_KEYS on the server",
    )
    await asyncio.sleep(0.5)  # let the server write its last lines

    text = server.output.read_text()
    for secret in (KEY, WRONG, PASSWORD):
        assert secret not in text, secret
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    access = [line["message"] for line in lines if line["logger"] == "uvicorn.access"]
    errors = [line["message"] for line in lines if line["logger"] == "uvicorn.error"]
    assert f'"GET /runs/{RUN}/logs/stream?tail=1&access_token=*** HTTP/1.1" 404' in "\n".join(access)
    assert f'"GET /runs/{RUN}/logs/stream?access_token=*** HTTP/1.1" 401' in "\n".join(access)
    handshakes = [message for message in errors if "WebSocket" in message]
    assert any(f'"WebSocket /runs/{RUN}/logs/ws?access_token=***" [accepted]' in m for m in handshakes), errors
    assert any(f'"WebSocket /runs/{RUN}/logs/ws?tail=2&access_token=***"' in m for m in handshakes), errors


def test_our_loggers_redact_tokens_and_url_passwords_in_messages_fields_and_tracebacks() -> None:
    formatter = JsonFormatter()
    try:
        raise ConnectionError(f"cannot reach redis://:{PASSWORD}@redis:6379/0")
    except ConnectionError as exc:
        record = logging.LogRecord(
            "mt_api.errors",
            logging.ERROR,
            __file__,
            1,
            "redis at %s failed for /runs/x/logs/ws?access_token=%s&tail=3",
            (f"redis://user:{PASSWORD}@redis:6379/0", KEY),
            (type(exc), exc, exc.__traceback__),
        )
    record.url = f"s3://minio:9000/bucket?x=1&access_token={KEY}"
    line = json.loads(formatter.format(record))
    assert (
        line["message"] == "redis at redis://user:***@redis:6379/0 failed for /runs/x/logs/ws?access_token=***&tail=3"
    )
    assert line["url"] == "s3://minio:9000/bucket?x=1&access_token=***"
    assert "redis://:***@redis:6379/0" in line["exception"]
    assert PASSWORD not in json.dumps(line) and KEY not in json.dumps(line)
