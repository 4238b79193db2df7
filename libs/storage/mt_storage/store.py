"""The artifact store: where finished folders are shared beyond one machine, behind a small Protocol.

``STORAGE__BACKEND=local`` (the default) has no store: the filesystem roots are shared by every service (one
volume) and nothing is copied. ``s3`` keeps every committed folder in an S3-compatible bucket; the local roots
are each service's working copy and cache, kept in step by ``Mirror``:

- ``push`` uploads a local folder after its atomic local write: every file first, each ``manifest.json``
  last (the deepest first, the folder's own at the very end). An object store has no rename, so the manifest
  object is the commit point, as the manifest file is on disk.
- a job's uploads are fenced: ``check()`` (its lease's ``heartbeat``, through ``fenced``) runs before each
  object written or deleted, so a worker that lost its job never replaces or deletes the new owner's objects;
  the job runner uploads everything a job wrote before its ending is recorded (``Work.settle``).
- ``pull`` downloads a folder into the local root before it is read: the files, each checked against the
  manifest's size and sha256 (others against the store's size and MD5 ETag), into a temporary file renamed
  into place, then the manifest. With ``committed`` it does nothing for a prefix that has no manifest.

Keys mirror the layout: ``<prefix>artifacts/<path under APP__ARTIFACTS_ROOT>``,
``<prefix>runs/<path under APP__RUNS_ROOT>`` and, for uploaded corpora, ``<prefix>corpora/<name>/``. New
backends register in ``STORES``.

Errors::

    StorageError
    └── StoreError      the object store refused or failed a request; names the bucket and key
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol, TypeVar

import msgspec

from mt_contracts import codec
from mt_contracts.corpora import is_corpus_name
from mt_contracts.ids import is_run_id, is_tokenizer_id
from mt_contracts.jobs import CheckpointInfo
from mt_contracts.manifests import FileEntry
from mt_contracts.settings import StorageSettings
from mt_storage import StorageError
from mt_storage.checkpoints import CHECKPOINTS_DIR, INDEX, read_index
from mt_storage.events import REDIS_DOWN
from mt_storage.files import FILE_MODE, sha256_file
from mt_storage.layout import LOGS, MANIFEST, Layout
from mt_storage.lifecycle import LeaseLost
from mt_storage.marker import MARKER

logger = logging.getLogger(__name__)

# Objects up to this size are uploaded in one part, so their ETag is their MD5 (boto3's multipart threshold).
SINGLE_PART_LIMIT = 8 * 1024 * 1024
# Files that commit the folder they are in (uploaded after its other files): manifests, a run's checkpoint
# index, a prepared dataset's description.
COMMIT_FILES = frozenset({MANIFEST, INDEX, "prepared.json"})


class StoreError(StorageError):
    """The object store refused or failed a request."""


# A job attempt's fencing check (``Lease.heartbeat``): raises ``LeaseLost`` once the attempt no longer owns
# its job. Every upload of a job's folders calls it before each object it writes or deletes, so a worker that
# lost the job (another pod resumed it) can never replace or delete that pod's newer objects.
Fence = Callable[[], Coroutine[object, object, object]]
Check = Callable[[], None]
T = TypeVar("T")
# Failures of an upload that a later one may not meet: the store's, a local file's, Redis's (the fence).
_TRANSIENT: tuple[type[BaseException], ...] = (StoreError, *REDIS_DOWN)


def _unfenced() -> None:
    """The check of an upload that belongs to no job attempt (the API's exports and corpora)."""


async def fenced(call: Callable[[Check], T], fence: Fence) -> T:
    """Run the blocking ``call(check)`` in a thread, where ``check()`` awaits ``fence`` in this event loop
    (raising what it raises). The call runs to its end even when this coroutine is cancelled meanwhile (the
    cancel is raised once it returned): an upload never goes on behind the back of whoever stopped it."""
    loop = asyncio.get_running_loop()

    def check() -> None:
        asyncio.run_coroutine_threadsafe(fence(), loop).result()

    inner = asyncio.ensure_future(asyncio.to_thread(call, check))
    cancelled = False
    while not inner.done():
        try:
            await asyncio.shield(inner)
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    return inner.result()


class ObjectInfo(msgspec.Struct, frozen=True):
    """An object under a prefix: ``key`` relative to the store's prefix, ``size`` in bytes, ``etag`` as the
    store reports it (the MD5 hex digest for an object uploaded in one part)."""

    key: str
    size: int
    etag: str


class ArtifactStore(Protocol):
    """An object store: keys are ``/``-separated paths relative to the store's own prefix."""

    def put_file(self, key: str, path: Path) -> None:
        """Upload the file at ``path`` as ``key`` (replacing it)."""
        ...

    def get_file(self, key: str, path: Path) -> None:
        """Download ``key`` to ``path`` (overwritten; not atomic: write to a temporary path)."""
        ...

    def list_objects(self, prefix: str) -> list[ObjectInfo]:
        """Every object whose key starts with ``prefix``, sorted by key."""
        ...

    def delete(self, keys: list[str]) -> None:
        """Delete ``keys`` (missing ones are ignored)."""
        ...

    def check(self) -> str | None:
        """Why the store cannot be used (bucket missing, credentials refused), or None."""
        ...


class _Files(msgspec.Struct):
    """The part of every manifest this module reads."""

    files: list[FileEntry] = []


_manifest_files = msgspec.json.Decoder(_Files)


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _same(path: Path, size: int, etag: str) -> bool:
    """Whether the local file holds what the object holds: same size and, for a single-part object, the
    same MD5 (a rewritten index of equal length differs there). Larger objects are immutable by name."""
    if not path.is_file() or path.stat().st_size != size:
        return False
    if size > SINGLE_PART_LIMIT or "-" in etag:
        return True
    return _md5(path) == etag


def _is_scratch(path: Path) -> bool:
    """Files that are never shared: atomic-write and download temporaries, the storage marker."""
    return path.name.startswith(".") or path.name == MARKER


class Mirror:
    """Keeps a layout's local roots and an ``ArtifactStore`` in step (``store`` None: nothing to do).

    The local roots are a cache of the store, bounded by ``cache_max_bytes`` (0: unbounded). Its unit is a
    whole folder (``cache_folder``): a tokenizer, a model, a run's folder, an uploaded corpus. Each pull marks
    its folder used (the folder's mtime) and holds it while it downloads; a job holds its folders while it runs
    (``hold``). Past the bound (``trim``, after a download and after a job), the least recently used folders
    that nothing holds and whose every file the store has are removed (renamed aside, then deleted: a reader
    sees a folder whole or not at all). Prepared datasets, tokenizer process logs and files an operator put
    in the corpus root are not part of the cache and never removed."""

    def __init__(self, store: ArtifactStore | None, layout: Layout, cache_max_bytes: int = 0) -> None:
        self.store = store
        self.layout = layout
        self.cache_max_bytes = cache_max_bytes
        self._held: Counter[Path] = Counter()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.store is not None

    def key(self, path: Path) -> str:
        """The key of a local path under one of the layout's roots.

        Raises:
            ValueError: ``path`` is under none of the roots.
        """
        roots = (
            ("artifacts", self.layout.artifacts_root),
            ("runs", self.layout.runs_root),
            ("corpora", self.layout.corpus_root),
        )
        for name, root in roots:
            if path == root or path.is_relative_to(root):
                relative = path.relative_to(root).as_posix()
                return name if relative == "." else f"{name}/{relative}"
        raise ValueError(f"{path} is under none of the artifacts, runs and corpus roots")

    def push(
        self,
        directory: Path,
        *,
        prune: bool = False,
        exclude: tuple[str, ...] = (),
        check: Check = _unfenced,
        base: str | None = None,
        keep: frozenset[str] = frozenset(),
    ) -> int:
        """Upload the files under ``directory`` that the store lacks or holds otherwise, manifests last;
        ``exclude`` names top-level entries to leave out (a run's ``work`` scratch); with ``prune`` delete
        objects under it that are gone locally, except the keys in ``keep``. ``check()`` is called before each
        upload and before the deletion (a job's fence: it raises ``LeaseLost`` when the job is another
        worker's now). ``base`` is the folder's key when it is not ``key(directory)`` (a corpus uploaded from
        its staging folder).
        Returns the number of files uploaded."""
        if self.store is None or not directory.is_dir():
            return 0
        base = base if base is not None else self.key(directory)

        def key_of(path: Path) -> str:
            return f"{base}/{path.relative_to(directory).as_posix()}"

        remote = {info.key: info for info in self.store.list_objects(base + "/")}
        files = sorted(
            p
            for p in directory.rglob("*")
            # Never a symlink: its target may lie outside the folder (the API refuses to follow them too).
            if p.is_file()
            and not p.is_symlink()
            and not _is_scratch(p)
            and p.relative_to(directory).parts[0] not in exclude
        )
        commits = sorted((p for p in files if p.name in COMMIT_FILES), key=lambda p: (-len(p.parts), p))
        uploaded = 0
        for path in [p for p in files if p.name not in COMMIT_FILES] + commits:
            key = key_of(path)
            info = remote.get(key)
            if info is not None and _same(path, info.size, info.etag):
                continue
            check()
            self.store.put_file(key, path)
            uploaded += 1
        if prune:
            local = {key_of(path) for path in files}
            gone = sorted(set(remote) - local - keep)
            if gone:
                check()
                self.store.delete(gone)
        return uploaded

    def push_checkpoints(self, run_dir: Path, check: Check = _unfenced) -> None:
        """Upload a run's new checkpoints, then its index (``checkpoints.json``), then delete the pruned
        ones: the index in the store only ever names checkpoints the store holds, and no checkpoint it names
        is deleted. The training process may write a checkpoint and a new index (and drop its oldest
        checkpoint) while this runs, so the local index is read once, before the checkpoints are listed (a
        checkpoint is written before the index that names it), and uploaded less any checkpoint the store
        does not hold by then. ``check`` as in ``push``: only the worker that holds the run's lease replaces
        its index or deletes its checkpoints."""
        if self.store is None:
            return
        index, checkpoints = run_dir / INDEX, run_dir / CHECKPOINTS_DIR
        kept = read_index(run_dir) if index.is_file() else None
        self.push(checkpoints, check=check)
        named: list[CheckpointInfo] = []
        if kept is not None:
            held = {info.key for info in self.store.list_objects(self.key(checkpoints) + "/")}
            named = [entry for entry in kept if self.key(run_dir / entry.path) in held]
            with _scratch(index) as scratch:
                scratch.write_bytes(codec.encode(named))
                check()
                self.store.put_file(self.key(index), scratch)
        keep = frozenset(self.key(run_dir / entry.path) for entry in named)
        self.push(checkpoints, prune=True, keep=keep, check=check)

    def push_files(self, paths: list[Path], check: Check = _unfenced) -> None:
        """Upload ``paths`` in the order given (a checkpoint, then the index that names it), ``check()``
        before each."""
        if self.store is None:
            return
        for path in paths:
            if path.is_file():
                check()
                self.store.put_file(self.key(path), path)

    def pull(self, directory: Path, *, committed: bool = True) -> bool:
        """Download what the store holds under ``directory`` and the local copy lacks or holds otherwise.
        With ``committed``, a prefix without ``manifest.json`` is left alone (returns False). Returns whether
        the folder is there locally (always True without a store: the local root is the storage). Marks the
        folder used, and trims the cache after a download.

        Raises:
            StoreError: a downloaded file does not match its manifest entry or the store's size.
        """
        if self.store is None:
            return True
        with self.hold([directory]):
            present, fetched = self._pull(self.store, directory, committed=committed)
            self._use(directory)
            if fetched:
                self.trim()
        return present

    def _pull(self, store: ArtifactStore, directory: Path, *, committed: bool) -> tuple[bool, int]:
        """``pull``'s download: whether the folder is there, and how many files came."""
        if committed and (directory / MANIFEST).is_file():
            return True, 0  # committed folders never change
        base = self.key(directory)
        objects = store.list_objects(base + "/")
        manifest_key = f"{base}/{MANIFEST}"
        by_key = {info.key: info for info in objects}
        if committed and manifest_key not in by_key:
            return False, 0
        expected: dict[str, FileEntry] = {}
        manifest_info = by_key.get(manifest_key)
        if manifest_info is not None:
            with _scratch(directory) as scratch:
                store.get_file(manifest_key, scratch)
                manifest_bytes = scratch.read_bytes()
            try:
                expected = {f"{base}/{entry.path}": entry for entry in _manifest_files.decode(manifest_bytes).files}
            except msgspec.DecodeError as exc:
                raise StoreError(f"the manifest {manifest_key} in the store does not decode: {exc}") from exc

        def commits(info: ObjectInfo) -> bool:
            return info.key.rpartition("/")[2] in COMMIT_FILES

        order = [info for info in objects if not commits(info)]
        order += sorted(filter(commits, objects), key=lambda i: (-i.key.count("/"), i.key))
        fetched = 0
        for info in order:
            path = directory / info.key.removeprefix(base + "/")
            if _same(path, info.size, info.etag):
                continue
            with _scratch(path) as scratch:
                store.get_file(info.key, scratch)
                _verify(scratch, info, expected.get(info.key))
                os.replace(scratch, path)
            fetched += 1
        return True, fetched

    def pull_file(self, path: Path) -> bool:
        """Download one file if the store has a different copy; returns whether it exists locally. Marks its
        folder used, and trims the cache after a download."""
        if self.store is None:
            return path.is_file()
        key = self.key(path)
        with self.hold([path]):
            fetched = False
            for info in self.store.list_objects(key):
                if info.key == key and not _same(path, info.size, info.etag):
                    with _scratch(path) as scratch:
                        self.store.get_file(key, scratch)
                        _verify(scratch, info, None)
                        os.replace(scratch, path)
                    fetched = True
            self._use(path)
            if fetched:
                self.trim()
        return path.is_file()

    # ---- the cache: whole folders, least recently used first ----

    def cache_folder(self, path: Path) -> Path | None:
        """The cache folder ``path`` is in (the unit of eviction): ``tokenizers/<id>`` or ``models/<id>``
        under the artifacts root, ``<run_id>`` under the runs root, ``<name>`` under the corpus root. None
        for anything else."""
        for root, depth, valid in (
            (self.layout.artifacts_root, 2, _artifact_folder),
            (self.layout.runs_root, 1, lambda parts: is_run_id(parts[0])),
            (self.layout.corpus_root, 1, lambda parts: is_corpus_name(parts[0])),
        ):
            if path.is_relative_to(root):
                parts = path.relative_to(root).parts
                return root.joinpath(*parts[:depth]) if len(parts) >= depth and valid(parts) else None
        return None

    @contextmanager
    def hold(self, paths: Iterable[Path]) -> Iterator[None]:
        """Keep the cache folders of ``paths`` from being trimmed for the body of the ``with`` (a job's
        tokenizer, corpus, run and model folders while it runs; a folder while it downloads)."""
        folders = {folder for path in paths if (folder := self.cache_folder(path)) is not None}
        with self._lock:
            self._held.update(folders)
        try:
            yield
        finally:
            with self._lock:
                self._held.subtract(folders)
                for folder in folders:
                    if self._held[folder] <= 0:
                        del self._held[folder]

    def _use(self, path: Path) -> None:
        """Mark the cache folder of ``path`` used now: its mtime, set from the fine clock (file writes are
        stamped from a coarse one, milliseconds apart), after any download into it."""
        folder = self.cache_folder(path)
        if folder is not None:
            now = time.time_ns()
            with contextlib.suppress(OSError):  # not there (nothing to pull)
                os.utime(folder, ns=(now, now))

    def trim(self) -> list[Path]:
        """Remove least recently used cache folders until the cache fits ``cache_max_bytes``, skipping those
        held and those with a file the store lacks or holds otherwise (the only copy: never removed). Returns
        the folders removed."""
        if self.store is None or self.cache_max_bytes <= 0:
            return []
        folders = [(folder, _folder_bytes(folder), used) for folder, used in self._cache_folders()]
        total = sum(size for _, size, _ in folders)
        removed: list[Path] = []
        for folder, size, _ in sorted(folders, key=lambda entry: (entry[2], entry[0])):
            if total <= self.cache_max_bytes:
                break
            if folder in self._held or not self._stored(self.store, folder):
                continue
            with self._lock:
                if folder in self._held:  # taken meanwhile
                    continue
                aside = folder.with_name(f".evicted.{folder.name}.{os.getpid()}.{time.monotonic_ns()}")
                try:
                    os.rename(folder, aside)
                except OSError:
                    continue  # gone meanwhile
            shutil.rmtree(aside, ignore_errors=True)
            total -= size
            removed.append(folder)
        if total > self.cache_max_bytes:
            logger.warning(
                "cache above its limit",
                extra={"event": "cache_full", "bytes": total, "limit": self.cache_max_bytes},
            )
        return removed

    def _cache_folders(self) -> list[tuple[Path, int]]:
        """Every cache folder there is locally, with when it was last used (mtime, nanoseconds). In the
        corpus root only uploaded corpora (with a manifest) are the store's."""
        candidates = [
            *(self.layout.artifacts_root / kind for kind in ("tokenizers", "models")),
            self.layout.runs_root,
            self.layout.corpus_root,
        ]
        found: list[tuple[Path, int]] = []
        for parent in candidates:
            if not parent.is_dir():
                continue
            for entry in parent.iterdir():
                if (
                    entry.is_dir()
                    and not entry.is_symlink()
                    and self.cache_folder(entry) == entry
                    and (parent != self.layout.corpus_root or (entry / MANIFEST).is_file())
                ):
                    with contextlib.suppress(OSError):  # removed meanwhile
                        found.append((entry, entry.stat().st_mtime_ns))
        return found

    def _stored(self, store: ArtifactStore, folder: Path) -> bool:
        """Whether the store holds every file of ``folder`` as it is here (a run's scratch ``work/`` aside)."""
        remote = {info.key: info for info in store.list_objects(self.key(folder) + "/")}
        scratch = folder / "work" if folder.parent == self.layout.runs_root else None
        for path in folder.rglob("*"):
            if not path.is_file() or path.is_symlink() or _is_scratch(path):
                continue
            if scratch is not None and path.is_relative_to(scratch):
                continue
            info = remote.get(self.key(path))
            if info is None or not _same(path, info.size, info.etag):
                return False
        return True

    # ---- uploaded corpora (``mt_storage.corpora``): ``corpora/<name>/``, manifest last ----

    def pull_corpus(self, corpus_path: str) -> None:
        """Before ``corpus_path`` is read (by a job, or by the API to check or estimate a request): the
        uploaded corpus it is in, when the store holds one and this machine's copy is missing or differs (a
        replaced corpus: its manifest changed). A local copy of an uploaded corpus that the store no longer
        holds (deleted through another API pod) is removed. A path that is not in an uploaded corpus (a file an
        operator put in the corpus root) is left alone."""
        if self.store is None:
            return
        from mt_storage.corpora import corpus_name_of  # corpora imports this module's neighbours only

        name = corpus_name_of(corpus_path)
        if not is_corpus_name(name):
            return  # not a name an upload can have ("..", "/"): the path's own check refuses it
        directory = self.layout.corpus_root / name
        manifest = self.manifest_info(directory)
        if manifest is None:
            if (directory / MANIFEST).is_file() and not directory.is_symlink():
                shutil.rmtree(directory, ignore_errors=True)  # deleted from the store: a stale copy
            return
        if not _same(directory / MANIFEST, manifest.size, manifest.etag) and directory.is_dir():
            # A replaced corpus: drop the stale copy whole (nothing reads it: see CorpusGuard).
            shutil.rmtree(directory, ignore_errors=True)
        self.pull(directory)

    def manifest_info(self, directory: Path) -> ObjectInfo | None:
        """The store's ``manifest.json`` object of ``directory`` (its commit point), or None."""
        if self.store is None:
            return None
        key = f"{self.key(directory)}/{MANIFEST}"
        return next((info for info in self.store.list_objects(key) if info.key == key), None)

    def committed(self, parent: Path) -> dict[str, ObjectInfo]:
        """The folders directly under ``parent`` that the store holds committed (with a manifest), by name,
        each with its manifest object."""
        if self.store is None:
            return {}
        base = self.key(parent) + "/"
        found: dict[str, ObjectInfo] = {}
        for info in self.store.list_objects(base):
            name, _, rest = info.key.removeprefix(base).partition("/")
            if rest == MANIFEST:
                found[name] = info
        return found

    def read_manifest(self, directory: Path, info: ObjectInfo | None = None) -> bytes | None:
        """The bytes of ``directory``'s manifest in the store (``info``: its object, when listed already),
        read from this machine's copy when that is the same object; None when the store holds none."""
        if self.store is None:
            return None
        info = info or self.manifest_info(directory)
        if info is None:
            return None
        local = directory / MANIFEST
        if _same(local, info.size, info.etag):
            with contextlib.suppress(OSError):  # removed meanwhile: read the store's
                return local.read_bytes()
        with tempfile.TemporaryDirectory(prefix="mt-manifest-") as scratch:
            path = Path(scratch) / MANIFEST
            self.store.get_file(info.key, path)
            return path.read_bytes()

    def remove(self, directory: Path) -> None:
        """Delete a folder's objects from the store, its manifest first (so it is uncommitted at once)."""
        if self.store is None:
            return
        base = self.key(directory)
        keys = [info.key for info in self.store.list_objects(base + "/")]
        manifest = f"{base}/{MANIFEST}"
        if manifest in keys:
            self.store.delete([manifest])
        self.store.delete([key for key in keys if key != manifest])

    # ---- the edges of a training run or evaluation on a worker ----

    def pull_run(self, run_id: str, tokenizer_id: str) -> None:
        """Before a run (or an evaluation) starts on this machine: its tokenizer; the run's folder (spec,
        checkpoints and their index, metrics) when the store's index is ahead of this machine's, so a run
        resumes from the latest checkpoint whichever pod wrote it; the model folder (its log, and the final
        weights once committed)."""
        if self.store is None:
            return
        self.pull(self.layout.tokenizer_dir(tokenizer_id))
        run_dir = self.layout.run_dir(run_id)
        if self._last_step(run_dir, remote=True) > self._last_step(run_dir, remote=False):
            self.pull(run_dir, committed=False)
        model_dir = self.layout.model_dir(run_id)
        if not self.pull(model_dir) and not (model_dir / LOGS).is_file():
            self.pull_file(model_dir / LOGS)

    def has_checkpoint(self, run_dir: Path) -> bool:
        """Whether the store holds a checkpoint index for the run in ``run_dir`` (a reaper on another pod
        asks before it puts a run back on the queue)."""
        return self._last_step(run_dir, remote=True) >= 0

    def _last_step(self, run_dir: Path, *, remote: bool) -> int:
        """The last kept checkpoint's step in the local or the store's index; -1 without one."""
        if not remote:
            kept = read_index(run_dir)
        elif self.store is None or not self.store.list_objects(self.key(run_dir / INDEX)):
            return -1
        else:
            with _scratch(run_dir / INDEX) as scratch:
                self.store.get_file(self.key(run_dir / INDEX), scratch)
                try:
                    kept = codec.decode(scratch.read_bytes(), list[CheckpointInfo])
                except msgspec.DecodeError as exc:
                    raise StoreError(f"the checkpoint index of {run_dir.name} in the store does not decode") from exc
        return kept[-1].step if kept else -1

    def push_run(self, run_id: str, check: Check = _unfenced) -> None:
        """Before a run's ending is recorded (any ending: succeeded, failed, cancelled, handed back): the
        run's folder (checkpoints first, then their index; not its scratch ``work/``), the model folder
        (manifest last) and the prepared datasets (``prepared.json`` last). ``check`` as in ``push``."""
        if self.store is None:
            return
        run_dir = self.layout.run_dir(run_id)
        self.push_checkpoints(run_dir, check)
        self.push(run_dir, exclude=("work", CHECKPOINTS_DIR), check=check)
        self.push(self.layout.model_dir(run_id), check=check)
        self.push(self.layout.dataset_cache(), check=check)

    def push_evaluation(self, run_id: str, eval_id: str, check: Check = _unfenced) -> None:
        """Before an evaluation's ending is recorded: what it wrote (its result and the run's log in the
        model folder, its spec and process log, the prepared datasets), never the run's checkpoints, which
        belong to the run's own lease."""
        if self.store is None:
            return
        self.push_files(
            [self.layout.eval_spec(run_id, eval_id), self.layout.eval_process_log(run_id, eval_id)], check=check
        )
        self.push(self.layout.eval_dir(run_id), check=check)
        self.push_files([self.layout.run_logs(run_id)], check=check)
        self.push(self.layout.dataset_cache(), check=check)

    async def follow_checkpoints(self, run_id: str, fence: Fence, poll_seconds: float) -> None:
        """While a run trains here (until cancelled): upload each new checkpoint, then the index and the
        log, within ``poll_seconds`` of its write, so another pod can resume the run if this one dies. Every
        upload is fenced (``fence``): once the run is another worker's, nothing more is written. A cancel
        waits for an upload under way to finish."""
        if self.store is None:
            return
        run_dir = self.layout.run_dir(run_id)
        seen: tuple[int, int] | None = None

        def upload(check: Check) -> None:
            self.push_checkpoints(run_dir, check)
            self.push_files([self.layout.run_logs(run_id)], check=check)

        while True:
            await asyncio.sleep(poll_seconds)
            index = run_dir / INDEX
            stat = index.stat() if index.is_file() else None
            now = (stat.st_mtime_ns, stat.st_size) if stat else None
            if now == seen:
                continue
            try:
                await fenced(upload, fence)
                seen = now
            except LeaseLost:
                return  # another worker's run now: its worker uploads what it writes
            except _TRANSIENT as exc:  # the next change (or the run's ending) tries again
                logger.warning(
                    "checkpoint upload failed", extra={"event": "store_error", "job_id": run_id, "error": str(exc)}
                )


def _artifact_folder(parts: tuple[str, ...]) -> bool:
    kind, name = parts[0], parts[1]
    return (kind == "tokenizers" and is_tokenizer_id(name)) or (kind == "models" and is_run_id(name))


def _folder_bytes(folder: Path) -> int:
    """The bytes of the files under ``folder`` (0 for one removed meanwhile)."""
    total = 0
    for path in folder.rglob("*"):
        with contextlib.suppress(OSError):
            if path.is_file() and not path.is_symlink():
                total += path.stat().st_size
    return total


def _verify(path: Path, info: ObjectInfo, entry: FileEntry | None) -> None:
    """A file a manifest names (immutable once committed) must match its entry. Every other file (a log, an
    index) may have been replaced since it was listed: a GET returns one whole version of an object, so the
    newer copy is kept rather than refused for differing from the listing."""
    if entry is None:
        return
    if entry.size != path.stat().st_size or sha256_file(path) != entry.sha256:
        raise StoreError(f"{info.key}: the downloaded file does not match its manifest entry (size, sha256)")


@contextmanager
def _scratch(path: Path) -> Iterator[Path]:
    """A temporary file beside ``path`` (same filesystem, so ``os.replace`` is atomic), removed on exit
    unless it was moved into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.fchmod(fd, FILE_MODE)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


StoreFactory = Callable[[StorageSettings], ArtifactStore]


def _s3(settings: StorageSettings) -> ArtifactStore:
    from mt_storage.s3 import S3Store  # boto3 is imported only when the s3 backend is selected

    return S3Store.from_settings(settings)


# Backends by ``STORAGE__BACKEND``; ``local`` has no store (the shared filesystem is the storage).
STORES: dict[str, StoreFactory] = {"s3": _s3}


def open_store(settings: StorageSettings) -> ArtifactStore | None:
    """The store ``settings`` select, or None for the local backend.

    Raises:
        StoreError: the backend is unknown or its settings are incomplete.
    """
    if settings.backend == "local":
        return None
    factory = STORES.get(settings.backend)
    if factory is None:
        raise StoreError(f"no artifact store backend {settings.backend!r}; use one of local, {', '.join(STORES)}")
    return factory(settings)
