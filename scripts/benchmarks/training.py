"""Training throughput: our training process against a plain reference loop.

The reference is the loop anyone would write: ``GPT2LMHeadModel`` (its dropout set to the run's, as ours is;
``GPT2Config`` defaults to 0.1), the next-token cross-entropy of its logits (``logits[:, :-1]`` against the
inputs shifted by one, what ``labels=`` computes), ``torch.optim.AdamW``, same config, same threads, same token
file. ``BENCH_TRAINING_REPEATS`` (default 2: the larger size takes minutes a run on a loaded 2-core machine)
alternating runs; with fewer than 5 the table gives their mean, not a median. Ours is the real
``python -m mt_trainer_worker.training`` subprocess; its steady-state tokens per second come from its own
progress events (first quarter of steps skipped as warm-up). MFU = model FLOPs per second / a float32 matmul
peak measured in the same run; model
FLOPs per token = 6 N + 12 L T E (Kaplan et al. 2020; Chowdhery et al. 2022, appendix B).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel

from benchmarks._common import SHAKESPEARE, bpe_tokenizer, load, median
from mt_contracts import codec
from mt_contracts.events import ProgressEvent
from mt_contracts.requests import TrainRunRequest
from mt_contracts.training import RunSpec, decode_message
from mt_trainer_worker.training.data import open_tokens, prepare_data

SIZES = {
    "4x128x128": {"n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 128, "batch_size": 16, "steps": 40},
    "6x384x256": {"n_layer": 6, "n_head": 6, "n_embd": 384, "block_size": 256, "batch_size": 8, "steps": 8},
}
# Without native bf16 (AVX512-BF16 or AMX) bf16 autocast is many times slower than fp32 on a CPU (0.08x
# measured on an AVX2-only EPYC), so it is then measured on the small size only.
BF16_FLAGS = ("amx_bf16", "avx512_bf16")
REPEATS = int(os.environ.get("BENCH_TRAINING_REPEATS", "2"))
VOCAB_SIZE = 2048


def native_bf16() -> list[str]:
    """The CPU's bf16 instruction sets among ``BF16_FLAGS`` (from /proc/cpuinfo); empty when it has none."""
    cpuinfo = Path("/proc/cpuinfo")
    flags = set()
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    return [flag for flag in BF16_FLAGS if flag in flags]


def matmul_peak() -> float:
    """float32 FLOP/s of a 2048x2048 matmul on this machine (median of 5)."""
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    torch.mm(a, b)
    rates = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(4):
            torch.mm(a, b)
        rates.append(4 * 2 * 2048**3 / (time.perf_counter() - started))
    return median(rates)


def request_for(size: dict[str, int], precision: str) -> TrainRunRequest:
    return TrainRunRequest(
        tokenizer_id="tok_01JDQ8ZQ0000000000000000AA",
        corpus_path=SHAKESPEARE.name,
        n_layer=size["n_layer"],
        n_head=size["n_head"],
        n_embd=size["n_embd"],
        block_size=size["block_size"],
        batch_size=size["batch_size"],
        max_steps=size["steps"],
        warmup_steps=2,
        eval_interval=10_000,
        checkpoint_interval=10_000,
        val_fraction=0.02,
        device="cpu",
        precision="bf16" if precision == "bf16" else "fp32",
    )


def ours(work: Path, tokenizer_dir: Path, request: TrainRunRequest, name: str) -> tuple[float, float]:
    """(tokens per second, last train loss) of the real training process."""
    run_dir = work / name
    spec = RunSpec(
        run_id="run_01JDQ8ZQ0000000000000000AA",
        tokenizer_id=request.tokenizer_id,
        request=request,
        tokenizer_dir=str(tokenizer_dir),
        corpus_files=[str(SHAKESPEARE)],
        model_dir=str(run_dir / "model"),
        work_dir=str(run_dir / "work"),
        run_dir=str(run_dir),
        dataset_cache=str(work / "datasets"),
        progress_interval=0.0,
    )
    command = [sys.executable, "-m", "mt_trainer_worker.training"]
    result = subprocess.run(command, input=codec.encode(spec), capture_output=True, check=True)
    lines = result.stdout.splitlines()
    reports = [e.progress for line in lines if isinstance(e := decode_message(line), ProgressEvent)]
    steady = [r.tokens_per_second for r in reports if r.step > request.total_steps // 4]
    return median(steady), reports[-1].train_loss


def reference(tokens: torch.Tensor, request: TrainRunRequest, vocab_size: int) -> tuple[float, float]:
    """(tokens per second, last train loss) of a plain HF + AdamW loop on the same data."""
    torch.manual_seed(request.seed)
    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=request.block_size,
        n_embd=request.n_embd,
        n_layer=request.n_layer,
        n_head=request.n_head,
        resid_pdrop=request.dropout,
        embd_pdrop=request.dropout,
        attn_pdrop=request.dropout,
    )
    model = GPT2LMHeadModel(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=request.learning_rate)
    generator = torch.Generator().manual_seed(request.seed)
    times, loss_value = [], math.nan
    for step in range(request.total_steps):
        starts = torch.randint(len(tokens) - request.block_size, (request.batch_size,), generator=generator).tolist()
        x = torch.stack([tokens[s : s + request.block_size] for s in starts]).to(torch.int64)
        started = time.perf_counter()
        logits = model(input_ids=x).logits
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), x[:, 1:].flatten())
        torch.autograd.backward(loss)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss_value = loss.item()
        if step > request.total_steps // 4:
            times.append(time.perf_counter() - started)
    return request.batch_size * request.block_size / median(times), loss_value


def model_flops_per_token(request: TrainRunRequest, vocab_size: int) -> float:
    n_params = 12 * request.n_layer * request.n_embd**2 + vocab_size * request.n_embd
    return 6 * n_params + 12 * request.n_layer * request.block_size * request.n_embd


def main() -> str:
    rows = []
    loads = [load()]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        tokenizer_dir = work / "tokenizer"
        bpe_tokenizer(tokenizer_dir, VOCAB_SIZE)
        data = prepare_data(tokenizer_dir / "tokenizer.json", [SHAKESPEARE], 0.02, 1337, work / "datasets")
        tokens = open_tokens(data.train_path, data.dtype)
        peak = matmul_peak()
        bf16_flags = native_bf16()
        bf16_sizes = set(SIZES) if bf16_flags else {"4x128x128"}
        for label, size in SIZES.items():
            fp32 = request_for(size, "fp32")
            bf16 = request_for(size, "bf16")
            ours_fp32, ours_bf16, refs = [], [], []
            losses: dict[str, float] = {}
            for repeat in range(REPEATS):
                rate, losses["ours"] = ours(work, tokenizer_dir, fp32, f"{label}-fp32-{repeat}")
                ours_fp32.append(rate)
                rate, losses["reference"] = reference(tokens, fp32, data.vocab_size)
                refs.append(rate)
                if label in bf16_sizes:
                    rate, losses["ours bf16"] = ours(work, tokenizer_dir, bf16, f"{label}-bf16-{repeat}")
                    ours_bf16.append(rate)
            flops = model_flops_per_token(fp32, data.vocab_size)
            bf16_rate = f"{median(ours_bf16):,.0f}" if ours_bf16 else "not run"
            bf16_ratio = f"{median(ours_bf16) / median(ours_fp32):.2f}" if ours_bf16 else "-"
            bf16_loss = f"{losses['ours bf16']:.3f}" if ours_bf16 else "-"
            rows.append(
                f"| {label} | {median(refs):,.0f} | {median(ours_fp32):,.0f} | {median(ours_fp32) / median(refs):.2f} "
                f"| {bf16_rate} | {bf16_ratio} | {median(ours_fp32) * flops / peak:.1%} "
                f"| {losses['reference']:.3f} / {losses['ours']:.3f} / {bf16_loss} |"
            )
            loads.append(load())
    summary = f"median of {REPEATS}" if REPEATS >= 5 else f"mean of {REPEATS} (too few for a median)"
    return "\n".join(
        [
            "## Training throughput (issue 4)",
            "",
            f"Tokens per second, {summary} alternating runs; vocab_size {VOCAB_SIZE}, Tiny Shakespeare. "
            f"1-minute load average before and after each size: {', '.join(loads)}. "
            f"float32 matmul peak measured in the same run: {peak / 1e9:,.0f} GFLOP/s. "
            f"Native bf16 on this CPU: {', '.join(bf16_flags) or 'none (bf16 measured on the small size only)'}.",
            "Goals: ours / reference >= 1.0 in fp32; bf16 / fp32 >= 1.3 where bf16 helps.",
            "",
            "| size (L x E x T) | reference tok/s | ours fp32 tok/s | ours / ref | ours bf16 tok/s | bf16 / fp32 "
            "| MFU fp32 | last loss ref / ours / bf16 |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
            *rows,
        ]
    )
