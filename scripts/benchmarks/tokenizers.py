"""Tokenizer jobs against the library alone: the same options, the same corpus, measured in one run.

Ours is the real training process of a tokenizer job (``python -m mt_tokenizer_worker.process``: reading,
training, held-out statistics, artifacts, manifest); the reference calls the library directly on the same file
with the options our method passes (HF ``tokenizers``: ``Tokenizer.train`` with a ``BpeTrainer``, the file read
line by line in Rust; ``sentencepiece.SentencePieceTrainer`` on the file). Ours trains on the lines it does not
hold out (99%, the default ``holdout_fraction``), the reference on all; our BPE takes them in 8 KiB pieces of
lines (``methods/bpe.py``). Wall time and peak RSS come from GNU time around each
process. Medians of ``REPEATS`` alternating runs. The corpus is Tiny Shakespeare's lines in a seeded random
order, ``BENCH_TOKENIZER_MB`` MB (default 50).
Goals: time ratio <= 1.10 and peak RSS <= 1.5x the library alone, for bpe and both SentencePiece types.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

from benchmarks._common import SHAKESPEARE, median
from mt_contracts import codec
from mt_contracts.requests import TrainTokenizerRequest
from mt_contracts.tokenizer_process import TokenizerSpec
from mt_contracts.tokenizers import BpeConfig, RustBpeConfig, SentencePieceConfig, TokenizerConfig, resolve_config
from mt_tokenizer_worker.methods.sentencepiece import trainer_options

REPEATS = 5
VOCAB_SIZE = 8000
METHODS: dict[str, dict[str, str]] = {
    "bpe": {"method": "bpe"},
    "sentencepiece unigram": {"method": "sentencepiece", "model_type": "unigram"},
    "sentencepiece bpe": {"method": "sentencepiece", "model_type": "bpe"},
}
# The library alone, given the job's resolved options as JSON (``library_options``). Each reads the file itself,
# its fastest input (for HF ``tokenizers``, faster than iterating the file's lines in Python: 7.2 s against 7.7 s).
_LIBRARY = """
import json, sys
path, out, method, options = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
if method == "bpe":
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False, **options)
    tokenizer.train([path], trainer=trainer)
    tokenizer.save(out + "/tokenizer.json")
else:
    import sentencepiece as spm
    spm.set_random_generator_seed(options.pop("seed"))
    spm.SentencePieceTrainer.train(input=path, model_prefix=out + "/sp", **options)
"""


def library_options(config: TokenizerConfig) -> dict[str, str | int | float | bool | list[str] | None]:
    """The options our method passes to the library for ``config`` (methods/bpe.py, methods/sentencepiece.py),
    so that the reference trains the same tokenizer."""
    match config:
        case BpeConfig():
            return {
                "vocab_size": config.vocab_size,
                "min_frequency": config.min_frequency,
                "special_tokens": config.special_tokens,
                "max_token_length": None if config.max_token_length is None else config.max_token_length + 1,
            }
        case SentencePieceConfig():
            # The library samples input_sentence_size lines itself (our pipeline does it, seeded).
            sampling = {"input_sentence_size": config.input_sentence_size, "shuffle_input_sentence": True}
            return {**trainer_options(config), **sampling, "seed": config.seed}
        case RustBpeConfig():
            return {"vocab_size": config.vocab_size - len(config.special_tokens), "pattern": config.pattern}


def measure(command: list[str], stdin: bytes | None = None) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of one process, from GNU time."""
    timed = ["/usr/bin/time", "-f", "%e %M", *command]
    result = subprocess.run(timed, input=stdin, capture_output=True, check=True)
    seconds, kilobytes = result.stderr.decode().strip().splitlines()[-1].split()
    return float(seconds), int(kilobytes) / 1024


def phases(log: Path) -> tuple[float, float, float]:
    """Seconds from the job's ``reading`` to ``training``, ``training`` to ``statistics`` and ``statistics``
    to ``writing`` events in its ``logs.jsonl``."""
    stamps = {}
    for line in log.read_bytes().splitlines():
        event = json.loads(line)
        stamps[event["event"]] = datetime.fromisoformat(event["ts"]).timestamp()
    reading, training, statistics, writing = (stamps[name] for name in ("reading", "training", "statistics", "writing"))
    return training - reading, statistics - training, writing - statistics


def write_corpus(path: Path, megabytes: int) -> None:
    lines = SHAKESPEARE.read_text(encoding="utf-8").splitlines(keepends=True)
    rng = random.Random(0)
    written = 0
    with path.open("w", encoding="utf-8") as out:
        while written < megabytes * 2**20:
            rng.shuffle(lines)
            chunk = "".join(lines)
            out.write(chunk)
            written += len(chunk.encode())


def main() -> str:
    megabytes = int(os.environ.get("BENCH_TOKENIZER_MB", "50"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        corpus_root = work / "corpus"
        corpus_root.mkdir()
        write_corpus(corpus_root / "corpus.txt", megabytes)
        for label, options in METHODS.items():
            ours_runs, library_runs, phase_runs = [], [], []
            for repeat in range(REPEATS):
                out = work / f"{label.replace(' ', '-')}-{repeat}"
                out.mkdir()
                request = codec.decode(
                    codec.encode({"corpus_path": "corpus.txt", "vocab_size": VOCAB_SIZE, **options}),
                    TrainTokenizerRequest,
                )
                spec = TokenizerSpec(
                    tokenizer_id="tok_01JDQ8ZQ0000000000000000AA",
                    request=request,
                    corpus_root=str(corpus_root),
                    out_dir=str(out / "ours"),
                    log_path=str(out / "logs.jsonl"),
                )
                command = [sys.executable, "-m", "mt_tokenizer_worker.process"]
                ours_runs.append(measure(command, stdin=codec.encode(spec)))
                phase_runs.append(phases(out / "logs.jsonl"))
                (out / "library").mkdir()
                library = [
                    sys.executable, "-c", _LIBRARY, str(corpus_root / "corpus.txt"), str(out / "library"),
                    options["method"], json.dumps(library_options(resolve_config(request))),
                ]  # fmt: skip
                library_runs.append(measure(library))
            ours_s, ours_mb = median([r[0] for r in ours_runs]), median([r[1] for r in ours_runs])
            lib_s, lib_mb = median([r[0] for r in library_runs]), median([r[1] for r in library_runs])
            before, training, statistics = (median([run[i] for run in phase_runs]) for i in range(3))
            rows.append(
                f"| {label} | {lib_s:.1f} | {ours_s:.1f} | {ours_s / lib_s:.2f} | {before:.2f} / {training:.2f} / "
                f"{statistics:.2f} | {lib_mb:,.0f} | {ours_mb:,.0f} | {ours_mb / lib_mb:.2f} |"
            )
    return "\n".join(
        [
            "## Tokenizer training (issue 3)",
            "",
            f"A {megabytes} MB corpus (shuffled Tiny Shakespeare lines), vocab_size {VOCAB_SIZE}; median of "
            f"{REPEATS} alternating runs. Ours includes reading, held-out statistics, artifacts and manifest.",
            "Goals: time ratio <= 1.10; peak RSS <= 1.5x the library alone.",
            "Our phases, from the job's logs.jsonl: before training (resolving the corpus; for SentencePiece, "
            "counting line ends to decide whether to sample), training (reading the corpus, overlapped with the "
            "library's own loading, and the library's training), held-out statistics. The rest of ours is "
            "process start (imports) and writing the artifacts.",
            "",
            "| method | library s | ours s | time ratio | ours: before / training / statistics s | library peak MB "
            "| ours peak MB | memory ratio |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
            *rows,
        ]
    )
