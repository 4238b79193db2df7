"""The OpenAPI document as the API really behaves, and ``/schema`` rendered offline.

Litestar describes each route's parameters and success response; this module adds what it cannot see:
every error status a route answers (RFC 9457 problem JSON, ``application/problem+json``), the request
bodies (decoded by ``mt_api.body``, so Litestar never saw them) with ``additionalProperties: false``, the
method-specific tokenizer options, the model families (each variant's ``model_options`` its family's options
Struct) and the evaluation ``split`` as tagged unions (``oneOf`` with a ``discriminator``), the formats of
ids, cursors and event ids, and ``?access_token`` on the stream routes. ``/schema`` is Swagger UI served from
the vendored ``static/swagger-ui`` (swagger-ui-dist, see its ``package.json`` and ``LICENSE``): no CDN, no
web fonts.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path

import msgspec
from litestar import Request
from litestar.datastructures import State
from litestar.openapi.plugins import JsonRenderPlugin, OpenAPIRenderPlugin
from litestar.router import Router
from litestar.static_files import create_static_files_router

from mt_api.auth import PUBLIC
from mt_api.errors import PROBLEM_JSON, Problem
from mt_contracts.corpora import CORPUS_NAME_PATTERN, RunEstimate, TokenizerEstimate
from mt_contracts.events import EVENT_KINDS
from mt_contracts.families import DEFAULT_MODEL, FAMILIES
from mt_contracts.ids import EVAL_ID_PATTERN, RUN_ID_PATTERN, TOKENIZER_ID_PATTERN
from mt_contracts.jobs import JobAccepted
from mt_contracts.requests import (
    BPE_ONLY_OPTIONS,
    SENTENCEPIECE_ONLY_OPTIONS,
    EncodeRequest,
    EvaluateRequest,
    ExportRequest,
    GenerateRequest,
    ResumeRunRequest,
    TrainRunRequest,
    TrainTokenizerRequest,
)
from mt_contracts.webhooks import DELIVERY_ID_PATTERN, WEBHOOK_ID_PATTERN, CreateWebhookRequest

Json = dict[str, object]

STATIC_DIR = Path(__file__).resolve().parent / "static" / "swagger-ui"
STATIC_PATH = "/schema/static"
_REF = "#/components/schemas/{name}"
# What ``mt_contracts.events.is_event_id`` accepts (a test checks they agree).
EVENT_ID_PATTERN = r"^[0-9]{1,19}-[0-9]{1,19}$"

# Request body of each operation (method, path template).
BODIES: dict[tuple[str, str], type[msgspec.Struct]] = {
    ("post", "/tokenizers/train"): TrainTokenizerRequest,
    ("post", "/tokenizers/{tokenizer_id}/encode"): EncodeRequest,
    ("post", "/runs/train"): TrainRunRequest,
    ("post", "/runs/{run_id}/resume"): ResumeRunRequest,
    ("post", "/runs/{run_id}/evaluate"): EvaluateRequest,
    ("post", "/runs/{run_id}/generate"): GenerateRequest,
    ("post", "/runs/{run_id}/export"): ExportRequest,
    ("post", "/webhooks"): CreateWebhookRequest,
}
# Error statuses beyond those every route of its kind answers (400 for parameters or a body, 404 for ids in
# the path, 413 and 415 for a body, 401 and 403 with API keys, 503 when Redis is down).
EXTRA_ERRORS: dict[tuple[str, str], tuple[int, ...]] = {
    ("post", "/tokenizers/train"): (),
    ("post", "/tokenizers/{tokenizer_id}/encode"): (409,),
    ("post", "/tokenizers/{tokenizer_id}/cancel"): (409,),
    ("post", "/runs/train"): (404, 409),
    ("post", "/runs/{run_id}/cancel"): (409,),
    ("post", "/runs/{run_id}/resume"): (409,),
    ("post", "/runs/{run_id}/evaluate"): (409,),
    ("post", "/runs/{run_id}/generate"): (409,),
    ("post", "/runs/{run_id}/export"): (409,),
    ("put", "/corpora/{name}"): (409, 412, 413),
    ("delete", "/corpora/{name}"): (409,),
    ("get", "/artifacts/{kind}/{item_id}/download"): (416,),
    ("head", "/artifacts/{kind}/{item_id}/download"): (416,),
}
# Routes that never touch Redis (no 503 from it) and routes open without an API key.
NO_REDIS = frozenset({"/healthz", "/readyz", "/artifacts/{kind}/{item_id}", "/artifacts/{kind}/{item_id}/download"})
PUBLIC_PATHS = frozenset({"/healthz", "/readyz"})
STREAMS = frozenset({"/runs/{run_id}/logs/stream", "/tokenizers/{tokenizer_id}/logs/stream"})
_ID_PATTERNS = {
    "tokenizer_id": TOKENIZER_ID_PATTERN,
    "run_id": RUN_ID_PATTERN,
    "eval_id": EVAL_ID_PATTERN,
    "name": CORPUS_NAME_PATTERN,
    "webhook_id": WEBHOOK_ID_PATTERN,
    "delivery_id": DELIVERY_ID_PATTERN,
}
# The 200 answer of a train route with ?dry_run=true.
DRY_RUNS: dict[str, type[msgspec.Struct]] = {"/tokenizers/train": TokenizerEstimate, "/runs/train": RunEstimate}
UPLOAD = ("put", "/corpora/{name}")
_DESCRIPTIONS = {
    400: "A parameter or body field is unusable: `errors[]` names each (JSON path) with the fix.",
    401: "No API key, or not a configured one (only when API__KEYS or API__READ_ONLY_KEYS is set).",
    403: "A read-only API key on a route that changes something.",
    404: "No such item.",
    409: "The request is valid but the item is not in a state that allows it.",
    412: "If-None-Match: * and the corpus exists.",
    413: "The request body is too large (an upload: past a CORPUS__ limit).",
    415: "The request body is not `application/json`.",
    416: "No requested byte range overlaps the file; `Content-Range: bytes */<size>`.",
    503: "A dependency (Redis, the inference processes) did not answer; nothing was changed, retry shortly.",
}


_SSE_EVENT: Json = {
    "description": "One event: `id` (resume with Last-Event-ID), `event` its kind and the event (a `JobEvent` of "
    "that kind, as `logs.jsonl` holds it) as `data`.",
    "type": "object",
    "properties": {
        "id": {"type": "string", "pattern": EVENT_ID_PATTERN},
        "event": {"enum": sorted(EVENT_KINDS)},
        "data": {"type": "string", "contentMediaType": "application/json"},
    },
    "required": ["id", "event", "data"],
}


def _obj(parent: Mapping[str, object], key: str) -> Json:
    value = parent.get(key)
    if not isinstance(value, dict):
        raise TypeError(f"OpenAPI document: {key!r} is not an object")
    return value


def _problem(status: int) -> Json:
    return {
        "description": _DESCRIPTIONS[status],
        "content": {PROBLEM_JSON: {"schema": {"$ref": _REF.format(name="Problem")}}},
    }


def _variants(base: Json, tag: str, variants: list[tuple[str, list[str], bool, tuple[str, ...]]]) -> tuple[Json, Json]:
    """``base`` split into tagged variants: each ``(name, tag values, tag required, properties not applying)``;
    a property that does not apply may only be absent or ``null`` there, as the API accepts it. Returns the
    components and the ``oneOf`` schema with its discriminator."""
    components: Json = {}
    mapping: dict[str, str] = {}
    for name, values, tag_required, dropped in variants:
        schema = copy.deepcopy(base)
        schema["title"] = name
        properties = _obj(schema, "properties")
        for key in dropped:
            properties[key] = {"type": "null", "description": f"Not with {tag} {' or '.join(values)}: absent or null."}
        properties[tag] = {"enum": values, **({"default": values[0]} if not tag_required else {})}
        required = [key for key in _list(schema.get("required")) if key != tag]
        schema["required"] = [*required, tag] if tag_required else required
        components[name] = schema
        mapping.update({value: _REF.format(name=name) for value in values})
    union: Json = {
        "oneOf": [{"$ref": _REF.format(name=name)} for name, *_ in variants],
        "discriminator": {"propertyName": tag, "mapping": mapping},
    }
    return components, union


def _run_variant(model: str) -> str:
    return f"{model.capitalize()}RunRequest"


def _options_schema(schema: Json) -> Json:
    """A family's options Struct as ``model_options`` takes it: an option is absent or a value, never ``null``
    (the request's JSON type refuses nulls), so each ``None`` the Struct allows leaves the schema."""
    properties = _obj(schema, "properties")
    for name, option in list(properties.items()):
        if not isinstance(option, dict):
            continue
        listed = option.get("anyOf")
        members = (
            [m for m in listed if isinstance(m, dict) and m != {"type": "null"}] if isinstance(listed, list) else []
        )
        rest = {
            key: value for key, value in option.items() if key != "anyOf" and not (key == "default" and value is None)
        }
        properties[name] = (
            {**members[0], **rest} if len(members) == 1 else rest | ({"anyOf": members} if members else {})
        )
    return schema


def _list(value: object) -> list[str]:
    return [str(item) for item in value] if isinstance(value, list) else []


def _request_schemas() -> tuple[Json, dict[tuple[str, str], Json]]:
    """Components for the request bodies and each body operation's schema."""
    types = list(dict.fromkeys(BODIES.values()))
    refs, components = msgspec.json.schema_components(types, ref_template=_REF)
    schemas: Json = dict(components)
    by_type = {kind: json.loads(json.dumps(ref)) for kind, ref in zip(types, refs, strict=True)}
    bodies: dict[tuple[str, str], Json] = {key: by_type[kind] for key, kind in BODIES.items()}

    tokenizer = _obj(schemas, "TrainTokenizerRequest")
    tokens = _obj(_obj(tokenizer, "properties"), "special_tokens")
    tokens["uniqueItems"] = True
    _obj(tokens, "items")["pattern"] = r"\S"
    variants, union = _variants(
        tokenizer,
        "method",
        [
            ("BpeTokenizerRequest", ["bpe"], False, SENTENCEPIECE_ONLY_OPTIONS),
            ("SentencePieceTokenizerRequest", ["sentencepiece"], True, BPE_ONLY_OPTIONS),
            ("RustBpeTokenizerRequest", ["rustbpe"], True, BPE_ONLY_OPTIONS + SENTENCEPIECE_ONLY_OPTIONS),
        ],
    )
    schemas.update(variants)
    bodies["post", "/tokenizers/train"] = union

    # A run's model families, from their registry: each variant's model_options is its family's options Struct.
    families = list(FAMILIES.values())
    option_refs, option_components = msgspec.json.schema_components(
        [family.options_type for family in families], ref_template=_REF
    )
    schemas.update({name: _options_schema(_obj(option_components, name)) for name in option_components})
    run_variants, run_union = _variants(
        _obj(schemas, "TrainRunRequest"),
        "model",
        [(_run_variant(family.name), [family.name], family.name != DEFAULT_MODEL, ()) for family in families],
    )
    for family, ref in zip(families, option_refs, strict=True):
        _obj(_obj(run_variants, _run_variant(family.name)), "properties")["model_options"] = {
            **ref,
            "description": f"The options of model {family.name}; one not sent takes the family's default.",
            "default": {},
        }
    schemas.update(run_variants)
    bodies["post", "/runs/train"] = run_union

    evaluate = _obj(schemas, "EvaluateRequest")
    variants, union = _variants(
        evaluate,
        "split",
        [
            ("SplitEvaluateRequest", ["val", "train"], False, ("corpus_path",)),
            ("CorpusEvaluateRequest", ["corpus"], True, ()),
        ],
    )
    corpus_variant = _obj(variants, "CorpusEvaluateRequest")
    corpus_variant["required"] = [*_list(corpus_variant.get("required")), "corpus_path"]
    _obj(corpus_variant, "properties")["corpus_path"] = _obj(_obj(schemas, "TrainRunRequest"), "properties")[
        "corpus_path"
    ]
    schemas.update(variants)
    bodies["post", "/runs/{run_id}/evaluate"] = union
    return schemas, bodies


def refine(litestar_document: Mapping[str, object]) -> Json:
    """The document Litestar generated, completed as described in the module docstring (a new object)."""
    document: Json = copy.deepcopy(dict(litestar_document))
    components = _obj(document, "components")
    schemas = _obj(components, "schemas")
    _, problem_components = msgspec.json.schema_components([Problem], ref_template=_REF)
    schemas.update(problem_components)
    request_components, bodies = _request_schemas()
    schemas.update(request_components)
    _, answer_components = msgspec.json.schema_components([JobAccepted, *DRY_RUNS.values()], ref_template=_REF)
    schemas.update(answer_components)
    components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer", "description": "An API__KEYS key."}}

    for path, item in _obj(document, "paths").items():
        if not isinstance(item, dict):
            continue
        for method, operation in item.items():
            if isinstance(operation, dict) and method in {"get", "head", "post", "put", "delete"}:
                _refine_operation(path, method, operation, bodies.get((method, path)))
    return document


def _refine_operation(path: str, method: str, operation: Json, body: Json | None) -> None:
    listed = operation.get("parameters")
    parameters: list[Json] = [p for p in listed if isinstance(p, dict)] if isinstance(listed, list) else []
    for parameter in parameters:
        _refine_parameter(path, parameter)
    if path in STREAMS:
        parameters.append(
            {
                "name": "access_token",
                "in": "query",
                "required": False,
                "description": "The API key, for browsers' EventSource, which cannot send Authorization.",
                "schema": {"type": "string"},
            }
        )
    if parameters:
        operation["parameters"] = parameters

    responses = _obj(operation, "responses")
    statuses: set[int] = set(EXTRA_ERRORS.get((method, path), ()))
    if parameters or body is not None:
        statuses.add(400)
    if any(p.get("in") == "path" for p in parameters):
        statuses.add(404)
    if path not in PUBLIC_PATHS:
        statuses.add(401)
        if method in {"post", "put", "delete"}:
            statuses.add(403)
        operation["security"] = [{"bearer": []}, {}]
    if path not in NO_REDIS:
        statuses.add(503)
    if body is not None:
        statuses.update((413, 415))
        required = (method, path) not in {
            ("post", "/runs/{run_id}/resume"),
            ("post", "/runs/{run_id}/evaluate"),
            ("post", "/runs/{run_id}/export"),
            ("post", "/runs/{run_id}/generate"),
        }
        operation["requestBody"] = {"required": required, "content": {"application/json": {"schema": body}}}
    if (method, path) == UPLOAD:
        statuses.add(400)
        operation["requestBody"] = {
            "required": True,
            "description": "A .txt or .jsonl file, or a .tar.gz or .zip of them, as bytes.",
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        }
        responses["200"] = {**_obj(responses, "201"), "description": "Replaced a corpus that no job uses."}
    for status in sorted(statuses):
        responses[str(status)] = _problem(status)
    if method == "post" and path in DRY_RUNS:
        accepted = {"application/json": {"schema": {"$ref": _REF.format(name="JobAccepted")}}}
        _obj(responses, "202")["content"] = accepted
        estimate = {"$ref": _REF.format(name=DRY_RUNS[path].__name__)}
        responses["200"] = {
            "description": "dry_run=true: the estimate; nothing was queued or written.",
            "content": {"application/json": {"schema": estimate}},
        }

    match method, path:
        case "post", _ if "202" in responses:
            _obj(responses, "202")["headers"] = {
                "Location": {
                    "description": "Where the job can be read.",
                    "required": True,
                    "schema": {"type": "string"},
                }
            }
        case "get", "/readyz":
            responses["503"] = {
                "description": "Redis does not answer or a worker kind has no live worker; `reasons` says which.",
                "content": {"application/json": {"schema": {"$ref": _REF.format(name="Health")}}},
            }
        case _, "/artifacts/{kind}/{item_id}/download":
            binary: Json = {"*/*": {"schema": {"description": "The file's bytes, as its media type says."}}}
            ok = "The file (or, for HEAD, its headers)."
            responses["200"] = {"description": ok, "content": binary} if method == "get" else {"description": ok}
            part = "The requested range, or several as multipart/byteranges."
            responses["206"] = {"description": part, "content": binary} if method == "get" else {"description": part}
        case "get", _ if path in STREAMS:
            responses["200"] = {
                "description": "Server-Sent Events until the job's terminal status.",
                "content": {"text/event-stream": {"schema": _SSE_EVENT}},
            }
            responses["204"] = {"description": "Resumed past the terminal status: nothing more will come."}


def _refine_parameter(path: str, parameter: Json) -> None:
    name = parameter.get("name")
    schema: Json = {"type": "string"}
    if parameter.get("in") == "path" and isinstance(name, str) and name in _ID_PATTERNS:
        schema["pattern"] = _ID_PATTERNS[name]
    elif parameter.get("in") == "path" and name == "kind":
        schema["enum"] = ["tokenizers", "models"]
    elif parameter.get("in") == "path" and name == "item_id":
        schema["pattern"] = f"({TOKENIZER_ID_PATTERN})|({RUN_ID_PATTERN})"
    elif name == "cursor":
        schema["pattern"] = TOKENIZER_ID_PATTERN if path.startswith("/tokenizers") else RUN_ID_PATTERN
        parameter["description"] = "next_cursor of the previous page, as it came."
    elif name == "Last-Event-ID":
        schema["pattern"] = EVENT_ID_PATTERN
    else:
        return
    parameter["schema"] = schema


class SwaggerUI(OpenAPIRenderPlugin):
    """``/schema``: Swagger UI from the vendored copy, reading ``/schema/openapi.json``."""

    def __init__(self) -> None:
        favicon = f"<link rel='icon' type='image/png' href='{STATIC_PATH}/favicon-32x32.png'>"
        super().__init__(path="/swagger", favicon=favicon)

    def render(self, request: Request[object, object, State], openapi_schema: dict[str, object]) -> bytes:
        del request, openapi_schema
        return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Model Trainer API</title>
{self.favicon}
<link rel="stylesheet" href="{STATIC_PATH}/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{STATIC_PATH}/swagger-ui-bundle.js"></script>
<script>
SwaggerUIBundle({{url: "/schema/openapi.json", dom_id: "#swagger-ui", deepLinking: true, validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis], layout: "BaseLayout"}});
</script>
</body>
</html>
""".encode()

    def receive_router(self, router: Router) -> None:
        del router  # the assets are served by ``static_router``, outside the schema router's guards


class RefinedJson(JsonRenderPlugin):
    """``/schema/openapi.json``: the refined document, built once."""

    def __init__(self) -> None:
        super().__init__()
        self._document: bytes | None = None

    def render(self, request: Request[object, object, State], openapi_schema: dict[str, object]) -> bytes:
        if self._document is None:
            self._document = self.render_json(request, refine(openapi_schema))
        return self._document


def static_router() -> Router:
    """The vendored Swagger UI assets under ``/schema/static``, open without an API key."""
    return create_static_files_router(
        STATIC_PATH, directories=[STATIC_DIR], include_in_schema=False, opt=PUBLIC, send_as_attachment=False
    )
