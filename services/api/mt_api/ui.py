"""The web dashboard under ``/ui``: server-rendered page shells (Jinja templates in ``templates/ui``) and one
small script per page (``static/ui``) that reads and writes through the REST API itself, with the key the
person entered kept in the browser's session storage. Charts are uPlot (vendored in ``static/ui/uplot``, see its
``package.json`` and ``LICENSE``). Nothing is loaded from another host: every ``/ui`` response carries a
Content-Security-Policy that allows this origin only.

The pages and their assets are open without a key (they hold no data); ``/ui/access`` says what the key sent
may do, so that a page can hide what a read-only key cannot do. The launch forms are built from the request
Structs (``form_fields``): names, defaults, limits and descriptions come from the contract (a run's
``model_options`` from each model family's options Struct), and the server's field errors are shown beside the
inputs they name.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import msgspec
from litestar import Request, Response, get
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Redirect, Template
from litestar.router import Router
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig

from mt_api.auth import PUBLIC, bearer_key, key_scope
from mt_api.services import Services
from mt_contracts.families import FAMILIES
from mt_contracts.jobs import JOB_STATUSES
from mt_contracts.requests import TrainRunRequest, TrainTokenizerRequest

PACKAGE = Path(__file__).resolve().parent
TEMPLATES = PACKAGE / "templates"
ASSETS = PACKAGE / "static"
UPLOT_VERSION = "1.6.32"  # static/ui/uplot/package.json; vendored with `npm pack uplot@1.6.32`
# Only this origin: scripts and styles from files (no inline code), the API for fetch and EventSource,
# blob: for downloads made with a key (a fetched file handed to the browser).
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
    "font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
MODEL_OPTIONS = "model_options"
FieldKind = Literal["int", "float", "str", "bool", "choice", "list", "pair"]


class FormField(msgspec.Struct, frozen=True, kw_only=True):
    """One input of a launch form, from one field of a request Struct.

    ``kind`` says how the page reads the input back into JSON (``list``: one item a line; ``pair``: two numbers
    separated by a comma); ``optional`` fields may be left empty (then not sent: the server's default applies);
    ``default`` is the value shown at first, as text; ``limits`` the bounds in words (``1 to 48``); ``families``
    the model families that take it (a ``model_options`` input; empty for a field of every request).
    """

    name: str
    kind: FieldKind
    required: bool
    optional: bool
    default: str
    choices: list[str]
    limits: str
    pattern: str
    description: str
    families: list[str] = msgspec.field(default_factory=list)

    @property
    def hint(self) -> str:
        """What to type, in words: the kind, limits, what empty means and the contract's description."""
        match self.kind:
            case "choice":
                what = "one of " + ", ".join(self.choices)
            case "pair":
                what = "two numbers, comma-separated"
            case "list":
                what = "one a line"
            case "bool":
                what = "true or false"
            case "int":
                what = "integer"
            case "float":
                what = "number"
            case "str":
                what = "text"
        parts = [what + (f", {self.limits}" if self.limits else "")]
        if self.optional:
            parts.append("empty: the server's default")
        if self.families:
            parts.append("only with model " + " or ".join(self.families))
        text = "; ".join(parts)
        return f"{text}. {self.description}" if self.description else text


class Access(msgspec.Struct, frozen=True):
    """``GET /ui/access``: ``keys`` when the server has API keys; ``write`` when the key sent (or no key, on a
    server without keys) may change things."""

    keys: bool
    write: bool


def _bounds(info: msgspec.inspect.IntType | msgspec.inspect.FloatType) -> str:
    low = f">= {info.ge}" if info.ge is not None else f"> {info.gt}" if info.gt is not None else ""
    high = f"<= {info.le}" if info.le is not None else f"< {info.lt}" if info.lt is not None else ""
    if info.ge is not None and info.le is not None:
        return f"{info.ge} to {info.le}"
    return " and ".join(part for part in (low, high) if part)


def _length(info: msgspec.inspect.StrType | msgspec.inspect.ListType) -> str:
    if info.min_length is not None and info.max_length is not None:
        return f"length {info.min_length} to {info.max_length}"
    return f"length <= {info.max_length}" if info.max_length is not None else ""


def _shown(value: object) -> str:
    if value is None or value is msgspec.NODEFAULT:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "\n".join(str(item) for item in value)
    if isinstance(value, tuple):
        return ", ".join(str(item) for item in value)
    return str(value)


def _field(field: msgspec.inspect.Field) -> FormField:
    info = field.type
    description = ""
    optional = False
    if isinstance(info, msgspec.inspect.UnionType):
        rest = [member for member in info.types if not isinstance(member, msgspec.inspect.NoneType)]
        optional = len(rest) < len(info.types)
        info = rest[0]
    if isinstance(info, msgspec.inspect.Metadata):
        schema = info.extra_json_schema or {}
        described = schema.get("description")
        description = described if isinstance(described, str) else ""
        info = info.type
    kind: FieldKind
    choices: list[str] = []
    limits = pattern = ""
    match info:
        case msgspec.inspect.BoolType():
            kind = "bool"
        case msgspec.inspect.IntType():
            kind, limits = "int", _bounds(info)
        case msgspec.inspect.FloatType():
            kind, limits = "float", _bounds(info)
        case msgspec.inspect.StrType():
            kind, limits, pattern = "str", _length(info), info.pattern or ""
        case msgspec.inspect.LiteralType():
            kind, choices = "choice", [str(value) for value in info.values]
        case msgspec.inspect.ListType():
            kind, limits = "list", _length(info)
        case msgspec.inspect.TupleType():
            items = [item for item in info.item_types if isinstance(item, msgspec.inspect.FloatType)]
            kind = "pair"
            limits = "; ".join(dict.fromkeys(_bounds(item) for item in items))
        case _:
            raise TypeError(f"form field {field.name}: no input for {info!r}")
    default: object = field.default
    if field.default_factory is not msgspec.NODEFAULT:
        default = field.default_factory()
    return FormField(
        name=field.name,
        kind=kind,
        required=field.required,
        optional=optional,
        default=_shown(default),
        choices=choices,
        limits=limits,
        pattern=pattern,
        description=description,
    )


def form_fields(
    request_type: type[msgspec.Struct], model_options: Mapping[str, type[msgspec.Struct]] | None = None
) -> list[FormField]:
    """The inputs of a form for ``request_type``, in the Struct's field order; its ``model_options`` field, a
    JSON object, is one input per field of each family's options Struct in ``model_options`` (family name to
    Struct).

    Raises:
        TypeError: a field's type has no input kind here (a new kind of field in a request contract).
    """
    info = msgspec.inspect.type_info(request_type)
    if not isinstance(info, msgspec.inspect.StructType):
        raise TypeError(f"{request_type.__name__} is not a Struct")
    fields: list[FormField] = []
    for field in info.fields:
        if field.name == MODEL_OPTIONS and model_options is not None:
            fields.extend(_option_fields(model_options))
            continue
        nested = _nested(field.type)
        if nested is None:
            fields.append(_field(field))
            continue
        # A nested body (a run's init_from) is one input per field of it, named ``<field>.<subfield>`` (the
        # page nests them again); all optional: the body is sent when one of them is filled in.
        for sub in nested.fields:
            one = _field(sub)
            fields.append(msgspec.structs.replace(one, name=f"{field.name}.{sub.name}", required=False, optional=True))
    return fields


def _option_fields(families: Mapping[str, type[msgspec.Struct]]) -> list[FormField]:
    """One optional input ``model_options.<option>`` per option of the families (the page nests them, and sends
    only those filled in), labelled with the families that take it; an option two families share is one input
    (one JSON key), described by the first."""
    inputs: dict[str, FormField] = {}
    for family, options_type in families.items():
        info = msgspec.inspect.type_info(options_type)
        if not isinstance(info, msgspec.inspect.StructType):
            raise TypeError(f"{options_type.__name__} is not a Struct")
        for option in info.fields:
            name = f"{MODEL_OPTIONS}.{option.name}"
            known = inputs.get(name)
            if known is None:
                one = _field(option)
                inputs[name] = msgspec.structs.replace(one, name=name, required=False, optional=True, families=[family])
            else:
                inputs[name] = msgspec.structs.replace(known, families=[*known.families, family])
    return list(inputs.values())


def _nested(info: msgspec.inspect.Type) -> msgspec.inspect.StructType | None:
    """The Struct type of an optional or plain nested-body field, else ``None``."""
    if isinstance(info, msgspec.inspect.UnionType):
        structs = [member for member in info.types if isinstance(member, msgspec.inspect.StructType)]
        return structs[0] if len(structs) == 1 else None
    return info if isinstance(info, msgspec.inspect.StructType) else None


FORMS = {
    "tokenizer": form_fields(TrainTokenizerRequest),
    "run": form_fields(TrainRunRequest, {name: family.options_type for name, family in FAMILIES.items()}),
}


def _page(name: str, title: str, **context: object) -> Template:
    return Template(template_name=f"ui/{name}.html", context={"page": name, "title": title, **context})


@get("/", include_in_schema=False)
async def home() -> Redirect:
    return Redirect(path="/ui/runs")


def _listing(path: str, name: str, title: str, **context: object) -> HTTPRouteHandler:
    """The handler of a page that needs nothing from the request (a list; compare reads its query itself),
    rendered with ``context``."""

    async def page() -> Template:
        return _page(name, title, **context)

    return get(path, include_in_schema=False, name=f"ui-{name}")(page)


@get("/runs/{run_id:str}", include_in_schema=False)
async def run_page(run_id: FromPath[str]) -> Template:
    return _page("run", run_id, item_id=run_id)


@get("/tokenizers/{tokenizer_id:str}", include_in_schema=False)
async def tokenizer_page(tokenizer_id: FromPath[str]) -> Template:
    return _page("tokenizer", tokenizer_id, item_id=tokenizer_id)


@get("/launch", include_in_schema=False)
async def launch_page() -> Template:
    return _page("launch", "Launch", forms=FORMS)


@get("/ui/access", include_in_schema=False)
async def access(request: Request[object, object, State], services: NamedDependency[Services]) -> Access:
    """What the key sent may do (the key guard has already refused a missing or unknown one)."""
    api = services.settings.api
    full, read_only = api.key_list, api.read_only_key_list
    if not (full or read_only):
        return Access(keys=False, write=True)
    sent = bearer_key(request.headers.get("authorization", ""))
    scope = key_scope(sent, [key.encode() for key in full], [key.encode() for key in read_only])
    return Access(keys=True, write=scope == "write")


HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


async def _secured(response: Response[object]) -> Response[object]:
    response.headers.update(HEADERS)
    return response


def ui_router() -> Router:
    """The dashboard's pages and assets under ``/ui`` (open without a key), each answer with the policy."""
    assets = create_static_files_router(
        "/static", directories=[ASSETS / "ui"], include_in_schema=False, send_as_attachment=False
    )
    return Router(
        "/ui",
        route_handlers=[
            home,
            _listing("/runs", "runs", "Runs", statuses=JOB_STATUSES),  # the filter's choices: the contract's
            _listing("/compare", "compare", "Compare runs"),
            _listing("/tokenizers", "tokenizers", "Tokenizers"),
            _listing("/corpora", "corpora", "Corpora"),
            run_page,
            tokenizer_page,
            launch_page,
            assets,
        ],
        opt=PUBLIC,
        after_request=_secured,  # pages and assets alike (static files take no response_headers)
    )


def template_config() -> TemplateConfig[JinjaTemplateEngine]:
    """Jinja over ``templates/`` (autoescaped)."""
    return TemplateConfig(directory=TEMPLATES, engine=JinjaTemplateEngine)


def ui_routes() -> list[Router | HTTPRouteHandler]:
    """What ``create_app`` registers for the dashboard (a new router each time, as for ``/schema``'s assets)."""
    return [ui_router(), access]
