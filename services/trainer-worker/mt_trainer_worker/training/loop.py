"""The training loop: one spec, one loop, top to bottom (after nanoGPT's ``train.py``).

AdamW with decoupled weight decay on 2-D weights only (Loshchilov & Hutter, 2019), linear warmup then
cosine decay, gradient clipping, periodic validation estimates, and a final pass that scores every
validation token once.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from mt_contracts.jobs import EvalPoint, RunProgress
from mt_contracts.requests import TrainRunRequest
from mt_contracts.training import Eval, Progress, RunSpec, Started
from mt_trainer_worker.training import TrainingFailure
from mt_trainer_worker.training.data import PreparedData, open_tokens
from mt_trainer_worker.training.events import EventWriter
from mt_trainer_worker.training.models import MODEL_FAMILIES, logits_of

LN2 = math.log(2.0)


class TrainedModel:
    """The trained model with its final training loss (nats per token) and the counters of the run."""

    def __init__(self, model: PreTrainedModel, train_loss: float, steps: int, tokens_seen: int, seconds: float):
        self.model = model
        self.train_loss = train_loss
        self.steps = steps
        self.tokens_seen = tokens_seen
        self.seconds = seconds


def learning_rate_at(step: int, request: TrainRunRequest) -> float:
    """Linear warmup over ``warmup_steps``, then cosine decay from ``learning_rate`` to
    ``min_learning_rate`` at ``max_steps`` (SGDR, Loshchilov & Hutter 2017, without restarts)."""
    if step < request.warmup_steps:
        return request.learning_rate * (step + 1) / request.warmup_steps
    span = max(1, request.max_steps - request.warmup_steps)
    progress = min(1.0, (step - request.warmup_steps) / span)
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return request.min_learning_rate + cosine * (request.learning_rate - request.min_learning_rate)


def pick_device() -> torch.device:
    """CUDA when present, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def sample_batch(
    tokens: torch.Tensor, batch_size: int, block_size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random windows: inputs and next-token targets, each ``(batch_size, block_size) int64``."""
    starts = torch.randint(len(tokens) - block_size, (batch_size,), generator=generator).tolist()
    batch = torch.stack([tokens[s : s + block_size + 1] for s in starts]).to(torch.int64)
    return batch[:, :-1], batch[:, 1:]


def build_optimizer(model: PreTrainedModel, request: TrainRunRequest) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices (2-D and up) only; biases, norms and nothing else decay-free."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": request.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=request.learning_rate, betas=(0.9, 0.95))


def estimate_val_loss(
    model: PreTrainedModel, val: torch.Tensor, request: TrainRunRequest, device: torch.device
) -> float:
    """Mean cross-entropy (nats per token) on ``eval_iters`` random validation batches, fixed by seed."""
    generator = torch.Generator().manual_seed(request.seed + 1)
    block_size = min(request.block_size, len(val) - 1)
    model.train(False)
    losses = []
    with torch.no_grad():
        for _ in range(request.eval_iters):
            x, y = sample_batch(val, request.batch_size, block_size, generator)
            logits = logits_of(model, x.to(device))
            losses.append(F.cross_entropy(logits.flatten(0, 1).float(), y.to(device).flatten()).item())
    model.train(True)
    return sum(losses) / len(losses)


def score_tokens(
    model: PreTrainedModel, tokens: torch.Tensor, block_size: int, batch_size: int, device: torch.device
) -> tuple[float, int]:
    """Total negative log-likelihood (nats) of ``tokens[1:]`` given what precedes each, in non-overlapping
    windows of ``block_size``; returns ``(total_nats, tokens_scored)``. Every token after the first is
    scored exactly once."""
    model.train(False)
    total, count = 0.0, 0
    starts = list(range(0, len(tokens) - 1, block_size))
    with torch.no_grad():
        for first in range(0, len(starts), batch_size):
            group = starts[first : first + batch_size]
            for length in sorted({min(block_size, len(tokens) - 1 - s) for s in group}):
                same = [s for s in group if min(block_size, len(tokens) - 1 - s) == length]
                batch = torch.stack([tokens[s : s + length + 1] for s in same]).to(device=device, dtype=torch.int64)
                logits = logits_of(model, batch[:, :-1])
                nll = F.cross_entropy(logits.flatten(0, 1).float(), batch[:, 1:].flatten(), reduction="sum")
                total += float(nll.item())
                count += batch[:, 1:].numel()
    model.train(True)
    return total, count


def train(spec: RunSpec, data: PreparedData, writer: EventWriter) -> TrainedModel:
    """Train the model described by ``spec.request`` on ``data``, emitting progress and eval events.

    Raises:
        TrainingFailure: ``corpus_too_small`` when a split has fewer than ``block_size + 1`` tokens;
            ``diverged`` when the loss becomes NaN or infinite.
    """
    request = spec.request
    for name, count in (("training", data.train_tokens), ("validation", data.val_tokens)):
        if count < request.block_size + 1:
            raise TrainingFailure(
                "corpus_too_small",
                f"the {name} split has {count} tokens but block_size={request.block_size} needs at least "
                f"{request.block_size + 1}; use a larger corpus or a smaller block_size",
            )
    torch.manual_seed(request.seed)
    if request.threads:
        torch.set_num_threads(request.threads)
    device = pick_device()
    with device:  # parameters are created on the device, not moved there
        model = MODEL_FAMILIES[request.model].build(request, data.vocab_size, data.end_of_text_id)
    model.train(True)
    optimizer = build_optimizer(model, request)
    train_tokens = open_tokens(data.train_path, data.dtype)
    val_tokens = open_tokens(data.val_path, data.dtype)
    generator = torch.Generator().manual_seed(request.seed)
    n_params = sum(p.numel() for p in model.parameters())
    writer.emit(
        Started(
            n_params=n_params,
            train_tokens=data.train_tokens,
            val_tokens=data.val_tokens,
            vocab_size=data.vocab_size,
            device=str(device),
        )
    )
    writer.phase = "training"
    tokens_per_step = request.batch_size * request.block_size
    started = last_report = time.monotonic()
    window_loss, window_steps, last_loss = 0.0, 0, float("nan")
    for step in range(request.max_steps):
        learning_rate = learning_rate_at(step, request)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate
        x, y = sample_batch(train_tokens, request.batch_size, request.block_size, generator)
        logits = logits_of(model, x.to(device))
        loss = F.cross_entropy(logits.flatten(0, 1).float(), y.to(device).flatten())
        optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward(loss)
        if request.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), request.grad_clip)
        optimizer.step()
        last_loss = loss.item()
        if not math.isfinite(last_loss):
            raise TrainingFailure(
                "diverged", f"the training loss became {last_loss} at step {step + 1}; lower learning_rate"
            )
        window_loss += last_loss
        window_steps += 1
        done = step + 1
        now = time.monotonic()
        if now - last_report >= spec.progress_interval or done == request.max_steps:
            elapsed = now - started
            writer.emit(
                Progress(
                    progress=RunProgress(
                        step=done,
                        max_steps=request.max_steps,
                        tokens_seen=done * tokens_per_step,
                        train_loss=window_loss / window_steps,
                        learning_rate=learning_rate,
                        tokens_per_second=window_steps * tokens_per_step / max(now - last_report, 1e-9),
                        elapsed_seconds=elapsed,
                        eta_seconds=elapsed / done * (request.max_steps - done),
                    )
                )
            )
            window_loss, window_steps, last_report = 0.0, 0, now
        if done % request.eval_interval == 0 and done < request.max_steps:
            val_loss = estimate_val_loss(model, val_tokens, request, device)
            writer.emit(Eval(point=EvalPoint(step=done, val_loss=val_loss, val_perplexity=safe_exp(val_loss))))
    return TrainedModel(
        model=model,
        train_loss=last_loss,
        steps=request.max_steps,
        tokens_seen=request.max_steps * tokens_per_step,
        seconds=time.monotonic() - started,
    )


def safe_exp(value: float) -> float:
    """``exp(value)``, capped at the largest finite float so it stays JSON-encodable."""
    return math.exp(value) if value < 709.0 else sys.float_info.max


def save_dir_files(model: PreTrainedModel, out_dir: Path) -> list[str]:
    """``save_pretrained`` into ``out_dir`` (safetensors); returns the file names written, sorted."""
    model.save_pretrained(out_dir, safe_serialization=True)
    return sorted(p.name for p in out_dir.iterdir() if p.is_file())
