"""Run the whole Model Trainer stack without Docker: Redis (embedded unless ``REDIS__URL`` is set), the
API and the workers, each its own process. ``python scripts/stack.py`` runs it in the foreground until
Ctrl-C, which stops every process it started.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

import httpx

from mt_storage.embedded_redis import EmbeddedRedis

ROOT = Path(__file__).resolve().parent.parent
# Where ``make demo`` and ``make dev`` find Tiny Shakespeare (``CORPUS_DIR`` names another folder).
DEFAULT_CORPUS_DIR = ROOT.parent / "shared" / "corpora"
DEMO_CORPUS = "tinyshakespeare.txt"
SERVICES = {
    "api": "mt_api",
    "tokenizer-worker": "mt_tokenizer_worker",
    "trainer-worker": "mt_trainer_worker",
    "webhook-worker": "mt_webhook_worker",
}


class StackError(RuntimeError):
    """The stack did not come up; the message says which part and where its log is."""


class Stack:
    """The services as child processes; a context manager that stops them all on exit.

    ``env`` is the environment for every service (settings keys such as ``APP__CORPUS_ROOT``); when it
    has no ``REDIS__URL``, a private ``redis-server`` with append-only persistence runs under
    ``data_dir/redis``. ``log_dir`` receives each service's output when given; otherwise they share
    this process's stdout.
    """

    def __init__(self, env: Mapping[str, str], data_dir: Path, log_dir: Path | None = None) -> None:
        self.env = dict(env)
        self.data_dir = data_dir
        self.log_dir = log_dir
        self.redis: EmbeddedRedis | None = None
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def api_url(self) -> str:
        host = self.env.get("HTTP__HOST", "127.0.0.1")
        return f"http://{host}:{self.env.get('HTTP__PORT', '8000')}"

    def start(self, ready_timeout: float = 90.0) -> None:
        """Start Redis (if needed), the API and the workers; return once ``/readyz`` answers 200 and reports a
        live worker of each kind.

        Raises:
            StackError: a process exited early or readiness did not come within ``ready_timeout`` seconds.
        """
        if not self.env.get("REDIS__URL"):
            self.redis = EmbeddedRedis(self.data_dir / "redis", persistent=True)
            self.redis.start()
            self.env["REDIS__URL"] = self.redis.url
            print(f"stack: embedded redis-server on {self.redis.url} (data in {self.redis.data_dir})", flush=True)
        for name, module in SERVICES.items():
            if self.log_dir is None:
                self.processes[name] = subprocess.Popen([sys.executable, "-m", module], env=self.env)
                continue
            self.log_dir.mkdir(parents=True, exist_ok=True)
            # The child keeps its own descriptor; ours is closed as soon as it has started.
            with (self.log_dir / f"{name}.log").open("ab") as output:
                self.processes[name] = subprocess.Popen(
                    [sys.executable, "-m", module], env=self.env, stdout=output, stderr=subprocess.STDOUT
                )
        self._wait_ready(ready_timeout)
        print(f"stack: ready at {self.api_url} (OpenAPI at {self.api_url}/schema)", flush=True)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    where = f"; see {self.log_dir / (name + '.log')}" if self.log_dir else ""
                    raise StackError(f"{name} exited with code {process.returncode}{where}")
            try:
                response = httpx.get(f"{self.api_url}/readyz", timeout=2.0)
                pools = response.json().get("workers", {}) if response.status_code == 200 else {}
                if pools and all(pool.get("live", 0) >= 1 for pool in pools.values()):
                    return
                last = response.text
            except httpx.TransportError as exc:
                last = str(exc)
            time.sleep(0.25)
        raise StackError(f"the stack was not ready after {timeout:.0f} s: {last}")

    def wait(self) -> int:
        """Block until any service exits; returns its exit code."""
        while True:
            for process in self.processes.values():
                code = process.poll()
                if code is not None:
                    return code
            time.sleep(0.5)

    def stop(self, grace: float = 45.0) -> None:
        """SIGTERM every service, SIGKILL what is left after ``grace`` seconds, then stop Redis."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in self.processes.values():
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()
        if self.redis is not None:
            self.redis.stop()
            self.redis = None

    def __enter__(self) -> Stack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def prepare_corpus_root(env: dict[str, str], default_root: Path, demo_dir: Path) -> Path:
    """The corpus root the services will read, set in ``env`` as ``APP__CORPUS_ROOT``. When the caller set
    none, it is ``default_root``, created when missing and given a copy of the demo corpus from ``demo_dir``
    (when there is one), so the README's examples work on a fresh clone. Prints where it is and what it holds.
    """
    configured = env.get("APP__CORPUS_ROOT")
    root = Path(configured) if configured else default_root
    if not configured:
        root.mkdir(parents=True, exist_ok=True)
        demo = demo_dir / DEMO_CORPUS
        if not (root / DEMO_CORPUS).exists() and demo.is_file():
            shutil.copyfile(demo, root / DEMO_CORPUS)
    env["APP__CORPUS_ROOT"] = str(root.resolve())
    held = sorted(entry.name for entry in root.iterdir() if not entry.name.startswith(".")) if root.is_dir() else []
    print(
        f"stack: corpora are read from {root} (APP__CORPUS_ROOT); put .txt/.jsonl files or folders of them there"
        f" and send their path relative to it as corpus_path. It holds: {', '.join(held) or 'nothing yet'}",
        flush=True,
    )
    return root


def main() -> int:
    data_dir = ROOT / ".data"
    env = dict(os.environ)
    prepare_corpus_root(env, ROOT / "corpus", Path(env.get("CORPUS_DIR", DEFAULT_CORPUS_DIR)))
    env.setdefault("APP__ARTIFACTS_ROOT", str(data_dir / "artifacts"))
    env.setdefault("APP__RUNS_ROOT", str(data_dir / "runs"))
    stack = Stack(env, data_dir)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        stack.start()
        print("stack: press Ctrl-C to stop", flush=True)
        return stack.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        print("stack: stopping", flush=True)
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
