"""Job events: one tagged union (on ``kind``) from the child process to its worker, the job's
``logs.jsonl``, the live stream and the client.

A child process writes each event as one JSON line on stdout; the worker decodes it once, applies it to the
job record through the lifecycle, appends the same bytes to ``logs.jsonl`` (the durable series: the run's
``/metrics`` is read from it) and to the job's capped Redis Stream (the live transport, whose entry ids are the
events' ids for resuming). Status events come from the lifecycle itself, in the same Redis transaction as the
status change; the stream carries them to live readers, the record keeps the status.

Every event has ``ts`` (RFC 3339 UTC, milliseconds), ``job_id``, ``event`` (its name: ``started``,
``progress``, ``checkpoint``, ``failed``...), ``level`` and a human ``message``.
"""

from __future__ import annotations

import re
from typing import Literal

import msgspec

from mt_contracts.jobs import CheckpointInfo, EvalPoint, JobError, JobStatus, RunProgress
from mt_contracts.logs import timestamp

EventKind = Literal["log", "progress", "validation", "checkpoint", "status"]
EVENT_KINDS: frozenset[str] = frozenset({"log", "progress", "validation", "checkpoint", "status"})
# At most 19 digits a part: every such number fits the unsigned 64 bits of a Redis Stream id.
_EVENT_ID = re.compile(r"^[0-9]{1,19}-[0-9]{1,19}$")


def is_event_id(value: str) -> bool:
    """True when ``value`` is a well-formed event id (``<milliseconds>-<sequence>``)."""
    return _EVENT_ID.fullmatch(value) is not None


def next_event_id(event_id: str) -> str:
    """The smallest id after ``event_id`` (same millisecond, next sequence)."""
    millis, _, sequence = event_id.partition("-")
    return f"{millis}-{int(sequence) + 1}"


class _Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind"):
    ts: str
    job_id: str
    event: str
    level: str = "info"
    message: str = ""


class LogEvent(_Event, frozen=True, kw_only=True, tag="log"):
    """A log line; ``fields`` are its event's own values (``attempt``, ``pid``, ``vocab_size``...)."""

    fields: dict[str, object] = msgspec.field(default_factory=dict)


class ProgressEvent(_Event, frozen=True, kw_only=True, tag="progress"):
    """Rate-limited training progress."""

    progress: RunProgress


class ValidationEvent(_Event, frozen=True, kw_only=True, tag="validation"):
    """A validation result during or at the end of training (the final one scores the whole split)."""

    point: EvalPoint


class CheckpointEvent(_Event, frozen=True, kw_only=True, tag="checkpoint"):
    """A checkpoint was written (atomically) and older ones beyond ``keep_checkpoints`` deleted."""

    checkpoint: CheckpointInfo


class StatusEvent(_Event, frozen=True, kw_only=True, tag="status"):
    """The job's status changed (written by the lifecycle only)."""

    status: JobStatus
    error: JobError | None = None


JobEvent = LogEvent | ProgressEvent | ValidationEvent | CheckpointEvent | StatusEvent
# What a child process may write besides its outcome: every event but a status change.
ChildEvent = LogEvent | ProgressEvent | ValidationEvent | CheckpointEvent
CHILD_EVENT_TYPES = (LogEvent, ProgressEvent, ValidationEvent, CheckpointEvent)


def kind_of(event: JobEvent) -> EventKind:
    """The kind (the union's tag) of ``event``, from its type."""
    match event:
        case LogEvent():
            return "log"
        case ProgressEvent():
            return "progress"
        case ValidationEvent():
            return "validation"
        case CheckpointEvent():
            return "checkpoint"
        case StatusEvent():
            return "status"


class Resumed(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="resumed"):
    """A training child continues from the checkpoint at ``step``."""

    step: int


class Failed(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="failed"):
    """A child stopped on an error; ``code`` is stable, ``message`` says what to change."""

    code: str
    message: str


def log_event(job_id: str, level: str, event: str, message: str, **fields: object) -> LogEvent:
    """A ``LogEvent`` stamped now."""
    return LogEvent(ts=timestamp(), job_id=job_id, event=event, level=level, message=message, fields=fields)


def status_event(job_id: str, status: JobStatus, error: JobError | None) -> StatusEvent:
    """A ``StatusEvent`` stamped now."""
    message = status if error is None else f"{status}: {error.code}"
    level = "error" if status == "failed" else "info"
    return StatusEvent(
        ts=timestamp(), job_id=job_id, event="status", level=level, message=message, status=status, error=error
    )


class LiveEvent(msgspec.Struct, frozen=True):
    """One delivered event: ``id`` its stream id, ``event`` its kind, ``data`` the ``JobEvent`` as stored."""

    id: str
    event: EventKind
    data: msgspec.Raw


class LogTail(msgspec.Struct, frozen=True):
    """``GET /{runs,tokenizers}/{id}/logs``: the job's last ``logs.jsonl`` events, oldest first."""

    job_id: str
    lines: list[msgspec.Raw]


_job_event_decoder: msgspec.json.Decoder[JobEvent] = msgspec.json.Decoder(JobEvent)


def decode_job_event(data: bytes) -> JobEvent:
    """Decode one stored event.

    Raises:
        msgspec.DecodeError: not JSON, or not a known event.
    """
    return _job_event_decoder.decode(data)
