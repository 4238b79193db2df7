"""Tokenizer jobs against the library alone, fed the same text the same way, with the outputs compared.

Ours is the real training process of a tokenizer job (``python -m mt_tokenizer_worker.process``: reading and
decoding the corpus, holding lines out, training, held-out statistics, artifacts, manifest). Before timing, the
benchmark computes what our method hands its library (the corpus reader and the held-out split of the job, so
the same lines are held out) and writes it to a file; the reference is a fresh process that reads that file and
calls the library as our method does:

- ``bpe``: HF ``tokenizers`` ``train_from_iterator`` over the same 4 KiB pieces of lines (``bpe.pieces``) with
  the same ``BpeTrainer`` options; it saves ``tokenizer.json``.
- ``rustbpe``: ``rustbpe.Tokenizer.train_from_iterator`` over the same pieces, pattern and vocabulary; it saves
  the token ranks (tiktoken's file format). Ours also builds and writes the HF ``tokenizer.json``.
- SentencePiece: ``SentencePieceTrainer.train`` on a file of the same training lines with our options (ours
  streams them to it through a FIFO).

Each pair of outputs is compared (HF vocabulary and merges; rustbpe ranks against our ``tokenizer.json``
vocabulary; SentencePiece pieces and scores): a ratio is only meaningful when they are equal, and the table says
whether they are. Wall time and peak RSS come from GNU time around each process; ``BENCH_REPEATS`` (default 5)
alternating runs, ours first on even runs and the library first on odd ones; medians with min-max. The corpus is
Tiny Shakespeare's lines in a seeded random order, repeated to ``BENCH_TOKENIZER_MB`` MiB (default 50).
A second table times a tiny job (20 kB, vocab 512) against a fresh process training the same tokenizer alone.
"""

from __future__ import annotations

import base64
import json
import os
import random
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

import msgspec

from benchmarks._common import SHAKESPEARE, load, median, spread
from mt_contracts import codec
from mt_contracts.events import LogEvent
from mt_contracts.requests import TrainTokenizerRequest
from mt_contracts.tokenizer_process import TokenizerSpec, TokenizerTrained, decode_tokenizer_message
from mt_contracts.tokenizers import BpeConfig, RustBpeConfig, SentencePieceConfig, TokenizerConfig, resolve_config
from mt_storage.corpus import CorpusReader, resolve_corpus_files
from mt_tokenizer_worker.methods import METHODS
from mt_tokenizer_worker.methods.bpe import pieces
from mt_tokenizer_worker.methods.rustbpe import byte_symbols
from mt_tokenizer_worker.methods.sentencepiece import trainer_options
from mt_tokenizer_worker.statistics import HoldoutSplit

VOCAB_SIZE = 8192
METHODS_BENCHED: dict[str, dict[str, str]] = {
    "bpe (HF tokenizers)": {"method": "bpe"},
    "rustbpe": {"method": "rustbpe"},
    "sentencepiece unigram": {"method": "sentencepiece", "model_type": "unigram"},
    "sentencepiece bpe": {"method": "sentencepiece", "model_type": "bpe"},
}
# Pieces are written to the feed file separated by NUL (Tiny Shakespeare holds none).
_SEPARATOR = "\0"
# The library alone: argv = feed file, output folder, method, its options as JSON.
_LIBRARY = """
import json, sys
feed, out, method, options = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
if method == "bpe":
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    with open(feed, encoding="utf-8") as file:
        texts = file.read().split("\\0")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False, **options)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    tokenizer.save(out + "/tokenizer.json")
elif method == "rustbpe":
    import base64, rustbpe
    with open(feed, encoding="utf-8") as file:
        texts = file.read().split("\\0")
    tokenizer = rustbpe.Tokenizer()
    tokenizer.train_from_iterator(texts, options["vocab_size"], pattern=options["pattern"])
    with open(out + "/ranks.tiktoken", "w") as file:
        file.writelines(f"{base64.b64encode(t).decode()} {r}\\n" for t, r in tokenizer.get_mergeable_ranks())
else:
    import sentencepiece as spm
    spm.set_random_generator_seed(options.pop("seed"))
    spm.SentencePieceTrainer.train(input=feed, model_prefix=out + "/sp", **options)
"""


def library_options(config: TokenizerConfig) -> dict[str, str | int | float | bool | list[str] | None]:
    """The options our method passes to the library for ``config`` (methods/bpe.py, methods/rustbpe.py,
    methods/sentencepiece.py), so that the reference trains the same tokenizer."""
    match config:
        case BpeConfig():
            return {
                "vocab_size": config.vocab_size,
                "min_frequency": config.min_frequency,
                "special_tokens": config.special_tokens,
                "max_token_length": None if config.max_token_length is None else config.max_token_length + 1,
            }
        case RustBpeConfig():
            return {"vocab_size": config.vocab_size - len(config.special_tokens), "pattern": config.pattern}
        case SentencePieceConfig():
            return {**trainer_options(config), "seed": config.seed}


def write_feed(corpus_root: Path, request: TrainTokenizerRequest, feed: Path) -> None:
    """What our method hands its library for ``request``, computed as the job does (its reader, its held-out
    split): NUL-separated pieces for the BPE methods, the training lines for SentencePiece."""
    config = resolve_config(request)
    method = METHODS[request.method]
    files, _ = resolve_corpus_files(corpus_root, request.corpus_path)
    reader = CorpusReader(files, root=corpus_root.resolve(), max_line_bytes=method.max_line_bytes(config))
    split = HoldoutSplit(
        reader.batches(), config.holdout_fraction, config.seed, corpus_bytes=sum(p.stat().st_size for p in files)
    )
    with feed.open("w", encoding="utf-8") as out:
        if isinstance(config, SentencePieceConfig):
            for batch in split.training():
                out.write("".join(batch))
        else:
            out.write(_SEPARATOR.join(pieces(split.training(), config.special_tokens)))


class Run(msgspec.Struct, frozen=True):
    seconds: float
    peak_mb: float


def measure(command: list[str], stdin: bytes | None = None) -> tuple[Run, bytes]:
    """Wall seconds and peak RSS (MB) of one process, from GNU time, and its stdout."""
    timed = ["/usr/bin/time", "-f", "%e %M", *command]
    result = subprocess.run(timed, input=stdin, capture_output=True, check=True)
    seconds, kilobytes = result.stderr.decode().strip().splitlines()[-1].split()
    return Run(float(seconds), int(kilobytes) / 1024), result.stdout


class Ours(msgspec.Struct, frozen=True):
    run: Run
    phases: tuple[float, float, float]
    training_seconds: float
    bytes_per_token: float


def run_ours(spec: TokenizerSpec) -> Ours:
    """Our job's training process on ``spec``: its time and memory, the phases from its log events (reading
    to training, training to statistics, statistics to writing), its training time and held-out bytes/token."""
    run, stdout = measure([sys.executable, "-m", "mt_tokenizer_worker.process"], stdin=codec.encode(spec))
    stamps: dict[str, float] = {}
    trained = None
    for line in stdout.splitlines():
        message = decode_tokenizer_message(line)
        if isinstance(message, LogEvent):
            stamps[message.event] = datetime.fromisoformat(message.ts).timestamp()
        elif isinstance(message, TokenizerTrained):
            trained = message
    if trained is None:
        raise RuntimeError(f"the tokenizer job failed: {stdout.decode()[-2000:]}")
    reading, training, statistics, writing = (stamps[n] for n in ("reading", "training", "statistics", "writing"))
    heldout = trained.statistics.heldout
    return Ours(
        run=run,
        phases=(training - reading, statistics - training, writing - statistics),
        training_seconds=trained.statistics.training_seconds,
        bytes_per_token=0.0 if heldout is None else heldout.bytes_per_token,
    )


def same_output(method: str, ours: Path, library: Path) -> bool:
    """Whether our artifacts hold the tokenizer the library trained alone."""
    if method == "bpe":
        mine, theirs = (json.loads((folder / "tokenizer.json").read_bytes()) for folder in (ours, library))
        return bool(mine["model"] == theirs["model"] and mine["added_tokens"] == theirs["added_tokens"])
    vocab = json.loads((ours / "tokenizer.json").read_bytes())["model"]["vocab"]
    if method == "rustbpe":
        symbols = byte_symbols()
        ranks = {}
        for line in (library / "ranks.tiktoken").read_text().splitlines():
            token, rank = line.split()
            ranks["".join(symbols[b] for b in base64.b64decode(token))] = int(rank)
        return ranks == {token: rank for token, rank in vocab.items() if rank < len(ranks)}
    import sentencepiece  # the benchmark's own process; ours and the library's load it themselves

    mine_sp = sentencepiece.SentencePieceProcessor(model_proto=(ours / "sentencepiece.model").read_bytes())
    theirs_sp = sentencepiece.SentencePieceProcessor(model_proto=(library / "sp.model").read_bytes())
    size = mine_sp.get_piece_size()
    return size == theirs_sp.get_piece_size() and all(
        (mine_sp.id_to_piece(i), mine_sp.get_score(i)) == (theirs_sp.id_to_piece(i), theirs_sp.get_score(i))
        for i in range(size)
    )


def write_corpus(path: Path, megabytes: float) -> None:
    lines = SHAKESPEARE.read_text(encoding="utf-8").splitlines(keepends=True)
    rng = random.Random(0)
    written = 0
    with path.open("w", encoding="utf-8") as out:
        while written < megabytes * 2**20:
            rng.shuffle(lines)
            chunk = "".join(lines)
            out.write(chunk)
            written += len(chunk.encode())


class Pair(msgspec.Struct, frozen=True):
    ours: list[Ours]
    library: list[Run]
    same: bool


def compare(work: Path, corpus_root: Path, corpus: str, options: dict[str, str], vocab_size: int, runs: int) -> Pair:
    """``runs`` alternating runs of our job and the library alone on ``corpus`` with ``options``."""
    request = codec.decode(
        codec.encode({"corpus_path": corpus, "vocab_size": vocab_size, **options}), TrainTokenizerRequest
    )
    tag = "-".join(options.values()) + f"-{vocab_size}"
    feed = work / f"feed-{tag}.txt"
    write_feed(corpus_root, request, feed)
    library_options_json = json.dumps(library_options(resolve_config(request)))
    ours_runs: list[Ours] = []
    library_runs: list[Run] = []
    same = True
    for repeat in range(runs):
        out = work / f"{tag}-{repeat}"
        (out / "library").mkdir(parents=True)
        spec = TokenizerSpec(
            tokenizer_id="tok_01JDQ8ZQ0000000000000000AA",
            request=request,
            corpus_root=str(corpus_root),
            out_dir=str(out / "ours"),
            log_path=str(out / "logs.jsonl"),
        )
        library = [sys.executable, "-c", _LIBRARY, str(feed), str(out / "library"), options["method"]]
        for side in ("ours", "library") if repeat % 2 == 0 else ("library", "ours"):
            if side == "ours":
                ours_runs.append(run_ours(spec))
            else:
                library_runs.append(measure([*library, library_options_json])[0])
        same = same and same_output(options["method"], out / "ours", out / "library")
    return Pair(ours=ours_runs, library=library_runs, same=same)


def main() -> str:
    megabytes = float(os.environ.get("BENCH_TOKENIZER_MB", "50"))
    runs = int(os.environ.get("BENCH_REPEATS", "5"))
    rows, tiny_rows = [], []
    results: dict[str, Pair] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        corpus_root = work / "corpus"
        corpus_root.mkdir()
        write_corpus(corpus_root / "corpus.txt", megabytes)
        (corpus_root / "tiny.txt").write_text(SHAKESPEARE.read_text(encoding="utf-8")[:20_000], encoding="utf-8")
        for label, options in METHODS_BENCHED.items():
            before = load()
            pair = compare(work, corpus_root, "corpus.txt", options, VOCAB_SIZE, runs)
            results[label] = pair
            ours_s = [o.run.seconds for o in pair.ours]
            lib_s = [r.seconds for r in pair.library]
            ratios = [o / r for o, r in zip(ours_s, lib_s, strict=True)]
            phases = [median([o.phases[i] for o in pair.ours]) for i in range(3)]
            overhead = [o.run.seconds - r.seconds - o.phases[2] for o, r in zip(pair.ours, pair.library, strict=True)]
            rows.append(
                f"| {label} | {spread(lib_s)} | {spread(ours_s)} | {spread(ratios, 2)} | {spread(overhead, 2)} | "
                f"{phases[0]:.2f} / {phases[1]:.2f} / {phases[2]:.2f} | "
                f"{median([r.peak_mb for r in pair.library]):,.0f} | "
                f"{median([o.run.peak_mb for o in pair.ours]):,.0f} | "
                f"{'yes' if pair.same else '**no**'} | {before} → {load()} |"
            )
        before = load()
        tiny = compare(work, corpus_root, "tiny.txt", {"method": "bpe"}, 512, runs)
        tiny_ours = [o.run.seconds for o in tiny.ours]
        tiny_lib = [r.seconds for r in tiny.library]
        tiny_rows.append(
            f"| bpe, 20 kB, vocab 512 | {spread(tiny_lib, 2)} | {spread(tiny_ours, 2)} | "
            f"{spread([o / r for o, r in zip(tiny_ours, tiny_lib, strict=True)], 2)} | "
            f"{median([r.peak_mb for r in tiny.library]):,.0f} | {median([o.run.peak_mb for o in tiny.ours]):,.0f} | "
            f"{'yes' if tiny.same else '**no**'} | {before} → {load()} |"
        )
    hf, rust = results["bpe (HF tokenizers)"], results["rustbpe"]
    hf_train, rust_train = (median([o.training_seconds for o in pair.ours]) for pair in (hf, rust))
    hf_job, rust_job = (median([o.run.seconds for o in pair.ours]) for pair in (hf, rust))
    hf_bpt, rust_bpt = (median([o.bytes_per_token for o in pair.ours]) for pair in (hf, rust))
    return "\n".join(
        [
            "## Tokenizer training (issues 3, 19)",
            "",
            f"A {megabytes:g} MiB corpus (Tiny Shakespeare's lines shuffled with a seeded RNG and repeated), "
            f"vocab_size {VOCAB_SIZE}, {runs} alternating runs: medians with min-max. The library alone is a fresh "
            "process fed exactly what our method feeds it (the same held-out split, the same pieces or lines), "
            "timed from process start to its saved output; 'same output' says whether the two tokenizers are "
            "identical. Ours is the whole job process: reading and decoding the corpus, the held-out split, "
            "training, held-out statistics, artifacts and manifest. 'Overhead' = ours - library - our held-out "
            "statistics phase (goal for SentencePiece: ≤ 0.5 s; time ratio ≤ 1.10 where the library takes "
            "≥ 10 s). Phases come from the job's log events: before training (resolving the corpus, counting "
            "lines) / training (reading overlapped with the library's training) / statistics.",
            "",
            "| method | library s | ours s | time ratio | overhead s | ours: before / training / statistics s "
            "| library peak MB | ours peak MB | same output | load average (1 min) before → after |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
            *rows,
            "",
            f"**rustbpe against the bpe method** (both our jobs, same corpus and split): training "
            f"{rust_train:.1f} s against {hf_train:.1f} s (ratio {rust_train / hf_train:.2f}; goal ≤ 0.50), whole "
            f"job {rust_job:.1f} s against {hf_job:.1f} s ({rust_job / hf_job:.2f}); held-out bytes per token "
            f"{rust_bpt:.3f} against {hf_bpt:.3f} (goal: equal or better). rustbpe pre-tokenises with GPT-4's "
            "pattern (tiktoken's cl100k_base), HF bpe with GPT-2's.",
            "",
            "A tiny job against a fresh process that trains the same tokenizer alone (imports, training, saving): "
            "the job's fixed cost (process start, imports, corpus resolution, statistics, manifest).",
            "",
            "| job | library alone s | ours s | ratio | library peak MB | ours peak MB | same output "
            "| load average before → after |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
            *tiny_rows,
        ]
    )
