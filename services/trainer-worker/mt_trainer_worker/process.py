"""Launching and following the worker's torch subprocesses (training, evaluation): each runs in its own
process group (so a stop kills it and anything it spawned) at a lower CPU priority, writes one JSON event a
line on stdout and everything else to a log file."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

# Keep the processes quiet and offline: no hub downloads, no progress bars on stderr.
PROCESS_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    # The process never forks after encoding, so the tokenizer may use every core for encode_batch.
    "TOKENIZERS_PARALLELISM": "true",
    "PYTHONUNBUFFERED": "1",
}


async def start_process(module: str, spec_path: Path, niceness: int, log_path: Path) -> asyncio.subprocess.Process:
    """Start ``python -m <module> --spec <spec_path> --nice <niceness>`` with stdout piped (its events) and
    stderr appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as stderr:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", module, "--spec", str(spec_path), "--nice", str(niceness),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
            start_new_session=True,
            env={**os.environ, **PROCESS_ENV},
        )  # fmt: skip


async def follow(process: asyncio.subprocess.Process, on_line: Callable[[bytes], Awaitable[None]], grace: float) -> int:
    """Hand each line ``process`` writes on stdout to ``on_line`` until it exits; returns its exit code.
    On any error or cancellation the process group is stopped (see ``terminate``) and the error re-raised."""
    try:
        if process.stdout is None:
            raise RuntimeError("the process has no stdout pipe")
        async for raw in process.stdout:
            await on_line(raw)
        return await process.wait()
    except BaseException:
        await terminate(process, grace)
        raise


async def terminate(process: asyncio.subprocess.Process, grace: float) -> None:
    """SIGTERM the process group, then SIGKILL it if it is still alive after ``grace`` seconds."""
    if process.returncode is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(process.wait()), grace)
        except TimeoutError:
            os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
    except ProcessLookupError:
        return


def tail(path: Path, lines: int) -> str:
    """The last ``lines`` lines of a text file, joined with `` | ``, at most 2,000 characters."""
    try:
        data = path.read_bytes()[-16_384:]
    except FileNotFoundError:
        return ""
    text = " | ".join(line.strip() for line in data.decode(errors="replace").splitlines()[-lines:] if line.strip())
    return text[-2000:]
