"""A viewer watches the cache dashboard in the browser; an admin sees the breaker banner come and go.

Drives Debian's Chromium against the real ASGI server (tests/browser/conftest.py). Personas:
vera (the `viewers` group: dashboards only), alice (support group: chats elsewhere), root (admin).
"""

from __future__ import annotations

from typing import Any

import pytest
import redis
from django.contrib.auth.models import User

from agents.chat import run_turn
from cachecore.breaker import Breaker, State
from cachecore.process import ProcessIdentity
from cachecore.recorder import DatabaseRecorder
from tests.browser.conftest import fits_its_width, serious_accessibility_violations
from tests.conftest import Demo, _user

pytestmark = pytest.mark.django_db(transaction=True)

QUESTION = "What do I do when Redis is down?"
POLL_SECONDS = 5


def _support_turns(page: Any) -> int:
    """The support agent's answered turns in the page's agents table (last hour)."""
    cell = page.locator("section[aria-labelledby=h-agents] tbody tr:has(a:text-is('support')) td").nth(5)
    return int(cell.inner_text().replace("\u202f", ""))


def test_a_viewer_sees_the_hit_rate_with_data_and_a_new_turn_within_the_poll(
    demo: Demo, open_page: Any, shoot: Any, alice: User
) -> None:
    vera = _user("vera", groups=("viewers",))
    for _ in range(2):  # misses, then hits: a hit rate to draw
        run_turn(user=alice, agent=demo.agents["support"], message=QUESTION)

    page = open_page(vera)
    page.goto("/dashboards/?window=hour")
    chart = page.locator("figure[data-chart=hit-rate-hour] svg.chart")
    assert chart.get_attribute("aria-label") == "Hit rate, last hour by minute"
    assert chart.locator("polyline, circle").count() >= 1  # a line (or a point) with data
    assert "lookups; beside it:" in page.locator("figure[data-chart=hit-rate-hour] .note").inner_text()
    assert _support_turns(page) == 2
    shoot(page, "1-dashboard")

    run_turn(user=alice, agent=demo.agents["support"], message="And when Redis comes back?")  # elsewhere
    page.wait_for_function(
        """() => {
            const row = [...document.querySelectorAll("section[aria-labelledby=h-agents] tbody tr")]
                .find(r => r.querySelector("a") && r.querySelector("a").textContent.trim() === "support");
            return row && row.querySelectorAll("td")[5].textContent.trim() === "3";
        }""",
        timeout=(POLL_SECONDS + 3) * 1000,
    )
    shoot(page, "2-after-a-turn-elsewhere")
    assert serious_accessibility_violations(page) == []

    narrow = open_page(vera, width=375)
    narrow.goto("/dashboards/")
    assert fits_its_width(narrow)
    shoot(narrow, "3-at-375px")


def test_the_dashboards_are_refused_to_support_staff(demo: Demo, open_page: Any, alice: User) -> None:
    page = open_page(alice)
    response = page.goto("/dashboards/")
    assert response is not None and response.status == 403


def test_the_admin_banner_shows_an_open_breaker_and_clears_once_it_closes(
    demo: Demo, open_page: Any, shoot: Any, root: User
) -> None:
    # A real breaker with the real recorder, as a worker process has: one Redis failure opens it.
    recorder = DatabaseRecorder(ProcessIdentity(host="worker-test", pid=4242, role="worker"))
    breaker = Breaker(name="tokens", fail_max=1, reset_seconds=60, listeners=[recorder])
    with pytest.raises(redis.ConnectionError), breaker.guard():
        raise redis.ConnectionError("Redis is down")
    assert breaker.state is State.OPEN
    recorder.flush()

    page = open_page(root)
    page.goto("/admin/")
    banner = page.locator("#breaker-banner")
    assert "1 open" in banner.inner_text()
    shoot(page, "1-banner")
    banner.locator("a").click()
    assert page.url.endswith("/dashboards/live/")
    assert page.locator("tr:has-text('worker@worker-test:4242') .state").inner_text() == "Open"

    breaker.reset()  # Redis answered the trial call: closed, and recorded
    recorder.flush()
    page.goto("/admin/")
    assert page.locator("#breaker-banner").count() == 0
    shoot(page, "2-no-banner")
