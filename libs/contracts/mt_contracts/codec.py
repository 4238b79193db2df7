"""The one JSON codec: a shared encoder; msgspec caches each type's decoding plan on first use. Decoding
reads records of older shapes too (``mt_contracts.requests.upgrade_legacy_run_requests``), so a stored run
stays readable after its request's shape changed."""

from __future__ import annotations

from typing import TypeVar

import msgspec

from mt_contracts.requests import upgrade_legacy_run_requests

T = TypeVar("T")

_encoder = msgspec.json.Encoder()


def encode(value: object) -> bytes:
    """Encode a Struct (or any msgspec-supported value) to compact JSON bytes."""
    return _encoder.encode(value)


def decode(data: bytes | str, value_type: type[T]) -> T:
    """Decode JSON into ``value_type``; a run request in the shape before ``model_options`` (in a record
    written then) is upgraded to today's first.

    Raises:
        msgspec.ValidationError: the JSON does not match the type (the message gives the path).
        msgspec.DecodeError: the bytes are not JSON.
    """
    try:
        return msgspec.json.decode(data, type=value_type)
    except msgspec.ValidationError:
        # Only a record that does not decode pays for the second look.
        raw: object = msgspec.json.decode(data)
        upgraded = upgrade_legacy_run_requests(raw)
        if upgraded is None:
            raise
        return msgspec.json.decode(_encoder.encode(upgraded), type=value_type)
