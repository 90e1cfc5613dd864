"""The browser test harness shared by the dashboard's browser tests: Debian's headless
``chromium`` driven by Playwright for Python through ``executable_path`` (never a browser
download), and a tab that records every console error or warning, page error, failed request
and response of 400 and above. Without ``/usr/bin/chromium`` the tests skip, saying so,
unless ``FAREBOX_REQUIRE_SERVICES=1`` (as in CI): then they fail."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
DOCS = Path(__file__).resolve().parents[1] / "docs"


def chromium_or_skip() -> None:
    if CHROMIUM.exists():
        return
    message = (
        f"{CHROMIUM} is missing: the dashboard's browser tests cannot run "
        "(apt-get install chromium; .ci/run does it in CI)"
    )
    if os.environ.get("FAREBOX_REQUIRE_SERVICES") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium for a module's tests (import this fixture and ``tab``)."""
    chromium_or_skip()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield launched
        finally:
            launched.close()


@dataclass
class Watched:
    """A browser page and every problem it reported."""

    page: Any
    problems: list[str] = field(default_factory=list)

    def clean(self) -> None:
        assert self.problems == [], "\n".join(self.problems)


@pytest.fixture
def tab(browser: Any) -> Iterator[Watched]:
    """A fresh browser context's page, its problems recorded."""
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    page = context.new_page()
    watched = Watched(page)
    problems = watched.problems
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
            if m.type in ("error", "warning") else None)  # fmt: skip
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    # net::ERR_ABORTED is the browser itself cancelling a load (a navigation away while the
    # favicon still loads); a server that fails answers >= 400 or drops the connection
    page.on("requestfailed", lambda r: problems.append(f"failed: {r.url} {r.failure}")
            if "ERR_ABORTED" not in (r.failure or "") else None)  # fmt: skip
    page.on("response", lambda r: problems.append(f"HTTP {r.status}: {r.url}")
            if r.status >= 400 else None)  # fmt: skip
    try:
        yield watched
    finally:
        context.close()
