"""A job's own ``logs.jsonl``: only that job's lines, one JSON object each (see ``mt_contracts.logs``)."""

from __future__ import annotations

from pathlib import Path

from mt_contracts.logs import log_line
from mt_storage.files import append_line


class JobLog:
    """Appends lines for job ``job_id`` to ``path``; each line also carries ``job_id``."""

    def __init__(self, path: Path, job_id: str) -> None:
        self.path = path
        self.job_id = job_id

    def write(self, level: str, event: str, message: str, **fields: object) -> None:
        """Append one line. ``fields`` must be JSON-encodable (numbers, strings, Structs...)."""
        append_line(self.path, log_line(level, event, message, {"job_id": self.job_id, **fields}))
