"""Job logs: the last lines of ``logs.jsonl``, and live streams over SSE and WebSocket.

SSE events carry ``id:`` (resume with ``Last-Event-ID``), ``event:`` (``log``, ``progress`` or ``status``)
and the JSON payload as ``data:``; a ``: keep-alive`` comment follows every quiet ``API__KEEPALIVE_SECONDS``.
WebSocket messages are ``{"id", "event", "data"}`` objects (``{"event": "keep-alive"}`` when quiet); resume
with ``?last_event_id=``. Both end after the job's terminal status; a resume past it answers ``204`` (SSE),
which also stops browsers' automatic reconnects.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable
from pathlib import Path
from typing import Annotated

import msgspec
from litestar import Response, get
from litestar.di import NamedDependency
from litestar.handlers import websocket_stream
from litestar.params import FromPath, HeaderParameter, Parameter
from litestar.response import ServerSentEvent, ServerSentEventMessage
from litestar.status_codes import HTTP_204_NO_CONTENT

from mt_api import InvalidField, NotFound
from mt_api.auth import QUERY_TOKEN
from mt_api.live import KEEPALIVE, follow, has_events_after
from mt_api.services import Services
from mt_contracts.events import LiveEvent, LogTail, is_event_id
from mt_contracts.ids import is_run_id, is_tokenizer_id
from mt_contracts.jobs import TERMINAL_STATUSES, Job
from mt_storage.joblog import tail_lines

MAX_TAIL = 10_000
DEFAULT_TAIL = 100
_encoder = msgspec.json.Encoder()

TailLines = Annotated[int, Parameter(ge=1, le=MAX_TAIL, description="How many of the last lines.")]
StreamTail = Annotated[
    int, Parameter(ge=0, le=MAX_TAIL, description="Events replayed before live ones (ignored on a resume).")
]
LastEventId = Annotated[str | None, HeaderParameter(name="Last-Event-ID", description="Resume after this event id.")]


class _Kind(msgspec.Struct, frozen=True):
    name: str
    is_id: Callable[[str], bool]


_RUN = _Kind("run", is_run_id)
_TOKENIZER = _Kind("tokenizer", is_tokenizer_id)


async def _job(services: Services, kind: _Kind, job_id: str) -> Job:
    job: Job | None = None
    if kind.is_id(job_id):
        job = await (services.runs if kind is _RUN else services.tokenizers).get(job_id)
    if job is None:
        raise NotFound(f"no {kind.name} {job_id}")
    return job


def _log_path(services: Services, kind: _Kind, job_id: str) -> Path:
    return services.layout.run_logs(job_id) if kind is _RUN else services.layout.tokenizer_logs(job_id)


async def _tail(services: Services, kind: _Kind, job_id: str, tail: int) -> LogTail:
    await _job(services, kind, job_id)
    path = _log_path(services, kind, job_id)
    await services.pull_file(path)  # the object store's copy, uploaded when the job ends
    lines = tail_lines(path, tail)
    return LogTail(job_id=job_id, lines=[msgspec.Raw(line) for line in lines])


def _events(
    services: Services, kind: _Kind, job_id: str, after: str | None, tail: int
) -> AsyncIterator[LiveEvent | None]:
    store = services.runs if kind is _RUN else services.tokenizers

    async def record() -> Job | None:
        return await store.get(job_id)

    return follow(
        services.live,
        job_id,
        record,
        after=after,
        tail=tail,
        keepalive_seconds=services.settings.api.keepalive_seconds,
    )


def _check_event_id(value: str | None, field: str) -> None:
    if value is not None and not is_event_id(value):
        raise InvalidField(f"{field} {value!r} is not an event id; send the id of the last event received", field=field)


async def _sse(
    services: Services, kind: _Kind, job_id: str, last_event_id: str | None, tail: int
) -> ServerSentEvent | Response[None]:
    _check_event_id(last_event_id, "Last-Event-ID")
    job = await _job(services, kind, job_id)
    if (
        last_event_id is not None
        and job.status in TERMINAL_STATUSES
        and not await has_events_after(services.events, job_id, last_event_id)
    ):
        return Response(None, status_code=HTTP_204_NO_CONTENT)
    events = _events(services, kind, job_id, last_event_id, tail)
    gauge = services.metrics.live_streams

    async def messages() -> AsyncGenerator[ServerSentEventMessage, None]:
        gauge.inc()
        try:
            async for event in events:
                if event is KEEPALIVE:
                    yield ServerSentEventMessage(comment="keep-alive", data=None)
                else:
                    yield ServerSentEventMessage(id=event.id, event=event.event, data=bytes(event.data))
        finally:
            gauge.dec()

    return ServerSentEvent(messages(), headers={"Cache-Control": "no-cache, no-transform"})


@get("/runs/{run_id:str}/logs", tags=["logs"])
async def run_logs(
    run_id: FromPath[str], services: NamedDependency[Services], tail: TailLines = DEFAULT_TAIL
) -> LogTail:
    """The run's last ``tail`` log lines (1 to 10,000), oldest first, read from the end of ``logs.jsonl``."""
    return await _tail(services, _RUN, run_id, tail)


@get("/tokenizers/{tokenizer_id:str}/logs", tags=["logs"])
async def tokenizer_logs(
    tokenizer_id: FromPath[str], services: NamedDependency[Services], tail: TailLines = DEFAULT_TAIL
) -> LogTail:
    """The tokenizer job's last ``tail`` log lines (1 to 10,000), oldest first."""
    return await _tail(services, _TOKENIZER, tokenizer_id, tail)


@get("/runs/{run_id:str}/logs/stream", tags=["logs"], opt=QUERY_TOKEN)
async def run_log_stream(
    run_id: FromPath[str],
    services: NamedDependency[Services],
    last_event_id: LastEventId = None,
    tail: StreamTail = DEFAULT_TAIL,
) -> ServerSentEvent | Response[None]:
    """The run's events as Server-Sent Events, live, until its terminal status."""
    return await _sse(services, _RUN, run_id, last_event_id, tail)


@get("/tokenizers/{tokenizer_id:str}/logs/stream", tags=["logs"], opt=QUERY_TOKEN)
async def tokenizer_log_stream(
    tokenizer_id: FromPath[str],
    services: NamedDependency[Services],
    last_event_id: LastEventId = None,
    tail: StreamTail = DEFAULT_TAIL,
) -> ServerSentEvent | Response[None]:
    """The tokenizer job's events as Server-Sent Events, live, until its terminal status."""
    return await _sse(services, _TOKENIZER, tokenizer_id, last_event_id, tail)


async def _ws_messages(
    services: Services, kind: _Kind, job_id: str, last_event_id: str | None, tail: int
) -> AsyncGenerator[str, None]:
    _check_event_id(last_event_id, "last_event_id")
    await _job(services, kind, job_id)
    gauge = services.metrics.live_streams
    gauge.inc()
    try:
        async for event in _events(services, kind, job_id, last_event_id, tail):
            yield '{"event":"keep-alive"}' if event is KEEPALIVE else _encoder.encode(event).decode()
    finally:
        gauge.dec()


WsLastEventId = Annotated[str | None, Parameter(description="Resume after this event id.")]


@websocket_stream("/runs/{run_id:str}/logs/ws", opt=QUERY_TOKEN)
async def run_log_socket(
    run_id: FromPath[str],
    services: NamedDependency[Services],
    last_event_id: WsLastEventId = None,
    tail: StreamTail = DEFAULT_TAIL,
) -> AsyncGenerator[str, None]:
    """The run's events over a WebSocket, one JSON object per message, until its terminal status."""
    async for message in _ws_messages(services, _RUN, run_id, last_event_id, tail):
        yield message


@websocket_stream("/tokenizers/{tokenizer_id:str}/logs/ws", opt=QUERY_TOKEN)
async def tokenizer_log_socket(
    tokenizer_id: FromPath[str],
    services: NamedDependency[Services],
    last_event_id: WsLastEventId = None,
    tail: StreamTail = DEFAULT_TAIL,
) -> AsyncGenerator[str, None]:
    """The tokenizer job's events over a WebSocket, until its terminal status."""
    async for message in _ws_messages(services, _TOKENIZER, tokenizer_id, last_event_id, tail):
        yield message


ROUTES = [
    run_logs,
    tokenizer_logs,
    run_log_stream,
    tokenizer_log_stream,
    run_log_socket,
    tokenizer_log_socket,
]
