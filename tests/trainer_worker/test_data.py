from __future__ import annotations

import itertools
from pathlib import Path
from typing import Literal

import pytest
import torch
from tokenizers import Tokenizer

from mt_contracts.requests import TrainTokenizerRequest
from mt_contracts.tokenizers import resolve_config
from mt_tokenizer_worker.methods import METHODS
from mt_trainer_worker.training import TrainingFailure
from mt_trainer_worker.training.data import open_tokens, prepare_data


def _train_tokenizer(out: Path, text: str, method: Literal["bpe", "sentencepiece"], vocab_size: int) -> Path:
    config = resolve_config(TrainTokenizerRequest(corpus_path="x", method=method, vocab_size=vocab_size))
    METHODS[method].train(iter([text.splitlines(keepends=True)]), config, out)
    return out / "tokenizer.json"


@pytest.fixture
def tokenizer_file(tmp_path: Path, shakespeare: str) -> Path:
    return _train_tokenizer(tmp_path / "tokenizer", shakespeare[:30_000], "bpe", 300)


@pytest.mark.parametrize("method", ["bpe", "sentencepiece"])
def test_every_tokenizer_method_feeds_training_data(
    tmp_path: Path, shakespeare: str, method: Literal["bpe", "sentencepiece"]
) -> None:
    text = shakespeare[:20_000]
    corpus = tmp_path / "small.txt"
    corpus.write_text(text, encoding="utf-8")
    tokenizer_file = _train_tokenizer(tmp_path / "tok", text, method, 400)
    data = prepare_data(tokenizer_file, [corpus], 0.1, 7, tmp_path / "cache")

    assert (data.end_of_text_id, data.vocab_size) == (0, 400)
    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    lines = text.splitlines(keepends=True)
    held_out = "".join(lines[len(lines) - int(len(lines) * 0.1) :])
    train = open_tokens(data.train_path, data.dtype)
    assert tokenizer.decode([int(t) for t in train]) == text[: len(text) - len(held_out)]


def test_a_single_file_holds_out_its_tail_and_every_validation_byte_is_counted(
    tmp_path: Path, tokenizer_file: Path, shakespeare: str
) -> None:
    corpus = tmp_path / "a.txt"
    text = shakespeare[:20_000]
    corpus.write_text(text)
    data = prepare_data(tokenizer_file, [corpus], 0.1, 7, tmp_path / "cache")

    lines = text.splitlines(keepends=True)
    held_out = "".join(lines[len(lines) - int(len(lines) * 0.1) :])
    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    eot = tokenizer.token_to_id("<|endoftext|>")
    assert data.val_bytes == len(held_out.encode())
    val = open_tokens(data.val_path, data.dtype)
    assert (data.dtype, val.dtype) == ("uint16", torch.uint16)
    assert int(val[0]) == eot
    assert tokenizer.decode([int(t) for t in val[1:]]) == held_out
    train = open_tokens(data.train_path, data.dtype)
    assert tokenizer.decode([int(t) for t in train]) == text[: len(text) - len(held_out)]
    assert (data.train_tokens, data.val_tokens) == (len(train), len(val))


def test_prepared_data_is_cached_by_corpus_and_tokenizer(
    tmp_path: Path, tokenizer_file: Path, shakespeare: str
) -> None:
    corpus = tmp_path / "a.txt"
    corpus.write_text(shakespeare[:5_000])
    first = prepare_data(tokenizer_file, [corpus], 0.1, 7, tmp_path / "cache")
    again = prepare_data(tokenizer_file, [corpus], 0.1, 7, tmp_path / "cache")
    assert (first.reused, again.reused) == (False, True)
    assert again.train_path == first.train_path and again.key == first.key
    corpus.write_text(shakespeare[:5_001])
    changed = prepare_data(tokenizer_file, [corpus], 0.1, 7, tmp_path / "cache")
    assert changed.key != first.key and not changed.reused
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted([first.key[:32], changed.key[:32]])


def test_several_files_are_split_by_document_deterministically(tmp_path: Path, tokenizer_file: Path) -> None:
    files = []
    for index in range(10):
        path = tmp_path / f"doc{index}.txt"
        path.write_text(f"document number {index} says hello\n" * 20)
        files.append(path)
    first = prepare_data(tokenizer_file, files, 0.2, 3, tmp_path / "cache-a")
    second = prepare_data(tokenizer_file, files, 0.2, 3, tmp_path / "cache-b")
    assert (first.train_documents, first.val_documents) == (8, 2)
    assert Path(first.val_path).read_bytes() == Path(second.val_path).read_bytes()
    other_seed = prepare_data(tokenizer_file, files, 0.2, 4, tmp_path / "cache-c")
    assert Path(other_seed.val_path).read_bytes() != Path(first.val_path).read_bytes()


def test_too_few_lines_for_a_validation_split_is_an_empty_corpus_error(tmp_path: Path, tokenizer_file: Path) -> None:
    corpus = tmp_path / "a.txt"
    corpus.write_text("one line\ntwo lines\n")
    with pytest.raises(TrainingFailure) as info:
        prepare_data(tokenizer_file, [corpus], 0.1, 7, tmp_path / "cache")
    assert info.value.code == "empty_corpus"


def test_prepared_data_records_the_training_documents_median_length_and_the_ids_they_use(
    tmp_path: Path, tokenizer_file: Path, shakespeare: str
) -> None:
    corpus = tmp_path / "parts"
    corpus.mkdir()
    sizes = [300, 900, 150, 2_000, 600, 1_200]
    for index, size in enumerate(sizes):
        (corpus / f"{index}.txt").write_text(shakespeare[index * 2_000 : index * 2_000 + size])
    data = prepare_data(tokenizer_file, sorted(corpus.iterdir()), 0.2, 7, tmp_path / "cache")

    train = [int(t) for t in open_tokens(data.train_path, data.dtype)]
    eot = Tokenizer.from_file(str(tokenizer_file)).token_to_id("<|endoftext|>")
    starts = [index for index, token in enumerate(train) if token == eot] + [len(train)]
    lengths = sorted(end - start - 1 for start, end in itertools.pairwise(starts))
    assert len(lengths) == data.train_documents == 5
    assert data.median_train_document_tokens == lengths[2]
    assert data.distinct_train_tokens == len(set(train) - {eot})
