"""Writes typed events (training or evaluation) to the worker, one JSON line each, from any thread."""

from __future__ import annotations

import os
import signal
import sys
import threading
import traceback

from mt_contracts import codec
from mt_contracts.evaluation import EvalEvent
from mt_contracts.training import Failed, Heartbeat, TrainingEvent
from mt_storage.corpus import CorpusDecodeError
from mt_trainer_worker.training import TrainingFailure


def open_event_writer() -> EventWriter:
    """An ``EventWriter`` on this process's original stdout; anything else printed on stdout afterwards (by
    a library, say) goes to stderr instead, so the worker's event stream stays clean."""
    events_fd = os.dup(sys.stdout.fileno())
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    return EventWriter(events_fd)


def failure_event(exc: Exception, out_of_memory_hint: str) -> Failed:
    """The ``failed`` event for an exception that ended a training or evaluation process: the stable code of
    an error the user can act on, else ``internal_error`` (the traceback goes to stderr, the process log)."""
    match exc:
        case TrainingFailure(code=code, message=message):
            return Failed(code=code, message=message)
        case CorpusDecodeError():
            return Failed(code="invalid_utf8", message=str(exc))
        case MemoryError():
            return Failed(code="out_of_memory", message=f"out of memory; {out_of_memory_hint}")
        case _:
            traceback.print_exception(exc)
            return Failed(code="internal_error", message=f"{type(exc).__name__}: {exc}")


class EventWriter:
    """Writes events to file descriptor ``fd`` (a pipe the worker reads). Thread-safe."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._lock = threading.Lock()
        self.phase = "preparing"

    def emit(self, event: TrainingEvent | EvalEvent) -> None:
        line = codec.encode(event) + b"\n"
        with self._lock:
            view = memoryview(line)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]


class HeartbeatThread(threading.Thread):
    """Emits ``Heartbeat(phase=writer.phase)`` every ``interval`` seconds until stopped; a daemon thread,
    so it beats through data preparation, training steps and saving alike."""

    def __init__(self, writer: EventWriter, interval: float) -> None:
        super().__init__(name="heartbeat", daemon=True)
        self._writer = writer
        self._interval = interval
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self._interval):
            try:
                self._writer.emit(Heartbeat(phase=self._writer.phase))
            except OSError:
                # The worker is gone (broken pipe): stop the way a cancel does, checkpointing first.
                os.kill(os.getpid(), signal.SIGTERM)
                return

    def stop(self) -> None:
        self._stop_event.set()
