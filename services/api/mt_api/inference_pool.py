"""The gateway's inference processes: a process pool whose children import torch (``mt_api.inference``),
so the gateway process never does and its event loop never runs a model.

Calls and answers cross the process boundary as JSON bytes (``mt_contracts.generation``). Children are
started with ``spawn`` (no fork of a threaded event loop) on the first call, keep their loaded models
between calls, and run at a lower CPU priority.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import msgspec

from mt_api import Unavailable
from mt_contracts import codec
from mt_contracts.generation import InferenceCall, InferenceOutcome
from mt_contracts.settings import InferenceSettings

# Inference processes never reach the network; they read only this service's own artifacts.
_CHILD_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TOKENIZERS_PARALLELISM": "false",
}
_outcome_decoder: msgspec.json.Decoder[InferenceOutcome] = msgspec.json.Decoder(InferenceOutcome)


def _start_child(niceness: int, cache_size: int, threads: int) -> None:
    os.environ.update(_CHILD_ENV)
    # One intra-op thread by default: small models decode no faster on more, and a second OpenMP team
    # spinning beside a training process's on the same cores slowed sampling twenty-fold in make bench.
    os.environ["OMP_NUM_THREADS"] = str(threads)
    if niceness:
        os.nice(niceness)
    from mt_api import inference  # torch loads here, in the child only

    inference.configure(cache_size, threads)


def _run_in_child(payload: bytes) -> bytes:
    from mt_api import inference

    return inference.handle(payload)


class InferencePool:
    """Runs ``InferenceCall``s in ``settings.processes`` child processes, each waited on at most
    ``settings.timeout`` seconds."""

    def __init__(self, settings: InferenceSettings) -> None:
        self.settings = settings
        self._executor: ProcessPoolExecutor | None = None

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                max_workers=self.settings.processes,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_child,
                initargs=(self.settings.niceness, self.settings.cache_size, self.settings.threads),
            )
        return self._executor

    async def call(self, call: InferenceCall) -> InferenceOutcome:
        """Run ``call`` in a child process and decode its answer.

        Raises:
            Unavailable: no answer within ``settings.timeout`` seconds (the child finishes the call and stays
                in service), or the child died (a fresh one starts on the next call).
        """
        loop = asyncio.get_running_loop()
        try:
            future = loop.run_in_executor(self._pool(), _run_in_child, codec.encode(call))
            raw = await asyncio.wait_for(future, self.settings.timeout)
        except TimeoutError as exc:
            raise Unavailable(
                f"the inference process did not answer within {self.settings.timeout} s; retry, ask for fewer "
                "tokens or samples, or raise INFERENCE__TIMEOUT"
            ) from exc
        except BrokenProcessPool as exc:
            await self.close()
            raise Unavailable("the inference process died (out of memory?); retry") from exc
        return _outcome_decoder.decode(raw)

    async def close(self) -> None:
        """Stop the child processes (after the calls they are running)."""
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True)
