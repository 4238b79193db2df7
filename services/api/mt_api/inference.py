"""What the gateway's inference processes run: text generation and checkpoint export, with the loaded
models kept between calls. Imported only inside those child processes (see ``inference_pool``): it is the
gateway's one module that imports torch and touches HF's loosely typed loaders.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections import OrderedDict
from importlib.metadata import version
from pathlib import Path

import msgspec
import torch
from tokenizers import Tokenizer
from transformers import PreTrainedModel

from mt_contracts import codec
from mt_contracts.evaluation import Weights
from mt_contracts.generation import (
    ExportCall,
    Exported,
    ExportManifest,
    GenerateCall,
    Generated,
    GenerateResponse,
    InferenceCall,
    InferenceFailed,
    InferenceOutcome,
    Sample,
)
from mt_contracts.jobs import utcnow
from mt_contracts.requests import END_OF_TEXT, GenerateRequest
from mt_storage.child import ChildFailure
from mt_storage.files import atomic_move, atomic_write_bytes, file_entries
from mt_storage.layout import MANIFEST
from mt_storage.torch_weights import load_model

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
_call_decoder: msgspec.json.Decoder[InferenceCall] = msgspec.json.Decoder(InferenceCall)


class LoadedModel:
    """A model in inference mode with its tokenizer; ``context`` is its window in tokens."""

    def __init__(self, model: PreTrainedModel, tokenizer: Tokenizer, end_of_text: int, context: int) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.end_of_text = end_of_text
        self.context = context


class ModelCache:
    """Up to ``capacity`` loaded models by run and weights, least recently used evicted first. Final
    weights and kept checkpoints never change once written, so an entry never goes stale."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[tuple[str, str], LoadedModel] = OrderedDict()

    def get(self, weights: Weights) -> LoadedModel:
        """The model of ``weights``, loaded on first use.

        Raises:
            OSError: a weights, config or tokenizer file cannot be read.
        """
        key = (weights.run_id, weights.cache_key)
        loaded = self._items.get(key)
        if loaded is None:
            loaded = load(weights)
            self._items[key] = loaded
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        self._items.move_to_end(key)
        return loaded


_cache = ModelCache(4)


def configure(cache_size: int, threads: int) -> None:
    """Set this process's model cache size and torch threads (called once when the process starts)."""
    torch.set_num_threads(threads)
    global _cache  # noqa: PLW0603 - one cache per inference process
    _cache = ModelCache(cache_size)


def load(weights: Weights) -> LoadedModel:
    """The model of ``weights`` (``mt_storage.torch_weights``) on the CPU, with its tokenizer.

    Raises:
        ChildFailure: ``weights_missing`` or ``weights_unsupported``. OSError: the tokenizer is unreadable.
        ValueError: the tokenizer has no end-of-text token.
    """
    model = load_model(weights)
    tokenizer = Tokenizer.from_file(weights.tokenizer_path)
    end_of_text = tokenizer.token_to_id(END_OF_TEXT)
    if end_of_text is None:
        raise ValueError(f"the tokenizer of run {weights.run_id} has no {END_OF_TEXT} token")
    context = model.config.max_position_embeddings  # n_positions in GPT-2 (an alias HF maps)
    if not isinstance(context, int):
        raise TypeError("the model config has no integer max_position_embeddings")
    return LoadedModel(model, tokenizer, end_of_text, context)


def handle(payload: bytes) -> bytes:
    """Run one JSON-encoded ``InferenceCall``; returns the JSON-encoded ``InferenceOutcome`` (errors become
    ``InferenceFailed``, so the caller never unpickles an exception)."""
    outcome: InferenceOutcome
    try:
        match _call_decoder.decode(payload):
            case GenerateCall() as call:
                outcome = Generated(generate(_cache.get(call.weights), call))
            case ExportCall() as call:
                outcome = Exported(export(call))
    except ChildFailure as exc:
        outcome = InferenceFailed(code=exc.code, message=exc.message)
    except OSError as exc:
        outcome = InferenceFailed(code="weights_missing", message=f"the weights could not be read: {exc}")
    except Exception as exc:  # noqa: BLE001 - every failure must reach the caller as an answer
        outcome = InferenceFailed(code="internal_error", message=f"{type(exc).__name__}: {exc}")
    return codec.encode(outcome)


def sample_next(logits: torch.Tensor, request: GenerateRequest, generator: torch.Generator) -> torch.Tensor:
    """The next token of each row: ``logits`` ``(n, vocab_size)`` float32 to ``(n,)`` int64.

    ``temperature`` 0 takes the argmax; otherwise logits are divided by it, cut to the ``top_k`` largest
    and to the smallest set whose probability reaches ``top_p`` (nucleus sampling, Holtzman et al. 2020),
    and one token drawn with ``generator``.
    """
    if request.temperature == 0:
        return logits.argmax(dim=-1)
    # Shifted so the largest is 0: a tiny temperature then sends the others to -inf, never inf - inf (NaN).
    logits = (logits - logits.amax(dim=-1, keepdim=True)) / request.temperature
    if 0 < request.top_k < logits.shape[-1]:
        kth = torch.topk(logits, request.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if request.top_p < 1.0:
        ordered, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(ordered, dim=-1)
        # Drop a token when the tokens before it already reach top_p (the first always stays).
        drop = torch.cumsum(probs, dim=-1) - probs >= request.top_p
        drop[:, 0] = False  # a top_p below float32's smallest value would otherwise drop it too
        ordered = ordered.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, ordered)
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def generate(loaded: LoadedModel, call: GenerateCall) -> GenerateResponse:
    """Sample ``num_samples`` continuations of the prompt together, each ending at ``max_new_tokens`` or
    at the end-of-text token. The context is cropped to the model's last ``context`` tokens."""
    request = call.request
    tokenizer = loaded.tokenizer
    prompt_ids = tokenizer.encode(request.prompt, add_special_tokens=False).ids or [loaded.end_of_text]
    started = time.monotonic()
    generator = torch.Generator().manual_seed(call.seed)
    ids = torch.tensor([prompt_ids] * request.num_samples, dtype=torch.int64)
    ended = torch.zeros(request.num_samples, dtype=torch.bool)
    with torch.no_grad():
        for _ in range(request.max_new_tokens):
            logits = loaded.model(input_ids=ids[:, -loaded.context :]).logits
            if not isinstance(logits, torch.Tensor):
                raise TypeError(f"the model returned {type(logits).__name__} logits")
            chosen = sample_next(logits[:, -1, :].float(), request, generator)
            chosen = chosen.masked_fill(ended, loaded.end_of_text)
            ids = torch.cat([ids, chosen[:, None]], dim=1)
            ended |= chosen == loaded.end_of_text
            if bool(ended.all()):
                break
    samples = [_sample(tokenizer, prompt_ids, row[len(prompt_ids) :].tolist(), loaded.end_of_text) for row in ids]
    return GenerateResponse(
        run_id=call.weights.run_id,
        checkpoint=call.weights.checkpoint,
        step=call.weights.step,
        seed=call.seed,
        prompt_tokens=len(prompt_ids),
        samples=samples,
        seconds=time.monotonic() - started,
    )


def _sample(tokenizer: Tokenizer, prompt_ids: list[int], new_ids: list[int], end_of_text: int) -> Sample:
    ended = end_of_text in new_ids
    if ended:
        new_ids = new_ids[: new_ids.index(end_of_text)]
    # Decode prompt and continuation together and cut the prompt's text off: decoders that drop a leading
    # space (SentencePiece's) or join bytes across tokens then give exactly the continuation's text.
    prefix = tokenizer.decode(prompt_ids, skip_special_tokens=False)
    whole = tokenizer.decode(prompt_ids + new_ids, skip_special_tokens=False)
    text = whole[len(prefix) :] if whole.startswith(prefix) else tokenizer.decode(new_ids, skip_special_tokens=False)
    return Sample(text=text, tokens=len(new_ids), finish_reason="end_of_text" if ended else "length")


def export(call: ExportCall) -> ExportManifest:
    """Write checkpoint ``call.weights`` as a ``save_pretrained`` folder at ``call.export_dir``: the model
    files and the tokenizer files, each moved in atomically, ``manifest.json`` last. An export whose
    manifest exists is returned as it is."""
    out = Path(call.export_dir)
    if (out / MANIFEST).is_file():
        return codec.decode((out / MANIFEST).read_bytes(), ExportManifest)
    weights = call.weights
    if weights.checkpoint is None:
        raise ValueError("the final weights are exported already: they are the model folder")
    model = _cache.get(weights).model
    out.mkdir(parents=True, exist_ok=True)
    tokenizer_dir = Path(weights.tokenizer_path).parent
    with tempfile.TemporaryDirectory(dir=out, prefix=".staging-") as staging:
        staged = Path(staging)
        model.save_pretrained(staged, safe_serialization=True)
        for name in TOKENIZER_FILES:
            shutil.copyfile(tokenizer_dir / name, staged / name)
        names = sorted(p.name for p in staged.iterdir() if p.is_file())
        for name in names:
            atomic_move(staged / name, out / name)
    manifest = ExportManifest(
        run_id=weights.run_id,
        tokenizer_id=weights.tokenizer_id,
        checkpoint=weights.checkpoint,
        files=file_entries(out, names),
        created_at=utcnow(),
        versions={name: version(name) for name in ("torch", "transformers", "tokenizers")},
    )
    atomic_write_bytes(out / MANIFEST, codec.encode(manifest))
    return manifest
