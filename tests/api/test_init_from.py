"""``init_from`` checks, as plain functions: a parent of another tokenizer, family or shape is refused with
every differing field named; sizes that fix no weights (a Llama's ``block_size``) may differ."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from mt_api import Conflict, InvalidField, NotFound
from mt_api.validation import check_init_from
from mt_contracts.jobs import RunJob, utcnow
from mt_contracts.requests import InitFrom, TrainRunRequest
from mt_storage.layout import Layout

PARENT = "run_01JDQ8ZQ0000000000000000AA"
BASE: dict[str, object] = {"tokenizer_id": "tok_01JDQ8ZQ0000000000000000AA", "corpus_path": "x.txt"}
LLAMA = {**BASE, "model": "llama", "n_layer": 2, "n_head": 4, "n_embd": 32, "model_options": {"n_kv_head": 2}}


def _request(body: dict[str, object], **changes: object) -> TrainRunRequest:
    return msgspec.convert({**body, **changes, "init_from": {"run_id": PARENT}}, TrainRunRequest)


def _parent(body: dict[str, object]) -> RunJob:
    now = utcnow()
    request = msgspec.convert(body, TrainRunRequest)
    return RunJob(id=PARENT, request=request, status="running", created_at=now, updated_at=now)


def _layout(tmp_path: Path) -> Layout:
    return Layout(artifacts_root=tmp_path / "artifacts", runs_root=tmp_path / "runs", corpus_root=tmp_path)


def _problems(tmp_path: Path, request: TrainRunRequest, parent: RunJob) -> list[tuple[str, str]]:
    with pytest.raises(InvalidField) as refused:
        check_init_from(_layout(tmp_path), request, parent)
    return refused.value.problems


def test_every_differing_shape_is_named_with_the_parents_value(tmp_path: Path) -> None:
    request = _request(LLAMA, n_embd=64, model_options={"intermediate_size": 256})
    assert _problems(tmp_path, request, _parent(LLAMA)) == [
        (
            "model_options.n_kv_head",
            f"init_from run {PARENT} has model_options.n_kv_head=2 and this run model_options.n_kv_head=4: weights "
            "of another shape cannot be loaded; send model_options.n_kv_head=2",
        ),
        (
            "n_embd",
            f"init_from run {PARENT} has n_embd=32 and this run n_embd=64: weights of another shape cannot be "
            "loaded; send n_embd=32",
        ),
        (
            "model_options.intermediate_size",
            f"init_from run {PARENT} has model_options.intermediate_size=128 and this run "
            "model_options.intermediate_size=256: weights of another shape cannot be loaded; send "
            "model_options.intermediate_size=128",
        ),
    ]


def test_another_tokenizer_or_family_is_refused(tmp_path: Path) -> None:
    other = _request(LLAMA, tokenizer_id="tok_01JDQ8ZQ0000000000000000BB")
    assert [field for field, _ in _problems(tmp_path, other, _parent(LLAMA))] == ["tokenizer_id"]
    gpt2 = _request(BASE, n_layer=2, n_head=4, n_embd=32)
    assert _problems(tmp_path, gpt2, _parent(LLAMA)) == [
        ("model", f"init_from run {PARENT} is a 'llama' model; send model='llama'")
    ]


def test_block_size_fixes_gpt2_weights_but_not_llama_weights(tmp_path: Path) -> None:
    gpt2 = {**BASE, "block_size": 64}
    assert [field for field, _ in _problems(tmp_path, _request(gpt2, block_size=128), _parent(gpt2))] == ["block_size"]
    # The shapes agree, so the check reaches the weights: the running parent has no final ones yet.
    with pytest.raises(Conflict, match="has no final weights yet"):
        check_init_from(_layout(tmp_path), _request(LLAMA, block_size=256), _parent(LLAMA))


def test_an_unknown_parent_or_checkpoint_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound) as unknown:
        check_init_from(_layout(tmp_path), _request(LLAMA), None)
    assert unknown.value.field == "init_from.run_id"
    request = msgspec.structs.replace(_request(LLAMA), init_from=InitFrom(run_id=PARENT, checkpoint=5))
    with pytest.raises(NotFound) as missing:
        check_init_from(_layout(tmp_path), request, _parent(LLAMA))
    assert (missing.value.field, missing.value.detail) == (
        "init_from.checkpoint",
        f"run {PARENT} keeps no checkpoint at step 5; kept steps: none",
    )
