"""Plumbing of the dashboard tests: Debian's chromium driven by Playwright (its own browser downloads are
never used), the real stack (the app under uvicorn, real workers on the private Redis), and pages that record
every request they make and every Content-Security-Policy report, and save screenshots in both themes."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, Request, async_playwright

CHROMIUM = Path("/usr/bin/chromium")
INSTALL = "apt-get install -y chromium"  # as Makefile's CHROMIUM_INSTALL


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """Headless Debian chromium; fails (never skips) with the install command when it is missing."""
    if not CHROMIUM.is_file():
        pytest.fail(
            f"the browser tests need Debian's chromium at {CHROMIUM}: run `{INSTALL}` as root (make setup does)"
        )
    async with async_playwright() as playwright:
        # --no-sandbox: the tests may run as root, where chromium's sandbox refuses to start.
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield browser
        finally:
            await browser.close()


@dataclass
class Watched:
    """A page and what it did: every request's URL, and console messages about the security policy."""

    page: Page
    base: str
    requests: list[str] = field(default_factory=list)
    csp_reports: list[str] = field(default_factory=list)

    def foreign(self) -> list[str]:
        """Requests to any other origin than the API's (there must be none)."""
        return [url for url in self.requests if not url.startswith(self.base + "/")]


async def open_page(browser: Browser, base: str, path: str, *, key: str | None = None, dark: bool = False) -> Watched:
    """A fresh browser context (its own session storage) at ``base + path``; ``key`` is entered in the key
    box as a person would."""
    context = await browser.new_context(
        viewport={"width": 1280, "height": 900}, color_scheme="dark" if dark else "light"
    )
    page = await context.new_page()
    watched = Watched(page=page, base=base)

    def on_request(request: Request) -> None:
        watched.requests.append(request.url)

    def on_console(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            watched.csp_reports.append(message.text)

    page.on("request", on_request)
    page.on("console", on_console)
    await page.goto(base + path)
    if key is not None:
        await page.fill("#api-key", key)
        await page.click("#key-form button[type=submit]")
        await page.wait_for_load_state("load")
    return watched


def screens_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots go: ``MT_SCREENSHOTS`` when set, else the session's temporary folder (never git)."""
    chosen = os.environ.get("MT_SCREENSHOTS")
    if chosen:
        path = Path(chosen)
        path.mkdir(parents=True, exist_ok=True)
        return path
    return tmp_path_factory.mktemp("screens")


async def screenshots(watched: Watched, folder: Path, name: str) -> None:
    """The whole page in the light and the dark theme (the toggle's choice)."""
    page = watched.page
    for theme in ("light", "dark"):
        await page.evaluate("theme => window.MT.setTheme(theme)", theme)
        await page.wait_for_timeout(300)
        await page.screenshot(path=str(folder / f"{name}-{theme}.png"), full_page=True)
