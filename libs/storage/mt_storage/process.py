"""The worker's side of the one child protocol (``mt_storage.child`` is the child's): every job's work runs
in a child process started and stopped here, the same way for tokenizer training, training and evaluation.

A child is ``python -m <module> --nice <n>`` (or the ``Command`` a launcher made of it: ``torchrun ... -m
<module>``) in its own process group (so a stop reaches anything it spawned: every rank of a torchrun)
at a lower CPU priority, with the spec on stdin, one JSON message a line on stdout, stderr appended to a log
file, and a temporary directory of its own (``TMPDIR``, removed however it ends). One stop policy: SIGTERM to
the group, the messages it still writes read and handled for up to ``grace`` seconds (a training child writes
its stop checkpoint then), then SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgspec

logger = logging.getLogger(__name__)

# Keep the children quiet and offline: no hub downloads, no progress bars on stderr.
CHILD_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    # A child never forks after encoding, so the tokenizer may use every core for encode_batch.
    "TOKENIZERS_PARALLELISM": "true",
    "PYTHONUNBUFFERED": "1",
}
SCRATCH_PREFIX = "mt-child-"
# The longest stdout line read from a child, in bytes (a tokenizer's outcome carries its statistics).
LINE_LIMIT = 16 << 20
_TAIL_BYTES = 16_384

LineHandler = Callable[[bytes], Awaitable[None]]


class Command(msgspec.Struct, frozen=True, kw_only=True):
    """How one launch of a child starts: ``argv`` (the program first), variables added to its environment, and
    whether it reads the spec on stdin (a ``torchrun`` reads it from a file: its ranks share stdin)."""

    argv: list[str]
    env: dict[str, str] = msgspec.field(default_factory=dict)
    spec_on_stdin: bool = True


def module_command(module: str, niceness: int) -> Command:
    """The plain child: ``python -m <module> --nice <niceness>`` with this interpreter."""
    return Command(argv=[sys.executable, "-m", module, "--nice", str(niceness)])


async def run_child(
    module: str,
    spec: bytes,
    *,
    niceness: int,
    log_path: Path,
    on_line: LineHandler,
    grace: float,
    on_spawn: Callable[[int], None] | None = None,
    abandon: asyncio.Event | None = None,
    command: Command | None = None,
) -> int:
    """Run child ``module`` on ``spec`` to its end and return its exit code; each stdout line goes to
    ``on_line`` as it comes, in order. ``on_spawn`` receives the child's pid once it runs. ``command``, when
    given, replaces ``python -m <module> --nice <niceness>`` (a launcher's ``torchrun``).

    On cancellation the child is stopped (see the module docstring; the lines it writes meanwhile still reach
    ``on_line``; further cancels do not cut the stop short) before ``CancelledError`` propagates; when
    ``on_line`` raises, the child is stopped likewise and the error re-raised. Once ``abandon`` is set, a stop
    kills the group at once (SIGKILL, no grace): the job is another worker's.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix=SCRATCH_PREFIX)
    try:
        launch = command or module_command(module, niceness)
        with log_path.open("ab") as stderr:
            process = await asyncio.create_subprocess_exec(
                *launch.argv,
                stdin=asyncio.subprocess.PIPE if launch.spec_on_stdin else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
                start_new_session=True,
                env={**os.environ, **CHILD_ENV, **launch.env, "TMPDIR": scratch},
                limit=LINE_LIMIT,
            )  # fmt: skip
        if on_spawn is not None:
            on_spawn(process.pid)
        reader = asyncio.create_task(_read(process, spec if launch.spec_on_stdin else None, on_line))
        try:
            await asyncio.wait({reader})  # unlike awaiting it, a cancel of ours does not cancel the reader
        except asyncio.CancelledError:
            stopping = asyncio.ensure_future(stop(process, reader, grace, abandon))
            while not stopping.done():
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.shield(stopping)
            raise
        if reader.exception() is not None:
            await stop(process, reader, grace, abandon)
            reader.result()
        return await process.wait()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


async def _read(process: asyncio.subprocess.Process, spec: bytes | None, on_line: LineHandler) -> None:
    if process.stdout is None:
        raise RuntimeError("the child has no stdout pipe")
    if spec is not None:
        if process.stdin is None:
            raise RuntimeError("the child has no stdin pipe")
        try:
            process.stdin.write(spec)
            await process.stdin.drain()
            process.stdin.close()
        except (BrokenPipeError, ConnectionResetError):
            logger.warning("child exited before reading its spec", extra={"event": "child_spec_unread"})
    async for line in process.stdout:
        await on_line(line)


async def stop(
    process: asyncio.subprocess.Process, reader: asyncio.Task[None], grace: float, abandon: asyncio.Event | None = None
) -> None:
    """SIGTERM the child's group, let ``reader`` handle what it still writes for up to ``grace`` seconds,
    then SIGKILL the group; SIGKILL at once when ``abandon`` is set."""
    if abandon is not None and abandon.is_set():
        _signal_group(process.pid, signal.SIGKILL)
    elif process.returncode is None:
        _signal_group(process.pid, signal.SIGTERM)
        try:
            async with asyncio.timeout(grace):
                await asyncio.wait({reader})
                await process.wait()
        except TimeoutError:
            logger.warning("child did not stop in time", extra={"event": "child_killed", "pid": process.pid})
            _signal_group(process.pid, signal.SIGKILL)
    await process.wait()
    if not reader.done():
        reader.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.gather(reader, return_exceptions=True)


def _signal_group(pid: int, signum: signal.Signals) -> None:
    try:
        os.killpg(pid, signum)
    except ProcessLookupError:
        return


def tail(path: Path, lines: int) -> str:
    """The last ``lines`` lines of a text file, joined with `` | ``, at most 2,000 characters."""
    try:
        with path.open("rb") as handle:
            handle.seek(max(0, path.stat().st_size - _TAIL_BYTES))
            data = handle.read()
    except FileNotFoundError:
        return ""
    text = " | ".join(line.strip() for line in data.decode(errors="replace").splitlines()[-lines:] if line.strip())
    return text[-2000:]
