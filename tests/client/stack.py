"""Plumbing of the client tests: the real app under uvicorn on a free port, and a real TCP proxy in front
of it that can cut a response's connection after some bytes of its body or answer one request 503."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn

from mt_api.app import create_app
from mt_contracts.settings import ApiSettings
from mt_storage.embedded_redis import free_port
from tests.helpers import wait_for

MT = str(Path(sys.executable).with_name("mt"))
ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\r")


@contextlib.asynccontextmanager
async def serving(settings: ApiSettings) -> AsyncIterator[str]:
    """The real app under uvicorn on 127.0.0.1; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_config=None, timeout_graceful_shutdown=2
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())

    async def started() -> bool:
        return server.started

    await wait_for(started, bool, 10)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@dataclass
class Rule:
    """Cut the ``times`` next responses to requests whose head contains ``match`` after ``after`` bytes of
    their body; ``status_503`` answers them 503 instead of forwarding."""

    match: str
    after: int = 0
    times: int = 1
    status_503: bool = False


@dataclass
class Proxy:
    """A real HTTP/1.1 proxy (one request a connection: it adds ``Connection: close``); ``heads`` records
    each request head (lower-cased) in arrival order."""

    upstream_port: int
    rules: list[Rule] = field(default_factory=list)
    heads: list[str] = field(default_factory=list)
    cuts: int = 0
    url: str = ""
    _open: set[asyncio.StreamWriter] = field(default_factory=set)

    def heads_with(self, text: str) -> list[str]:
        return [head for head in self.heads if text in head]

    def _rule(self, head: str) -> Rule | None:
        for rule in self.rules:
            if rule.times > 0 and rule.match in head:
                rule.times -= 1
                return rule
        return None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Every stream this connection opens is closed however it ends (a client gone, the upstream refusing,
        # the proxy shut down): an asyncio stream left open warns when it is collected, often tests later.
        up_writer: asyncio.StreamWriter | None = None
        pump: asyncio.Task[None] | None = None
        self._open.add(writer)
        try:
            raw = await reader.readuntil(b"\r\n\r\n")
            head = raw.decode("latin-1")
            self.heads.append(head.lower())
            rule = self._rule(head.lower())
            if rule is not None and rule.status_503:
                body = b'{"type":"urn:model-trainer:problem:unavailable","title":"Service Unavailable","status":503}'
                writer.write(
                    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\n"
                    + f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
                return
            lines = [line for line in head.split("\r\n")[:-2] if not line.lower().startswith("connection:")]
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            self._open.add(up_writer)
            up_writer.write(("\r\n".join([*lines, "Connection: close"]) + "\r\n\r\n").encode("latin-1"))
            pump = asyncio.create_task(self._pump(reader, up_writer))
            await self._respond(up_reader, writer, rule)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            return
        finally:
            if pump is not None:
                pump.cancel()
                await asyncio.gather(pump, return_exceptions=True)
            for stream in (up_writer, writer):
                if stream is not None:
                    stream.close()
                    self._open.discard(stream)

    def close_all(self) -> None:
        """Close every connection still open, both sides (their handlers then end on the closed streams)."""
        for stream in list(self._open):
            stream.close()
        self._open.clear()

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()

    async def _respond(self, upstream: asyncio.StreamReader, writer: asyncio.StreamWriter, rule: Rule | None) -> None:
        head = await upstream.readuntil(b"\r\n\r\n")
        writer.transport.set_write_buffer_limits(0)  # drain() then waits until the kernel has the bytes
        writer.write(head)
        sent = 0
        while data := await upstream.read(65536):
            if rule is not None and sent + len(data) >= rule.after:
                writer.write(data[: rule.after - sent])
                await writer.drain()
                self.cuts += 1
                # Closed mid-body (a reset would make the client's kernel drop the bytes it has not read yet).
                writer.close()
                return
            sent += len(data)
            writer.write(data)
            await writer.drain()


@contextlib.asynccontextmanager
async def proxy_to(url: str) -> AsyncIterator[Proxy]:
    proxy = Proxy(upstream_port=int(url.rsplit(":", 1)[1]))
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    proxy.url = f"http://127.0.0.1:{port}"
    try:
        yield proxy
    finally:
        server.close()
        proxy.close_all()
        await server.wait_closed()


@dataclass(frozen=True)
class Finished:
    code: int
    stdout: str
    stderr: str


async def mt(url: str, *args: str, env: dict[str, str] | None = None, timeout: float = 300) -> Finished:
    """``mt --url URL ARGS`` as a child process (pipes, no terminal)."""
    process = await asyncio.create_subprocess_exec(
        MT,
        "--url",
        url,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return Finished(process.returncode, stdout.decode(), stderr.decode())


def in_terminal(
    argv: list[str], *, interrupt_when: Callable[[str], bool] | None = None, timeout: float = 300
) -> tuple[int, str]:
    """Run ``argv`` with a pseudo-terminal as its stdin, stdout and stderr (120 columns), send SIGINT once
    ``interrupt_when(screen)`` holds, and return its exit code and what a person saw, control sequences
    removed. Blocking: call it in a thread."""
    master, slave = os.openpty()
    env = {**os.environ, "COLUMNS": "120", "LINES": "40", "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    process = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    output = bytearray()
    interrupted = False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: every writer closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
            if interrupt_when is not None and not interrupted and interrupt_when(screen(bytes(output))):
                process.send_signal(signal.SIGINT)
                interrupted = True
        code = process.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(master)
    return code, screen(bytes(output))


def screen(output: bytes) -> str:
    """Terminal output as text: escape sequences and carriage returns removed."""
    return ANSI.sub("", output.decode("utf-8", "replace"))
