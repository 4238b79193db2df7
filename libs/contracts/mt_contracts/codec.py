"""The one JSON codec: a shared encoder; msgspec caches each type's decoding plan on first use."""

from __future__ import annotations

from typing import TypeVar

import msgspec

T = TypeVar("T")

_encoder = msgspec.json.Encoder()


def encode(value: object) -> bytes:
    """Encode a Struct (or any msgspec-supported value) to compact JSON bytes."""
    return _encoder.encode(value)


def decode(data: bytes | str, value_type: type[T]) -> T:
    """Decode JSON into ``value_type``.

    Raises:
        msgspec.ValidationError: the JSON does not match the type (the message gives the path).
        msgspec.DecodeError: the bytes are not JSON.
    """
    return msgspec.json.decode(data, type=value_type)
