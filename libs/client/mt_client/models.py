"""Answers of the API that have no Struct in ``mt_contracts`` (the gateway defines them itself); the
client's copies decode the same JSON and tolerate fields added later."""

from __future__ import annotations

from datetime import datetime

import msgspec

from mt_contracts.events import JobEvent


class ArtifactFile(msgspec.Struct, frozen=True, kw_only=True):
    """One file: ``path`` relative to the item folder, ``size`` in bytes, hex ``sha256``, ``modified_at``."""

    path: str
    size: int
    sha256: str
    modified_at: datetime


class ArtifactListing(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /artifacts/{kind}/{id}``: the item's files sorted by path."""

    kind: str
    id: str
    files: list[ArtifactFile]


class ArtifactHead(msgspec.Struct, frozen=True, kw_only=True):
    """``HEAD /artifacts/{kind}/{id}/download``: the file's ``size`` in bytes, ``etag`` (for ``If-Range``),
    ``last_modified`` and ``media_type``, without its body."""

    size: int
    etag: str
    last_modified: str
    media_type: str


class Health(msgspec.Struct, frozen=True):
    """``GET /healthz`` and ``GET /readyz``: ``status`` ``ok`` or ``unavailable``; ``reasons`` what is missing."""

    status: str
    reasons: list[str] = msgspec.field(default_factory=list)


class Streamed(msgspec.Struct, frozen=True):
    """One event from a live stream: ``id`` (pass it as ``last_event_id`` to resume after it) and the event."""

    id: str
    event: JobEvent


class Downloaded(msgspec.Struct, frozen=True, kw_only=True):
    """A verified download: where it lies, its size in bytes and sha256, and how many times the transfer was
    resumed with ``Range`` after an interruption."""

    path: str
    size: int
    sha256: str
    resumed: int
