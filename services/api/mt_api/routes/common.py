"""Helpers shared by the route modules: new ids, 202 answers, enqueueing, cancelling and listing."""

from __future__ import annotations

from collections.abc import Callable

from litestar import Response
from litestar.status_codes import HTTP_202_ACCEPTED
from ulid import ULID

from mt_api import Conflict, InvalidField, NotFound
from mt_api.services import Services
from mt_contracts.ids import is_run_id
from mt_contracts.jobs import JobAccepted, JobError, JobStatus, RunJob, utcnow
from mt_storage import RecordNotFound
from mt_storage.jobs import JobStore, R
from mt_storage.lifecycle import Lifecycle, is_stalled, shown

DRY_RUN = (
    "Validate as a real job would, queue and write nothing, and answer 200 with the estimate (corpus size, "
    "expected time and peak memory, warnings)."
)


def new_id(prefix: str) -> str:
    """``<prefix>_<ULID>``: 48-bit millisecond time + 80 random bits, Crockford base32; sortable and
    collision-free."""
    return f"{prefix}_{ULID()}"


def accepted(job_id: str, location: str) -> Response[JobAccepted]:
    """``202 Accepted`` with the job's id, status and ``Location``."""
    return Response(
        JobAccepted(id=job_id, status="queued", location=location),
        status_code=HTTP_202_ACCEPTED,
        headers={"Location": location},
    )


async def enqueue(services: Services, lifecycle: Lifecycle[R], task: str, job_id: str, queue_name: str) -> None:
    """Enqueue, or fail the fresh record if the queue refuses, so no record waits for a job that never runs."""
    try:
        enqueued = await services.queue.enqueue(task, job_id, queue_name)
    except Exception:
        error = JobError(code="enqueue_failed", message="the job could not be queued; submit it again")
        await lifecycle.fail_queued(job_id, error)
        raise
    if not enqueued:
        raise RuntimeError(f"job id {job_id} was already queued")


async def create_admitted(
    services: Services, lifecycle: Lifecycle[R], job: R, corpus_path: str, group: str | None = None
) -> None:
    """Store the new ``queued`` job and, in the same transaction, read whether its corpus is being deleted or
    replaced (see ``CorpusGuard``); such a job is failed ``corpus_changing`` and refused before it is
    enqueued.

    Raises:
        Conflict: the corpus is being deleted or replaced.
    """
    if await lifecycle.create(job, group, mark=services.corpus_guard.mark_key(corpus_path)):
        await _refuse(lifecycle, job.id, corpus_path)


async def admit(services: Services, lifecycle: Lifecycle[R], job_id: str, corpus_path: str) -> None:
    """For a job already stored ``queued`` (a resumed run), before it is enqueued: one whose corpus is being
    deleted or replaced meanwhile is failed ``corpus_changing`` and refused (see ``CorpusGuard``).

    Raises:
        Conflict: the corpus is being deleted or replaced.
    """
    if await services.corpus_guard.is_changing(corpus_path):
        await _refuse(lifecycle, job_id, corpus_path)


async def _refuse(lifecycle: Lifecycle[R], job_id: str, corpus_path: str) -> None:
    message = f"corpus_path {corpus_path!r} is being deleted or replaced; submit the job again after that"
    await lifecycle.fail_queued(job_id, JobError(code="corpus_changing", message=message))
    raise Conflict(message, field="corpus_path")


async def page(
    services: Services,
    store: JobStore[R],
    kind: str,
    is_id: Callable[[str], bool],
    *,
    limit: int,
    cursor: str | None,
    status: JobStatus | None,
) -> tuple[list[R], str | None]:
    """One page of ``store``'s jobs, newest first, as clients see them (``stalled`` when a running job's
    heartbeat is too old), and the cursor of the next page. ``status`` is the stored status, except
    ``stalled``, which is never stored: it keeps the running and cancelling jobs whose heartbeat is too old.

    Raises:
        InvalidField: ``cursor`` is not a ``kind`` id.
    """
    if cursor is not None and not is_id(cursor):
        raise InvalidField(f"cursor {cursor!r} is not a {kind} id; pass next_cursor as it came", field="cursor")
    now, stall_after = utcnow(), services.settings.app.stall_after_seconds
    if status == "stalled":

        def stalled(job: R) -> bool:
            return is_stalled(job, now, stall_after)

        items, next_cursor = await store.list_page(limit=limit, cursor=cursor, keep=stalled)
    else:
        items, next_cursor = await store.list_page(limit=limit, cursor=cursor, status=status)
    return [shown(job, now, stall_after) for job in items], next_cursor


async def cancel(services: Services, lifecycle: Lifecycle[R], job_id: str, kind: str) -> R:
    """Cancel a queued job at once, or ask the worker running it to stop (``cancelling``, then ``cancelled``).

    Raises:
        NotFound: no such job.
        Conflict: the job already ended.
    """
    try:
        job = await lifecycle.cancel(job_id)
    except RecordNotFound as exc:
        raise NotFound(f"no {kind} {job_id}") from exc
    if job is None:
        current = await lifecycle.store.get(job_id)
        status = current.status if current else "gone"
        raise Conflict(f"{kind} {job_id} already ended ({status}); there is nothing to cancel")
    if job.status == "cancelling":
        await services.queue.abort(job_id)
    return job


async def find_run(services: Services, run_id: str) -> RunJob:
    """The run's record.

    Raises:
        NotFound: no such run.
    """
    job = await services.runs.get(run_id) if is_run_id(run_id) else None
    if job is None:
        raise NotFound(f"no run {run_id}")
    return job
