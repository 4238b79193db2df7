"""Dry-run estimates: the tokenizer's has measured figures for every method and model type the contract
admits, follows the documented line (base + per-MB slope) on a real corpus and suggests a sample when unigram
would pass the memory limit; a run's warnings hold whether its dataset is sampled or cached."""

from __future__ import annotations

import typing
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest

from mt_api.estimates import MB, TOKENIZER_COSTS, corpus_counts, estimate_run, estimate_tokenizer
from mt_contracts.corpora import RunEstimate
from mt_contracts.requests import TokenizerMethodName, TrainRunRequest, TrainTokenizerRequest
from mt_contracts.settings import EstimateSettings
from mt_contracts.tokenizers import resolve_config
from mt_storage.corpus import resolve_corpus
from mt_storage.datasets import PREPARED_JSON, PreparedCounts
from mt_tokenizer_worker.methods import METHODS
from mt_trainer_worker.training.data import prepare_data

BODIES = [
    *({"method": method} for method in typing.get_args(TokenizerMethodName)),
    {"method": "sentencepiece", "model_type": "unigram"},
    {"method": "sentencepiece", "model_type": "bpe"},
]


@pytest.mark.parametrize("body", BODIES, ids=lambda b: "-".join(str(v) for v in b.values()))
def test_every_method_is_estimated_from_its_own_measured_figures(body: dict[str, str], corpus_root: Path) -> None:
    request = msgspec.convert({"corpus_path": "small.txt", "vocab_size": 300, **body}, TrainTokenizerRequest)
    files = [corpus_root / "small.txt"]
    estimate = estimate_tokenizer(request, files, corpus_root, EstimateSettings())
    row = "-".join([body["method"], body.get("model_type", "unigram")]) if body["method"] == "sentencepiece" else None
    cost = TOKENIZER_COSTS[row or body["method"]]
    size = files[0].stat().st_size
    assert estimate.corpus_bytes == size
    assert estimate.seconds == pytest.approx(
        cost.base_seconds + cost.seconds_per_mb * estimate.training_bytes / MB, rel=1e-3
    )


def test_a_default_sentencepiece_request_is_unigram_and_gets_the_memory_suggestion(corpus_root: Path) -> None:
    files = [corpus_root / "small.txt"]
    cost = TOKENIZER_COSTS["sentencepiece-unigram"]
    # A limit just above the runtime's base: the 60 KB corpus does not fit, a part of it does.
    settings = EstimateSettings(tokenizer_memory_bytes=int(cost.base_bytes + cost.bytes_per_mb * 0.03))
    default = TrainTokenizerRequest(corpus_path="small.txt", method="sentencepiece", vocab_size=300)
    estimate = estimate_tokenizer(default, files, corpus_root, settings)
    explicit = msgspec.structs.replace(default, model_type="unigram")
    assert estimate == estimate_tokenizer(explicit, files, corpus_root, settings)
    assert estimate.method == "sentencepiece-unigram" and estimate.peak_memory_bytes > settings.tokenizer_memory_bytes
    line_bytes = estimate.corpus_bytes / estimate.corpus_lines
    fitting_bytes = (settings.tokenizer_memory_bytes - cost.base_bytes) / cost.bytes_per_mb * MB
    suggestion = int(fitting_bytes / line_bytes)
    assert 1000 < suggestion < estimate.corpus_lines
    assert estimate.suggested_input_sentence_size == suggestion
    assert len(estimate.warnings) == 1 and f"send input_sentence_size={suggestion}" in estimate.warnings[0]
    # Sent back, the suggestion fits.
    fitted = msgspec.structs.replace(default, input_sentence_size=suggestion)
    smaller = estimate_tokenizer(fitted, files, corpus_root, settings)
    assert smaller.peak_memory_bytes <= settings.tokenizer_memory_bytes
    assert (smaller.suggested_input_sentence_size, smaller.warnings) == (None, [])
    # SentencePiece's BPE model needs far less memory: no suggestion.
    bpe = estimate_tokenizer(msgspec.structs.replace(default, model_type="bpe"), files, corpus_root, settings)
    assert (bpe.suggested_input_sentence_size, bpe.warnings) == (None, [])


TOKENIZER_ID = "tok_01KAAAAAAAAAAAAAAAAAAAAAAA"


@pytest.fixture
def tokenizer_file(tmp_path: Path, shakespeare: str) -> Path:
    """A byte-level BPE of 300 tokens trained on the first 30,000 characters of Tiny Shakespeare."""
    out = tmp_path / "tokenizer"
    config = resolve_config(TrainTokenizerRequest(corpus_path="x", method="bpe", vocab_size=300))
    METHODS["bpe"].train(iter([shakespeare[:30_000].splitlines(keepends=True)]), config, out)
    return out / "tokenizer.json"


def _warned(estimate: RunEstimate) -> list[str]:
    """Which warnings an estimate gives, by kind, in order."""
    kinds = {
        "the run reads the training split": "epochs",
        "block_size": "block_size",
        "only": "vocab",
        "no run has succeeded": "throughput",
    }
    return [next(kind for start, kind in kinds.items() if text.startswith(start)) for text in estimate.warnings]


# Each case: the corpus (file name -> text), the request's fields, the warnings expected besides "no measured
# throughput" (no run has succeeded: `recent` is empty).
CASES: dict[str, tuple[Callable[[str], dict[str, str]], dict[str, int], list[str]]] = {
    "none": (lambda text: {"corpus.txt": text[:20_000]}, {"max_steps": 1}, []),
    # 2,000 steps of 4 x 32 tokens read a training split of about 8,000 tokens some 30 times.
    "epochs": (lambda text: {"corpus.txt": text[:20_000]}, {"max_steps": 2000}, ["epochs"]),
    # Eight documents (files) of about 40 tokens each, windows of 128.
    "block_size": (
        lambda text: {f"part{i}.txt": text[i * 1000 : i * 1000 + 120] + "\n" for i in range(8)},
        {"max_steps": 1, "block_size": 128},
        ["block_size"],
    ),
    # One repeated line uses a handful of the 300 tokens.
    "vocab": (lambda text: {"corpus.txt": "to be or not to be\n" * 400}, {"max_steps": 1}, ["vocab"]),
}


@pytest.mark.parametrize("cached", [False, True], ids=["sampled", "cached"])
@pytest.mark.parametrize("case", CASES)
def test_each_run_warning_holds_whether_the_dataset_is_sampled_or_cached(
    case: str, cached: bool, tmp_path: Path, shakespeare: str, tokenizer_file: Path
) -> None:
    corpus, fields, expected = CASES[case]
    root = tmp_path / "corpus"
    (root / case).mkdir(parents=True)
    for name, text in corpus(shakespeare).items():
        (root / case / name).write_text(text, encoding="utf-8")
    body = {"tokenizer_id": TOKENIZER_ID, "corpus_path": case, "n_layer": 1, "n_embd": 32, "n_head": 2}
    request = msgspec.convert({**body, "block_size": 32, "batch_size": 4, **fields}, TrainRunRequest)
    files = resolve_corpus(root, case)
    cache = tmp_path / "datasets"
    if cached:
        prepare_data(tokenizer_file, files, request.val_fraction, request.seed, cache)

    def estimate() -> RunEstimate:
        return estimate_run(
            request,
            files=files,
            corpus_root=root,
            tokenizer_file=tokenizer_file,
            dataset_cache=cache,
            recent=[],
            settings=EstimateSettings(),
        )

    result = estimate()
    assert result.tokens_exact is cached
    assert _warned(result) == [*expected, "throughput"]
    if cached:
        # A dataset prepared before the warnings' figures were recorded: they come from the sample instead.
        (prepared,) = cache.glob(f"*/{PREPARED_JSON}")
        counts = msgspec.json.decode(prepared.read_bytes(), type=PreparedCounts)
        older = msgspec.structs.replace(counts, median_train_document_tokens=None, distinct_train_tokens=None)
        prepared.write_bytes(msgspec.json.encode(older))
        again = estimate()
        assert again.tokens_exact and again.train_tokens == result.train_tokens
        assert _warned(again) == [*expected, "throughput"]


def test_corpus_counts_follow_a_file_that_changes(tmp_path: Path) -> None:
    corpus = tmp_path / "growing.txt"
    corpus.write_text("one\ntwo\n")
    size, lines = corpus_counts(tmp_path, "growing.txt", [corpus])
    assert size == 8
    with corpus.open("a") as handle:
        handle.write("three\n")
    assert corpus_counts(tmp_path, "growing.txt", [corpus]) == (size + 6, lines + 1)
