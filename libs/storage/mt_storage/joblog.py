"""A job's own ``logs.jsonl``: only that job's lines, one JSON object each (see ``mt_contracts.logs``), and
reading its last lines from the end of the file."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from mt_contracts.logs import log_line
from mt_storage.files import append_line

_BLOCK = 64 * 1024

# Receives each line after it is written: (job id, line). The workers pass a live event publisher.
LineSink = Callable[[str, bytes], None]


class JobLog:
    """Appends lines for job ``job_id`` to ``path``; each line also carries ``job_id``. ``sink``, when given,
    receives every line after it is written (the live event stream)."""

    def __init__(self, path: Path, job_id: str, sink: LineSink | None = None) -> None:
        self.path = path
        self.job_id = job_id
        self.sink = sink

    def write(self, level: str, event: str, message: str, **fields: object) -> None:
        """Append one line. ``fields`` must be JSON-encodable (numbers, strings, Structs...)."""
        line = log_line(level, event, message, {"job_id": self.job_id, **fields})
        append_line(self.path, line)
        if self.sink is not None:
            self.sink(self.job_id, line)


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
