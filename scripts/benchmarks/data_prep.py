"""Data preparation at scale: a generated corpus encoded into training token files by ``prepare_data``.

The corpus is Tiny Shakespeare's lines in a seeded random order, repeated to the size asked, in several
files (documents). Each size runs in a fresh process that reports its own peak RSS. Sizes in MB come from
``BENCH_DATA_MB`` (default ``64,256``; the issue's goal is stated for 1024). Goals: peak RSS <= 500 MB
whatever the size, time linear in size, >= 5 MB/s on 2 cores.

The reference, run on the same corpus in the same run, is the tokenizer library alone: the files' lines
read with Python's text reader and joined into the same pieces (``piece_batches``), ``encode_batch_fast``
called on them and the ids dropped, so the ratio shows what our pipeline (reading with the corpus rules,
splitting, counting, writing) costs on top of the encoding itself. ``BENCH_REPEATS`` (default 5) alternating
runs per size (ours first on even runs): medians with min-max, peak RSS of both sides, load average recorded.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import msgspec

from benchmarks._common import SHAKESPEARE, bpe_tokenizer, load, median, spread

FILE_MB = 32
VOCAB_SIZE = 8192
_CHILD = """
import json, resource, sys, time
from pathlib import Path
from mt_trainer_worker.training.data import prepare_data
files = sorted(Path(sys.argv[1]).glob("*.txt"))
started = time.perf_counter()
data = prepare_data(Path(sys.argv[2]), files, 0.01, 1337, Path(sys.argv[3]))
print(json.dumps({"seconds": time.perf_counter() - started, "tokens": data.train_tokens + data.val_tokens,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""
_LIBRARY = """
import json, resource, sys, time
from pathlib import Path
from tokenizers import Tokenizer
from mt_trainer_worker.training.data import piece_batches
tokenizer = Tokenizer.from_file(sys.argv[2])
started = time.perf_counter()
tokens = 0
for path in sorted(Path(sys.argv[1]).glob("*.txt")):
    with path.open(encoding="utf-8") as lines:
        for batch in piece_batches(lines):
            tokens += sum(len(e.ids) for e in tokenizer.encode_batch_fast(batch, add_special_tokens=False))
print(json.dumps({"seconds": time.perf_counter() - started, "tokens": tokens,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


class Measured(msgspec.Struct, frozen=True):
    seconds: float
    tokens: int
    peak_rss_mb: float


def write_corpus(directory: Path, megabytes: int) -> int:
    """Write ``megabytes`` MB of shuffled Shakespeare lines into ``FILE_MB``-sized files; returns bytes."""
    lines = SHAKESPEARE.read_text(encoding="utf-8").splitlines(keepends=True)
    rng = random.Random(0)
    directory.mkdir(parents=True)
    written, index = 0, 0
    while written < megabytes * 2**20:
        with (directory / f"part-{index:04d}.txt").open("w", encoding="utf-8") as out:
            size = 0
            while size < FILE_MB * 2**20 and written + size < megabytes * 2**20:
                rng.shuffle(lines)
                chunk = "".join(lines)
                out.write(chunk)
                size += len(chunk.encode())
        written += size
        index += 1
    return written


def _run(code: str, *args: str) -> Measured:
    """Run ``code`` in a fresh interpreter (its own peak RSS) with the tokenizer's thread pool enabled."""
    result = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        check=True,
        env={**os.environ, "TOKENIZERS_PARALLELISM": "true"},
    )
    return msgspec.json.decode(result.stdout.splitlines()[-1], type=Measured)


def main() -> str:
    sizes = [int(part) for part in os.environ.get("BENCH_DATA_MB", "64,256").split(",")]
    runs = int(os.environ.get("BENCH_REPEATS", "5"))
    rows = []
    per_mb = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        tokenizer = bpe_tokenizer(work / "tokenizer", VOCAB_SIZE)
        for megabytes in sizes:
            corpus = work / f"corpus-{megabytes}"
            size = write_corpus(corpus, megabytes)
            mb = size / 2**20
            before = load()
            ours: list[Measured] = []
            library: list[Measured] = []
            for repeat in range(runs):
                for side in ("ours", "library") if repeat % 2 == 0 else ("library", "ours"):
                    if side == "ours":
                        cache = work / f"cache-{megabytes}"
                        ours.append(_run(_CHILD, str(corpus), str(tokenizer), str(cache)))
                        shutil.rmtree(cache)
                    else:
                        library.append(_run(_LIBRARY, str(corpus), str(tokenizer)))
            shutil.rmtree(corpus)
            per_mb.append(median([m.seconds for m in ours]) / mb)
            ratios = [r.seconds / m.seconds for r, m in zip(library, ours, strict=True)]
            rows.append(
                f"| {mb:,.0f} | {spread([mb / r.seconds for r in library], 2)} "
                f"| {spread([mb / m.seconds for m in ours], 2)} | {spread(ratios, 2)} "
                f"| {ours[0].tokens:,} | {median([r.peak_rss_mb for r in library]):,.0f} "
                f"| {median([m.peak_rss_mb for m in ours]):,.0f} | {before} → {load()} |"
            )
    linearity = per_mb[-1] / per_mb[0] if len(per_mb) > 1 else 1.0
    return "\n".join(
        [
            "## Data preparation (issue 4)",
            "",
            f"`prepare_data` on generated corpora ({FILE_MB} MB files of shuffled Tiny Shakespeare lines), "
            f"byte-level BPE with vocab_size {VOCAB_SIZE}, one fresh process per run, {runs} alternating runs per "
            "size: medians with min-max; peak RSS medians. "
            f"Median time per MB, largest over smallest size: {linearity:.2f} (1.00 = linear). "
            "Reference: the tokenizer library alone (`encode_batch_fast` on the same pieces of lines, ids "
            "dropped) on the same corpus.",
            "Goals: peak RSS <= 500 MB at any size; time linear in size; >= 5 MB/s on 2 cores.",
            "",
            "| corpus MB | library alone MB/s | ours MB/s | speed, ours / library | tokens | library peak RSS MB "
            "| ours peak RSS MB | load average before → after |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
            *rows,
        ]
    )
