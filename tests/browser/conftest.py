"""Browser tests: Debian's Chromium, headless, driven by Playwright against the real ASGI server.

The server is `asgi_server` (tests/conftest.py): the production ASGI app in a thread, on
loopback, over the test database, so every test here is transactional. Chromium is the
system's (`/usr/bin/chromium`, installed by scripts/bootstrap.sh), never one Playwright
downloads, and runs with background networking off: nothing leaves the machine.

Screenshots: a failing test saves the page it was on; `TOKENCACHE_SCREENSHOTS=1` also saves
every step a test names with `shoot(...)`. Both go to var/screenshots/ (git-ignored).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client

from tests.conftest import AsgiServer

CHROMIUM = os.environ.get("TOKENCACHE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
SCREENSHOTS = Path(settings.BASE_DIR) / "var" / "screenshots"
ALWAYS_SHOOT = os.environ.get("TOKENCACHE_SCREENSHOTS") == "1"
ALLOW_ASYNC_UNSAFE = "DJANGO_ALLOW_ASYNC_UNSAFE"

_failed = pytest.StashKey[bool]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.stash[_failed] = report.failed


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One Chromium per test module.

    Playwright's sync API keeps an event loop running on this thread while it is open, and
    Django refuses database work from a thread with a running loop (SynchronousOnlyOperation).
    The tests' own ORM calls are plain synchronous code, so they are allowed for as long as the
    browser is open, and only then: the module scope keeps that to the browser tests.
    """
    if shutil.which(CHROMIUM) is None and not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium is not installed at {CHROMIUM}: run `make test`, which installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    previous = os.environ.get(ALLOW_ASYNC_UNSAFE)
    os.environ[ALLOW_ASYNC_UNSAFE] = "1"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            yield browser
            browser.close()
    finally:
        if previous is None:
            os.environ.pop(ALLOW_ASYNC_UNSAFE, None)
        else:
            os.environ[ALLOW_ASYNC_UNSAFE] = previous


def _name(item: pytest.Item) -> str:
    return re.sub(r"[^\w.-]+", "_", item.name)[:120]


@pytest.fixture
def open_page(browser: Any, asgi_server: AsgiServer, request: pytest.FixtureRequest) -> Iterator[Callable[..., Any]]:
    """`open_page(user=None, width=1280)`: a fresh browser context, logged in as `user` if given.

    Logging in sets the session cookie that Django's test client made for `user`; the login form
    itself is exercised by its own test. Each context has its own cookies, so personas never mix.
    """
    contexts: list[Any] = []
    pages: list[Any] = []
    dialogs: list[str] = []

    def make(user: User | None = None, *, width: int = 1280, height: int = 900) -> Any:
        context = browser.new_context(viewport={"width": width, "height": height}, base_url=asgi_server.url)
        context.set_default_timeout(30_000)
        if user is not None:
            client = Client()
            client.force_login(user)
            cookie = client.cookies[settings.SESSION_COOKIE_NAME]
            context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": cookie.value, "url": asgi_server.url}])
        page = context.new_page()
        # Nothing on these pages opens a dialog; one that opens (an injected alert()) fails the test.
        page.on("dialog", lambda dialog: (dialogs.append(f"{dialog.type}: {dialog.message}"), dialog.dismiss()))
        contexts.append(context)
        pages.append(page)
        return page

    yield make
    if request.node.stash.get(_failed, False):
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        for n, page in enumerate(pages):
            if not page.is_closed():
                page.screenshot(path=str(SCREENSHOTS / f"FAILED-{_name(request.node)}-{n}.png"), full_page=True)
    for context in contexts:
        context.close()
    assert dialogs == [], "a page opened a dialog"


@pytest.fixture
def shoot(request: pytest.FixtureRequest) -> Callable[[Any, str], None]:
    """`shoot(page, "step")` saves a screenshot when TOKENCACHE_SCREENSHOTS=1, for a person to look at."""

    def save(page: Any, step: str) -> None:
        if ALWAYS_SHOOT:
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOTS / f"{_name(request.node)}-{step}.png"), full_page=True)

    return save


def fits_its_width(page: Any) -> bool:
    """No horizontal scrolling: the document is exactly as wide as the viewport."""
    scroll, client = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    return bool(scroll == client)


def serious_accessibility_violations(page: Any) -> list[str]:
    """axe-core's serious and critical findings on the page as it is now, one line each."""
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page)
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
        for v in results.response["violations"]
        if v.get("impact") in ("serious", "critical")
    ]
