"""The training loop: one spec, one loop, top to bottom (after nanoGPT's ``train.py``).

AdamW with decoupled weight decay on 2-D weights only (Loshchilov & Hutter, 2019), linear warmup then
cosine decay, gradient clipping, periodic validation estimates, and a final pass that scores every
validation token once.

Under torchrun the same loop runs in every rank: the model is wrapped in DistributedDataParallel (gradients
averaged over ranks, so ``world_size`` ranks of ``batch_size`` take the step one process of
``batch_size * world_size`` would), each rank reads its own rows of every global batch of one seeded stream
(``data.WindowStream``), one all-reduce a step carries the training loss and whether any rank was told to
stop (so every rank stops after the same step), validation is averaged over ranks, and rank 0 alone writes
checkpoints and events.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import threading
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from transformers import PreTrainedModel

from mt_contracts.events import CheckpointEvent, ProgressEvent, Resumed, ValidationEvent
from mt_contracts.jobs import EvalPoint, RunProgress
from mt_contracts.logs import timestamp
from mt_contracts.requests import TrainRunRequest
from mt_contracts.training import RunSpec
from mt_storage.checkpoints import MODEL_CONFIG
from mt_storage.child import Channel
from mt_storage.files import atomic_write_bytes
from mt_storage.torch_weights import load_weights_into
from mt_trainer_worker.training import TrainingFailure, distributed
from mt_trainer_worker.training.checkpoints import Counters, load_latest, save_checkpoint
from mt_trainer_worker.training.data import PreparedData, WindowStream, gather_windows, open_tokens
from mt_trainer_worker.training.distributed import SINGLE, Ranks
from mt_trainer_worker.training.models import build_model, logits_of

LN2 = math.log(2.0)


class TrainedModel:
    """The trained model with its final training loss (nats per token) and the counters of the run."""

    def __init__(self, model: PreTrainedModel, train_loss: float, steps: int, tokens_seen: int, seconds: float):
        self.model = model
        self.train_loss = train_loss
        self.steps = steps
        self.tokens_seen = tokens_seen
        self.seconds = seconds


def learning_rate_at(step: int, request: TrainRunRequest, total_steps: int) -> float:
    """Linear warmup over ``warmup_steps``, then cosine decay from ``learning_rate`` to
    ``min_learning_rate`` at ``total_steps`` (SGDR, Loshchilov & Hutter 2017, without restarts)."""
    if step < request.warmup_steps:
        return request.learning_rate * (step + 1) / request.warmup_steps
    span = max(1, total_steps - request.warmup_steps)
    progress = min(1.0, (step - request.warmup_steps) / span)
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return request.min_learning_rate + cosine * (request.learning_rate - request.min_learning_rate)


def pick_device(choice: str, local_rank: int = 0) -> torch.device:
    """``auto``: CUDA when present, else the CPU; ``cpu`` or ``cuda`` as asked. On CUDA, rank ``local_rank``
    of a machine takes GPU ``local_rank``.

    Raises:
        TrainingFailure: ``device_unavailable`` when ``cuda`` is asked for and none is present.
    """
    if choice == "cuda" and not torch.cuda.is_available():
        raise TrainingFailure("device_unavailable", "device=cuda was requested but no CUDA device is present")
    if choice == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank)


class StopTraining(Exception):
    """Raised at a step boundary after SIGTERM, once a checkpoint of ``step`` is written (``None``: it
    stopped outside training, before a step or while saving)."""

    def __init__(self, message: str, step: int | None = None) -> None:
        super().__init__(message)
        self.step = step


def sample_batch(
    tokens: torch.Tensor, batch_size: int, block_size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random windows: inputs and next-token targets, each ``(batch_size, block_size) int64``."""
    starts = torch.randint(len(tokens) - block_size, (batch_size,), generator=generator)
    batch = gather_windows(tokens, starts, block_size + 1)
    return batch[:, :-1], batch[:, 1:]


def build_optimizer(model: PreTrainedModel, request: TrainRunRequest) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices (2-D and up) only; biases and layer norms are not decayed. The
    update of all parameters is one fused kernel (``fused=True``, on the CPU and CUDA alike) rather than a
    loop over tensors in Python."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": request.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=request.learning_rate, betas=request.betas, fused=True)


def bf16_autocast(device: torch.device, enabled: bool) -> torch.autocast:
    """bfloat16 autocast on ``device`` when ``enabled`` (``precision: bf16``): matrix products in bf16, the
    losses are still taken in float32 by the callers."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


COMPILE_CACHE = ".compile-cache"


def compiled_for_training(
    net: torch.nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    autocast: torch.autocast,
    cache_dir: Path,
    writer: Channel,
) -> torch.nn.Module:
    """``torch.compile(net)``, compiled now by one trial forward and backward pass on ``inputs`` (``(batch, T)
    int64``) and ``targets``, whose gradients are dropped and whose use of the random generator is undone, so
    the run trains exactly as it would have, only faster; ``net`` itself when compiling fails (no C++
    compiler, an operator the compiler does not handle), with a ``compile_unavailable`` warning in the log.

    Compiled kernels are kept in ``cache_dir`` (``TORCHINDUCTOR_CACHE_DIR``, under the runs root), so a later
    run of the same shapes loads them instead of compiling again (about 3 s instead of 15-17 s on 2 cores).
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Set, not defaulted: torch fills the variable in with its default the first time it looks for a cache.
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache_dir)
    rng = torch.random.get_rng_state()
    started = time.monotonic()
    compiled = torch.compile(net)
    if not isinstance(compiled, torch.nn.Module):  # an OptimizedModule wrapping ``net``
        raise TypeError(f"torch.compile returned a {type(compiled).__name__}")
    try:
        with autocast:
            logits = logits_of(compiled, inputs)
        torch.autograd.backward(F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten()))
    except Exception as exc:  # noqa: BLE001 - the compiler's errors have no common base; eager always works
        writer.write(
            "warning", "compile_unavailable", f"torch.compile failed, training without it: {exc}", error=str(exc)
        )
        return net
    finally:
        for parameter in net.parameters():
            parameter.grad = None
        torch.random.set_rng_state(rng)
    seconds = time.monotonic() - started
    writer.write("info", "compiled", f"compiled the model in {seconds:.1f} s", seconds=round(seconds, 3))
    return compiled


def estimate_val_loss(
    model: torch.nn.Module, val: torch.Tensor, request: TrainRunRequest, device: torch.device, ranks: Ranks
) -> float:
    """Mean cross-entropy (nats per token) on ``eval_iters`` random validation batches of ``batch_size *
    world_size`` windows, fixed by seed; each rank scores its ``batch_size`` rows and the mean is taken over
    ranks (one all-reduce), so it equals one process's estimate with ``batch_size * world_size``. Under the
    run's precision (bf16 autocast when it trains in bf16); read back once, after the last batch."""
    generator = torch.Generator().manual_seed(request.seed + 1)
    block_size = min(request.block_size, len(val) - 1)
    rows = slice(ranks.rank * request.batch_size, (ranks.rank + 1) * request.batch_size)
    model.train(False)
    total = torch.zeros((), device=device)
    with torch.no_grad(), bf16_autocast(device, request.precision == "bf16"):
        for _ in range(request.eval_iters):
            x, y = sample_batch(val, request.batch_size * ranks.world_size, block_size, generator)
            logits = logits_of(model, x[rows].to(device))
            total += F.cross_entropy(logits.flatten(0, 1).float(), y[rows].to(device).flatten())
    model.train(True)
    [mean_sum] = distributed.all_sum([float(total) / request.eval_iters], ranks, device)
    return mean_sum / ranks.world_size


def score_tokens(
    model: torch.nn.Module,
    tokens: torch.Tensor,
    block_size: int,
    batch_size: int,
    device: torch.device,
    ranks: Ranks = SINGLE,
    *,
    bf16: bool = False,
) -> tuple[float, int]:
    """Total negative log-likelihood (nats) of ``tokens[1:]`` given what precedes each, in non-overlapping
    windows of ``block_size``; returns ``(total_nats, tokens_scored)``. Every token after the first is
    scored exactly once. Of several ``ranks``, each scores every ``world_size``-th group of ``batch_size``
    windows and returns its own part (sum the parts over ranks for the whole). ``bf16``: the forward passes
    run under bfloat16 autocast (the cross-entropy stays float32, summed on the device in float64 and read
    back once)."""
    model.train(False)
    total, count = torch.zeros((), dtype=torch.float64, device=device), 0
    starts = list(range(0, len(tokens) - 1, block_size))
    with torch.no_grad(), bf16_autocast(device, bf16):
        for first in range(ranks.rank * batch_size, len(starts), batch_size * ranks.world_size):
            group = starts[first : first + batch_size]
            for length in sorted({min(block_size, len(tokens) - 1 - s) for s in group}):
                same = torch.tensor([s for s in group if min(block_size, len(tokens) - 1 - s) == length])
                batch = gather_windows(tokens, same, length + 1).to(device)
                logits = logits_of(model, batch[:, :-1])
                total += F.cross_entropy(logits.flatten(0, 1).float(), batch[:, 1:].flatten(), reduction="sum")
                count += batch[:, 1:].numel()
    model.train(True)
    return float(total), count


def train(
    spec: RunSpec, data: PreparedData, writer: Channel, stop: threading.Event, ranks: Ranks = SINGLE
) -> TrainedModel:
    """Train the model described by ``spec.request`` on ``data``, emitting progress, eval and checkpoint
    events; resumes from the run's latest checkpoint when there is one. Of several ``ranks`` (torchrun,
    process group started), each runs this and rank 0 alone writes the checkpoints.

    Raises:
        TrainingFailure: ``corpus_too_small`` when a split has fewer than ``block_size + 1`` tokens;
            ``diverged`` when the loss becomes NaN or infinite; ``device_unavailable``.
        StopTraining: ``stop`` was set (SIGTERM); a checkpoint of the last finished step was written first.
    """
    request = spec.request
    total_steps = request.total_steps
    for name, count in (("training", data.train_tokens), ("validation", data.val_tokens)):
        if count < request.block_size + 1:
            raise TrainingFailure(
                "corpus_too_small",
                f"the {name} split has {count} tokens but block_size={request.block_size} needs at least "
                f"{request.block_size + 1}; use a larger corpus or a smaller block_size",
            )
    torch.manual_seed(request.seed)
    if ranks.local_world_size > 1:
        # The machine's threads (``threads``, else its cores) divided between the ranks it runs.
        torch.set_num_threads(max(1, (request.threads or os.cpu_count() or 1) // ranks.local_world_size))
    elif request.threads:
        torch.set_num_threads(request.threads)
    device = pick_device(request.device, ranks.local_rank)
    with device:  # parameters are created on the device, not moved there
        model = build_model(request, data.vocab_size, data.end_of_text_id)
    model.train(True)
    optimizer = build_optimizer(model, request)
    run_dir = Path(spec.run_dir)
    if ranks.main:
        # The architecture beside the checkpoints, so evaluation, generation and export can load any of them.
        atomic_write_bytes(run_dir / MODEL_CONFIG, model.config.to_json_string().encode())
    counters = load_latest(run_dir, model, optimizer)
    if counters is None and spec.init_weights is not None:
        # init_from: the parent's weights, once, on every rank before DDP wraps the model; a resume continues
        # from this run's own checkpoint instead.
        load_weights_into(model, spec.init_weights)
        writer.write(
            "info",
            "init_from",
            f"starting from the weights of run {spec.init_weights.run_id} at step {spec.init_weights.step}",
            run_id=spec.init_weights.run_id,
            step=spec.init_weights.step,
        )
    counters = counters or Counters()
    if not ranks.main:
        torch.manual_seed(request.seed + ranks.rank + counters.step)  # dropout differs between ranks
    # Every rank starts from the same weights (DDP broadcasts rank 0's); gradients are averaged over ranks.
    net: torch.nn.Module = model
    ddp: DistributedDataParallel | None = None
    if ranks.world_size > 1:
        net = ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    job_id = spec.run_id
    if counters.step:
        writer.send(Resumed(step=counters.step))
        writer.write("info", "resumed", f"resuming from the checkpoint at step {counters.step}", step=counters.step)
    stream = WindowStream(open_tokens(data.train_path, data.dtype), request.block_size, request.seed)
    autocast = bf16_autocast(device, request.precision == "bf16")
    # Validation estimates run the eager model: compiling its inference graph too would cost as much again.
    eager = net
    if request.compiled:
        x, y = stream.batch(0, request.batch_size)
        net = compiled_for_training(
            net, x.to(device), y.to(device), autocast, Path(spec.runs_root or run_dir.parent) / COMPILE_CACHE, writer
        )
    # The data position in windows; checkpoints before it was recorded drew batch_size * accumulation a step.
    tokens_seen = counters.tokens_seen
    if tokens_seen is None:
        tokens_seen = counters.step * request.batch_size * request.block_size * request.gradient_accumulation_steps
    position, counters.tokens_seen = tokens_seen // request.block_size, tokens_seen
    micro_windows = request.batch_size * ranks.world_size
    val_tokens = open_tokens(data.val_path, data.dtype)
    tokens_per_byte = (data.val_tokens - 1) / max(1, data.val_bytes)
    n_params = sum(p.numel() for p in model.parameters())
    writer.write(
        "info", "training_started",
        f"{n_params} parameters, {data.train_tokens} training tokens on {device}",
        n_params=n_params, train_tokens=data.train_tokens, val_tokens=data.val_tokens,
        vocab_size=data.vocab_size, device=str(device),
    )  # fmt: skip
    writer.phase = "training"
    accumulation = request.gradient_accumulation_steps
    started = last_report = time.monotonic()
    base_elapsed, first_step = counters.elapsed_seconds, counters.step
    # Losses stay on the device and are read back only when a report, validation or checkpoint needs them,
    # so a step queues its work without waiting for the previous one (no host sync on CUDA).
    window_loss, window_steps = torch.zeros((), device=device), 0
    saved_step = counters.step
    for step in range(counters.step, total_steps):
        learning_rate = learning_rate_at(step, request, total_steps)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate
        step_loss = torch.zeros((), device=device)
        for micro in range(accumulation):
            x, y = stream.batch(position + micro * micro_windows + ranks.rank * request.batch_size, request.batch_size)
            # Gradients are averaged over ranks once per step, on the last micro-batch.
            last = micro == accumulation - 1
            syncing = ddp.no_sync() if ddp is not None and not last else contextlib.nullcontext()
            with syncing:
                with autocast:
                    logits = logits_of(net, x.to(device))
                loss = F.cross_entropy(logits.flatten(0, 1).float(), y.to(device).flatten()) / accumulation
                torch.autograd.backward(loss)
            step_loss += loss.detach()
        position += micro_windows * accumulation
        if request.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), request.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if ranks.world_size > 1:
            # One all-reduce: the step's loss over all ranks, and whether any rank was told to stop (all stop).
            loss_sum, stop_votes = distributed.all_sum([float(step_loss), 1.0 if stop.is_set() else 0.0], ranks, device)
            step_loss, stopping = torch.tensor(loss_sum / ranks.world_size, device=device), stop_votes > 0
        else:
            stopping = stop.is_set()
        done = step + 1
        now = time.monotonic()
        counters.step = done
        counters.tokens_seen = position * request.block_size
        counters.elapsed_seconds = base_elapsed + (now - started)
        window_loss += step_loss
        window_steps += 1
        # The first step of each launch is reported at once: it says the run has started training.
        reporting = now - last_report >= spec.progress_interval or done in {first_step + 1, total_steps}
        evaluating = done % request.eval_interval == 0 and done < total_steps
        checkpointing = done % request.checkpoint_interval == 0 or done == total_steps or stopping
        if reporting or evaluating or checkpointing:
            # The one read-back: a loss that became NaN or infinite since the last one fails the run here,
            # before anything is reported or saved.
            counters.last_train_loss = float(step_loss)
            if not math.isfinite(counters.last_train_loss):
                raise TrainingFailure(
                    "diverged",
                    f"the training loss became {counters.last_train_loss} by step {done}; lower learning_rate",
                )
        if reporting:
            progress = RunProgress(
                step=done,
                max_steps=total_steps,
                tokens_seen=position * request.block_size,
                train_loss=float(window_loss) / window_steps,
                learning_rate=learning_rate,
                tokens_per_second=window_steps * request.tokens_per_step / max(now - last_report, 1e-9),
                elapsed_seconds=counters.elapsed_seconds,
                eta_seconds=(now - started) / (done - first_step) * (total_steps - done),
            )
            message = f"step {done}/{total_steps} loss {progress.train_loss:.4f}"
            writer.send(
                ProgressEvent(ts=timestamp(), job_id=job_id, event="progress", message=message, progress=progress)
            )
            window_loss, window_steps, last_report = torch.zeros((), device=device), 0, now
        if evaluating:
            val_loss = estimate_val_loss(eager, val_tokens, request, device, ranks)
            counters.last_val_loss, counters.last_val_step = val_loss, done
            point = EvalPoint(
                step=done,
                val_loss=val_loss,
                val_perplexity=safe_exp(val_loss),
                val_bits_per_byte=val_loss * tokens_per_byte / LN2,
                tokens_seen=position * request.block_size,
            )
            message = f"step {done} val_loss {val_loss:.4f}"
            writer.send(ValidationEvent(ts=timestamp(), job_id=job_id, event="eval", message=message, point=point))
        if checkpointing:
            # A SIGTERM now only sets ``stop``: this checkpoint is finished and announced, then the loop stops.
            writer.phase = "checkpointing"
            if ranks.main:
                info = save_checkpoint(run_dir, request.keep_checkpoints, model, optimizer, counters)
                writer.send(
                    CheckpointEvent(
                        ts=timestamp(), job_id=job_id, event="checkpoint", message=f"checkpoint at step {info.step}",
                        checkpoint=info,
                    )
                )  # fmt: skip
            if stopping:
                distributed.barrier(ranks)  # the other ranks stay until rank 0's stop checkpoint is written
            writer.phase, saved_step = "training", done
        if stopping:
            raise StopTraining(f"stopped by SIGTERM after step {saved_step}; a checkpoint was saved", saved_step)
    return TrainedModel(
        model=model,
        train_loss=counters.last_train_loss if counters.last_train_loss is not None else float("nan"),
        steps=total_steps,
        tokens_seen=position * request.block_size,
        seconds=counters.elapsed_seconds,
    )


def safe_exp(value: float) -> float:
    """``exp(value)``, capped at the largest finite float so it stays JSON-encodable."""
    return math.exp(value) if value < 709.0 else sys.float_info.max


def save_dir_files(model: PreTrainedModel, out_dir: Path) -> list[str]:
    """``save_pretrained`` into ``out_dir`` (safetensors); returns the file names written, sorted."""
    model.save_pretrained(out_dir, safe_serialization=True)
    return sorted(p.name for p in out_dir.iterdir() if p.is_file())
