"""CLI options built from the request Structs of ``mt_contracts``, so the names, bounds, choices, defaults
and help texts of ``mt ... train`` are the contract's own (one source of truth).

Each field ``n_layer`` becomes ``--n_layer`` (also spelt ``--n-layer``); an option not given is not sent,
so the server applies the contract's default, which the help shows. A JSON-object field (a run's
``model_options``) is one repeated ``--model-option NAME=VALUE``.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping
from typing import TypeVar

import click
import msgspec
import msgspec.inspect as mi

S = TypeVar("S", bound=msgspec.Struct)
OptionType = (
    click.IntRange | click.FloatRange | click.Choice[str] | click.types.StringParamType | click.types.BoolParamType
)


class KeyValue(click.ParamType[tuple[str, object], object]):
    """``NAME=VALUE``: one entry of a JSON-object field; the value is a number or a boolean when it reads as
    one in JSON (``2``, ``0.5``, ``true``), else the text itself."""

    name = "NAME=VALUE"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> tuple[str, object]:
        if isinstance(value, tuple):  # click converts a default again
            return value
        key, equals, text = str(value).partition("=")
        if not equals or not key.strip():
            self.fail(f"{value!r} is not NAME=VALUE", param, ctx)
        return key.strip(), _scalar(text.strip())


def _scalar(text: str) -> object:
    try:
        value: object = msgspec.json.decode(text)
    except msgspec.DecodeError:
        return text
    return value if isinstance(value, int | float) else text


class _Shape(msgspec.Struct, frozen=True):
    """A field's type unwrapped: the inner type, its description, whether ``None`` is allowed."""

    type: mi.Type
    description: str
    optional: bool


def _shape(field_type: mi.Type) -> _Shape:
    description, optional = "", False
    while True:
        if isinstance(field_type, mi.Metadata):
            extra = field_type.extra_json_schema or {}
            text = extra.get("description")
            description = description or (text if isinstance(text, str) else "")
            field_type = field_type.type
        elif isinstance(field_type, mi.UnionType):
            others = [member for member in field_type.types if not isinstance(member, mi.NoneType)]
            optional = optional or len(others) < len(field_type.types)
            if len(others) != 1:
                raise TypeError(f"no CLI option for a union of {others}")
            field_type = others[0]
        else:
            return _Shape(field_type, description, optional)


def _number_type(field_type: mi.IntType | mi.FloatType) -> click.IntRange | click.FloatRange:
    low = field_type.ge if field_type.ge is not None else field_type.gt
    high = field_type.le if field_type.le is not None else field_type.lt
    if isinstance(field_type, mi.IntType):
        return click.IntRange(
            None if low is None else int(low),
            None if high is None else int(high),
            min_open=field_type.gt is not None,
            max_open=field_type.lt is not None,
        )
    return click.FloatRange(low, high, min_open=field_type.gt is not None, max_open=field_type.lt is not None)


def _param_type(field_type: mi.Type) -> OptionType:
    match field_type:
        case mi.IntType() | mi.FloatType():
            return _number_type(field_type)
        case mi.LiteralType(values=values):
            return click.Choice([str(value) for value in values])
        case mi.StrType():
            return click.STRING
        case mi.BoolType():
            return click.BOOL
    raise TypeError(f"no CLI option for a field of type {field_type}")


def _default_text(field: mi.Field) -> str:
    if field.default_factory is not msgspec.NODEFAULT:
        value: object = field.default_factory()
    else:
        value = field.default
    match value:
        case None:
            return "the server's choice"
        case list() | tuple():
            return " ".join(str(item) for item in value)
        case _:
            return str(value)


def _doc_sentence(doc: str, name: str) -> str:
    """The first sentence of a Struct's docstring that names ``name`` (its field doc), else ``""``."""
    text = " ".join(inspect.cleandoc(doc).split())
    for sentence in re.split(r"(?<=\.)\s+", text):
        if f"``{name}``" in sentence:
            return sentence.replace("``", "").rstrip(".")
    return ""


def _decls(name: str, flag: bool) -> list[str]:
    spellings = [name] if "_" not in name else [name, name.replace("_", "-")]
    if flag:
        return [name, *(f"--{spelling}/--no-{spelling}" for spelling in spellings)]
    return [name, *(f"--{spelling}" for spelling in spellings)]


def struct_options(struct: type[msgspec.Struct], skip: frozenset[str] = frozenset()) -> list[click.Parameter]:
    """One option per field of ``struct`` (but those in ``skip``): the field's name, a type that enforces
    its bounds or choices, its description and default in the help; required fields are required options."""
    info = mi.type_info(struct)
    if not isinstance(info, mi.StructType):
        raise TypeError(f"{struct.__name__} is not a Struct")
    params: list[click.Parameter] = []
    for field in info.fields:
        if field.name in skip:
            continue
        shape = _shape(field.type)
        if isinstance(shape.type, mi.StructType):
            # A nested body (``init_from``): one option per field of it, ``--<field>_<its field>``.
            params.extend(_nested_options(field.name, shape.type))
            continue
        help_text = (shape.description or _doc_sentence(struct.__doc__ or "", field.name) or field.name).rstrip(".")
        default = None if field.required else _default_text(field)
        kind = shape.type
        if isinstance(kind, mi.DictType):
            # One entry an option, named in the singular: ``--model-option n_kv_head=2``.
            singular = field.name.removesuffix("s")
            option = click.Option(
                [field.name, f"--{singular.replace('_', '-')}", f"--{singular}"],
                type=KeyValue(),
                multiple=True,
                help=f"{help_text} (NAME=VALUE; repeat the option for each).",
            )
        elif isinstance(kind, mi.ListType):
            option = click.Option(
                _decls(field.name, False),
                type=_param_type(kind.item_type),
                multiple=True,
                help=f"{help_text} (repeat the option for each item).",
                show_default=default,
            )
        elif isinstance(kind, mi.TupleType):
            option = click.Option(
                _decls(field.name, False),
                type=_param_type(kind.item_types[0]),
                nargs=len(kind.item_types),
                default=None,
                help=f"{help_text} ({len(kind.item_types)} values).",
                show_default=default,
            )
        elif isinstance(kind, mi.BoolType):
            option = click.Option(_decls(field.name, True), default=None, help=f"{help_text}.", show_default=default)
        else:
            option = click.Option(
                _decls(field.name, False),
                type=_param_type(kind),
                required=field.required,
                help=f"{help_text}.",
                show_default=default,
            )
        params.append(option)
    return params


def _nested_options(prefix: str, info: mi.StructType) -> list[click.Parameter]:
    """Options for the fields of the nested Struct at field ``prefix``; none is required on the command line
    (the nested body is optional), the contract checks what is given."""
    params: list[click.Parameter] = []
    for field in info.fields:
        shape = _shape(field.type)
        text = (shape.description or field.name).rstrip(".")
        params.append(
            click.Option(_decls(f"{prefix}_{field.name}", False), type=_param_type(shape.type), help=f"{text}.")
        )
    return params


def _object_fields(struct: type[msgspec.Struct]) -> list[str]:
    """The fields of ``struct`` that are JSON objects (``dict``), given as ``NAME=VALUE`` pairs."""
    info = mi.type_info(struct)
    if not isinstance(info, mi.StructType):
        return []
    return [field.name for field in info.fields if isinstance(_shape(field.type).type, mi.DictType)]


def _nested_fields(struct: type[msgspec.Struct]) -> dict[str, tuple[str, ...]]:
    """The fields of ``struct`` that are nested Structs, with the names of their own fields."""
    info = mi.type_info(struct)
    nested: dict[str, tuple[str, ...]] = {}
    if isinstance(info, mi.StructType):
        for field in info.fields:
            kind = _shape(field.type).type
            if isinstance(kind, mi.StructType):
                nested[field.name] = tuple(sub.name for sub in kind.fields)
    return nested


def struct_fields(struct: type[msgspec.Struct]) -> frozenset[str]:
    """The names of ``struct``'s fields."""
    return frozenset(struct.__struct_fields__)


def build_request(struct: type[S], values: Mapping[str, object]) -> S:
    """``struct`` from the options given (``None`` or an empty repeat: not given), validated client-side
    against the contract's bounds.

    Raises:
        click.BadParameter: a value the contract refuses, naming the option.
    """
    given: dict[str, object] = {
        name: list(value) if isinstance(value, tuple) else value
        for name, value in values.items()
        if name in struct.__struct_fields__ and value is not None and value != ()
    }
    for name in _object_fields(struct):
        pairs = values.get(name)
        given.pop(name, None)
        if isinstance(pairs, tuple) and pairs:
            given[name] = {str(key): value for key, value in (pair for pair in pairs if isinstance(pair, tuple))}
    for name, subfields in _nested_fields(struct).items():
        inner = {sub: values[f"{name}_{sub}"] for sub in subfields if values.get(f"{name}_{sub}") is not None}
        if inner:
            given[name] = inner
    try:
        return msgspec.convert(given, struct)
    except msgspec.ValidationError as exc:
        raise click.UsageError(f"{exc}: see --help for the option's bounds") from exc
