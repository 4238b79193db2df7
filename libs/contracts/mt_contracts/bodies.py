"""Decoding client request bodies: strict (msgspec ``strict=True``: no string to number, number to bool or
float to int coercion) and complete (every missing, unknown and invalid field in one answer).

msgspec stops at the first error, so when a body does not decode, a second pass checks each top-level field
on its own against its declared type (``msgspec.convert`` with the same strictness) and lists them all, each
with its JSON path (``vocab_size``, ``betas[1]``, ``special_tokens[3]``) and what to send instead.

Errors::

    InvalidBody    the body is not JSON, not an object, or some fields are missing, unknown or invalid
"""

from __future__ import annotations

import difflib
from typing import Generic, TypeVar

import msgspec

T = TypeVar("T", bound=msgspec.Struct)

_AT = " - at `$"


class BodyProblem(msgspec.Struct, frozen=True):
    """One unusable part of a body: ``field`` is its JSON path (empty for the body as a whole)."""

    field: str
    message: str


class InvalidBody(ValueError):
    """The body does not decode into its request type; ``problems`` lists every reason, in body order."""

    def __init__(self, problems: list[BodyProblem]) -> None:
        super().__init__("; ".join(f"{p.field or 'body'}: {p.message}" for p in problems))
        self.problems = problems


class BodyDecoder(Generic[T]):
    """A reusable strict JSON decoder for the request Struct ``struct_type``.

    An empty body decodes as ``{}`` when ``struct_type`` has no required field (``allow_empty``).
    """

    def __init__(self, struct_type: type[T]) -> None:
        self.struct_type = struct_type
        self._decoder = msgspec.json.Decoder(struct_type, strict=True)
        self._fields = msgspec.structs.fields(struct_type)
        self.allow_empty = not any(field.required for field in self._fields)

    def decode(self, data: bytes) -> T:
        """The request.

        Raises:
            InvalidBody: the body is not JSON, or not an object of ``struct_type``'s fields.
        """
        if not data.strip() and self.allow_empty:
            data = b"{}"
        try:
            return self._decoder.decode(data)
        except msgspec.ValidationError as exc:
            try:
                # The typed decoder stops at the first mismatch, before it has read the whole document.
                raw = msgspec.json.decode(data)
            except msgspec.DecodeError as malformed:
                raise _not_json(data, malformed) from exc
            raise InvalidBody(self._problems(raw, exc)) from exc
        except msgspec.DecodeError as exc:
            raise _not_json(data, exc) from exc

    def _problems(self, raw: object, error: msgspec.ValidationError) -> list[BodyProblem]:
        if not isinstance(raw, dict):
            return [BodyProblem("", f"the body must be a JSON object, not {_json_kind(raw)}")]
        known = {field.encode_name: field for field in self._fields}
        problems: list[BodyProblem] = []
        for name, value in raw.items():
            field = known.get(name)
            if field is None:
                problems.append(BodyProblem(name, _unknown(name, list(known))))
                continue
            try:
                msgspec.convert(value, field.type, strict=True)
            except msgspec.ValidationError as exc:
                problems.extend(_field_problems(name, field.type, value, exc))
        problems.extend(
            BodyProblem(name, "missing required field")
            for name, field in known.items()
            if field.required and name not in raw
        )
        # A rule no single field shows (none in today's requests): msgspec's own first error.
        return problems or [BodyProblem(*_split(str(error)))]


def _field_problems(name: str, field_type: object, value: object, error: msgspec.ValidationError) -> list[BodyProblem]:
    """The problems of one top-level field; in a JSON object field (``model_options``) each bad value on its
    own, named ``<field>.<key>`` (msgspec's path says ``[...]`` for a value of an object, not its key)."""
    message, _, path = str(error).partition(_AT)
    if path.startswith("[...]") and isinstance(value, dict):
        found: list[BodyProblem] = []
        for key, item in value.items():
            try:
                msgspec.convert({key: item}, field_type, strict=True)
            except msgspec.ValidationError as exc:
                text, _, inner = str(exc).partition(_AT)
                found.append(
                    BodyProblem(f"{name}.{key}{inner.removeprefix('[...]').rstrip('`')}", with_fix(text, item))
                )
        if found:
            return found
    return [BodyProblem(name + path.rstrip("`"), with_fix(message, value))]


def _not_json(data: bytes, error: msgspec.DecodeError) -> InvalidBody:
    detail = str(error) if data.strip() else "the body is empty"
    return InvalidBody([BodyProblem("", f"the body is not valid JSON ({detail}); send a JSON object")])


def _split(message: str) -> tuple[str, str]:
    text, _, path = message.partition(_AT)
    return path.rstrip("`").lstrip("."), text


def _json_kind(value: object) -> str:
    match value:
        case list():
            return "an array"
        case dict():
            return "an object"
        case str():
            return "a string"
        case bool():
            return "a boolean"
        case int() | float():
            return "a number"
        case None:
            return "null"
    return type(value).__name__


def _unknown(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"the fields are {', '.join(known)}"
    return f"unknown field; remove it ({hint})"


def with_fix(message: str, value: object) -> str:
    """msgspec's message, with the fix when the value is of the wrong JSON kind."""
    if message.startswith("Expected `") and ", got `" in message:
        wanted = message.removeprefix("Expected `").partition("`")[0]
        return f"{message}: send {_article(wanted)} as JSON, not {_json_kind(value)}"
    return message


def _article(wanted: str) -> str:
    names = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string", "array": "an array"}
    return names.get(wanted, f"a value of type {wanted}")
