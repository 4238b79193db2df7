"""The whole tokenizer pipeline (corpus reading, holdout, training, statistics, manifest) as the training
process runs it, on small corpora."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Literal

import msgspec
import pytest
from tokenizers import Tokenizer

from mt_contracts import codec
from mt_contracts.events import Failed, LogEvent
from mt_contracts.manifests import TokenizerManifest
from mt_contracts.requests import TrainTokenizerRequest
from mt_contracts.tokenizer_process import TokenizerSpec, TokenizerTrained, decode_tokenizer_message
from mt_storage.files import sha256_file
from mt_storage.joblog import JobLog
from mt_storage.process import run_child
from mt_tokenizer_worker.process import run

TOKENIZER_ID = "tok_01JDQ8ZQ0000000000000000AA"
# A file that starts with a BOM, mixes CRLF and LF and has no final newline; emoji, CJK, combining accents,
# tabs, long digit runs and NUL.
TRICKY = (
    "\ufeffÜnïcödé — naïve café 東京 🙂\r\n\ttabs\tand  double  spaces\r\n"
    "digits 123456789012345678901234567890\ncombining e\u0301 a\u0308 and NUL \x00 end\n"
)


def _spec(tmp_path: Path, request: TrainTokenizerRequest, tokenizer_id: str = TOKENIZER_ID) -> TokenizerSpec:
    return TokenizerSpec(
        tokenizer_id=tokenizer_id,
        request=request,
        corpus_root=str(tmp_path / "corpus"),
        out_dir=str(tmp_path / "art" / tokenizer_id),
        log_path=str(tmp_path / "art" / tokenizer_id / "logs.jsonl"),
    )


def _run(tmp_path: Path, request: TrainTokenizerRequest, tokenizer_id: str = TOKENIZER_ID) -> TokenizerTrained:
    spec = _spec(tmp_path, request, tokenizer_id)
    outcome = run(spec, JobLog(Path(spec.log_path), tokenizer_id))
    assert isinstance(outcome, TokenizerTrained), outcome
    # The worker commits the manifest the process hands over (after checking its lease).
    assert not (Path(spec.out_dir) / "manifest.json").exists()
    (Path(spec.out_dir) / "manifest.json").write_bytes(bytes(outcome.manifest))
    return outcome


def _fails(tmp_path: Path, request: TrainTokenizerRequest) -> Failed:
    spec = _spec(tmp_path, request)
    outcome = run(spec, JobLog(Path(spec.log_path), TOKENIZER_ID))
    assert isinstance(outcome, Failed), outcome
    assert not (Path(spec.out_dir) / "manifest.json").exists()
    return outcome


@pytest.fixture
def corpus(tmp_path: Path, shakespeare: str) -> Path:
    root = tmp_path / "corpus"
    (root / "books").mkdir(parents=True)
    (root / "books" / "a.txt").write_text(shakespeare[:20_000], encoding="utf-8")
    (root / "books" / "b.txt").write_bytes(TRICKY.encode())
    records = [{"text": line, "source": "s"} for line in shakespeare[20_000:30_000].split("\n\n")]
    (root / "books" / "c.jsonl").write_bytes(b"\n".join(msgspec.json.encode(r) for r in records) + b"\n")
    (root / "books" / "empty.txt").write_bytes(b" \n\t\n")
    # Links out of the corpus root: skipped, and counted as skipped.
    (tmp_path / "outside" / "folder").mkdir(parents=True)
    (tmp_path / "outside" / "secret.txt").write_text("not for training\n", encoding="utf-8")
    (tmp_path / "outside" / "folder" / "x.txt").write_text("not for training either\n", encoding="utf-8")
    os.symlink(tmp_path / "outside" / "secret.txt", root / "books" / "link.txt")
    os.symlink(tmp_path / "outside" / "folder", root / "books" / "linked")
    return root


@pytest.mark.parametrize("method", ["bpe", "sentencepiece", "rustbpe"])
def test_training_is_deterministic_and_the_manifest_describes_it(
    tmp_path: Path, corpus: Path, method: Literal["bpe", "sentencepiece", "rustbpe"]
) -> None:
    request = TrainTokenizerRequest(corpus_path="books", method=method, vocab_size=500, holdout_fraction=0.1)
    first = _run(tmp_path, request)
    second = _run(tmp_path, request, "tok_01JDQ8ZQ0000000000000000AB")
    out = tmp_path / "art" / TOKENIZER_ID
    again = tmp_path / "art" / "tok_01JDQ8ZQ0000000000000000AB"
    assert (out / "tokenizer.json").read_bytes() == (again / "tokenizer.json").read_bytes()

    manifest = codec.decode((out / "manifest.json").read_bytes(), TokenizerManifest)
    other = codec.decode((again / "manifest.json").read_bytes(), TokenizerManifest)
    timeless = msgspec.structs.replace(first.statistics, training_seconds=0.0, megabytes_per_second=0.0)
    assert timeless == msgspec.structs.replace(second.statistics, training_seconds=0.0, megabytes_per_second=0.0)
    assert msgspec.structs.replace(manifest, statistics=timeless, created_at=other.created_at) == (
        msgspec.structs.replace(other, tokenizer_id=TOKENIZER_ID, statistics=timeless)
    )
    assert all(sha256_file(out / f.path) == f.sha256 for f in manifest.files)
    assert [f.path for f in manifest.corpus.files] == ["books/a.txt", "books/b.txt", "books/c.jsonl", "books/empty.txt"]
    assert manifest.config.seed == manifest.seed == 1337
    stats = manifest.statistics
    assert stats.vocab_size == manifest.vocab_size == 500
    assert stats.corpus.skipped_files == ["books/empty.txt", "books/link.txt", "books/linked"]
    assert stats.corpus.files == 3
    assert stats.corpus.bytes == sum((corpus / "books" / n).stat().st_size for n in ("a.txt", "b.txt", "c.jsonl"))
    heldout = stats.heldout
    assert heldout is not None
    assert heldout.lines + stats.training_lines == stats.corpus.lines
    assert 0.05 < heldout.lines / stats.corpus.lines < 0.15
    assert heldout.roundtrip_exact_rate == 1.0
    assert heldout.bytes_per_token > 1.5 and heldout.unk_rate == 0.0 and len(heldout.top_tokens) == 20
    assert sum(b.count for b in stats.token_length_histogram) == 500 - 2 - (method == "sentencepiece")

    events = [msgspec.json.decode(line)["event"] for line in (out / "logs.jsonl").read_bytes().splitlines()]
    assert events == ["reading", "training", "statistics", "writing"]


@pytest.mark.parametrize("method", ["bpe", "sentencepiece", "rustbpe"])
def test_tricky_text_round_trips(
    tmp_path: Path, corpus: Path, method: Literal["bpe", "sentencepiece", "rustbpe"]
) -> None:
    _run(tmp_path, TrainTokenizerRequest(corpus_path="books", method=method, vocab_size=500))
    tokenizer = Tokenizer.from_file(str(tmp_path / "art" / TOKENIZER_ID / "tokenizer.json"))
    for line in [*TRICKY.lstrip("\ufeff").replace("\r\n", "\n").splitlines(keepends=True), TRICKY[1:]]:
        assert tokenizer.decode(tokenizer.encode(line).ids) == line


def test_long_lines_are_split_for_sentencepiece_and_counted(tmp_path: Path, shakespeare: str) -> None:
    (tmp_path / "corpus").mkdir()
    one_line = shakespeare[:30_000].replace("\n", " ") + "\n"
    (tmp_path / "corpus" / "long.txt").write_text(one_line + shakespeare[30_000:40_000])
    request = TrainTokenizerRequest(
        corpus_path="long.txt", method="sentencepiece", vocab_size=400, max_sentence_length=2000
    )
    stats = _run(tmp_path, request).statistics
    assert stats.corpus.split_lines == 1
    assert stats.sampled_lines == stats.training_lines


def test_a_corpus_of_one_long_line_trains_sentencepiece_on_its_pieces(tmp_path: Path, shakespeare: str) -> None:
    # Had the pieces reached SentencePiece as one sentence, it would skip it as too long and find no text.
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "long.txt").write_text(shakespeare[:30_000].replace("\n", " "))
    request = TrainTokenizerRequest(
        corpus_path="long.txt", method="sentencepiece", vocab_size=400, max_sentence_length=2000, holdout_fraction=0
    )
    stats = _run(tmp_path, request).statistics
    assert stats.corpus.split_lines == 1
    assert stats.corpus.lines == stats.sampled_lines >= 15
    tokenizer = Tokenizer.from_file(str(tmp_path / "art" / TOKENIZER_ID / "tokenizer.json"))
    assert tokenizer.token_to_id("\u2581the") is not None


def test_sentencepiece_samples_input_sentence_size_lines_the_same_way_every_time(
    tmp_path: Path, shakespeare: str
) -> None:
    # SentencePiece's own sampling differs from run to run whatever its seed; the pipeline samples instead.
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "s.txt").write_text(shakespeare, encoding="utf-8")  # 40,000 lines
    request = TrainTokenizerRequest(
        corpus_path="s.txt", method="sentencepiece", vocab_size=1000, input_sentence_size=5000
    )
    first = _run(tmp_path, request)
    second = _run(tmp_path, request, "tok_01JDQ8ZQ0000000000000000AB")
    assert first.statistics.sampled_lines == second.statistics.sampled_lines == 5000
    assert first.statistics.training_lines > 35_000
    for name in ("tokenizer.json", "sentencepiece.model"):
        one = (tmp_path / "art" / TOKENIZER_ID / name).read_bytes()
        assert one == (tmp_path / "art" / "tok_01JDQ8ZQ0000000000000000AB" / name).read_bytes()
    other_seed = msgspec.structs.replace(request, seed=7)
    _run(tmp_path, other_seed, "tok_01JDQ8ZQ0000000000000000AC")
    third = (tmp_path / "art" / "tok_01JDQ8ZQ0000000000000000AC" / "tokenizer.json").read_bytes()
    assert third != (tmp_path / "art" / TOKENIZER_ID / "tokenizer.json").read_bytes()


def test_lines_split_for_max_sentence_length_count_toward_the_sample(tmp_path: Path) -> None:
    # 100 lines of about 20 KB hold 500 sentences of at most 4,192 bytes: more than input_sentence_size.
    words = [f"w{i}" for i in range(50)]
    text = "".join(" ".join(words[(i * j) % 50] for j in range(5_000)) + "\n" for i in range(100))
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "long.txt").write_text(text, encoding="utf-8")
    request = TrainTokenizerRequest(
        corpus_path="long.txt", method="sentencepiece", vocab_size=280, holdout_fraction=0, input_sentence_size=200
    )
    stats = _run(tmp_path, request).statistics
    assert stats.corpus.split_lines == 100 and stats.training_lines > 400
    assert stats.sampled_lines == 200


def test_a_corpus_error_while_sentencepiece_trains_ends_the_process_cleanly(tmp_path: Path, shakespeare: str) -> None:
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a.txt").write_bytes(shakespeare.encode() + b"\xff bad\n")
    spec = _spec(tmp_path, TrainTokenizerRequest(corpus_path="a.txt", method="sentencepiece", vocab_size=500))
    process = subprocess.run(
        [sys.executable, "-m", "mt_tokenizer_worker.process"],
        input=codec.encode(spec),
        capture_output=True,
        check=False,
    )
    # SentencePiece is still training on what it read when the process ends: no abort (SIGABRT) under it.
    assert process.returncode == 0, process.stderr[-500:]
    outcome = decode_tokenizer_message(process.stdout.splitlines()[-1])
    assert isinstance(outcome, Failed)
    assert outcome.code == "invalid_utf8" and f"offset {len(shakespeare.encode())}" in outcome.message


def test_invalid_utf8_fails_naming_file_and_offset_unless_replaced(tmp_path: Path, shakespeare: str) -> None:
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "bad.txt").write_bytes(b"hello world\nbad \xff byte\n" + shakespeare[:20_000].encode())
    failed = _fails(tmp_path, TrainTokenizerRequest(corpus_path="bad.txt", vocab_size=300))
    assert failed.code == "invalid_utf8"
    assert failed.message.startswith("bad.txt is not valid UTF-8 at byte offset 16")
    replaced = TrainTokenizerRequest(corpus_path="bad.txt", vocab_size=300, encoding_errors="replace")
    assert _run(tmp_path, replaced).statistics.corpus.replaced_bytes == 1


@pytest.mark.parametrize(
    ("files", "request_options", "code", "message"),
    [
        ({"blank.txt": b""}, {}, "empty_corpus", "holds no non-whitespace text"),
        ({"blank.txt": b"  \n\n\t\n"}, {}, "empty_corpus", "holds no non-whitespace text"),
        ({"blank.jsonl": b'{"text": "   "}\n'}, {}, "empty_corpus", "holds no non-whitespace text"),
        ({"one.txt": b"only line\n"}, {"holdout_fraction": 0.5, "seed": 1}, "empty_corpus", "was held out"),
        ({"x.jsonl": b'{"body": "x"}\n'}, {}, "invalid_jsonl", "x.jsonl line 1"),
        ({"x.txt": b"a short line\n"}, {"min_frequency": 1000}, "no_merges_learned", "min_frequency=1000"),
        # SentencePiece refuses the options before reading a line: its reason, not "no text".
        (
            {"x.txt": b"a short line\n"},
            {"method": "sentencepiece", "special_tokens": ["<unk>"]},
            "training_failed",
            "<unk> must not be defined",
        ),
    ],
)
def test_user_errors_end_with_a_stable_code(
    tmp_path: Path, files: dict[str, bytes], request_options: dict[str, object], code: str, message: str
) -> None:
    (tmp_path / "corpus").mkdir()
    for name, data in files.items():
        (tmp_path / "corpus" / name).write_bytes(data)
    body = {"corpus_path": next(iter(files)), "vocab_size": 300, **request_options}
    failed = _fails(tmp_path, msgspec.convert(body, TrainTokenizerRequest))
    assert failed.code == code
    assert message in failed.message


async def test_the_training_process_hands_its_events_and_outcome_to_the_worker(tmp_path: Path, corpus: Path) -> None:
    spec = _spec(tmp_path, TrainTokenizerRequest(corpus_path="books", vocab_size=500))
    handed: list[bytes] = []

    async def collect(line: bytes) -> None:
        handed.append(line)

    log_path = tmp_path / "process.log"
    code = await run_child(
        "mt_tokenizer_worker.process", codec.encode(spec), niceness=0, log_path=log_path, on_line=collect, grace=5
    )
    assert code == 0, log_path.read_text()
    messages = [decode_tokenizer_message(line) for line in handed]
    events = [m for m in messages[:-1] if isinstance(m, LogEvent)]
    assert [(e.job_id, e.event) for e in events] == [
        (TOKENIZER_ID, n) for n in ("reading", "training", "statistics", "writing")
    ]
    assert isinstance(messages[-1], TokenizerTrained) and messages[-1].vocab_size == 500
    # The process writes neither the job's log (its worker does) nor the manifest (the worker commits it).
    assert not Path(spec.log_path).exists() and not (Path(spec.out_dir) / "manifest.json").exists()


@pytest.mark.parametrize(
    ("method", "unused"),
    [("bpe", "sentencepiece"), ("bpe", "rustbpe"), ("sentencepiece", "redis"), ("rustbpe", "sentencepiece")],
)
def test_the_training_process_loads_only_what_its_method_needs(method: str, unused: str) -> None:
    # Each of redis, asyncio and an unused method's library costs a job's process megabytes of memory.
    code = (
        "import sys, mt_tokenizer_worker.process; from mt_tokenizer_worker.methods import METHODS; "
        f"METHODS[{method!r}]; print(sorted({{m.split('.')[0] for m in sys.modules}} & {{'redis', 'asyncio', "
        f"'torch', 'transformers', {unused!r}}}))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True, text=True).stdout
    assert loaded == "[]\n"
