"""The training child's niceness, measured: ``WORKER__NICENESS`` 10 (the default) against 0.

The real child (``python -m mt_trainer_worker.training --nice N``, GPT-2 4x128, block 128, batch 16, 2
threads, eager fp32; 60 steps, 12 in the busy condition) on the prepared Tiny Shakespeare tokens, in two
conditions: the machine otherwise idle (the stack's services waiting, as they mostly are), and beside one
busy nice-0 process (a Python loop, standing for the API or an inference process at work). What nice 10
buys on the other side is the busy process's progress: its loop iterations per second while the run
trains. ``BENCH_REPEATS`` (5) rounds, the two nicenesses alternating (which goes first changes each round);
medians with min-max.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._common import ROOT, SHAKESPEARE, bpe_tokenizer, load, median, spread
from benchmarks.training import ours, request_for, spec_for
from mt_trainer_worker.training.data import prepare_data

REPEATS = int(os.environ.get("BENCH_REPEATS", "5"))
SIZE = {"n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 128, "batch_size": 16}
# Beside a busy process a nice-10 run crawls (its first try of 60 steps ran past 4 minutes), so that
# condition takes fewer steps; the rate is still the steady one.
STEPS = {"idle": 60, "busy": 12}
# A nice-0 process that keeps one core busy and counts its loop iterations until stopped (SIGTERM).
BUSY = """
import signal, sys, time
count, started = 0, time.monotonic()
def stop(*_):
    print(count / (time.monotonic() - started), flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
while True:
    count += 1
"""


def main() -> str:
    loads = [load()]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "scripts")}
    rates: dict[tuple[str, int], list[float]] = {}
    busy_rates: dict[tuple[str, int], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        tokenizer_dir = work / "tokenizer"
        bpe_tokenizer(tokenizer_dir, 2048)
        prepare_data(tokenizer_dir / "tokenizer.json", [SHAKESPEARE], 0.02, 1337, work / "datasets")
        for round_ in range(REPEATS):
            for condition in ("idle", "busy"):
                request = request_for(SIZE, STEPS[condition], "fp32", "off")
                order = (10, 0) if round_ % 2 == 0 else (0, 10)
                for niceness in order:
                    spec = spec_for(work, tokenizer_dir, request, f"{condition}-{niceness}-{round_}")
                    busy = None
                    if condition == "busy":
                        busy = subprocess.Popen([sys.executable, "-c", BUSY], stdout=subprocess.PIPE)
                        time.sleep(0.5)
                    try:
                        measured = ours(spec, env, niceness)
                    finally:
                        if busy is not None:
                            busy.terminate()
                            out, _ = busy.communicate(timeout=30)
                            busy_rates.setdefault((condition, niceness), []).append(float(out.decode().strip()))
                    rates.setdefault((condition, niceness), []).append(measured.rate)
            loads.append(load())
    rows = []
    for condition in ("idle", "busy"):
        for niceness in (10, 0):
            key = (condition, niceness)
            other = spread([rate / 1e6 for rate in busy_rates[key]], 2) if key in busy_rates else ""
            rows.append(f"| {condition} | {niceness} | {spread(rates[key], 0)} | {other} |")
    ratio = {
        condition: [ten / zero for ten, zero in zip(rates[(condition, 10)], rates[(condition, 0)], strict=True)]
        for condition in ("idle", "busy")
    }
    busy_gain = median(busy_rates[("busy", 10)]) / median(busy_rates[("busy", 0)])
    return "\n".join(
        [
            "## Training niceness (issue 19)",
            "",
            f"The training child at nice 10 (the worker's default) and nice 0: GPT-2 4x128, block 128, batch 16, "
            f"{STEPS['idle']} steps ({STEPS['busy']} beside the busy process), eager fp32, 2 threads; steady "
            "tokens/s over the steps after the first quarter. Busy: "
            "beside one nice-0 Python loop (standing for the API or an inference process at work), whose "
            f"progress is shown too. {REPEATS} rounds, the two nicenesses alternating; medians with min-max. "
            f"1-minute load average before and after each round: {', '.join(loads)}.",
            "",
            "| machine | niceness | training tokens/s | the busy process, M loops/s |",
            "| --- | --- | --- | --- |",
            *rows,
            "",
            f"Nice 10 over nice 0, per round: idle {spread(ratio['idle'], 2)}, busy {spread(ratio['busy'], 2)}; "
            f"the busy process runs {busy_gain:.2f}x as fast beside a nice-10 run as beside a nice-0 one.",
        ]
    )
