"""Records written before a run request's family options moved into ``model_options`` (``n_kv_head`` and
``intermediate_size`` at the top of the request, ``null`` when not sent) decode in today's shape wherever a
request is embedded; a client body in that shape is still refused."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest

from mt_contracts import codec
from mt_contracts.bodies import BodyDecoder, BodyProblem, InvalidBody
from mt_contracts.jobs import RunJob
from mt_contracts.requests import TrainRunRequest
from mt_contracts.training import RunSpec

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
RUN_ID = "run_01JDQ8ZQ0000000000000000AA"
LLAMA = TrainRunRequest(
    tokenizer_id="tok_01JDQ8ZQ0000000000000000AA",
    corpus_path="x.txt",
    model="llama",
    n_layer=2,
    model_options={"n_kv_head": 2},
)


class Strict(msgspec.Struct, forbid_unknown_fields=True):
    """A record of no fields that refuses unknown ones."""


def legacy(request: TrainRunRequest, n_kv_head: int | None, intermediate_size: int | None) -> dict[str, object]:
    """``request`` as the encoder wrote it before ``model_options``: every field, the llama ones flat."""
    body = msgspec.to_builtins(request)
    assert isinstance(body, dict)
    del body["model_options"]
    return {**body, "n_kv_head": n_kv_head, "intermediate_size": intermediate_size}


def test_a_run_record_of_the_old_shape_decodes_into_the_new_one() -> None:
    today = RunJob(id=RUN_ID, request=LLAMA, status="succeeded", created_at=NOW, updated_at=NOW)
    record = msgspec.to_builtins(today)
    assert isinstance(record, dict)
    old = msgspec.json.encode({**record, "request": legacy(LLAMA, 2, None)})
    assert b'"n_kv_head":2' in old and b"model_options" not in old
    assert codec.decode(old, RunJob) == today
    # A GPT-2 run of then held both as null: it has no options.
    gpt2 = TrainRunRequest(tokenizer_id=LLAMA.tokenizer_id, corpus_path="x.txt")
    old_gpt2 = msgspec.json.encode({**record, "request": legacy(gpt2, None, None)})
    assert codec.decode(old_gpt2, RunJob) == msgspec.structs.replace(today, request=gpt2)


def test_a_run_spec_of_the_old_shape_decodes_into_the_new_one() -> None:
    spec = RunSpec(
        run_id=RUN_ID,
        tokenizer_id=LLAMA.tokenizer_id,
        request=msgspec.structs.replace(LLAMA, model_options={"n_kv_head": 2, "intermediate_size": 96}),
        tokenizer_dir="/t",
        corpus_files=["/c/x.txt"],
        model_dir="/m",
        work_dir="/w",
    )
    record = msgspec.to_builtins(spec)
    assert isinstance(record, dict)
    old = {**record, "request": legacy(LLAMA, 2, 96)}
    assert codec.decode(msgspec.json.encode(old), RunSpec) == spec


def test_a_record_wrong_for_another_reason_still_fails() -> None:
    record = msgspec.to_builtins(RunJob(id=RUN_ID, request=LLAMA, created_at=NOW, updated_at=NOW))
    assert isinstance(record, dict)
    old = msgspec.json.encode({**record, "status": "sleeping", "request": legacy(LLAMA, 2, None)})
    with pytest.raises(msgspec.ValidationError, match=r"Invalid enum value 'sleeping' - at `\$.status`"):
        codec.decode(old, RunJob)
    # An object without tokenizer_id is no run request: a legacy key in it stays unknown.
    with pytest.raises(msgspec.ValidationError, match=r"Object contains unknown field `n_kv_head`"):
        codec.decode(b'{"n_kv_head": 2}', Strict)


def test_a_client_body_of_the_old_shape_is_refused() -> None:
    with pytest.raises(InvalidBody) as refused:
        BodyDecoder(TrainRunRequest).decode(msgspec.json.encode(legacy(LLAMA, 2, None)))
    assert refused.value.problems == [
        BodyProblem("n_kv_head", "unknown field; remove it (did you mean 'n_head'?)"),
        BodyProblem(
            "intermediate_size",
            "unknown field; remove it (the fields are " + ", ".join(TrainRunRequest.__struct_fields__) + ")",
        ),
    ]
