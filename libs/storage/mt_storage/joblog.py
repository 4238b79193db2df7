"""A job's own ``logs.jsonl``: only that job's events (``mt_contracts.events.JobEvent``), one JSON object a
line, written by its worker; and reading its last lines from the end of the file."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from mt_contracts import codec
from mt_contracts.events import JobEvent, log_event
from mt_storage.files import append_line

logger = logging.getLogger(__name__)

_BLOCK = 64 * 1024

# Receives each event after it is written, with its JSON: the workers pass a live event publisher.
EventSink = Callable[[JobEvent, bytes], None]


class EventLog(Protocol):
    """Where job code writes its log events: a ``JobLog`` in a worker, a ``mt_storage.child.Channel`` in a
    child process (which hands them to the worker)."""

    def write(self, level: str, event: str, message: str, **fields: object) -> None: ...


class JobLog:
    """Appends job ``job_id``'s events to ``path``; ``sink``, when given, receives every event after it is
    written (the live event stream).

    A write that fails (the disk is full, the folder is gone) is logged once and the event still goes to
    ``sink``: the record and the live stream must still learn how the job ended. ``failed_writes`` counts them.
    """

    def __init__(self, path: Path, job_id: str, sink: EventSink | None = None) -> None:
        self.path = path
        self.job_id = job_id
        self.sink = sink
        self.failed_writes = 0

    def emit(self, event: JobEvent) -> None:
        """Append ``event`` and hand it to the sink."""
        data = codec.encode(event)
        try:
            append_line(self.path, data + b"\n")
        except OSError as exc:
            self.failed_writes += 1
            if self.failed_writes == 1:
                logger.warning(
                    "job log not written",
                    extra={"event": "joblog_write_failed", "job_id": self.job_id, "error": str(exc)},
                )
        if self.sink is not None:
            self.sink(event, data)

    def write(self, level: str, event: str, message: str, **fields: object) -> None:
        """Emit a log event. ``fields`` must be JSON-encodable (numbers, strings, Structs...)."""
        self.emit(log_event(self.job_id, level, event, message, **fields))


def tail_lines(path: Path, count: int) -> list[bytes]:
    """The last ``count`` complete lines of ``path`` (without newlines), oldest first, read backwards in
    64 KiB blocks so the cost follows the lines asked for, not the file size. A missing file has none; a
    last line without its newline (a write in progress) is left out."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return []
    try:
        end = os.fstat(fd).st_size
        position = end
        data = b""
        while position > 0 and data.count(b"\n") <= count + 1:
            size = min(_BLOCK, position)
            position -= size
            data = os.pread(fd, size, position) + data
    finally:
        os.close(fd)
    if not data.endswith(b"\n"):
        data = data[: data.rfind(b"\n") + 1]
    lines = data.split(b"\n")[:-1]
    if position > 0:
        lines = lines[1:]  # the first piece may be the end of an earlier line
    return [line for line in lines[-count:] if line] if count > 0 else []
