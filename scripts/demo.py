"""``make demo``: the main job end to end through the HTTP API.

Starts the stack (embedded Redis, API, both workers), trains a byte-level BPE tokenizer and a GPT-2 on
Tiny Shakespeare, polls with visible progress, prints the final metrics, a sample from the trained model
and where the artifacts are, then stops every process it started.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import msgspec
from stack import DEFAULT_CORPUS_DIR, DEMO_CORPUS, ROOT, Stack

from mt_client import ApiError, Client
from mt_contracts.events import ProgressEvent, ValidationEvent
from mt_contracts.jobs import RunJob, TokenizerJob
from mt_contracts.requests import GenerateRequest, TrainRunRequest, TrainTokenizerRequest
from mt_storage.embedded_redis import free_port

CORPUS_FILE = DEMO_CORPUS

# Sized for a 2-core CPU: about four minutes of training, val_bits_per_byte about 2.3.
TOKENIZER_REQUEST = {"corpus_path": CORPUS_FILE, "method": "bpe", "vocab_size": 1024, "min_frequency": 2}
WARMUP_STEPS = 100
EVAL_INTERVAL = 250
RUN_REQUEST = {
    "corpus_path": CORPUS_FILE,
    "n_layer": 4,
    "n_head": 4,
    "n_embd": 128,
    "block_size": 128,
    "batch_size": 16,
    "max_steps": 1000,
    "learning_rate": 3e-3,
    "min_learning_rate": 3e-4,
    "warmup_steps": WARMUP_STEPS,
    "eval_interval": EVAL_INTERVAL,
    "eval_iters": 10,
    "seed": 1337,
}


SAMPLE_PROMPT = "ROMEO:\n"
SAMPLE_REQUEST = {"prompt": SAMPLE_PROMPT, "max_new_tokens": 120, "temperature": 0.8, "top_k": 40, "seed": 1337}


def poll_tokenizer(client: Client, tokenizer_id: str) -> TokenizerJob:
    for _ in client.follow(tokenizer_id):  # the live events, to the terminal status
        continue
    return client.get_tokenizer(tokenizer_id)


def poll_run(client: Client, run_id: str) -> RunJob:
    val = ""
    for streamed in client.follow(run_id):
        match streamed.event:
            case ValidationEvent(point=point):
                val = f"  val_loss {point.val_loss:.3f}"
            case ProgressEvent(progress=progress):
                print(
                    f"  step {progress.step:>5}/{progress.max_steps}  train_loss {progress.train_loss:.3f}{val}"
                    f"  {progress.tokens_per_second:>8.0f} tok/s  eta {progress.eta_seconds:>4.0f} s",
                    flush=True,
                )
            case _:
                continue
    return client.get_run(run_id)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--corpus-dir", type=Path, default=Path(os.environ.get("CORPUS_DIR", DEFAULT_CORPUS_DIR)))
    parser.add_argument(
        "--max-steps",
        type=int,
        default=os.environ.get("DEMO_STEPS") or str(RUN_REQUEST["max_steps"]),
        help="training steps of the GPT-2 (default: DEMO_STEPS, else 1000; 200 takes about a minute)",
    )
    args = parser.parse_args()
    if args.max_steps < 1:
        parser.error("DEMO_STEPS (--max-steps) must be at least 1")
    corpus_dir: Path = args.corpus_dir.resolve()
    if not (corpus_dir / CORPUS_FILE).is_file():
        print(f"demo: {corpus_dir / CORPUS_FILE} not found; set CORPUS_DIR to the folder holding it", file=sys.stderr)
        return 2
    data_dir = ROOT / ".data"
    env = dict(os.environ)
    env.setdefault("APP__CORPUS_ROOT", str(corpus_dir))
    env.setdefault("APP__ARTIFACTS_ROOT", str(data_dir / "artifacts"))
    env.setdefault("APP__RUNS_ROOT", str(data_dir / "runs"))
    env.setdefault("HTTP__PORT", str(free_port()))
    started = time.monotonic()
    with Stack(env, data_dir, log_dir=data_dir / "logs") as stack, Client(stack.api_url, timeout=300) as client:
        active: str | None = None
        try:
            print(f"demo: training a byte-level BPE tokenizer on {CORPUS_FILE}", flush=True)
            active = client.train_tokenizer(msgspec.convert(TOKENIZER_REQUEST, TrainTokenizerRequest)).id
            tokenizer = poll_tokenizer(client, active)
            if tokenizer.status != "succeeded" or tokenizer.result is None:
                print(f"demo: tokenizer {tokenizer.id} {tokenizer.status}: {tokenizer.error}", file=sys.stderr)
                return 1
            print(f"demo: tokenizer {tokenizer.id} vocab_size={tokenizer.result.vocab_size}", flush=True)

            steps: int = args.max_steps
            # A shorter demo keeps the schedule's shape: warm-up at most a tenth, an estimate at least at the end.
            schedule = {
                "warmup_steps": min(WARMUP_STEPS, steps // 10),
                "eval_interval": min(EVAL_INTERVAL, steps),
            }
            body = {**RUN_REQUEST, **schedule, "tokenizer_id": tokenizer.id, "max_steps": steps}
            active = client.train_run(msgspec.convert(body, TrainRunRequest)).id
            print(f"demo: training GPT-2 run {active}", flush=True)
            run = poll_run(client, active)
            active = None
        except ApiError as exc:
            print(f"demo: the API refused a request: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            # The stack is durable: a job left queued or running would resume at the next start.
            if active is not None:
                client.cancel_run(active) if active.startswith("run_") else client.cancel_tokenizer(active)
                print(f"\ndemo: interrupted; cancelled {active}", file=sys.stderr)
            return 130
        if run.status != "succeeded" or run.metrics is None or run.artifact_dir is None:
            print(f"demo: run {run.id} {run.status}: {run.error}", file=sys.stderr)
            return 1
        print("demo: sampling from the trained model through POST /runs/{id}/generate", flush=True)
        generated = client.generate(run.id, msgspec.convert(SAMPLE_REQUEST, GenerateRequest))
    metrics = run.metrics
    model_dir = Path(run.artifact_dir)
    print()
    print(f"tokenizer id       {tokenizer.id}")
    print(f"run id             {run.id}")
    print(f"val_loss           {metrics.val_loss:.4f} nats/token")
    print(f"val_perplexity     {metrics.val_perplexity:.2f}")
    print(f"val_bits_per_byte  {metrics.val_bits_per_byte:.4f}")
    print(f"parameters         {metrics.n_params}")
    print(f"training time      {metrics.training_seconds:.0f} s  (demo total {time.monotonic() - started:.0f} s)")
    print(f"tokenizer files    {tokenizer.result.artifact_dir}")
    print(f"model files        {model_dir}")
    print()
    print("sample:")
    print(SAMPLE_PROMPT + generated.samples[0].text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
