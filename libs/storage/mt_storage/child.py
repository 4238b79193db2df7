"""The child's side of the one child protocol (``mt_storage.process`` is the worker's): read the spec from
stdin, write typed messages to the worker on stdout, one JSON line each, from any thread; leave when the
worker is gone; turn an exception into the ``failed`` message a user can act on.

Imported by child processes only (tokenizer training, training, evaluation): it never imports redis or arq.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import signal
import sys
import threading
import time
import traceback
from collections.abc import Mapping
from pathlib import Path

import msgspec

from mt_contracts import codec
from mt_contracts.events import Failed, log_event
from mt_storage import CorpusPathError
from mt_storage.corpus import CorpusDecodeError, CorpusFormatError

# How often a child checks that the worker that started it is still alive (seconds).
PARENT_CHECK_SECONDS = 1.0
# The variable naming the worker's pid for processes it starts through another (torchrun's ranks).
SUPERVISOR_ENV = "MT_SUPERVISOR_PID"


class ChildFailure(Exception):
    """An error the user can act on, with its stable ``code`` and a ``message`` that says what to change."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Channel:
    """Writes messages to file descriptor ``fd`` (the pipe the worker reads). Thread-safe. Once the worker
    is gone (a broken pipe) messages are dropped and ``parent_gone`` is set: the child stops as it would on
    SIGTERM, without a traceback."""

    def __init__(self, fd: int, job_id: str) -> None:
        self._fd = fd
        self._lock = threading.Lock()
        self.job_id = job_id
        self.phase = "preparing"
        self.parent_gone = threading.Event()

    def send(self, message: msgspec.Struct) -> None:
        """Write one message (an event or the outcome)."""
        line = codec.encode(message) + b"\n"
        with self._lock:
            if self.parent_gone.is_set():
                return
            view = memoryview(line)
            try:
                while view:
                    written = os.write(self._fd, view)
                    view = view[written:]
            except OSError:
                self._lost_parent()

    def write(self, level: str, event: str, message: str, **fields: object) -> None:
        """Send a log event of this job (the same call as ``JobLog.write``)."""
        self.send(log_event(self.job_id, level, event, message, **fields))

    def _lost_parent(self) -> None:
        if not self.parent_gone.is_set():
            self.parent_gone.set()
            os.kill(os.getpid(), signal.SIGTERM)


def open_channel(job_id: str, main: bool = True) -> Channel:
    """A ``Channel`` on this process's original stdout; anything else printed on stdout afterwards (by a
    library, say) goes to stderr instead, which the worker keeps as the job's process log. A process that is
    not ``main`` (a torchrun rank other than 0, whose stdout is rank 0's pipe too) writes its messages to
    stderr as well."""
    fd = os.dup((sys.stdout if main else sys.stderr).fileno())
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    return Channel(fd, job_id)


def watch_parent(
    channel: Channel, interval: float = PARENT_CHECK_SECONDS, supervisor: int | None = None
) -> threading.Thread:
    """Start a daemon thread that stops this process (SIGTERM to itself, so training checkpoints first) once
    the worker that started it is gone: the reaper hands its job to another worker, and an orphan still
    working would write the same folders beside it. A torchrun rank's parent is torchrun: ``supervisor``
    names the worker's pid (``SUPERVISOR_ENV``), watched as well."""
    parent = os.getppid()

    def alive() -> bool:
        if os.getppid() != parent:
            return False
        if supervisor is None:
            return True
        try:
            os.kill(supervisor, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def watch() -> None:
        while alive():
            time.sleep(interval)
        channel.parent_gone.set()
        os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=watch, name="parent-watch", daemon=True)
    thread.start()
    return thread


_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Have the kernel SIGKILL this process once its parent is gone (Linux ``PR_SET_PDEATHSIG``). A torchrun
    rank runs in a session of its own, out of reach of a stop sent to the worker's child group: a SIGTERM
    reaches it through torchrun, which forwards it, and a SIGKILL of torchrun (a stop past its grace, or a job
    that is another worker's now) must end it too, at once, before it writes anything more."""
    if sys.platform != "linux":
        return
    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the request: nothing would signal it
        os.kill(os.getpid(), signal.SIGKILL)


def _relative(path: str | None, roots: Mapping[str, str]) -> str:
    """``path`` as ``<setting>:<path below it>`` when it lies under one of ``roots`` (setting name: root)."""
    if not path:
        return "an unknown folder"
    resolved = Path(path).resolve()
    for setting, root in roots.items():
        if not root:
            continue
        try:
            below = resolved.relative_to(Path(root).resolve())
        except ValueError:
            continue
        return f"{below.as_posix() or '.'} under {setting}"
    return resolved.name


def _free_bytes(path: str | None) -> int | None:
    probe = Path(path) if path else None
    while probe is not None and not probe.exists():
        probe = probe.parent if probe.parent != probe else None
    if probe is None:
        return None
    try:
        return shutil.disk_usage(probe).free
    except OSError:
        return None


def os_failure(exc: OSError, roots: Mapping[str, str]) -> Failed:
    """The ``failed`` message of an ``OSError``: ``disk_full`` (ENOSPC, EDQUOT) naming the folder relative
    to its root setting and the bytes left, else the errno's own name in lower case (``eacces``,
    ``erofs``...) with the folder; ``roots`` maps setting names (``APP__RUNS_ROOT``) to their paths."""
    where = _relative(exc.filename if isinstance(exc.filename, str) else None, roots)
    if exc.errno in {errno.ENOSPC, errno.EDQUOT}:
        free = _free_bytes(exc.filename if isinstance(exc.filename, str) else None)
        left = "" if free is None else f" ({free:,} bytes free)"
        return Failed(
            code="disk_full",
            message=f"the disk is full writing {where}{left}; free space there or point the setting at a larger "
            "disk, then resume or submit the job again",
        )
    name = errno.errorcode.get(exc.errno or 0, "oserror").lower()
    return Failed(code=name, message=f"{exc.strerror or exc} ({name.upper()}) at {where}")


def failure(exc: BaseException, out_of_memory_hint: str, roots: Mapping[str, str]) -> Failed:
    """The ``failed`` message for an exception that ended a child: the stable code of an error the user can
    act on, else ``internal_error`` (the traceback goes to stderr, the process log)."""
    match exc:
        case ChildFailure(code=code, message=message):
            return Failed(code=code, message=message)
        case CorpusDecodeError():
            return Failed(code="invalid_utf8", message=str(exc))
        case CorpusFormatError():
            return Failed(code="invalid_jsonl", message=str(exc))
        case CorpusPathError():
            return Failed(code="corpus_unavailable", message=str(exc))
        case MemoryError():
            return Failed(code="out_of_memory", message=f"out of memory; {out_of_memory_hint}")
        case OSError():
            return os_failure(exc, roots)
        case _:
            traceback.print_exception(exc)
            return Failed(code="internal_error", message=f"{type(exc).__name__}: {exc}")


def leave(code: int) -> None:
    """End the child now, without interpreter shutdown: a library may still run a native thread (after a
    corpus error SentencePiece trains on in C++, and shutting down under it aborts). Everything is written."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
