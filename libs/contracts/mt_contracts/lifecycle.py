"""The job lifecycle as data: named transitions and, per job kind, which status each one leads to from which.

::

    queued ──start──▶ running ──succeed──▶ succeeded
      │                 │  ├─fail────────▶ failed ──resume (runs only)──▶ queued
      │                 │  ├─requeue─────▶ queued   (reaper, worker shutdown: any worker takes it over)
      │                 │  └─cancel──────▶ cancelling ──cancel──▶ cancelled ──resume (runs only)──▶ queued
      ├─cancel─────────────────────────────────────────────────▶ cancelled
      └─fail (the job could not be enqueued) ──▶ failed

``heartbeat``, ``progress`` and ``checkpoint`` keep the status (``running`` or ``cancelling``): they are
transitions of the record, written only by the lease holder, like ``succeed``. ``stalled`` is never stored:
``shown`` derives it from an old heartbeat. ``mt_storage.lifecycle`` applies these tables; nothing else
writes a job's status.
"""

from __future__ import annotations

from typing import Literal

from mt_contracts.jobs import JobStatus

JobKind = Literal["tokenizer", "run", "evaluation"]
JOB_KINDS: tuple[JobKind, ...] = ("tokenizer", "run", "evaluation")
Transition = Literal["start", "heartbeat", "progress", "checkpoint", "succeed", "fail", "cancel", "requeue", "resume"]
TRANSITIONS: tuple[Transition, ...] = (
    "start",
    "heartbeat",
    "progress",
    "checkpoint",
    "succeed",
    "fail",
    "cancel",
    "requeue",
    "resume",
)
TERMINAL_STATUSES: frozenset[JobStatus] = frozenset({"succeeded", "failed", "cancelled"})

# Transition -> {status before: status after}. A status missing from a transition's map refuses it.
Table = dict[Transition, dict[JobStatus, JobStatus]]

_LIVE: dict[JobStatus, JobStatus] = {"running": "running", "cancelling": "cancelling"}
_COMMON: Table = {
    # ``running -> running`` is a takeover of a job whose lease expired (its worker died before the reaper
    # saw it); ``mt_storage.lifecycle`` allows it only then. A pending cancel is completed instead.
    "start": {"queued": "running", "running": "running", "cancelling": "cancelled"},
    "heartbeat": dict(_LIVE),
    "progress": dict(_LIVE),
    "checkpoint": dict(_LIVE),
    # A job that finishes while its cancel is on the way keeps its real ending.
    "succeed": {"running": "succeeded", "cancelling": "succeeded"},
    "fail": {"queued": "failed", "running": "failed", "cancelling": "failed"},
    "cancel": {"queued": "cancelled", "running": "cancelling", "cancelling": "cancelled"},
    "requeue": {"running": "queued"},
    "resume": {},
}
TABLES: dict[JobKind, Table] = {
    "tokenizer": _COMMON,
    # Only a run continues from a checkpoint, so only a run may be resumed once it ended.
    "run": {**_COMMON, "resume": {"failed": "queued", "cancelled": "queued"}},
    "evaluation": _COMMON,
}


def next_status(kind: JobKind, transition: Transition, current: JobStatus) -> JobStatus | None:
    """The status a ``kind`` job in ``current`` has after ``transition``; ``None`` when it is not allowed."""
    return TABLES[kind][transition].get(current)
