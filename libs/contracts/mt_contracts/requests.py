"""HTTP request bodies. Strict: unknown fields are rejected, every number is bounded, so a typo in a
request is a 400 naming the field rather than a silently ignored option."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from mt_contracts.families import DEFAULT_MODEL, OPTIONS, ModelName, ModelOptions
from mt_contracts.ids import RUN_ID_PATTERN, TOKENIZER_ID_PATTERN

END_OF_TEXT = "<|endoftext|>"
DEFAULT_MAX_STEPS = 2000
PAD = "<|pad|>"

CorpusPath = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=4096,
        description="Path of a .txt or .jsonl file, or a directory of them, relative to APP__CORPUS_ROOT.",
        examples=["tinyshakespeare.txt"],
    ),
]
SpecialToken = Annotated[str, Meta(min_length=1, max_length=64)]


TokenizerMethodName = Literal["bpe", "sentencepiece", "rustbpe"]
EncodingErrors = Literal["strict", "replace"]
BPE_ONLY_OPTIONS = ("min_frequency", "max_token_length")
SENTENCEPIECE_ONLY_OPTIONS = (
    "model_type",
    "character_coverage",
    "byte_fallback",
    "split_digits",
    "normalization",
    "max_sentence_length",
    "input_sentence_size",
)


class TrainTokenizerRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``POST /tokenizers/train``: train a tokenizer on a corpus with ``method`` ``bpe`` (byte-level BPE, HF
    ``tokenizers``), ``sentencepiece`` (``model_type`` ``unigram`` or ``bpe``) or ``rustbpe`` (byte-level BPE
    after GPT-4's regex pre-tokenisation, trained by karpathy's ``rustbpe``; it takes no method options).

    ``vocab_size`` counts every token: for ``bpe`` the 256 byte symbols, the learned merges and the special
    tokens. ``<|endoftext|>`` is always the first special token (documents are separated by it in training
    data); it is added when ``special_tokens`` does not list it. Method-specific options are ``null`` when
    not sent and take the method's default; sending one to the other method is a 400 naming the field.
    ``holdout_fraction`` of the corpus's non-blank lines, chosen by ``seed``, is held out of training and used
    for the statistics; on a corpus larger than 1 MiB / ``holdout_fraction`` the share is lowered so that
    about 1 MiB is held out, spread over the whole corpus.
    """

    corpus_path: CorpusPath
    method: TokenizerMethodName = "bpe"
    vocab_size: Annotated[int, Meta(ge=8, le=1_000_000)] = 4096
    special_tokens: Annotated[list[SpecialToken], Meta(max_length=256)] = msgspec.field(
        default_factory=lambda: [END_OF_TEXT, PAD]
    )
    seed: Annotated[int, Meta(ge=0, le=2**31 - 1)] = 1337
    holdout_fraction: Annotated[
        float, Meta(ge=0.0, le=0.5, description="Share of lines held out of training for the statistics.")
    ] = 0.01
    text_field: Annotated[
        str, Meta(min_length=1, max_length=256, description="Field of each .jsonl record that holds its text.")
    ] = "text"
    encoding_errors: Annotated[
        EncodingErrors,
        Meta(description="strict: invalid UTF-8 fails the job; replace: it becomes U+FFFD and is counted."),
    ] = "strict"
    # bpe only
    min_frequency: Annotated[int, Meta(ge=1, le=1_000_000, description="bpe only; default 2.")] | None = None
    max_token_length: (
        Annotated[int, Meta(ge=2, le=1024, description="bpe only: the longest token, in bytes (2: pairs).")] | None
    ) = None
    # sentencepiece only
    model_type: (
        Annotated[Literal["unigram", "bpe"], Meta(description="sentencepiece only; default unigram.")] | None
    ) = None
    character_coverage: (
        Annotated[float, Meta(gt=0.0, le=1.0, description="sentencepiece only; default 0.9995.")] | None
    ) = None
    byte_fallback: Annotated[bool, Meta(description="sentencepiece only; default true.")] | None = None
    split_digits: Annotated[bool, Meta(description="sentencepiece only; default false.")] | None = None
    normalization: (
        Annotated[Literal["nfkc", "identity"], Meta(description="sentencepiece only; default identity (lossless).")]
        | None
    ) = None
    max_sentence_length: (
        Annotated[
            int, Meta(ge=16, le=1 << 20, description="sentencepiece only: bytes; longer lines are split. Default 4192.")
        ]
        | None
    ) = None
    input_sentence_size: (
        Annotated[
            int,
            Meta(ge=0, le=2**31 - 1, description="sentencepiece only: lines sampled; 0 means all. Default 2000000."),
        ]
        | None
    ) = None

    def options_for_other_method(self) -> list[str]:
        """Names of the options sent that do not apply to ``method``."""
        other = {
            "bpe": SENTENCEPIECE_ONLY_OPTIONS,
            "sentencepiece": BPE_ONLY_OPTIONS,
            "rustbpe": BPE_ONLY_OPTIONS + SENTENCEPIECE_ONLY_OPTIONS,
        }[self.method]
        return [name for name in other if getattr(self, name) is not None]


def with_end_of_text(special_tokens: list[str]) -> list[str]:
    """``special_tokens`` with ``<|endoftext|>`` first (added when missing), their order otherwise kept."""
    return [END_OF_TEXT, *(token for token in special_tokens if token != END_OF_TEXT)]


LauncherName = Literal["local", "torchrun", "k8s-trainjob"]
LAUNCHER_DESCRIPTION = (
    "local: one process; torchrun: nnodes x nproc_per_node processes (DistributedDataParallel) started by "
    "torchrun on trainer workers; k8s-trainjob: the same processes as a Kubeflow Trainer TrainJob."
)
CompileChoice = Literal["auto", "on", "off"]
# Measured on 2 cores (docs/benchmarks.md, training): compiling takes 20-30 s the first time a shape is seen
# and about 3 s from the compile cache, and gains 5-19% tokens/s: it pays back within about 1,000 steps cold.
# auto waits for 2,000, so a short experiment never waits on the compiler.
COMPILE_AUTO_MIN_STEPS = 2000
COMPILE_DESCRIPTION = (
    "torch.compile the model for training: on, off, or auto (on for runs of at least "
    f"{COMPILE_AUTO_MIN_STEPS} steps, where the compile time pays for itself). Falls back to eager, with a "
    "warning in the log, when the compiler is unavailable."
)
MODEL_DESCRIPTION = f"The model family: {' or '.join(OPTIONS)} (mt_contracts.families)."
MODEL_OPTIONS_DESCRIPTION = (
    "The options of the family `model` names, by name (empty: the family's defaults): "
    + "; ".join(f"{model}: {', '.join(options) or 'none'}" for model, options in OPTIONS.items())
    + "."
)
MAX_NODES = 64
MAX_NPROC_PER_NODE = 64


class TrainRunRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``POST /runs/train``: train a language model of family ``model`` (one of ``mt_contracts.families``;
    ``gpt2`` when not sent) with a finished tokenizer.

    Sizes follow GPT-2's names in every family: ``n_layer`` transformer blocks of width ``n_embd`` with
    ``n_head`` attention heads over a context of ``block_size`` tokens. One optimiser step sees
    ``batch_size * block_size * gradient_accumulation_steps * world_size`` tokens (``batch_size`` is per
    process; ``world_size = nnodes * nproc_per_node``, 1 with the ``local`` launcher). The budget is
    ``max_steps`` steps, or ``max_tokens`` training tokens (give one; 2,000 steps when neither is given). The
    learning rate warms up linearly for ``warmup_steps``, then follows a cosine decay to ``min_learning_rate``
    at the last step
    (Loshchilov & Hutter, SGDR, 2017). AdamW's ``betas`` and ``weight_decay`` (on matrices only) follow
    Loshchilov & Hutter 2019. ``val_fraction`` of the corpus (its tail, cut at a line boundary) is held out.
    A checkpoint is written every ``checkpoint_interval`` steps and at the end; the last
    ``keep_checkpoints`` are kept. ``device`` ``auto`` picks CUDA when present; ``precision`` ``bf16`` runs
    the forward pass under bfloat16 autocast. ``model_options`` holds the family's own options (its options
    Struct, e.g. ``llama``'s ``n_kv_head`` and ``intermediate_size``; an option not sent takes the family's
    default); an option the family does not take, of another type or out of its bounds is a 400 naming
    ``model_options.<name>``. ``init_from`` starts from another run's weights. ``compile``
    ``on`` trains a ``torch.compile``d model (``auto``: runs of 2,000 steps or more).
    """

    tokenizer_id: Annotated[str, Meta(pattern=TOKENIZER_ID_PATTERN)]
    corpus_path: CorpusPath
    model: Annotated[ModelName, Meta(description=MODEL_DESCRIPTION)] = DEFAULT_MODEL
    model_options: Annotated[ModelOptions, Meta(description=MODEL_OPTIONS_DESCRIPTION)] = msgspec.field(
        default_factory=dict
    )
    n_layer: Annotated[int, Meta(ge=1, le=48)] = 4
    n_head: Annotated[int, Meta(ge=1, le=64)] = 4
    n_embd: Annotated[int, Meta(ge=8, le=4096)] = 128
    block_size: Annotated[int, Meta(ge=8, le=8192)] = 128
    dropout: Annotated[float, Meta(ge=0.0, le=0.9)] = 0.0
    batch_size: Annotated[int, Meta(ge=1, le=4096)] = 16
    max_steps: Annotated[int, Meta(ge=1, le=10_000_000)] | None = None
    max_tokens: Annotated[int, Meta(ge=1, le=10**13)] | None = None
    gradient_accumulation_steps: Annotated[int, Meta(ge=1, le=1024)] = 1
    learning_rate: Annotated[float, Meta(gt=0.0, le=1.0)] = 2e-3
    min_learning_rate: Annotated[float, Meta(ge=0.0, le=1.0)] = 2e-4
    warmup_steps: Annotated[int, Meta(ge=0, le=10_000_000)] = 100
    weight_decay: Annotated[float, Meta(ge=0.0, le=1.0)] = 0.1
    betas: tuple[Annotated[float, Meta(ge=0.0, lt=1.0)], Annotated[float, Meta(ge=0.0, lt=1.0)]] = (0.9, 0.95)
    grad_clip: Annotated[float, Meta(ge=0.0, le=1000.0)] = 1.0
    eval_interval: Annotated[int, Meta(ge=1, le=10_000_000)] = 250
    eval_iters: Annotated[int, Meta(ge=1, le=10_000)] = 20
    val_fraction: Annotated[float, Meta(gt=0.0, le=0.5)] = 0.1
    seed: Annotated[int, Meta(ge=0, le=2**32 - 1)] = 1337
    threads: Annotated[int, Meta(ge=0, le=1024, description="Torch intra-op threads; 0 means all cores.")] = 0
    checkpoint_interval: Annotated[int, Meta(ge=1, le=10_000_000)] = 250
    keep_checkpoints: Annotated[int, Meta(ge=1, le=100)] = 3
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["fp32", "bf16"] = "fp32"
    compile: Annotated[CompileChoice, Meta(description=COMPILE_DESCRIPTION)] = "auto"
    init_from: InitFrom | None = None
    launcher: Annotated[LauncherName, Meta(description=LAUNCHER_DESCRIPTION)] = "local"
    nnodes: Annotated[int, Meta(ge=1, le=MAX_NODES, description="Machines (torchrun, k8s-trainjob).")] = 1
    nproc_per_node: Annotated[
        int, Meta(ge=1, le=MAX_NPROC_PER_NODE, description="Training processes per machine (torchrun, k8s-trainjob).")
    ] = 1

    @property
    def world_size(self) -> int:
        """Training processes in all: ``nnodes * nproc_per_node``; each draws ``batch_size`` windows a micro-step."""
        return self.nnodes * self.nproc_per_node

    @property
    def tokens_per_step(self) -> int:
        """Training tokens one optimiser step consumes, over every process of the run."""
        return self.batch_size * self.block_size * self.gradient_accumulation_steps * self.world_size

    @property
    def compiled(self) -> bool:
        """Whether the training forward and backward passes run through ``torch.compile``."""
        return self.compile == "on" or (self.compile == "auto" and self.total_steps >= COMPILE_AUTO_MIN_STEPS)

    @property
    def total_steps(self) -> int:
        """The step budget: ``max_steps``, else ``ceil(max_tokens / tokens_per_step)``, else 2,000."""
        if self.max_steps is not None:
            return self.max_steps
        if self.max_tokens is not None:
            return max(1, -(-self.max_tokens // self.tokens_per_step))
        return DEFAULT_MAX_STEPS


# The llama options that run requests held as top-level fields before ``model_options``: records written then
# (run jobs, model manifests, run specs) hold them, ``null`` when not sent. Frozen: later options never were.
LEGACY_MODEL_OPTIONS = ("n_kv_head", "intermediate_size")


def upgrade_legacy_run_requests(value: object) -> object | None:
    """``value`` (decoded JSON) with each run request in the shape before ``model_options`` (an object holding
    ``tokenizer_id`` and a ``LEGACY_MODEL_OPTIONS`` key) in today's: its non-null legacy fields moved into
    ``model_options``. ``None`` when ``value`` holds no such request."""
    upgraded, changed = _upgrade(value)
    return upgraded if changed else None


def _upgrade(value: object) -> tuple[object, bool]:
    if isinstance(value, list):
        items = [_upgrade(item) for item in value]
        return [item for item, _ in items], any(changed for _, changed in items)
    if not isinstance(value, dict):
        return value, False
    upgraded: dict[str, object] = {}
    changed = False
    for key, item in value.items():
        upgraded[str(key)], item_changed = _upgrade(item)
        changed = changed or item_changed
    if "tokenizer_id" in upgraded and any(name in upgraded for name in LEGACY_MODEL_OPTIONS):
        legacy = {name: upgraded.pop(name, None) for name in LEGACY_MODEL_OPTIONS}
        upgraded["model_options"] = {name: option for name, option in legacy.items() if option is not None}
        changed = True
    return upgraded, changed


class ResumeRunRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``POST /runs/{id}/resume``: continue a failed or cancelled run from its last checkpoint, optionally
    with a new step budget (``max_steps`` replaces ``max_steps``/``max_tokens``; the cosine schedule then
    decays to the new last step), on another ``launcher`` or world size (``nnodes``, ``nproc_per_node``): the
    checkpoint records its data position in tokens, so the run continues the same stream of batches."""

    max_steps: Annotated[int, Meta(ge=1, le=10_000_000)] | None = None
    launcher: LauncherName | None = None
    nnodes: Annotated[int, Meta(ge=1, le=MAX_NODES)] | None = None
    nproc_per_node: Annotated[int, Meta(ge=1, le=MAX_NPROC_PER_NODE)] | None = None


class EncodeRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``POST /tokenizers/{id}/encode``: text to encode with a trained tokenizer, for inspection."""

    text: Annotated[str, Meta(max_length=100_000, description="At most 100,000 characters.")]


EvalSplit = Literal["val", "train", "corpus"]
CheckpointStep = Annotated[
    int,
    Meta(ge=0, le=10_000_000, description="Step of a kept checkpoint (GET /runs/{id}/checkpoints); default: final."),
]
MAX_NEW_TOKENS = 1024
MAX_SAMPLES = 16


class InitFrom(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``init_from`` of a run request: start from run ``run_id``'s final weights, or from its kept
    ``checkpoint``. The run must use the same tokenizer and model shapes; only the weights are taken (the
    optimizer, schedule and data position start afresh)."""

    run_id: Annotated[str, Meta(pattern=RUN_ID_PATTERN, description="The run whose weights this run starts from.")]
    checkpoint: CheckpointStep | None = None


class EvaluateRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``POST /runs/{id}/evaluate``: score a text with the run's final weights or a kept ``checkpoint``.

    ``split`` ``val`` and ``train`` are the run's own held-out and training splits (the same cut as in
    training); ``corpus`` is the text at ``corpus_path`` (same path rules as training; required with
    ``corpus`` and refused otherwise). ``max_tokens`` scores only the first that many tokens.
    """

    split: EvalSplit = "val"
    corpus_path: CorpusPath | None = None
    checkpoint: CheckpointStep | None = None
    max_tokens: Annotated[int, Meta(ge=1, le=10**12, description="Score at most this many tokens.")] | None = None


class GenerateRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``POST /runs/{id}/generate``: sample ``num_samples`` continuations of ``prompt``.

    ``temperature`` 0 is greedy decoding; ``top_k`` 0 and ``top_p`` 1 turn those filters off (top-p is the
    nucleus sampling of Holtzman et al. 2020). The same ``seed`` gives the same text; without one a seed is
    drawn and returned. An empty ``prompt`` starts from ``<|endoftext|>``. Sampling stops at
    ``max_new_tokens`` or at ``<|endoftext|>``.
    """

    prompt: Annotated[str, Meta(max_length=100_000, description="At most 100,000 characters.")] = ""
    max_new_tokens: Annotated[int, Meta(ge=1, le=MAX_NEW_TOKENS)] = 64
    temperature: Annotated[float, Meta(ge=0.0, le=100.0)] = 1.0
    top_k: Annotated[int, Meta(ge=0, le=1_000_000)] = 0
    top_p: Annotated[float, Meta(gt=0.0, le=1.0)] = 1.0
    seed: Annotated[int, Meta(ge=0, le=2**32 - 1)] | None = None
    num_samples: Annotated[int, Meta(ge=1, le=MAX_SAMPLES)] = 1
    checkpoint: CheckpointStep | None = None


class ExportRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``POST /runs/{id}/export``: the ``save_pretrained`` folder of the final weights (the model folder
    itself) or of a kept ``checkpoint`` (written once under ``export/step-<n>/``)."""

    checkpoint: CheckpointStep | None = None
