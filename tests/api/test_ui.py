"""The dashboard's server side: page shells and assets open without a key under a strict security policy,
``/ui/access`` for each kind of key, and launch forms built from the request contracts."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import get_args

import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from redis.asyncio import Redis

from mt_api.app import create_app
from mt_api.ui import ASSETS, CONTENT_SECURITY_POLICY, FORMS, UPLOT_VERSION, FormField, form_fields
from mt_contracts import codec
from mt_contracts.families.llama import LlamaOptions
from mt_contracts.jobs import JobStatus, RunJob, RunPage
from mt_contracts.requests import TrainRunRequest
from mt_contracts.settings import ApiSettings, GatewaySettings
from mt_storage.jobs import run_jobs
from mt_storage.lifecycle import Lifecycle

PAGES = [
    "/ui/runs",
    "/ui/runs/run_01JDQ8ZQ0000000000000000AA",
    "/ui/compare",
    "/ui/tokenizers",
    "/ui/tokenizers/tok_01JDQ8ZQ0000000000000000AA",
    "/ui/corpora",
    "/ui/launch",
]


@pytest.fixture
async def keyed(api_settings: ApiSettings, redis: Redis) -> AsyncIterator[AsyncTestClient[Litestar]]:
    settings = msgspec.structs.replace(api_settings, api=GatewaySettings(keys="full-key", read_only_keys="read-key"))
    async with AsyncTestClient(app=create_app(settings)) as client:
        yield client


@pytest.fixture
async def open_client(api_settings: ApiSettings, redis: Redis) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(app=create_app(api_settings)) as client:
        yield client


async def test_pages_and_their_assets_need_no_key_and_come_from_this_origin(keyed: AsyncTestClient[Litestar]) -> None:
    for path in PAGES:
        page = await keyed.get(path)
        assert page.status_code == 200, path
        assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert page.headers["content-type"].startswith("text/html")
        assert "<script>" not in page.text and " style=" not in page.text  # nothing inline: the policy forbids it
        assets = re.findall(r'(?:src|href)="([^"#]+)"', page.text)
        assert all(asset.startswith("/") for asset in assets), assets
        for asset in (a for a in assets if a.startswith("/ui/static/")):
            answer = await keyed.get(asset)
            assert answer.status_code == 200, asset
            assert answer.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert (await keyed.get("/ui", follow_redirects=False)).headers["location"] == "/ui/runs"
    # The data behind the pages still needs a key, and the pages are no part of the API's document.
    assert (await keyed.get("/runs")).status_code == 401
    document = (await keyed.get("/schema/openapi.json", headers={"Authorization": "Bearer read-key"})).json()
    assert [path for path in document["paths"] if path.startswith("/ui")] == []


async def test_access_says_what_the_key_may_do(
    keyed: AsyncTestClient[Litestar], open_client: AsyncTestClient[Litestar]
) -> None:
    assert (await keyed.get("/ui/access")).status_code == 401
    assert (await keyed.get("/ui/access", headers={"Authorization": "Bearer wrong"})).status_code == 401
    full = await keyed.get("/ui/access", headers={"Authorization": "Bearer full-key"})
    assert full.json() == {"keys": True, "write": True}
    read = await keyed.get("/ui/access", headers={"Authorization": "Bearer read-key"})
    assert read.json() == {"keys": True, "write": False}
    assert (await open_client.get("/ui/access")).json() == {"keys": False, "write": True}


async def test_the_runs_filter_offers_every_status_and_stalled_lists_the_stalled_runs(
    open_client: AsyncTestClient[Litestar], api_settings: ApiSettings, redis: Redis
) -> None:
    page = (await open_client.get("/ui/runs")).text
    select = re.search(r'<select id="status-filter">(.*?)</select>', page, re.S)
    assert select is not None
    options = re.findall(r'<option value="([^"]*)">', select.group(1))
    assert options == ["", *get_args(JobStatus)]
    assert "stalled" in options

    # Two running runs, one whose worker stopped renewing its lease: stalled is shown, never stored.
    stall_after = api_settings.app.stall_after_seconds
    lifecycle = Lifecycle(run_jobs(redis), "run", stall_after)
    now = datetime.now(UTC)
    request = TrainRunRequest(tokenizer_id="tok_01JDQ8ZQ0000000000000000AA", corpus_path="small.txt")
    fresh, silent = "run_01JDQ8ZQ0000000000000000AA", "run_01JDQ8ZQ0000000000000000AB"
    for run_id in (fresh, silent):
        await lifecycle.create(RunJob(id=run_id, request=request, created_at=now, updated_at=now))
        assert await lifecycle.start(run_id) is not None
    old = now - timedelta(seconds=stall_after + 5)

    def silenced(record: RunJob) -> RunJob:
        return msgspec.structs.replace(record, heartbeat_at=old, started_at=old)

    await lifecycle.store.transact(silent, silenced)

    async def listed(status: str) -> list[tuple[str, str]]:
        answer = await open_client.get("/runs", params={"status": status})
        assert answer.status_code == 200, answer.text
        return [(run.id, run.status) for run in codec.decode(answer.content, RunPage).items]

    assert await listed("stalled") == [(silent, "stalled")]
    assert await listed("running") == [(silent, "stalled"), (fresh, "running")]
    assert await listed("queued") == []


def test_run_form_follows_the_contract() -> None:
    fields = {field.name: field for field in FORMS["run"]}
    # Every field of the contract, a nested body (init_from) as one optional input per field of it, and
    # model_options as one per option of any family, labelled with the families that take it.
    nested = {
        "init_from": ["init_from.run_id", "init_from.checkpoint"],
        "model_options": ["model_options.n_kv_head", "model_options.intermediate_size"],
    }
    names = [field.name for field in msgspec.structs.fields(TrainRunRequest)]
    assert list(fields) == [name for field in names for name in nested.get(field, [field])]
    assert fields["model_options.n_kv_head"] == FormField(
        name="model_options.n_kv_head",
        kind="int",
        required=False,
        optional=True,
        default="",
        choices=[],
        limits="1 to 64",
        pattern="",
        description="Key/value heads (grouped-query attention); default n_head.",
        families=["llama"],
    )
    assert fields["model_options.n_kv_head"].hint == (
        "integer, 1 to 64; empty: the server's default; only with model llama. Key/value heads (grouped-query "
        "attention); default n_head."
    )
    # An option two families share is one input (one JSON key), labelled with both.
    shared = form_fields(TrainRunRequest, {"llama": LlamaOptions, "other": LlamaOptions})
    assert [(field.name, field.families) for field in shared if field.families] == [
        ("model_options.n_kv_head", ["llama", "other"]),
        ("model_options.intermediate_size", ["llama", "other"]),
    ]
    assert (fields["init_from.run_id"].kind, fields["init_from.run_id"].optional) == ("str", True)
    assert not fields["init_from.run_id"].required and fields["init_from.checkpoint"].kind == "int"
    assert fields["n_layer"] == FormField(
        name="n_layer",
        kind="int",
        required=False,
        optional=False,
        default="4",
        choices=[],
        limits="1 to 48",
        pattern="",
        description="",
    )
    assert fields["tokenizer_id"].required and fields["tokenizer_id"].pattern
    assert fields["max_steps"].optional and fields["max_steps"].default == ""
    assert fields["learning_rate"].limits == "> 0.0 and <= 1.0"
    assert (fields["betas"].kind, fields["betas"].default) == ("pair", "0.9, 0.95")
    assert (fields["device"].kind, fields["device"].choices) == ("choice", ["auto", "cpu", "cuda"])
    assert fields["threads"].hint == "integer, 0 to 1024. Torch intra-op threads; 0 means all cores."
    tokenizer = {field.name: field for field in FORMS["tokenizer"]}
    assert (tokenizer["special_tokens"].kind, tokenizer["special_tokens"].default) == ("list", "<|endoftext|>\n<|pad|>")
    assert tokenizer["byte_fallback"].kind == "bool" and tokenizer["byte_fallback"].optional


def test_uplot_is_vendored_with_its_licence_and_version() -> None:
    folder = ASSETS / "ui" / "uplot"
    assert json.loads((folder / "package.json").read_text(encoding="utf-8"))["version"] == UPLOT_VERSION
    assert "MIT" in (folder / "LICENSE").read_text(encoding="utf-8")
    assert (folder / "uPlot.iife.min.js").stat().st_size > 10_000
