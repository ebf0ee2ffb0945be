"""Driving the operator console in a real browser: Debian's Chromium under Playwright (Playwright
downloads no browser of its own here), logging in as a person does, and where screenshots go.

Imported by name (`from console_support import ...`) from the browser tests and the latency benchmark.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SCREENSHOTS = Path(os.environ.get("PENDANT_SCREENSHOTS", REPO / "build" / "screenshots"))
CHROMIUM_ARGS = [
    "--no-sandbox",  # root in a container
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    # The alert sound plays as soon as an alarm arrives, as on a dispatcher's screen that has been
    # clicked once; without it Chromium holds audio until a user gesture.
    "--autoplay-policy=no-user-gesture-required",
]


def chromium_path() -> str | None:
    """Debian's Chromium, or None when it is not installed."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium (a Playwright Browser), closed at the end."""
    from playwright.sync_api import sync_playwright

    path = chromium_path()
    if path is None:
        raise RuntimeError("Chromium is not installed: apt-get install chromium (scripts/test does it)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


class PageProblems:
    """What went wrong inside a page: script errors and failed requests (a test asserts it stays empty
    where nothing should fail)."""

    def __init__(self, page: Any) -> None:
        self.errors: list[str] = []
        page.on("pageerror", lambda error: self.errors.append(f"script error: {error}"))
        page.on(
            "response",
            lambda answer: answer.status >= 500 and self.errors.append(f"HTTP {answer.status} {answer.url}"),
        )


def log_in(browser: Any, base_url: str, username: str, password: str, *, path: str = "/") -> Any:
    """A new browser context logged in as `username`; returns its page, on `path`."""
    context = browser.new_context(base_url=base_url, viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.problems = PageProblems(page)
    page.goto(path)
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_load_state()
    return page


def wait_live(page: Any, timeout_ms: float = 15_000) -> None:
    """Wait until the page's live connection is up (its badge says Live)."""
    page.wait_for_selector("#connection[data-state=live]", timeout=timeout_ms)


def screenshot(page: Any, name: str) -> Path:
    """Save a screenshot of the whole page as build/screenshots/<name>.png (not committed)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
