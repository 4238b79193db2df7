"""The client's surface against the app's real OpenAPI document: every operation has a method on both
clients and an ``mt`` command; the options of ``mt ... train`` are the request Structs' own; the dependency
rule contracts <- client holds."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import click
import msgspec
import pytest

from mt_api.app import create_app
from mt_client import AsyncClient, Client
from mt_client.calls import OPERATIONS
from mt_client.cli import COMMANDS, EXIT_USAGE, cli, run
from mt_client.options import build_request
from mt_contracts.requests import InitFrom, TrainRunRequest, TrainTokenizerRequest
from mt_contracts.settings import ApiSettings

TOK = "tok_01JDQ8ZQ0000000000000000AA"
RUN = "run_01JDQ8ZQ0000000000000000AA"

ROOT = Path(__file__).resolve().parents[2]
METHODS = ("get", "post", "put", "patch", "delete", "head")


def _operations(settings: ApiSettings) -> set[tuple[str, str]]:
    schema = create_app(settings).openapi_schema
    found = set()
    for path, item in (schema.paths or {}).items():
        if path.startswith("/schema"):
            continue
        for method in METHODS:
            if getattr(item, method) is not None:
                found.add((method.upper(), path))
    return found


def _command(path: str) -> click.Command | None:
    command: click.Command | None = cli
    for name in path.split():
        if not isinstance(command, click.Group):
            return None
        command = command.commands.get(name)
    return command


def test_every_operation_has_a_client_method_and_a_cli_command(api_settings: ApiSettings) -> None:
    operations = _operations(api_settings)
    assert len(operations) >= 28
    assert operations - OPERATIONS.keys() == set(), "operations without a client method"
    assert operations - COMMANDS.keys() == set(), "operations without an mt command"
    for operation in operations:
        name = OPERATIONS[operation]
        sync_method, async_method = getattr(Client, name, None), getattr(AsyncClient, name, None)
        assert callable(sync_method), (operation, name)
        assert callable(async_method), (operation, name)
        assert not inspect.iscoroutinefunction(sync_method), name
        assert inspect.iscoroutinefunction(async_method) or inspect.isasyncgenfunction(async_method), name
        assert _command(COMMANDS[operation]) is not None, (operation, COMMANDS[operation])
    # Nothing listed that the API does not have.
    assert OPERATIONS.keys() == operations
    assert COMMANDS.keys() == operations


def test_train_options_are_the_contract_fields() -> None:
    for group, struct in (("tokenizers", TrainTokenizerRequest), ("runs", TrainRunRequest)):
        command = _command(f"{group} train")
        assert command is not None
        names = {param.name for param in command.params} - {"detach", "as_json", "dry_run"}
        # A nested body (a run's init_from) is one option per field of it; model_options one repeated option.
        nested = {"init_from": {"init_from_run_id", "init_from_checkpoint"}}
        assert names == {option for field in struct.__struct_fields__ for option in nested.get(field, {field})}
    runs_train = _command("runs train")
    assert runs_train is not None
    n_layer = next(param for param in runs_train.params if param.name == "n_layer")
    assert isinstance(n_layer, click.Option)
    assert n_layer.opts == ["--n_layer", "--n-layer"]
    assert isinstance(n_layer.type, click.IntRange)
    assert (n_layer.type.min, n_layer.type.max) == (1, 48)
    assert n_layer.show_default == "4"
    assert n_layer.help is not None and "transformer blocks" in n_layer.help
    values = {"tokenizer_id": TOK, "corpus_path": "x.txt", "init_from_run_id": RUN, "init_from_checkpoint": 20}
    assert build_request(TrainRunRequest, values).init_from == InitFrom(run_id=RUN, checkpoint=20)
    assert build_request(TrainRunRequest, {**values, "init_from_run_id": None, "init_from_checkpoint": None}) == (
        TrainRunRequest(tokenizer_id=TOK, corpus_path="x.txt")
    )
    corpus = next(param for param in runs_train.params if param.name == "corpus_path")
    assert corpus.required
    model_options = next(param for param in runs_train.params if param.name == "model_options")
    assert isinstance(model_options, click.Option) and model_options.multiple
    assert model_options.opts == ["--model-option", "--model_option"]
    assert model_options.help is not None and "llama: n_kv_head, intermediate_size" in model_options.help


def test_model_options_are_name_value_pairs() -> None:
    runs_train = _command("runs train")
    assert runs_train is not None
    args = ["--tokenizer_id", TOK, "--corpus_path", "x.txt", "--model", "llama", "--model-option", "n_kv_head=2"]
    args += ["--model_option", "intermediate_size=96", "--model-option", "act=silu"]
    with runs_train.make_context("train", args) as context:
        request = build_request(TrainRunRequest, context.params)
    assert request.model_options == {"n_kv_head": 2, "intermediate_size": 96, "act": "silu"}
    assert build_request(TrainRunRequest, {"tokenizer_id": TOK, "corpus_path": "x.txt", "model_options": ()}) == (
        TrainRunRequest(tokenizer_id=TOK, corpus_path="x.txt")
    )


def test_build_request_sends_only_what_was_given() -> None:
    request = build_request(
        TrainTokenizerRequest, {"corpus_path": "a.txt", "vocab_size": 512, "special_tokens": ("<a>",), "seed": None}
    )
    assert request == TrainTokenizerRequest(corpus_path="a.txt", vocab_size=512, special_tokens=["<a>"])
    run_request = build_request(
        TrainRunRequest, {"tokenizer_id": "tok_01HZY7V3J9T6S4W0XKQ0A1B2C3", "corpus_path": "a.txt", "betas": (0.8, 0.9)}
    )
    assert run_request.betas == (0.8, 0.9)
    assert msgspec.json.decode(msgspec.json.encode(run_request), type=TrainRunRequest) == run_request


def test_bad_option_is_a_usage_error_before_any_request(capsys: pytest.CaptureFixture[str]) -> None:
    # Port 9 (discard) is never our API: a request would be exit 3, a refused option is exit 2.
    code = run(["--url", "http://127.0.0.1:9", "runs", "train", "--tokenizer_id", "tok_x", "--corpus_path", "a"])
    assert code == EXIT_USAGE
    assert "tokenizer_id" in capsys.readouterr().err
    assert run(["--url", "http://127.0.0.1:9", "runs", "train", "--corpus_path", "a", "--n_layer", "49"]) == 2
    args = ["--url", "http://127.0.0.1:9", "runs", "train", "--tokenizer_id", TOK, "--corpus_path", "a"]
    assert run([*args, "--model-option", "n_kv_head"]) == EXIT_USAGE
    assert "'n_kv_head' is not NAME=VALUE" in capsys.readouterr().err


def _imports(package: Path) -> set[str]:
    found: set[str] = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    return found


def test_dependency_rule() -> None:
    ours = {"mt_contracts", "mt_storage", "mt_client", "mt_api", "mt_tokenizer_worker", "mt_trainer_worker"}
    assert _imports(ROOT / "libs" / "client" / "mt_client") & ours == {"mt_contracts", "mt_client"}
    for service in (ROOT / "services").iterdir():
        assert "mt_client" not in _imports(service), service.name
    for lib in ("contracts", "storage"):
        assert "mt_client" not in _imports(ROOT / "libs" / lib), lib
