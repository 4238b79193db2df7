"""The dashboard in a real headless browser (Debian's chromium) through the real stack: the app under uvicorn,
real arq workers and training processes on the private Redis, toy-sized runs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import msgspec
import pytest
from playwright.async_api import Browser, expect

from mt_contracts import codec
from mt_contracts.jobs import RunSeries
from mt_contracts.settings import ApiSettings, GatewaySettings, WorkerServiceSettings
from tests.client.stack import Rule, proxy_to, serving
from tests.helpers import running_workers, wait_for
from tests.ui.browser import Watched, chromium, finished, open_page, screens_dir, screenshots, submit, tokenizer

# A one-layer GPT-2 that trains a step in milliseconds on two cores.
TOY: dict[str, object] = {
    "corpus_path": "small.txt",
    "n_layer": 1,
    "n_head": 2,
    "n_embd": 32,
    "block_size": 32,
    "batch_size": 4,
    "warmup_steps": 5,
    "eval_iters": 2,
    "device": "cpu",
    "threads": 1,
}


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


@pytest.fixture
async def stack(api_settings: ApiSettings, worker_settings: WorkerServiceSettings) -> AsyncIterator[str]:
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
        tokenizer_id = await tokenizer(client)
        # The first stream connection is cut after 4 KiB of events: the page must reconnect with
        # Last-Event-ID and miss nothing.
        proxy.rules.append(Rule(match="/logs/stream", after=4096))
        run_id = await submit(
            client,
            {**TOY, "tokenizer_id": tokenizer_id, "max_steps": 400, "eval_interval": 40, "checkpoint_interval": 100},
        )
        watched = await open_page(browser, proxy.url, f"/ui/runs/{run_id}")
        page = watched.page

        async def points() -> int:
            count = await page.evaluate("window.mtRun.trainSteps().length")
            assert isinstance(count, int)
            return count

        first = await wait_for(points, lambda n: n >= 1, 180)
        grown = await wait_for(points, lambda n: n > first, 180)
        assert grown > first
        await expect(page.locator("#live")).to_have_text("ended", timeout=300_000)
        run = await finished(client, run_id)
        assert run.status == "succeeded", run.error

        # Everything logs.jsonl holds reached the chart, in order, through the cut: no step is missing.
        series = await _series(client, run_id)
        assert await page.evaluate("window.mtRun.trainSteps()") == [p.step for p in series.train]
        assert await page.evaluate("window.mtRun.valSteps()") == sorted({p.step for p in series.val})
        assert proxy.cuts == 1
        streams = proxy.heads_with("/logs/stream")
        assert len(streams) >= 2
        assert "last-event-id:" not in streams[0]
        assert "last-event-id:" in streams[1]
        assert await page.evaluate("window.mtRun.opens()") >= 2

        await expect(page.locator("#status")).to_have_text("succeeded")
        await expect(page.locator("#checkpoints tbody tr")).to_have_count(len(codec.decode(
            (await client.get(f"/runs/{run_id}/checkpoints")).content, list[dict[str, object]]
        )))
        await expect(page.locator("#metrics")).to_contain_text("val_bits_per_byte")
        await expect(page.locator("#log")).to_contain_text("succeeded")
        await screenshots(watched, screens, "run")

        # Generate from a checkpoint, and export one.
        await page.select_option("#gen-checkpoint", "300")
        await page.fill("#max-new-tokens", "16")
        await page.click("#generate-form button[type=submit]")
        await expect(page.locator("#samples")).not_to_have_text("generating…", timeout=120_000)
        await expect(page.locator("#samples")).to_contain_text("ROMEO:")
        await page.locator("#checkpoints tbody tr", has_text="300").get_by_role("button", name="Export").click()
        await expect(page.locator("#exported-files li").first).to_be_visible(timeout=120_000)
        await expect(page.locator("#exported-files")).to_contain_text("config.json")

        runs = await open_page(browser, proxy.url, "/ui/runs")
        await expect(runs.page.locator(f"tr[data-run='{run_id}']")).to_contain_text("succeeded")
        await screenshots(runs, screens, "runs")
        _clean(watched)
        _clean(runs)
