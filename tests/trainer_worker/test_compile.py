"""``compile``: the training process compiles its model with ``torch.compile`` (kernels cached under the runs
root) and trains to the eager run's losses; without a working compiler it warns and trains eagerly, exactly
as a run that never tried."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from mt_contracts import codec
from mt_contracts.events import LogEvent
from mt_contracts.requests import CompileChoice, TrainRunRequest
from mt_contracts.training import Finished, RunSpec, TrainingMessage, decode_message
from mt_trainer_worker.training.loop import COMPILE_CACHE

REQUEST = TrainRunRequest(
    tokenizer_id="tok_01JDQ8ZQ0000000000000000AA",
    corpus_path="small.txt",
    n_layer=1,
    n_head=2,
    n_embd=32,
    block_size=32,
    batch_size=4,
    max_steps=30,
    warmup_steps=5,
    eval_interval=10,
    eval_iters=2,
    checkpoint_interval=15,
    device="cpu",
    compile="off",
)


def _train(
    tmp_path: Path,
    name: str,
    tokenizer_dir: Path,
    corpus_root: Path,
    compile: CompileChoice,
    dropout: float = 0.0,
    **env: str,
) -> list[TrainingMessage]:
    run_dir = tmp_path / name / "runs" / "run_01JDQ8ZQ0000000000000000AA"
    spec = RunSpec(
        run_id="run_01JDQ8ZQ0000000000000000AA",
        tokenizer_id=REQUEST.tokenizer_id,
        request=msgspec.structs.replace(REQUEST, compile=compile, dropout=dropout),
        tokenizer_dir=str(tokenizer_dir),
        corpus_files=[str(corpus_root / "small.txt")],
        model_dir=str(tmp_path / name / "model"),
        work_dir=str(run_dir / "work"),
        run_dir=str(run_dir),
        dataset_cache=str(tmp_path / "datasets"),
        progress_interval=0.1,
        runs_root=str(tmp_path / name / "runs"),
    )
    environ = {k: v for k, v in os.environ.items() if k != "TORCHINDUCTOR_CACHE_DIR"} | env
    result = subprocess.run(
        [sys.executable, "-m", "mt_trainer_worker.training"],
        input=codec.encode(spec),
        capture_output=True,
        env=environ,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    return [decode_message(line) for line in result.stdout.splitlines()]


def _finished(events: list[TrainingMessage]) -> Finished:
    last = events[-1]
    assert isinstance(last, Finished)
    return last


def _logged(events: list[TrainingMessage]) -> set[str]:
    return {event.event for event in events if isinstance(event, LogEvent)}


def test_a_compiled_run_trains_to_the_eager_losses_and_caches_its_kernels(
    tmp_path: Path, tokenizer_dir: Path, corpus_root: Path
) -> None:
    eager = _train(tmp_path, "eager", tokenizer_dir, corpus_root, "off")
    compiled = _train(tmp_path, "compiled", tokenizer_dir, corpus_root, "on")

    assert "compiled" in _logged(compiled) and "compiled" not in _logged(eager)
    assert "compile_unavailable" not in _logged(compiled)
    eager_metrics, compiled_metrics = _finished(eager).metrics, _finished(compiled).metrics
    # Fused kernels sum in another order: the same run, within float32 rounding.
    assert compiled_metrics.train_loss == pytest.approx(eager_metrics.train_loss, rel=1e-3)
    assert compiled_metrics.val_loss == pytest.approx(eager_metrics.val_loss, rel=1e-3)
    cache = tmp_path / "compiled" / "runs" / COMPILE_CACHE
    assert any(path.is_file() for path in cache.rglob("*"))


def test_without_a_compiler_the_run_warns_and_trains_exactly_as_an_eager_run(
    tmp_path: Path, tokenizer_dir: Path, corpus_root: Path
) -> None:
    # With dropout, a trial step that drew from the random generator would change every later mask.
    eager = _train(tmp_path, "eager", tokenizer_dir, corpus_root, "off", dropout=0.1)
    # Inductor builds its CPU kernels with $CXX: a compiler that always fails makes torch.compile fail.
    fallback = _train(tmp_path, "fallback", tokenizer_dir, corpus_root, "on", dropout=0.1, CXX="/bin/false")

    assert "compile_unavailable" in _logged(fallback) and "compiled" not in _logged(fallback)
    # The failed trial step left no gradient and no draw of the random generator behind.
    assert _finished(fallback).metrics.val_loss == _finished(eager).metrics.val_loss
    assert _finished(fallback).metrics.train_loss == _finished(eager).metrics.train_loss
