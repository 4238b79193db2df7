"""Live job events: what ``GET /{runs,tokenizers}/{id}/logs/stream`` and the WebSocket deliver.

Each event has a monotonic ``id`` (the Redis Stream entry id, ``<milliseconds>-<sequence>``), a kind and a
JSON payload: a ``logs.jsonl`` line for ``log`` and ``progress``, a ``StatusEvent`` for ``status``. A
job's stream ends with its terminal status event.
"""

from __future__ import annotations

import re
from typing import Literal

import msgspec

from mt_contracts.jobs import JobError, JobStatus

EventKind = Literal["log", "progress", "status"]
EVENT_KINDS: frozenset[str] = frozenset({"log", "progress", "status"})
# At most 19 digits a part: every such number fits the unsigned 64 bits of a Redis Stream id.
_EVENT_ID = re.compile(r"^[0-9]{1,19}-[0-9]{1,19}$")


def is_event_id(value: str) -> bool:
    """True when ``value`` is a well-formed event id (``<milliseconds>-<sequence>``)."""
    return _EVENT_ID.fullmatch(value) is not None


def next_event_id(event_id: str) -> str:
    """The smallest id after ``event_id`` (same millisecond, next sequence)."""
    millis, _, sequence = event_id.partition("-")
    return f"{millis}-{int(sequence) + 1}"


class StatusEvent(msgspec.Struct, frozen=True, kw_only=True):
    """A job's status changed; ``ts`` is RFC 3339 UTC with milliseconds."""

    ts: str
    job_id: str
    status: JobStatus
    error: JobError | None = None


class LiveEvent(msgspec.Struct, frozen=True):
    """One delivered event; ``data`` is the JSON payload as stored."""

    id: str
    event: EventKind
    data: msgspec.Raw


class LogTail(msgspec.Struct, frozen=True):
    """``GET /{runs,tokenizers}/{id}/logs``: the job's last ``logs.jsonl`` lines, oldest first."""

    job_id: str
    lines: list[msgspec.Raw]
