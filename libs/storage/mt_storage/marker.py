"""The storage marker: proof that a service sees the same artifact storage as the others.

The first service to start on empty storage and an empty Redis writes a random id to
``<artifacts_root>/.storage-id`` (atomically, once: a hard link that fails if another service made it first)
and then to the Redis key ``mt:storage-id:<root>``. Every later service compares
the two: a file that is missing or different while Redis holds an id means this process mounts other storage
than the services that wrote the artifacts (an API without the shared volume answers 404 for every artifact,
a worker writes where the API never looks). The API reports it in ``/readyz``; a worker refuses to start.
The key is scoped by the root's path, so services with different roots on one Redis (tests) never collide.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import uuid
from pathlib import Path

from redis.asyncio import Redis

from mt_storage.files import atomic_write_bytes

logger = logging.getLogger(__name__)

MARKER = ".storage-id"
KEY_PREFIX = "mt:storage-id:"


def marker_key(artifacts_root: Path) -> str:
    """The Redis key holding the storage id of ``artifacts_root`` (by its absolute path)."""
    return KEY_PREFIX + hashlib.sha256(str(artifacts_root).encode()).hexdigest()[:16]


async def check_storage(redis: Redis, artifacts_root: Path, *, create: bool = True, shared: bool = True) -> str | None:
    """Why ``artifacts_root`` is not the storage the other services use, or None when it is.

    With ``create``, a missing root is created, and a root and a Redis that both lack the marker get a fresh
    one (the first service of a new deployment). A root that is not writable is reported too (the API writes
    exports there). ``shared=False`` (an object store is the shared storage; the root is this service's own
    cache) checks only that the root is a writable folder.

    Raises:
        redis.RedisError: Redis did not answer.
    """
    problem, on_disk = await asyncio.to_thread(_read_marker, artifacts_root, create)
    if problem is not None or not shared:
        return problem
    key = marker_key(artifacts_root)
    in_redis = await _get(redis, key)
    if in_redis is None and create:
        # A new deployment (or a Redis that lost its data): the storage's own mark, made once by whichever
        # service links its file first, becomes Redis's. Services that start together on one volume agree;
        # services on different volumes each make one, and all but the first to reach Redis are told so.
        if on_disk is None:
            on_disk = await asyncio.to_thread(_make_marker, artifacts_root / MARKER)
        await redis.set(key, on_disk, nx=True)
        in_redis = await _get(redis, key)
    if in_redis is None:
        return f"storage: no service has marked {artifacts_root} yet (Redis key {key} missing)"
    if on_disk != in_redis:
        found = "no marker" if on_disk is None else f"marker {on_disk}"
        return (
            f"storage: {artifacts_root} holds {found}, but the other services' storage is marked {in_redis}: "
            "this process does not mount the shared artifact storage (give it the same volume or claim)"
        )
    return None


def _make_marker(path: Path) -> str:
    """The marker at ``path``, created with a fresh id unless another process created it first: the file is
    written whole under a temporary name and hard-linked into place, which fails if the name exists."""
    tmp = path.with_name(f".{MARKER}.{uuid.uuid4().hex}")
    atomic_write_bytes(tmp, uuid.uuid4().hex.encode() + b"\n")
    try:
        os.link(tmp, path)
    except FileExistsError:
        logger.info("storage marker made by another service", extra={"event": "storage_marker", "path": str(path)})
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_text(encoding="ascii").strip()


async def _get(redis: Redis, key: str) -> str | None:
    raw = await redis.get(key)
    return raw.decode() if isinstance(raw, bytes) else None


def _read_marker(artifacts_root: Path, create: bool) -> tuple[str | None, str | None]:
    """(why the root is unusable or None, the marker on disk or None), creating a missing root if ``create``."""
    if create and not artifacts_root.exists():
        try:
            artifacts_root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return f"storage: cannot create {artifacts_root} (APP__ARTIFACTS_ROOT): {exc}", None
    if not artifacts_root.is_dir():
        return f"storage: {artifacts_root} (APP__ARTIFACTS_ROOT) is not a folder; mount the shared storage there", None
    if not os.access(artifacts_root, os.W_OK):
        return f"storage: {artifacts_root} (APP__ARTIFACTS_ROOT) is not writable by uid {os.getuid()}", None
    path = artifacts_root / MARKER
    return None, path.read_text(encoding="ascii").strip() if path.is_file() else None
