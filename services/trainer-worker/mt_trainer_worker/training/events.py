"""Writes typed events (training or evaluation) to the worker, one JSON line each, from any thread."""

from __future__ import annotations

import os
import signal
import threading

from mt_contracts import codec
from mt_contracts.evaluation import EvalEvent
from mt_contracts.training import Heartbeat, TrainingEvent


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
