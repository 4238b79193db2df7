"""Measure the per-MB figures behind the tokenizer dry-run estimate (``mt_api.estimates.TOKENIZER_COSTS``):
wall seconds and peak RSS of the real tokenizer training process (``python -m mt_tokenizer_worker.process``)
for each method on corpora of two sizes, so that a line through the two points gives a base and a per-MB
slope. Results go to stdout as a table; docs/estimates.md records them.

Usage: ``python scripts/measure_estimates.py CORPUS.txt [--sizes 1,4] [--vocab-size 8000]``. The corpus is
repeated to reach each size (MB = 10^6 bytes).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgspec

from mt_contracts.requests import TrainTokenizerRequest
from mt_contracts.tokenizer_process import TokenizerSpec

METHODS: list[tuple[str, dict[str, object]]] = [
    ("bpe", {"method": "bpe"}),
    ("rustbpe", {"method": "rustbpe"}),
    ("sentencepiece-unigram", {"method": "sentencepiece", "model_type": "unigram"}),
    ("sentencepiece-bpe", {"method": "sentencepiece", "model_type": "bpe"}),
]


def run_once(corpus_root: Path, out: Path, fields: dict[str, object], vocab_size: int) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of one training process."""
    request = msgspec.convert({"corpus_path": "corpus.txt", "vocab_size": vocab_size, **fields}, TrainTokenizerRequest)
    spec = TokenizerSpec(tokenizer_id="tok_measure", request=request, corpus_root=str(corpus_root), out_dir=str(out))
    start = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "mt_tokenizer_worker.process"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert process.stdin is not None
    process.stdin.write(msgspec.json.encode(spec))
    process.stdin.close()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.monotonic() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"training process exited {process.returncode}")
    return seconds, usage.ru_maxrss * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--sizes", default="1,4")
    parser.add_argument("--vocab-size", type=int, default=8000)
    args = parser.parse_args()
    text = args.corpus.read_bytes()
    sizes = [float(size) for size in args.sizes.split(",")]
    print(f"load average {os.getloadavg()}; cpus {os.cpu_count()}")
    print("method | MB | seconds | peak RSS MB")
    for name, fields in METHODS:
        for size in sizes:
            with tempfile.TemporaryDirectory() as scratch:
                root = Path(scratch) / "corpus"
                root.mkdir()
                target = int(size * 1e6)
                data = (text * (target // len(text) + 1))[:target]
                data = data[: data.rfind(b"\n") + 1]
                (root / "corpus.txt").write_bytes(data)
                seconds, peak = run_once(
                    root, Path(scratch) / "out" / "tokenizers" / "tok_measure", fields, args.vocab_size
                )
            print(f"{name} | {len(data) / 1e6:.2f} | {seconds:.2f} | {peak / 1e6:.0f}", flush=True)


if __name__ == "__main__":
    main()
