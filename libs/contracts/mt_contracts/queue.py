"""What travels through arq: task names shared by the gateway and the workers, and the job serializer.

arq pickles jobs by default; we send MessagePack instead (no pickle on the wire). A job's only argument
is our job id: the worker reads the request from the job record, the one source of truth.
"""

from __future__ import annotations

import msgspec

TRAIN_TOKENIZER_TASK = "train_tokenizer"
TRAIN_MODEL_TASK = "train_model"
# Runs on the training queue, like training: an evaluation also needs a whole worker machine.
EVALUATE_MODEL_TASK = "evaluate_model"
# A trainer worker joining another's torchrun run on several nodes; the job id is
# ``<run_id>:<rendezvous_id>:<node_rank>`` (mt_trainer_worker.launchers.torchrun).
JOIN_RUN_TASK = "join_run"

_encoder = msgspec.msgpack.Encoder(enc_hook=repr)
_decoder = msgspec.msgpack.Decoder(dict[str, object])


def serialize_job(job: dict[str, object]) -> bytes:
    """Encode an arq job or result dict; values msgpack cannot hold (exceptions) become their ``repr``."""
    return _encoder.encode(job)


def deserialize_job(data: bytes) -> dict[str, object]:
    """Decode what ``serialize_job`` wrote."""
    return _decoder.decode(data)
