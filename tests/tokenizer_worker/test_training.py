from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from mt_contracts import codec
from mt_contracts.jobs import TokenizerJob
from mt_contracts.manifests import TokenizerManifest
from mt_contracts.requests import TrainTokenizerRequest
from mt_storage.corpus import CorpusDecodeError
from mt_storage.joblog import JobLog
from mt_storage.layout import Layout
from mt_tokenizer_worker import TokenizerTrainingError
from mt_tokenizer_worker.training import train_tokenizer

NOW = datetime(2026, 11, 29, tzinfo=UTC)


def _train(tmp_path: Path, corpus_path: str, vocab_size: int = 300) -> None:
    layout = Layout(artifacts_root=tmp_path / "art", runs_root=tmp_path / "runs", corpus_root=tmp_path / "corpus")
    request = TrainTokenizerRequest(corpus_path=corpus_path, vocab_size=vocab_size)
    job = TokenizerJob(
        id="tok_01JDQ8ZQ0000000000000000AA", status="running", request=request, created_at=NOW, updated_at=NOW
    )
    train_tokenizer(layout, job, JobLog(tmp_path / "logs.jsonl", job.id))


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    root.mkdir()
    return root


@pytest.mark.parametrize("content", [b"", b"  \n\n\t\n"])
def test_a_corpus_without_text_fails_as_empty_corpus(tmp_path: Path, corpus: Path, content: bytes) -> None:
    (corpus / "blank.txt").write_bytes(content)
    with pytest.raises(TokenizerTrainingError) as info:
        _train(tmp_path, "blank.txt")
    assert info.value.code == "empty_corpus"
    assert not (tmp_path / "art" / "tokenizers" / "tok_01JDQ8ZQ0000000000000000AA" / "manifest.json").exists()


def test_invalid_utf8_fails_naming_file_and_offset(tmp_path: Path, corpus: Path) -> None:
    (corpus / "bad.txt").write_bytes(b"hello world\nbad \xff byte\n")
    with pytest.raises(CorpusDecodeError, match=r"bad.txt is not valid UTF-8 at byte offset 16"):
        _train(tmp_path, "bad.txt")


def test_manifest_records_the_corpus_and_the_files(tmp_path: Path, corpus: Path, shakespeare: str) -> None:
    (corpus / "a.txt").write_text(shakespeare[:20_000])
    _train(tmp_path, "a.txt", vocab_size=400)
    out = tmp_path / "art" / "tokenizers" / "tok_01JDQ8ZQ0000000000000000AA"
    manifest = codec.decode((out / "manifest.json").read_bytes(), TokenizerManifest)
    text_bytes = len(shakespeare[:20_000].encode())
    assert (manifest.vocab_size, manifest.corpus_files, manifest.corpus_bytes) == (400, ["a.txt"], text_bytes)
