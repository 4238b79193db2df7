"""The webhook outbox: the events a job's write sends, computed inside the lifecycle's transaction.

``mt_storage.lifecycle`` appends ``outbox_entries`` to the outbox stream in the same WATCH/MULTI transaction
as the status change; ``mt_storage.webhooks`` dispatches them. Kept apart from it so that the lifecycle
imports neither arq nor httpx.
"""

from __future__ import annotations

from ulid import ULID

from mt_contracts import codec
from mt_contracts.jobs import TERMINAL_STATUSES, EvalJob, Job, utcnow
from mt_contracts.lifecycle import JobKind
from mt_contracts.webhooks import WEBHOOK_EVENT_TYPES, WebhookEvent, WebhookEventType, WebhookJob

OUTBOX_KEY = "mt:webhook:outbox"
_EVENT_PREFIX: dict[JobKind, str] = {"tokenizer": "tokenizer", "run": "run", "evaluation": "eval"}


def outbox_entries(kind: JobKind, before: Job, after: Job, *, stalled: bool) -> list[tuple[str, bytes]]:
    """The outbox entries of one write of a ``kind`` job (``JobStore.transact``'s ``appends``): an event
    when the write ends the job (``<kind>.succeeded|failed|cancelled`` where such an event type exists), and
    ``run.stalled`` when ``stalled`` (a reaper takes the run back from a worker gone silent)."""
    prefix = _EVENT_PREFIX[kind]
    found: list[WebhookEventType] = []
    if stalled:
        found.extend(t for t in WEBHOOK_EVENT_TYPES if t == f"{prefix}.stalled")
    if after.status != before.status and after.status in TERMINAL_STATUSES:
        found.extend(t for t in WEBHOOK_EVENT_TYPES if t == f"{prefix}.{after.status}")
    return [(OUTBOX_KEY, codec.encode(_event(kind, event_type, after))) for event_type in found]


def _event(kind: JobKind, event_type: WebhookEventType, job: Job) -> WebhookEvent:
    if isinstance(job, EvalJob):
        location = f"/runs/{job.run_id}/evals/{job.id}"
    else:
        location = f"/{'tokenizers' if kind == 'tokenizer' else 'runs'}/{job.id}"
    status = "stalled" if event_type.endswith(".stalled") else job.status
    data = WebhookJob(
        id=job.id,
        kind=kind,
        status=status,
        location=location,
        error=job.error,
        finished_at=job.finished_at,
        attempts=job.attempts,
    )
    return WebhookEvent(id=f"msg_{ULID()}", type=event_type, timestamp=utcnow(), data=data)
