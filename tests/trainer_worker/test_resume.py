"""Checkpoints carry everything: a training process killed mid-run and started again ends with exactly the
weights of an uninterrupted run (same seed, CPU), and its validation points count the tokens seen as an
uninterrupted run's do."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from safetensors.torch import load_file

from mt_contracts import codec
from mt_contracts.events import CheckpointEvent, ProgressEvent, Resumed, ValidationEvent
from mt_contracts.jobs import EvalPoint
from mt_contracts.requests import TrainRunRequest
from mt_contracts.training import Finished, RunSpec, TrainingMessage, decode_message
from mt_storage.checkpoints import read_index

REQUEST = TrainRunRequest(
    tokenizer_id="tok_01JDQ8ZQ0000000000000000AA",
    corpus_path="small.txt",
    n_layer=1,
    n_head=2,
    n_embd=32,
    block_size=32,
    batch_size=4,
    max_steps=40,
    warmup_steps=5,
    dropout=0.1,
    eval_interval=15,
    eval_iters=2,
    checkpoint_interval=10,
    keep_checkpoints=2,
    gradient_accumulation_steps=2,
    device="cpu",
)


def _spec(tmp_path: Path, name: str, tokenizer_dir: Path, corpus_root: Path, progress_interval: float = 0.1) -> Path:
    run_dir = tmp_path / name
    spec = RunSpec(
        run_id="run_01JDQ8ZQ0000000000000000AA",
        tokenizer_id=REQUEST.tokenizer_id,
        request=REQUEST,
        tokenizer_dir=str(tokenizer_dir),
        corpus_files=[str(corpus_root / "small.txt")],
        model_dir=str(run_dir / "model"),
        work_dir=str(run_dir / "work"),
        run_dir=str(run_dir),
        dataset_cache=str(tmp_path / "datasets"),
        progress_interval=progress_interval,
    )
    path = tmp_path / f"{name}.json"
    path.write_bytes(codec.encode(spec))
    return path


def _start(spec: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "mt_trainer_worker.training"]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert process.stdin is not None
    with process.stdin:
        process.stdin.write(spec.read_bytes())
    return process


def _events(process: subprocess.Popen[bytes]) -> list[TrainingMessage]:
    assert process.stdout is not None
    with process.stdout:
        return [decode_message(line) for line in process.stdout]


def _points(events: list[TrainingMessage]) -> list[EvalPoint]:
    return [event.point for event in events if isinstance(event, ValidationEvent)]


def test_a_killed_run_resumes_from_its_checkpoint_to_identical_weights(
    tmp_path: Path, tokenizer_dir: Path, corpus_root: Path
) -> None:
    straight = _start(_spec(tmp_path, "straight", tokenizer_dir, corpus_root))
    straight_events = _events(straight)
    assert straight.wait() == 0
    assert isinstance(straight_events[-1], Finished)

    interrupted_spec = _spec(tmp_path, "interrupted", tokenizer_dir, corpus_root)
    first = _start(interrupted_spec)
    assert first.stdout is not None
    for line in first.stdout:
        if isinstance(decode_message(line), CheckpointEvent):
            first.send_signal(signal.SIGKILL)
            break
    first.wait()
    first.stdout.close()
    assert first.returncode == -signal.SIGKILL
    killed_at = read_index(tmp_path / "interrupted")[-1].step
    assert 10 <= killed_at < 40

    second = _start(interrupted_spec)
    resumed_events = _events(second)
    assert second.wait() == 0
    resumed = [e for e in resumed_events if isinstance(e, Resumed)]
    assert resumed == [Resumed(step=killed_at)]

    # The points after the resume, the final one included, count the tokens seen as the straight run's do.
    straight_tokens = {point.step: point.tokens_seen for point in _points(straight_events)}
    resumed_points = _points(resumed_events)
    assert resumed_points and [p.step for p in resumed_points][-1] == 40
    assert {point.step: point.tokens_seen for point in resumed_points} == {
        point.step: straight_tokens[point.step] for point in resumed_points
    }

    finished_straight, finished_resumed = straight_events[-1], resumed_events[-1]
    assert isinstance(finished_straight, Finished) and isinstance(finished_resumed, Finished)
    assert finished_resumed.metrics.val_loss == finished_straight.metrics.val_loss
    assert finished_resumed.metrics.tokens_seen == finished_straight.metrics.tokens_seen
    weights_straight = load_file(str(tmp_path / "straight" / "model" / "model.safetensors"))
    weights_resumed = load_file(str(tmp_path / "interrupted" / "model" / "model.safetensors"))
    assert weights_straight.keys() == weights_resumed.keys()
    assert all(weights_straight[k].equal(weights_resumed[k]) for k in weights_straight)
    # keep_checkpoints=2: only the last two remain, the final step among them.
    index = read_index(tmp_path / "interrupted")
    assert [entry.step for entry in index] == [30, 40]
    assert sorted(p.name for p in (tmp_path / "interrupted" / "checkpoints").iterdir()) == [
        "step-000000030.pt",
        "step-000000040.pt",
    ]


def test_validation_points_carry_the_tokens_seen_at_their_step(
    tmp_path: Path, tokenizer_dir: Path, corpus_root: Path
) -> None:
    process = _start(_spec(tmp_path, "run", tokenizer_dir, corpus_root))
    events = _events(process)
    assert process.wait() == 0
    finished = events[-1]
    assert isinstance(finished, Finished)
    # One process: every step consumes tokens_per_step (batch 4 x block 32 x accumulation 2) tokens; the
    # estimates at eval_interval 15 and the final one at the last step (40) carry the count at their step.
    assert REQUEST.tokens_per_step == 256
    assert [(p.step, p.tokens_seen) for p in _points(events)] == [(15, 15 * 256), (30, 30 * 256), (40, 40 * 256)]
    assert finished.metrics.tokens_seen == 40 * 256


def test_the_first_step_of_each_launch_is_reported_at_once(
    tmp_path: Path, tokenizer_dir: Path, corpus_root: Path
) -> None:
    # With an hour between reports, a launch reports its first step (it has started training) and the last.
    spec = _spec(tmp_path, "reported", tokenizer_dir, corpus_root, progress_interval=3600)
    first = _start(spec)
    assert first.stdout is not None
    steps = []
    for line in first.stdout:
        message = decode_message(line)
        if isinstance(message, ProgressEvent):
            steps.append(message.progress.step)
        if isinstance(message, CheckpointEvent):
            first.send_signal(signal.SIGKILL)
            break
    first.wait()
    first.stdout.close()
    assert steps == [1]
    killed_at = read_index(tmp_path / "reported")[-1].step
    second = _start(spec)
    events = _events(second)
    assert second.wait() == 0
    assert [e.progress.step for e in events if isinstance(e, ProgressEvent)] == [killed_at + 1, 40]
