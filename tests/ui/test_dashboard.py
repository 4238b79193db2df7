"""The dashboard in a real headless browser (Debian's chromium) through the real stack: the app under uvicorn,
real arq workers and training processes on the private Redis, toy-sized runs."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import msgspec
import pytest
from playwright.async_api import Browser, expect
from redis.asyncio import Redis

from mt_contracts import codec
from mt_contracts.jobs import RunSeries
from mt_contracts.settings import ApiSettings, GatewaySettings, WorkerServiceSettings
from tests.client.stack import Rule, proxy_to, serving
from tests.helpers import running_workers, wait_for
from tests.integration.jobs import RUN, finished_run, submit_run, trained_tokenizer
from tests.ui.browser import Watched, chromium, open_page, screens_dir, screenshots

# The integration tests' one-layer GPT-2 on one thread (the suite shares two cores).
TOY: dict[str, object] = {**RUN, "threads": 1}
# How the pages show a duration (common.js ``duration``): "42 s", "3 min 5 s", "2 h 13 min".
DURATION = r"\d+ (s|min \d+ s|h \d+ min)"


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


@pytest.fixture
async def stack(api_settings: ApiSettings, worker_settings: WorkerServiceSettings, redis: Redis) -> AsyncIterator[str]:
    del redis  # the session's Redis, flushed: each test starts with no jobs
    async with running_workers(worker_settings), serving(api_settings) as url:
        yield url


@pytest.fixture
def screens(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return screens_dir(tmp_path_factory)


def _clean(watched: Watched) -> None:
    assert watched.foreign() == []
    assert watched.csp_reports == []


async def _series(client: httpx.AsyncClient, run_id: str) -> RunSeries:
    return codec.decode((await client.get(f"/runs/{run_id}/metrics")).content, RunSeries)


async def test_run_page_charts_grow_live_and_resume_after_a_dropped_stream(
    browser: Browser, stack: str, screens: Path
) -> None:
    async with proxy_to(stack) as proxy, httpx.AsyncClient(base_url=stack, timeout=30) as client:
        tokenizer_id = await trained_tokenizer(client)
        # The first stream connection is cut after 4 KiB of events: the page must reconnect with
        # Last-Event-ID and miss nothing.
        proxy.rules.append(Rule(match="/logs/stream", after=4096))
        run_id = await submit_run(
            client,
            {**TOY, "tokenizer_id": tokenizer_id, "max_steps": 400, "eval_interval": 40, "checkpoint_interval": 100},
        )
        watched = await open_page(browser, proxy.url, f"/ui/runs/{run_id}")
        page = watched.page

        async def points() -> int:
            count = await page.evaluate("window.mtRun.chartPoints()")
            assert isinstance(count, int)
            return count

        # The drawn loss chart's data grows as steps arrive.
        first = await wait_for(points, lambda n: n >= 1, 180)
        grown = await wait_for(points, lambda n: n > first, 180)
        assert grown > first
        await expect(page.locator("#live")).to_have_text("ended", timeout=300_000)
        run = await finished_run(client, run_id)
        assert run.status == "succeeded", run.error

        # Everything logs.jsonl holds reached the chart, in order, through the cut: no step is missing, and
        # the drawn loss chart holds every training and validation loss at its step.
        series = await _series(client, run_id)
        assert await page.evaluate("window.mtRun.trainSteps()") == [p.step for p in series.train]
        assert await page.evaluate("window.mtRun.valSteps()") == sorted({p.step for p in series.val})
        train_loss = {p.step: p.train_loss for p in series.train}
        val_loss = {p.step: p.val_loss for p in series.val}
        steps = sorted({*train_loss, *val_loss})
        assert await page.evaluate("window.mtRun.chartData()") == [
            steps,
            [train_loss.get(step) for step in steps],
            [val_loss.get(step) for step in steps],
        ]
        assert proxy.cuts == 1
        streams = proxy.heads_with("/logs/stream")
        assert len(streams) >= 2
        assert "last-event-id:" not in streams[0]
        assert "last-event-id:" in streams[1]
        assert await page.evaluate("window.mtRun.opens()") >= 2

        await expect(page.locator("#status")).to_have_text("succeeded")
        await expect(page.locator("#checkpoints tbody tr")).to_have_count(
            len(codec.decode((await client.get(f"/runs/{run_id}/checkpoints")).content, list[dict[str, object]]))
        )
        await expect(page.locator("#metrics")).to_contain_text("val_bits_per_byte")
        await expect(page.locator("#log")).to_contain_text("succeeded")
        await screenshots(watched, screens, "run")

        # Generate from a checkpoint, and export one.
        await page.select_option("#gen-checkpoint", "300")
        await page.fill("#max-new-tokens", "16")
        await page.click("#generate-form button[type=submit]")
        await expect(page.locator("#samples")).not_to_have_text("generating…", timeout=120_000)
        await expect(page.locator("#samples")).to_contain_text("ROMEO:")
        # The row whose step cell is 300 (a loss like 3.7300 elsewhere in a row must not match).
        step_300 = page.locator("#checkpoints tbody tr").filter(
            has=page.locator("td:first-child", has_text=re.compile(r"^300$"))
        )
        await step_300.get_by_role("button", name="Export").click()
        await expect(page.locator("#exported-files li").first).to_be_visible(timeout=120_000)
        await expect(page.locator("#exported-files")).to_contain_text("config.json")
        async with page.expect_download() as started:
            await page.get_by_role("link", name=re.compile(r"^config\.json ")).click()
        download = await started.value
        assert download.suggested_filename == "config.json"
        saved = await download.path()
        assert json.loads(saved.read_text(encoding="utf-8"))["model_type"] == "gpt2"

        # A new run from checkpoint 300 (init_from): the launch form holds this run's request and the weights.
        await step_300.get_by_role("link", name="New run from it").click()
        await page.wait_for_url(re.compile(r"/ui/launch\?from="))
        await expect(page.locator('[id="run-init_from.run_id"]')).to_have_value(run_id)
        await expect(page.locator('[id="run-init_from.checkpoint"]')).to_have_value("300")
        await expect(page.locator("#run-tokenizer_id")).to_have_value(tokenizer_id)
        await expect(page.locator("#run-n_embd")).to_have_value(str(TOY["n_embd"]))
        await expect(page.locator("#run-betas")).to_have_value("0.9, 0.95")
        await page.fill("#run-max_steps", "20")
        await page.click("#run-form button[type=submit]")
        child_id = await page.locator("#run-started").text_content(timeout=60_000)
        assert child_id is not None
        child = await finished_run(client, child_id)
        assert child.status == "succeeded", child.error
        assert child.request.init_from is not None and child.request.init_from.checkpoint == 300

        runs = await open_page(browser, proxy.url, "/ui/runs")
        await expect(runs.page.locator(f"tr[data-run='{run_id}']")).to_contain_text("succeeded")
        await screenshots(runs, screens, "runs")
        for status in ("failed", "stalled"):
            await runs.page.select_option("#status-filter", status)
            await expect(runs.page.locator(f"tr[data-run='{run_id}']")).to_have_count(0)
            await expect(runs.page.locator("#runs tbody")).to_contain_text("No runs.")
        await runs.page.select_option("#status-filter", "succeeded")
        await expect(runs.page.locator(f"tr[data-run='{run_id}']")).to_have_count(1)
        _clean(watched)
        _clean(runs)


async def test_launch_forms_show_field_errors_then_start_and_the_tokenizer_splits_text(
    browser: Browser, stack: str, screens: Path
) -> None:
    watched = await open_page(browser, stack, "/ui/launch")
    page = watched.page
    await expect(page.locator("#access")).to_have_text("no API keys on this server")
    # Names, defaults and limits come from the contract.
    await expect(page.locator("#tokenizer-vocab_size")).to_have_value("4096")
    await expect(page.locator("#tokenizer-vocab_size-hint")).to_contain_text("8 to 1000000")
    await expect(page.locator("#run-n_layer")).to_have_value("4")
    # A model family's options: one input each, labelled with the family, empty (the family's default).
    n_kv_head = page.locator('[id="run-model_options.n_kv_head"]')
    await expect(n_kv_head).to_have_value("")
    await expect(page.locator('label[for="run-model_options.n_kv_head"]')).to_have_text(
        "model_options.n_kv_head (llama)"
    )
    await screenshots(watched, screens, "launch")

    await page.fill("#tokenizer-corpus_path", "small.txt")
    await page.fill("#tokenizer-vocab_size", "300")
    await page.click("#tokenizer-form button[type=submit]")
    started = page.locator("#tokenizer-started")
    await expect(started).to_be_visible(timeout=30_000)
    tokenizer_id = (await started.text_content() or "").strip()
    assert tokenizer_id.startswith("tok_")

    # The run form: a value out of its contract's range is refused by the server, shown at its field.
    await page.fill("#run-tokenizer_id", tokenizer_id)
    await page.fill("#run-corpus_path", "small.txt")
    for name, value in {**TOY, "n_layer": 0, "max_steps": 30, "eval_interval": 10, "checkpoint_interval": 10}.items():
        if name in {"corpus_path", "device"}:
            continue
        await page.fill(f"#run-{name}", str(value))
    await page.select_option("#run-device", "cpu")
    # The tokenizer must have succeeded before a run can use it.
    async with httpx.AsyncClient(base_url=stack, timeout=30) as client:

        async def status() -> str:
            answer = (await client.get(f"/tokenizers/{tokenizer_id}")).json()
            return str(answer["status"])

        assert await wait_for(status, lambda s: s in {"succeeded", "failed", "cancelled"}, 180) == "succeeded"
        await page.click("#run-form button[type=submit]")
        error = page.locator("#run-n_layer-error")
        await expect(error).to_contain_text(">= 1")
        await expect(page.locator("#run-n_layer")).to_have_attribute("aria-invalid", "true")
        await expect(page.locator("#run-started")).to_have_count(0)
        await screenshots(watched, screens, "launch-error")
        assert (await client.get("/runs")).json()["items"] == []  # nothing was queued

        # A llama option with model gpt2: refused at its input, which the page sent nested in model_options.
        await page.fill("#run-n_layer", "1")
        await n_kv_head.fill("2")
        await page.click("#run-form button[type=submit]")
        await expect(page.locator('[id="run-model_options.n_kv_head-error"]')).to_have_text(
            "model 'gpt2' takes no option n_kv_head; its options are: (none); remove it or send model='llama'"
        )
        await expect(n_kv_head).to_have_attribute("aria-invalid", "true")
        await expect(error).to_have_text("")
        assert (await client.get("/runs")).json()["items"] == []

        await n_kv_head.fill("")
        await page.click("#run-form button[type=submit]")
        await expect(page.locator("#run-started")).to_be_visible(timeout=30_000)
        await expect(error).to_have_text("")
        # Only the options filled in are sent: none.
        started_id = (await page.locator("#run-started").text_content() or "").strip()
        assert (await client.get(f"/runs/{started_id}")).json()["request"]["model_options"] == {}
        await page.click("#run-started")
        await expect(page.locator("#status")).to_have_text("succeeded", timeout=300_000)
        await expect(page.locator("#metrics")).to_contain_text("val_bits_per_byte")

    tokenizers = await open_page(browser, stack, "/ui/tokenizers")
    await expect(tokenizers.page.locator(f"tr[data-tokenizer='{tokenizer_id}']")).to_contain_text("succeeded")
    await screenshots(tokenizers, screens, "tokenizers")

    # The split box: coloured spans, one per token, that put the text back together exactly.
    detail = await open_page(browser, stack, f"/ui/tokenizers/{tokenizer_id}")
    tpage = detail.page
    await expect(tpage.locator("#heldout")).to_contain_text("bytes per token")
    text = "First Citizen: Before we proceed any further, hear me speak. Ça va? ünïcode 😀"
    await tpage.fill("#split-text", text)
    await tpage.click("#split-form button[type=submit]")
    spans = tpage.locator("#tokens .tok")
    await expect(spans.first).to_be_visible()
    async with httpx.AsyncClient(base_url=stack, timeout=30) as client:
        encoded = (await client.post(f"/tokenizers/{tokenizer_id}/encode", json={"text": text})).json()
    assert await spans.count() == len(encoded["ids"])
    assert await tpage.locator("#tokens").text_content() == text
    assert await spans.evaluate_all("nodes => nodes.map(n => Number(n.dataset.id))") == encoded["ids"]
    await expect(tpage.locator("#top tbody tr").first).to_be_visible()
    await screenshots(detail, screens, "tokenizer")
    for each in (watched, tokenizers, detail):
        _clean(each)


async def test_compare_shows_both_runs_validation_curves_and_their_differences(
    browser: Browser, stack: str, screens: Path
) -> None:
    async with httpx.AsyncClient(base_url=stack, timeout=30) as client:
        tokenizer_id = await trained_tokenizer(client)
        base = {**TOY, "tokenizer_id": tokenizer_id, "max_steps": 40, "eval_interval": 10, "checkpoint_interval": 40}
        first = await submit_run(client, base)
        second = await submit_run(client, {**base, "n_embd": 16, "learning_rate": 0.004})
        done = {run_id: await finished_run(client, run_id) for run_id in (first, second)}
        assert [run.status for run in done.values()] == ["succeeded", "succeeded"]
        series = {run_id: await _series(client, run_id) for run_id in (first, second)}

    runs = await open_page(browser, stack, "/ui/runs")
    page = runs.page
    for run_id in (first, second):
        await page.check(f"input[value='{run_id}']")
    await page.click("#compare-form button[type=submit]")
    await expect(page.locator("#diff tbody tr[data-field='n_embd']")).to_be_visible()
    data = await page.evaluate("window.mtCompare.series()")
    assert isinstance(data, list)
    # Series follow the order of the choice boxes (newest run first).
    expected = {run_id: {p.step: p.val_bits_per_byte for p in s.val} for run_id, s in series.items()}
    steps = sorted({step for points in expected.values() for step in points})
    assert data[0] == steps
    assert msgspec.json.decode(msgspec.json.encode(data[1:])) == [
        [expected[run_id].get(step) for step in steps] for run_id in (second, first)
    ]
    rows = page.locator("#diff tbody tr")
    assert set(await rows.evaluate_all("rows => rows.map(r => r.dataset.field)")) == {
        "status",
        "val_bits_per_byte",
        "val_loss",
        "val_perplexity",
        "n_params",
        "tokens_seen",
        "training_seconds",
        "n_embd",
        "learning_rate",
    }
    await expect(page.locator("#diff tbody tr[data-field='n_embd']")).to_contain_text("16")
    # By tokens seen: each point where its record puts it (one process: step x tokens_per_step).
    tokens_per_step = {run_id: run.request.tokens_per_step for run_id, run in done.items()}
    assert tokens_per_step[first] == 4 * 32
    assert all(p.tokens_seen == p.step * tokens_per_step[run_id] for run_id, s in series.items() for p in s.val)
    tokens = await page.evaluate("window.mtCompare.tokens()")
    assert isinstance(tokens, list)
    recorded = {run_id: {p.tokens_seen: p.val_bits_per_byte for p in s.val} for run_id, s in series.items()}
    xs = sorted({x for points in recorded.values() for x in points if x is not None})
    assert tokens[0] == xs
    assert msgspec.json.decode(msgspec.json.encode(tokens[1:])) == [
        [recorded[run_id].get(x) for x in xs] for run_id in (second, first)
    ]
    # A run resumed at step 10 with 2 processes instead of 1 is not linear in step: the chart takes the tokens
    # each point records; a point written before points recorded them falls back to step x tokens per step
    # of every process (nnodes x nproc_per_node).
    request = {"batch_size": 4, "block_size": 32, "gradient_accumulation_steps": 1, "nnodes": 1, "nproc_per_node": 2}
    val = [
        {"step": 10, "val_loss": 3.0, "tokens_seen": 10 * 128},
        {"step": 20, "val_loss": 2.5, "tokens_seen": 10 * 128 + 10 * 256},
        {"step": 30, "val_loss": 2.0, "tokens_seen": None},
    ]
    resumed = {"run": {"request": request}, "series": {"train": [], "val": val}}
    curves = await page.evaluate("entries => window.mtCompare.curves(entries, 'val_loss')", [resumed])
    assert curves == {
        "step": [[[10, 3.0], [20, 2.5], [30, 2.0]]],
        "tokens": [[[1280, 3.0], [3840, 2.5], [30 * 256, 2.0]]],
    }
    await screenshots(runs, screens, "compare")
    _clean(runs)


@pytest.fixture
def keyed_settings(api_settings: ApiSettings) -> ApiSettings:
    return msgspec.structs.replace(api_settings, api=GatewaySettings(keys="full-key", read_only_keys="read-key"))


async def test_pages_with_full_read_only_and_missing_keys(
    browser: Browser, keyed_settings: ApiSettings, worker_settings: WorkerServiceSettings, redis: Redis, screens: Path
) -> None:
    del redis  # flushed
    async with running_workers(worker_settings), serving(keyed_settings) as url:
        headers = {"Authorization": "Bearer full-key"}
        async with httpx.AsyncClient(base_url=url, timeout=30, headers=headers) as client:
            tokenizer_id = await trained_tokenizer(client)
            run_id = await submit_run(
                client,
                {**TOY, "tokenizer_id": tokenizer_id, "max_steps": 30, "eval_interval": 10, "checkpoint_interval": 30},
            )
            assert (await finished_run(client, run_id)).status == "succeeded"

        # No key: the page says a key is needed and hides every action.
        anonymous = await open_page(browser, url, "/ui/launch")
        await expect(anonymous.page.locator("#access")).to_have_text("this server needs an API key")
        await expect(anonymous.page.locator("#notice")).to_contain_text("needs an API key")
        await expect(anonymous.page.locator("#run-form")).to_be_hidden()
        await screenshots(anonymous, screens, "no-key")

        # A read-only key: data and the live stream (access_token) work; launch and cancel are hidden.
        reader = await open_page(browser, url, f"/ui/runs/{run_id}", key="read-key")
        await expect(reader.page.locator("#access")).to_have_text("key: read-only")
        await expect(reader.page.locator("#status")).to_have_text("succeeded")
        await expect(reader.page.locator("#live")).to_have_text("ended")
        await expect(reader.page.locator("#actions")).to_be_hidden()
        await expect(reader.page.locator("#generate-form")).to_be_hidden()
        await expect(reader.page.locator(".read-only-note")).to_be_visible()
        assert await reader.page.evaluate("window.mtRun.trainSteps().length") > 0
        # The stream opened with the key in its URL (EventSource sends no header) and delivered the run's
        # events: "ended" alone would also follow a refused stream.
        streams = [address for address in reader.requests if "/logs/stream?" in address]
        assert streams and all("access_token=read-key" in address for address in streams), streams
        assert [address for address in reader.requests if "access_token" in address] == streams
        assert await reader.page.evaluate("window.mtRun.opens()") >= 1
        assert await reader.page.evaluate("window.mtRun.streamed()") > 0
        assert await reader.page.evaluate("window.mtRun.lastEventId()") != ""
        await reader.page.goto(url + "/ui/launch")
        await expect(reader.page.locator("#access")).to_have_text("key: read-only")
        await expect(reader.page.locator("#tokenizer-form")).to_be_hidden()
        await expect(reader.page.locator("#run-form")).to_be_hidden()
        await screenshots(reader, screens, "read-only-launch")

        # A full key, entered once, is kept for the session's other pages.
        writer = await open_page(browser, url, "/ui/launch", key="full-key")
        await expect(writer.page.locator("#access")).to_have_text("key: full access")
        await expect(writer.page.locator("#run-form")).to_be_visible()
        await writer.page.goto(url + f"/ui/runs/{run_id}")
        await expect(writer.page.locator("#evaluate-box")).to_be_visible()
        await writer.page.click("#evaluate")
        await expect(writer.page.locator("#evals tbody tr").first).to_contain_text("succeeded", timeout=120_000)

        # A run that would train for long. The runs list, open since before it was submitted, shows it
        # appear, train with its progress moving and end, without a reload (the marker would be gone).
        listing = await open_page(browser, url, "/ui/runs", key="read-key")
        await listing.page.evaluate("window.mtOpenedOnce = true")
        async with httpx.AsyncClient(base_url=url, timeout=30, headers=headers) as client:
            # compile off: 100,000 steps would compile the model first (a minute on this machine).
            long = {**TOY, "tokenizer_id": tokenizer_id, "max_steps": 100_000, "checkpoint_interval": 20}
            long_run = await submit_run(client, {**long, "compile": "off"})
        row = listing.page.locator(f"tr[data-run='{long_run}']")
        await expect(row).to_have_attribute("data-status", "running", timeout=120_000)
        progress = row.locator("td").nth(3)

        async def shown_progress() -> str:
            return (await progress.text_content() or "").strip()

        seen = await wait_for(shown_progress, lambda text: re.fullmatch(r"\d+ / 100000", text) is not None, 60)
        moved = await wait_for(shown_progress, lambda text: text != seen, 30)
        assert re.fullmatch(r"\d+ / 100000", moved), moved
        await screenshots(listing, screens, "runs-live")

        # Its page, while it trains: the step, an ETA and the heartbeat's age. Cancelled from there, it can
        # then be resumed.
        await writer.page.goto(url + f"/ui/runs/{long_run}")
        await expect(writer.page.locator("#step")).not_to_have_text("—", timeout=120_000)
        await expect(writer.page.locator("#status")).to_have_text("running")
        await expect(writer.page.locator("#eta")).to_have_text(re.compile(rf"^{DURATION}$"))
        await expect(writer.page.locator("#heartbeat")).to_have_text(re.compile(rf"^{DURATION} ago$"), timeout=15_000)
        await screenshots(writer, screens, "run-training")
        await writer.page.click("#cancel")
        await expect(writer.page.locator("#status")).to_have_text("cancelled", timeout=120_000)
        await expect(writer.page.locator("#resume-box")).to_be_visible()
        await expect(writer.page.locator("#cancel")).to_be_hidden()
        await expect(row).to_have_attribute("data-status", "cancelled", timeout=30_000)
        assert await listing.page.evaluate("window.mtOpenedOnce") is True
        for each in (anonymous, reader, writer, listing):
            _clean(each)


async def test_corpora_page_uploads_with_progress_lists_refuses_and_deletes(
    browser: Browser, stack: str, screens: Path, tmp_path: Path, shakespeare: str
) -> None:
    text = shakespeare[:300_000]
    upload = tmp_path / "plays.txt"
    upload.write_text(text, encoding="utf-8")
    watched = await open_page(browser, stack, "/ui/corpora")
    page = watched.page
    await expect(page.locator("#corpora tbody")).to_contain_text("No corpora.")
    await page.fill("#corpus-name", "plays")
    await page.set_input_files("#corpus-file", str(upload))
    await page.click("#upload-form button[type=submit]")
    await expect(page.locator("#upload-result")).to_contain_text("uploaded plays", timeout=60_000)
    assert await page.locator("#upload-progress").evaluate("bar => bar.value") == 1
    row = page.locator("tr[data-corpus='plays']")
    lines = text.count("\n") + (not text.endswith("\n"))
    await expect(row).to_contain_text(f"{lines:,}")
    async with httpx.AsyncClient(base_url=stack, timeout=30) as client:
        listed = (await client.get("/corpora/plays")).json()
    assert (listed["bytes"], listed["lines"]) == (len(text.encode()), lines)
    await expect(row.locator("td").nth(4)).to_have_text(listed["sha256"][:12])
    await screenshots(watched, screens, "corpora")

    # Refused a second time with "refuse to replace" ticked (If-None-Match: *), then a bad file: 400 naming it.
    await page.click("#upload-form button[type=submit]")
    await expect(page.locator("#upload-result")).to_contain_text("exists", timeout=60_000)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine line\n\xff\xfe not utf-8\n")
    await page.fill("#corpus-name", "bad")
    await page.set_input_files("#corpus-file", str(bad))
    await page.click("#upload-form button[type=submit]")
    await expect(page.locator("#upload-result")).to_contain_text("line 2", timeout=60_000)
    await expect(page.locator("tr[data-corpus='bad']")).to_have_count(0)

    await row.get_by_role("button", name="Delete").click()
    await expect(page.locator("#upload-result")).to_have_text("deleted plays")
    await expect(page.locator("#corpora tbody")).to_contain_text("No corpora.")
    _clean(watched)
