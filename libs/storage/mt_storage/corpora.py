"""Uploaded corpora: an upload is received into a staging folder under ``<corpus root>/.uploads``, expanded
(an archive) with the standard library's ``tarfile``/``zipfile`` member by member, validated by reading it
as a job would (``CorpusReader``), described by ``manifest.json`` and renamed into ``<corpus root>/<name>``:
a corpus folder is complete or absent, and an upload that fails or is cut off leaves nothing.

Archive members must be regular ``.txt``/``.jsonl`` files (or folders) with relative names, no ``..``,
within ``CORPUS__MAX_FILES`` files and ``CORPUS__MAX_EXPANDED_BYTES`` bytes (counted as they are written,
not as the archive claims); a link, a device or any other member refuses the whole upload.

A corpus in use by a queued or running job cannot be deleted or replaced (``CorpusGuard``).

Where uploaded corpora live (``Corpora``): with the local backend, the corpus root itself (one volume shared
by every service). With an object store, the store (``corpora/<name>/``, manifest last, pushed from the
staging folder before the corpus is renamed into this machine's corpus root): every API pod lists, shows,
checks and deletes there, and the corpus root is each machine's cache of it, pulled when the bytes are
needed (``Mirror.pull_corpus``). Files an operator put in the corpus root are read where they are.

Errors::

    StorageError
    └── CorpusPathError
        └── UploadRefused      the upload is not a usable corpus; names the file (and line) and the fix
            ├── UploadTooLarge the body or the expanded archive passes a CORPUS__ limit
            └── CorpusExists   the name is taken (If-None-Match: *), or by a file that is not an upload
        └── CorpusInUse        a queued or running job reads the corpus (or another change of it is under way)
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import secrets
import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import AsyncIterator
from pathlib import Path, PurePosixPath
from typing import IO, BinaryIO

from redis.asyncio import Redis

from mt_contracts import codec
from mt_contracts.corpora import CorpusInfo, UploadFormat
from mt_contracts.jobs import EvalJob, RunJob, TokenizerJob, utcnow
from mt_contracts.settings import CorpusSettings
from mt_storage import CorpusPathError
from mt_storage.corpus import CORPUS_SUFFIXES, CorpusDecodeError, CorpusFormatError, CorpusReader
from mt_storage.files import FILE_MODE, fsync_dir
from mt_storage.jobs import JobStore
from mt_storage.layout import MANIFEST
from mt_storage.pipelines import pipeline
from mt_storage.store import Mirror

UPLOADS = ".uploads"
_COPY_CHUNK = 1 << 20
_JSONL_TYPES = frozenset(
    {"application/jsonl", "application/x-ndjson", "application/x-jsonlines", "application/jsonl+json"}
)


class UploadRefused(CorpusPathError):
    """The upload is not a corpus the service accepts; nothing was kept."""


class UploadTooLarge(UploadRefused):
    """The body, or what an archive expands to, passes a ``CORPUS__`` limit."""


class CorpusExists(UploadRefused):
    """The corpus name is taken."""


def corpus_dir(corpus_root: Path, name: str) -> Path:
    """The folder of uploaded corpus ``name`` (``name`` checked by ``is_corpus_name``)."""
    return corpus_root / name


def detect_format(content_type: str, head: bytes) -> UploadFormat:
    """The upload's format from its first bytes (gzip, zip), else its media type (``application/jsonl``,
    ``application/x-ndjson``: JSONL), else plain text."""
    if head.startswith(b"\x1f\x8b"):
        return "tar.gz"
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "zip"
    return "jsonl" if content_type.lower() in _JSONL_TYPES else "txt"


class Staging:
    """One upload on its way in: the body is written to ``upload.part`` (``write``), then ``commit`` expands,
    validates and renames it into place; ``discard`` (always call it, e.g. in ``finally``) removes what is
    left. Limits come from ``limits``."""

    def __init__(self, corpus_root: Path, name: str, limits: CorpusSettings) -> None:
        self.root = corpus_root
        self.name = name
        self.limits = limits
        uploads = corpus_root / UPLOADS
        uploads.mkdir(parents=True, exist_ok=True)
        self.dir = uploads / f"{name}.{secrets.token_hex(8)}"
        self.dir.mkdir()
        self.raw = self.dir / "upload.part"
        self._handle: BinaryIO | None = self.raw.open("wb")
        self.size = 0
        self.digest = hashlib.sha256()

    def write(self, chunk: bytes) -> None:
        """Append ``chunk`` to the body.

        Raises:
            UploadTooLarge: the body passed ``CORPUS__MAX_UPLOAD_BYTES``.
        """
        self.size += len(chunk)
        if self.size > self.limits.max_upload_bytes:
            raise UploadTooLarge(
                f"the upload is larger than CORPUS__MAX_UPLOAD_BYTES ({self.limits.max_upload_bytes} bytes); "
                "split the corpus or raise the setting"
            )
        self.digest.update(chunk)
        if self._handle is not None:
            self._handle.write(chunk)

    def commit(self, upload_format: UploadFormat | None, content_type: str, *, overwrite: bool) -> CorpusInfo:
        """Expand (an archive), validate and move the corpus into place (``build``, then ``place``); returns
        its manifest.

        Raises:
            UploadRefused: an unsafe or unusable archive member, no corpus file, text that is not UTF-8 or a
                JSONL line that is not a record (naming the file and line).
            UploadTooLarge: the archive expands past a limit.
            CorpusExists: the name is taken and ``overwrite`` is false, or taken by something that is not an
                uploaded corpus.
        """
        info = self.build(upload_format, content_type)
        self.place(overwrite=overwrite)
        return info

    @property
    def files(self) -> Path:
        """The built corpus folder (its files and ``manifest.json``) before it is moved into place."""
        return self.dir / "corpus"

    def build(self, upload_format: UploadFormat | None, content_type: str) -> CorpusInfo:
        """Expand (an archive) and validate the body into ``files``, described by its ``manifest.json``;
        returns the manifest.

        Raises:
            UploadRefused: an unsafe or unusable archive member, no corpus file, text that is not UTF-8 or a
                JSONL line that is not a record (naming the file and line).
            UploadTooLarge: the archive expands past a limit.
        """
        if self._handle is not None:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()
            self._handle = None
        with self.raw.open("rb") as handle:
            head = handle.read(4)
        chosen = upload_format or detect_format(content_type, head)
        files = self.files
        files.mkdir()
        if chosen == "tar.gz":
            self._expand_tar(files)
        elif chosen == "zip":
            self._expand_zip(files)
        else:
            os.replace(self.raw, files / f"{self.name}.{chosen}")
        info = self._validate(files, chosen)
        (files / MANIFEST).write_bytes(codec.encode(info))
        return info

    def place(self, *, overwrite: bool) -> bool:
        """Rename the built corpus into ``<corpus root>/<name>``; returns whether it replaced one.

        Raises:
            CorpusExists: the name is taken and ``overwrite`` is false, or taken by something that is not an
                uploaded corpus, or by another upload meanwhile.
        """
        return self._move_into_place(self.files, overwrite=overwrite)

    def discard(self) -> None:
        """Remove the staging folder (whatever a failed or interrupted upload left)."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        shutil.rmtree(self.dir, ignore_errors=True)

    # ---- archives ----

    def _member_path(self, name: str, target: Path) -> Path:
        pure = PurePosixPath(name)
        if pure.is_absolute() or name.startswith("/") or "\\" in name or "\x00" in name or ":" in pure.parts[0]:
            raise UploadRefused(f"archive member {name!r} has an absolute path; archive relative paths only")
        if ".." in pure.parts:
            raise UploadRefused(f"archive member {name!r} contains '..'; archive paths inside the corpus only")
        parts = [part for part in pure.parts if part not in {"", "."}]
        if not parts:
            raise UploadRefused(f"archive member {name!r} has no file name")
        path = target.joinpath(*parts)
        # Checked here, since any look at a longer path (exists, mkdir, open) fails with ENAMETOOLONG.
        name_max, path_max = os.pathconf(target, "PC_NAME_MAX"), os.pathconf(target, "PC_PATH_MAX")
        if max(len(part.encode()) for part in parts) > name_max or len(bytes(path)) >= path_max:
            raise UploadRefused(f"archive member {name!r} has a name too long for this file system")
        return path

    def _check_file(self, name: str, path: Path, count: int, target: Path) -> None:
        if path.suffix not in CORPUS_SUFFIXES:
            raise UploadRefused(f"archive member {name!r} is not a .txt or .jsonl file; remove it from the archive")
        if path.is_dir():
            raise UploadRefused(
                f"archive member {name!r} is a file where other members made a folder; a path in an archive is "
                "a file or a folder, not both"
            )
        if path.exists():
            raise UploadRefused(f"archive member {name!r} appears twice; an archive holds each path once")
        for folder in path.relative_to(target).parents:
            if (target / folder).exists() and not (target / folder).is_dir():
                raise UploadRefused(
                    f"archive member {name!r} lies in {folder.as_posix()!r}, which the archive holds as a file; "
                    "a path in an archive is a file or a folder, not both"
                )
        if count > self.limits.max_files:
            raise UploadTooLarge(
                f"the archive holds more than CORPUS__MAX_FILES ({self.limits.max_files}) files; "
                "pack fewer, larger files or raise the setting"
            )

    def _copy(self, source: IO[bytes], path: Path, written: int) -> int:
        """Copy a member to ``path``, counting bytes against ``CORPUS__MAX_EXPANDED_BYTES`` as they come."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("xb") as out:
            os.fchmod(out.fileno(), FILE_MODE)
            while chunk := source.read(_COPY_CHUNK):
                written += len(chunk)
                if written > self.limits.max_expanded_bytes:
                    raise UploadTooLarge(
                        f"the archive expands past CORPUS__MAX_EXPANDED_BYTES ({self.limits.max_expanded_bytes} "
                        "bytes); upload a smaller corpus or raise the setting"
                    )
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        return written

    def _expand_tar(self, target: Path) -> None:
        written = count = 0
        try:
            with tarfile.open(self.raw, "r:gz") as archive:
                for member in archive:
                    if member.isdir():
                        self._member_path(member.name, target)
                        continue
                    if not member.isreg():
                        kind = "link" if member.issym() or member.islnk() else "device or special file"
                        raise UploadRefused(
                            f"archive member {member.name!r} is a {kind}; archives may hold regular files only"
                        )
                    path = self._member_path(member.name, target)
                    count += 1
                    self._check_file(member.name, path, count, target)
                    source = archive.extractfile(member)
                    if source is None:
                        raise UploadRefused(f"archive member {member.name!r} cannot be read")
                    with source:
                        written = self._copy(source, path, written)
        except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
            raise UploadRefused(f"the upload is not a readable .tar.gz archive ({exc})") from exc

    def _expand_zip(self, target: Path) -> None:
        written = count = 0
        try:
            with zipfile.ZipFile(self.raw) as archive:
                for member in archive.infolist():
                    mode = member.external_attr >> 16
                    if member.is_dir():
                        self._member_path(member.filename, target)
                        continue
                    # Zip writers that record no file type (only permissions) write regular files.
                    if stat.S_IFMT(mode) and not stat.S_ISREG(mode):
                        kind = "link" if stat.S_ISLNK(mode) else "device or special file"
                        raise UploadRefused(
                            f"archive member {member.filename!r} is a {kind}; archives may hold regular files only"
                        )
                    path = self._member_path(member.filename, target)
                    count += 1
                    self._check_file(member.filename, path, count, target)
                    with archive.open(member) as source:
                        written = self._copy(source, path, written)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError) as exc:
            raise UploadRefused(f"the upload is not a readable .zip archive ({exc})") from exc

    # ---- validation and commit ----

    def _validate(self, files: Path, upload_format: UploadFormat) -> CorpusInfo:
        paths = sorted((p for p in files.rglob("*") if p.is_file()), key=lambda p: p.relative_to(files).as_posix())
        if not paths:
            raise UploadRefused("the archive holds no .txt or .jsonl file")
        reader = CorpusReader(paths, root=files)
        try:
            for _ in reader.batches():
                pass
        except CorpusDecodeError as exc:
            name = exc.path.relative_to(files).as_posix()
            line = line_of(exc.path, exc.offset)
            raise UploadRefused(
                f"{name} line {line} is not valid UTF-8 (byte offset {exc.offset}); save the file as UTF-8"
            ) from exc
        except CorpusFormatError as exc:
            name = exc.path.relative_to(files).as_posix()
            problem = str(exc).split(": ", 1)[-1]
            raise UploadRefused(f"{name} line {exc.line}: {problem}") from exc
        if not reader.has_text:
            raise UploadRefused("the corpus holds no text (every file is empty or blank)")
        fingerprint = reader.fingerprint()
        stats = reader.stats()
        return CorpusInfo(
            name=self.name,
            files=fingerprint.files,
            bytes=stats.bytes,
            lines=stats.lines,
            sha256=fingerprint.sha256,
            upload_sha256=self.digest.hexdigest(),
            upload_format=upload_format,
            created_at=utcnow(),
        )

    def _move_into_place(self, files: Path, *, overwrite: bool) -> bool:
        target = corpus_dir(self.root, self.name)
        replaced = target.exists() or target.is_symlink()
        if replaced:
            if not overwrite:
                raise CorpusExists(f"corpus {self.name!r} exists; delete it first or send without If-None-Match")
            check_uploaded(self.root, self.name)
            aside = self.dir / "replaced"
            os.rename(target, aside)
        try:
            # rename(2) refuses to replace a folder that is not empty: a racing upload of the same name loses.
            os.rename(files, target)
        except OSError as exc:
            raise CorpusExists(f"corpus {self.name!r} was created by another upload meanwhile") from exc
        fsync_dir(self.root)
        return replaced


def check_uploaded(corpus_root: Path, name: str) -> None:
    """Refuse a name that the corpus root holds as something other than an uploaded corpus (a file or folder
    an operator put there), which an upload may not replace.

    Raises:
        CorpusExists: ``<corpus root>/<name>`` exists and is not a folder with a ``manifest.json``.
    """
    target = corpus_dir(corpus_root, name)
    if (target.exists() or target.is_symlink()) and (target.is_symlink() or not (target / MANIFEST).is_file()):
        raise CorpusExists(
            f"{name!r} in the corpus root (APP__CORPUS_ROOT) is not an uploaded corpus; choose another name"
        )


def line_of(path: Path, offset: int) -> int:
    """The 1-based line holding byte ``offset`` of ``path``."""
    line = 1
    with path.open("rb") as handle:
        remaining = offset
        while remaining > 0 and (chunk := handle.read(min(_COPY_CHUNK, remaining))):
            line += chunk.count(b"\n")
            remaining -= len(chunk)
    return line


def read_corpus(corpus_root: Path, name: str) -> CorpusInfo | None:
    """The manifest of uploaded corpus ``name`` in the corpus root, or ``None`` when there is none."""
    path = corpus_dir(corpus_root, name) / MANIFEST
    try:
        return _decode(path.read_bytes())
    except OSError:
        return None


def _decode(data: bytes | None) -> CorpusInfo | None:
    """A corpus manifest, or ``None`` for none or one that does not decode."""
    if data is None:
        return None
    try:
        return codec.decode(data, CorpusInfo)
    except ValueError:
        return None


def list_corpora(corpus_root: Path) -> list[CorpusInfo]:
    """Every uploaded corpus (a folder with a manifest), by name."""
    if not corpus_root.is_dir():
        return []
    found = (read_corpus(corpus_root, entry.name) for entry in sorted(corpus_root.iterdir()) if entry.is_dir())
    return [info for info in found if info is not None and not info.name.startswith(".")]


def remove_corpus(corpus_root: Path, name: str) -> bool:
    """Delete uploaded corpus ``name``: renamed away first (atomic: jobs see it whole or not at all), then
    removed. Returns whether it existed."""
    target = corpus_dir(corpus_root, name)
    if not (target / MANIFEST).is_file():
        return False
    uploads = corpus_root / UPLOADS
    uploads.mkdir(parents=True, exist_ok=True)
    aside = uploads / f"{name}.deleted.{secrets.token_hex(8)}"
    os.rename(target, aside)
    shutil.rmtree(aside, ignore_errors=True)
    return True


class Corpora:
    """The uploaded corpora, where they are kept: the corpus root (``mirror`` without a store), or the object
    store, with the corpus root as this machine's cache of it (see the module docstring). Every method
    blocks (call it in a thread)."""

    def __init__(self, corpus_root: Path, mirror: Mirror) -> None:
        self.root = corpus_root
        self.mirror = mirror

    @property
    def shared(self) -> bool:
        """Whether corpora live in an object store (every change then takes the ``CorpusGuard`` mark, which
        orders the API pods' changes of one name)."""
        return self.mirror.enabled

    def read(self, name: str) -> CorpusInfo | None:
        """The manifest of uploaded corpus ``name``, or ``None``."""
        if not self.shared:
            return read_corpus(self.root, name)
        return _decode(self.mirror.read_manifest(corpus_dir(self.root, name)))

    def listing(self) -> list[CorpusInfo]:
        """Every uploaded corpus, by name."""
        if not self.shared:
            return list_corpora(self.root)
        found = (
            _decode(self.mirror.read_manifest(corpus_dir(self.root, name), info))
            for name, info in sorted(self.mirror.committed(self.root).items())
        )
        return [info for info in found if info is not None and not info.name.startswith(".")]

    def exists(self, name: str) -> bool:
        """Whether ``name`` is taken: by an uploaded corpus, or by an entry of the corpus root that is not one."""
        target = corpus_dir(self.root, name)
        if not self.shared:
            return target.exists()
        if self.mirror.manifest_info(target) is not None:
            return True
        # A local folder with a manifest that the store lacks is a stale copy, not a corpus.
        return (target.exists() or target.is_symlink()) and (target.is_symlink() or not (target / MANIFEST).is_file())

    def fetch(self, corpus_path: str) -> None:
        """Before ``corpus_path`` is resolved or read here: the uploaded corpus it is in, from the store."""
        self.mirror.pull_corpus(corpus_path)

    def publish(self, staging: Staging, *, overwrite: bool) -> bool:
        """Commit a built upload (``Staging.build``); returns whether it replaced a corpus. With an object
        store: the store's copy first (whatever the store holds under the name deleted, its manifest first;
        then the new files, the manifest last), then this machine's. Call it under ``CorpusGuard.changing``
        when ``shared``.

        Raises:
            CorpusExists: the name is taken and ``overwrite`` is false, or taken by something that is not an
                uploaded corpus.
            StoreError: the store refused an upload.
        """
        if not self.shared:
            return staging.place(overwrite=overwrite)
        name = staging.name
        target = corpus_dir(self.root, name)
        check_uploaded(self.root, name)
        replaced = self.mirror.manifest_info(target) is not None
        if replaced and not overwrite:
            raise CorpusExists(f"corpus {name!r} exists; delete it first or send without If-None-Match")
        self.mirror.remove(target)  # a replaced corpus, or what an interrupted upload left
        self.mirror.push(staging.files, base=self.mirror.key(target))
        staging.place(overwrite=True)
        return replaced

    def remove(self, name: str) -> bool:
        """Delete uploaded corpus ``name`` (the store's copy first, its manifest first); returns whether it
        existed."""
        if not self.shared:
            return remove_corpus(self.root, name)
        target = corpus_dir(self.root, name)
        existed = self.mirror.manifest_info(target) is not None
        self.mirror.remove(target)
        remove_corpus(self.root, name)
        return existed


def corpus_name_of(corpus_path: str) -> str:
    """The top-level entry of the corpus root that ``corpus_path`` reads (an uploaded corpus's name)."""
    parts = [part for part in PurePosixPath(corpus_path).parts if part not in {"", "."}]
    return parts[0] if parts else ""


AnyStore = JobStore[TokenizerJob] | JobStore[RunJob] | JobStore[EvalJob]


class CorpusInUse(CorpusPathError):
    """A queued or running job reads the corpus, or another delete or upload of it is under way."""


CHANGING_PREFIX = "mt:corpus:changing:"
# A delete or replacement marks its corpus for at most this long (an API process that dies mid-way).
CHANGING_TTL_SECONDS = 300


class CorpusGuard:
    """Keeps a corpus that a queued or running job reads from being deleted or replaced.

    Two writers, each of which writes its own mark in Redis and then reads the other's (Redis runs commands
    one at a time, so at least one of two racing writers sees the other):

    - a change (``changing``) sets ``mt:corpus:changing:<name>`` and then reads, in one transaction, the
      queued and active sets of every job kind; a job there that reads the corpus refuses the change;
    - a new job is stored ``queued`` (in its kind's queued set) and the mark (``mark_key``) is read after it,
      in the same transaction (``JobStore.create``'s ``mark``; a resumed job, already stored, reads it with
      ``is_changing``); a job that finds it is failed before it is enqueued (``corpus_changing``), and the
      caller answers 409.

    So a corpus is never deleted while a job that will read it is queued or running; at worst both refuse.
    """

    def __init__(
        self, redis: Redis, tokenizers: JobStore[TokenizerJob], runs: JobStore[RunJob], evals: JobStore[EvalJob]
    ) -> None:
        self.redis = redis
        self.tokenizers = tokenizers
        self.runs = runs
        self.evals = evals

    async def users(self, name: str) -> list[str]:
        """Ids of the queued and running jobs that read corpus ``name`` (an evaluation of a split reads its
        run's corpus)."""
        stores: tuple[AnyStore, ...] = (self.tokenizers, self.runs, self.evals)
        async with pipeline(self.redis, transaction=True) as pipe:
            for store in stores:
                pipe.smembers(store.queued_key)
                pipe.smembers(store.active_key)
            found = await pipe.execute()
        ids = [
            sorted(m.decode() if isinstance(m, bytes) else str(m) for m in found[2 * i] | found[2 * i + 1])
            for i in range(len(stores))
        ]
        paths: list[tuple[str, str | None]] = []
        for tokenizer in [await self.tokenizers.get(job_id) for job_id in ids[0]]:
            if tokenizer is not None:
                paths.append((tokenizer.id, tokenizer.request.corpus_path))
        for run in [await self.runs.get(job_id) for job_id in ids[1]]:
            if run is not None:
                paths.append((run.id, run.request.corpus_path))
        for evaluation in [await self.evals.get(job_id) for job_id in ids[2]]:
            if evaluation is not None:
                path = evaluation.request.corpus_path
                if path is None:
                    of_run = await self.runs.get(evaluation.run_id)
                    path = of_run.request.corpus_path if of_run is not None else None
                paths.append((evaluation.id, path))
        return [job_id for job_id, path in paths if path is not None and corpus_name_of(path) == name]

    @contextlib.asynccontextmanager
    async def changing(self, name: str) -> AsyncIterator[None]:
        """Mark ``name`` as being changed for the body of the ``async with``.

        Raises:
            CorpusInUse: a queued or running job reads it, or another change of it is under way.
        """
        key = CHANGING_PREFIX + name
        if not await self.redis.set(key, "1", nx=True, ex=CHANGING_TTL_SECONDS):
            raise CorpusInUse(f"corpus {name!r} is being deleted or replaced by another request; try again shortly")
        try:
            users = await self.users(name)
            if users:
                shown = ", ".join(users[:5]) + (f" and {len(users) - 5} more" if len(users) > 5 else "")
                raise CorpusInUse(f"corpus {name!r} is read by queued or running job(s) {shown}; cancel them or wait")
            yield
        finally:
            await self.redis.delete(key)

    @staticmethod
    def mark_key(corpus_path: str) -> str:
        """The key that marks the corpus ``corpus_path`` reads as being deleted or replaced."""
        return CHANGING_PREFIX + corpus_name_of(corpus_path)

    async def is_changing(self, corpus_path: str) -> bool:
        """Whether the corpus that ``corpus_path`` reads is being deleted or replaced (read after the job was
        stored, see the class docstring)."""
        return bool(await self.redis.exists(self.mark_key(corpus_path)))
