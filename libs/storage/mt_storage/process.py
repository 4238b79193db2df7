"""The worker's side of the one child protocol (``mt_storage.child`` is the child's): every job's work runs
in a child process started and stopped here, the same way for tokenizer training, training and evaluation.

A child is ``python -m <module> --nice <n>`` (or the ``Command`` a launcher made of it: ``torchrun ... -m
<module>``) in its own process group (so a stop reaches anything it spawned: every rank of a torchrun)
at a lower CPU priority, with the spec on stdin, one JSON message a line on stdout, stderr appended to a log
file, and a temporary directory of its own (``TMPDIR``, removed however it ends). One stop policy: SIGTERM to
the group, the messages it still writes read and handled for up to ``grace`` seconds (a training child writes
its stop checkpoint then), then SIGKILL.

A worker may keep a warm standby (``WarmChild``): ``python -m mt_storage.warm <modules>``, started the same
way ahead of the job, its modules already imported (``mt_storage.warm``). A job run with the plain command
takes it when it is alive, hands it the job's process log and the spec on stdin, and from then on it is the
job's child like any other; a replacement starts at once. One that died while waiting is replaced and the job
starts a fresh child instead.
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
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import msgspec

from mt_contracts import codec
from mt_storage.warm import Handover, Ready

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
WARM_MODULE = "mt_storage.warm"
# A standby's own stderr (its imports' warnings) until a job points it at the job's process log.
STANDBY_LOG = "standby.log"
# Seconds after a job took the standby before the next one starts (sooner when the job ends): its imports
# would otherwise take a core from the job's own start.
REPLACE_AFTER_SECONDS = 5.0
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
    warm: WarmChild | None = None,
) -> int:
    """Run child ``module`` on ``spec`` to its end and return its exit code; each stdout line goes to
    ``on_line`` as it comes, in order. ``on_spawn`` receives the child's pid once it runs. ``command``, when
    given, replaces ``python -m <module> --nice <niceness>`` (a launcher's ``torchrun``). ``warm``, when given
    and the command is the plain one, supplies an already started child for ``module`` (see ``WarmChild``).

    On cancellation the child is stopped (see the module docstring; the lines it writes meanwhile still reach
    ``on_line``; further cancels do not cut the stop short) before ``CancelledError`` propagates; when
    ``on_line`` raises, the child is stopped likewise and the error re-raised. Once ``abandon`` is set, a stop
    kills the group at once (SIGKILL, no grace): the job is another worker's.

    Raises:
        OSError: the process log or the child's TMPDIR could not be made.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    launch = command or module_command(module, niceness)
    standby: Standby | None = None
    if warm is not None and launch == module_command(module, niceness):
        with log_path.open("ab"):  # the standby opens it: an error here is the cold path's
            pass
        standby = await warm.take(module)
    scratch = standby.scratch if standby is not None else tempfile.mkdtemp(prefix=SCRATCH_PREFIX)
    try:
        if standby is not None:
            process = standby.process
            handover = Handover(module=module, log_path=str(log_path))
            payload: bytes | None = codec.encode(handover) + b"\n" + spec
        else:
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
            payload = spec if launch.spec_on_stdin else None
        if on_spawn is not None:
            on_spawn(process.pid)
        reader = asyncio.create_task(_read(process, payload, on_line))
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
        if warm is not None:
            warm.start()


class Standby(msgspec.Struct, frozen=True):
    """A started ``mt_storage.warm`` child, its modules imported, and its TMPDIR."""

    process: asyncio.subprocess.Process
    scratch: str


class WarmChild:
    """Keeps one warm standby child for ``modules`` (``python -m mt_storage.warm --nice <niceness>
    <modules>``) started ahead of the job that takes it, and starts the next one when a job took it.

    ``start`` starts one (in the running event loop: the worker's start-up, and ``run_child`` when a job
    ends); ``take`` hands the standby to ``run_child`` and starts the next one ``REPLACE_AFTER_SECONDS`` later;
    ``aclose`` kills the one waiting and waits for it (the worker's shutdown). One standby waits at a time: a
    job that comes while none does (``WORKER__MAX_JOBS`` above 1) runs a fresh child.
    """

    def __init__(self, modules: Sequence[str], niceness: int) -> None:
        self.modules = tuple(modules)
        self.niceness = niceness
        self._next: asyncio.Task[Standby | None] | None = None
        self._discarding: set[asyncio.Task[None]] = set()
        self._replace: asyncio.TimerHandle | None = None
        self._closed = False

    def start(self) -> None:
        """Start a standby unless one is waiting or starting (or the pool is closed)."""
        if self._replace is not None:
            self._replace.cancel()  # a replacement planned by an earlier take, once it ended, would be one too many
            self._replace = None
        if self._next is None and not self._closed:
            self._next = asyncio.create_task(self._spawn(), name="warm-child")

    async def ready(self) -> bool:
        """Wait until the standby starting now, if any, has imported its modules; whether one is waiting."""
        starting = self._next
        if starting is None:
            return False
        await asyncio.wait({starting})
        standby = starting.result()
        return standby is not None and standby.process.returncode is None

    async def take(self, module: str) -> Standby | None:
        """The waiting standby, once its imports are done, when it is alive and serves ``module``; else
        ``None`` (run a fresh child). Either way the next one starts ``REPLACE_AFTER_SECONDS`` later, or when
        the job ends. A cancel while the standby is still importing leaves it for the next job."""
        if module not in self.modules or self._next is None:
            return None
        starting, self._next = self._next, None
        try:
            await asyncio.wait({starting})  # a cancel of ours does not cancel the start
        except asyncio.CancelledError:
            if self._next is None and not self._closed:
                self._next = starting
            else:
                discarding = asyncio.create_task(_discard_started(starting))
                self._discarding.add(discarding)
                discarding.add_done_callback(self._discarding.discard)
            raise
        self._replace = asyncio.get_running_loop().call_later(REPLACE_AFTER_SECONDS, self.start)
        standby = starting.result()
        if standby is None:
            return None
        if standby.process.returncode is not None:
            logger.warning(
                "warm child died while waiting; the job starts a fresh one",
                extra={"event": "warm_child_lost", "pid": standby.process.pid, "code": standby.process.returncode},
            )
            await _discard(standby)
            return None
        return standby

    async def aclose(self) -> None:
        """Kill the standby waiting or starting, wait for it and remove its TMPDIR; start no other."""
        self._closed = True
        if self._replace is not None:
            self._replace.cancel()
        starting, self._next = self._next, None
        if starting is not None:
            await _discard_started(starting)
        await asyncio.gather(*self._discarding)

    async def _spawn(self) -> Standby | None:
        """Start a standby and wait for its ``Ready`` line; ``None`` when it could not start or died first
        (logged with the end of its stderr)."""
        scratch = tempfile.mkdtemp(prefix=SCRATCH_PREFIX)
        log = Path(scratch) / STANDBY_LOG
        argv = [sys.executable, "-m", WARM_MODULE, "--nice", str(self.niceness), *self.modules]
        try:
            with log.open("ab") as stderr:
                process = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=stderr,
                    start_new_session=True,
                    env={**os.environ, **CHILD_ENV, "TMPDIR": scratch},
                    limit=LINE_LIMIT,
                )  # fmt: skip
        except OSError as exc:
            shutil.rmtree(scratch, ignore_errors=True)
            logger.warning("warm child not started", extra={"event": "warm_child_failed", "error": str(exc)})
            return None
        standby = Standby(process, scratch)
        try:
            if process.stdout is None:
                raise RuntimeError("the standby has no stdout pipe")
            line = await process.stdout.readline()
            codec.decode(line, Ready)
        except (msgspec.DecodeError, ValueError) as exc:
            last = tail(log, 5)
            await _discard(standby)
            logger.warning(
                "warm child exited before it was ready",
                extra={"event": "warm_child_failed", "error": str(exc), "last_output": last},
            )
            return None
        except BaseException:
            await _discard(standby)
            raise
        return standby


async def _discard(standby: Standby) -> None:
    """Kill a standby no job took, wait for it, and remove its TMPDIR."""
    process = standby.process
    if process.stdin is not None:
        process.stdin.close()
    _signal_group(process.pid, signal.SIGKILL)
    await process.wait()
    shutil.rmtree(standby.scratch, ignore_errors=True)


async def _discard_started(starting: asyncio.Task[Standby | None]) -> None:
    """Discard the standby of a start: stopped midway (a cancel), or its standby killed once it is ready."""
    starting.cancel()
    done = await asyncio.gather(starting, return_exceptions=True)
    if isinstance(done[0], Standby):
        await _discard(done[0])


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
