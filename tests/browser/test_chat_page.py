"""Support staff chat in the browser: ask, watch the answer stream, follow its sources, come back later.

Each test drives Debian's Chromium against the real ASGI server, as a person would: clicks,
keys, and what the page shows. Personas: alice (support group), charlie (business group).
"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest
from django.contrib.auth.models import User

from agents.models import Conversation, Message
from tests.browser.conftest import fits_its_width, serious_accessibility_violations
from tests.conftest import PASSWORD, AsgiServer, Demo

pytestmark = pytest.mark.django_db(transaction=True)

QUESTION = "What do I do when Redis is down?"
ANSWER = "li.message--assistant"


def frames_of(page: Any) -> list[dict[str, Any]]:
    """Every frame the page's websockets receive, decoded, in order."""
    frames: list[dict[str, Any]] = []
    page.on("websocket", lambda ws: ws.on("framereceived", lambda payload: frames.append(json.loads(payload))))
    return frames


def ask(page: Any, text: str, *, with_enter: bool = True) -> Any:
    """Type `text`, send it, and wait for the stored answer to replace the streamed one."""
    before = page.locator(f"{ANSWER}[data-message-id]").count()
    page.locator("#send:not([disabled])").wait_for()
    page.fill("#question", text)
    if with_enter:
        page.press("#question", "Enter")
    else:
        page.click("#send")
    page.wait_for_function(f"document.querySelectorAll('{ANSWER}[data-message-id]').length > {before}", timeout=30_000)
    return page.locator(f"{ANSWER}[data-message-id]").last


def test_support_asks_and_reads_a_streamed_answer_with_sources_then_a_full_cache_hit(
    demo: Demo, open_page: Any, shoot: Any
) -> None:
    page = open_page()
    frames = frames_of(page)
    page.goto("/")
    page.fill("#id_username", "support")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.click(f"a.agent-card:has-text('{demo.agents['support'].name}')")
    assert page.url.endswith("/agents/support/")
    assert demo.agents["support"].name in page.title()
    shoot(page, "1-new-conversation")

    first = ask(page, QUESTION)

    deltas_before_done = [f for f in frames[: [f["type"] for f in frames].index("done")] if f["type"] == "delta"]
    assert len(deltas_before_done) > 1
    assert first.locator(".citations li").count() >= 1
    assert first.locator(".citations a").first.get_attribute("href").startswith("/agents/support/documents/")
    badge = first.locator(".cache-badge summary")
    assert re.search(r"\d+ of \d+ chunks from cache", badge.inner_text())
    assert re.search(r"/agents/support/c/\d+/$", page.url)  # the new conversation has its address
    shoot(page, "2-first-answer")

    second = ask(page, QUESTION, with_enter=False)

    chunks = int(re.search(r"of (\d+) chunks", second.locator(".cache-badge summary").inner_text()).group(1))
    assert second.locator(".cache-badge summary").inner_text().startswith(f"{chunks} of {chunks} chunks from cache")
    assert "cache-badge--full" in second.locator(".cache-badge").get_attribute("class")
    second.locator(".cache-badge summary").click()  # the explanation opens with the keyboard or a click
    assert "shared token cache" in second.locator(".cache-badge p").inner_text()
    shoot(page, "3-full-hit")


def test_a_citation_opens_its_document_with_the_cited_chunk_highlighted_and_only_for_the_agents_groups(
    demo: Demo, alice: User, charlie: User, open_page: Any, shoot: Any
) -> None:
    page = open_page(alice)
    page.goto("/agents/support/")
    answer = ask(page, QUESTION)
    link = answer.locator(".citations a").first
    title = link.inner_text()

    link.click()

    page.wait_for_load_state()
    chunk_id = re.search(r"chunk=(\d+)", page.url).group(1)
    cited = page.locator(f"#chunk-{chunk_id}")
    assert "chunk--cited" in cited.get_attribute("class")
    assert page.locator(".chunk--cited").count() == 1
    assert page.locator("h1").inner_text() == title
    shoot(page, "document")

    outsider = open_page(charlie)
    response = outsider.goto(page.url)
    assert response.status == 403
    assert "not allowed" in outsider.locator("h1").inner_text()
    assert title not in outsider.content()


def test_a_conversation_reopens_with_its_history_and_can_be_renamed_and_deleted(
    demo: Demo, alice: User, open_page: Any, shoot: Any
) -> None:
    page = open_page(alice)
    page.goto("/agents/support/")
    ask(page, QUESTION)
    address = page.url

    page.reload()
    assert page.url == address
    assert page.locator("li.message--user .message__body").first.inner_text() == QUESTION
    assert page.locator(ANSWER).count() == 1
    current = page.locator("#conversation-list a[aria-current=page]")
    assert current.inner_text() == QUESTION

    page.goto("/")
    page.click(f"text={QUESTION}")
    assert page.url == address

    page.click("summary:has-text('Rename')")
    page.fill("#rename-title", "Redis outage runbook")
    page.click("button:has-text('Save title')")
    assert page.locator("#conversation-list a[aria-current=page]").inner_text() == "Redis outage runbook"
    assert "Redis outage runbook" in page.title()
    shoot(page, "renamed")

    page.click("summary:has-text('Delete')")
    page.click("button:has-text('Delete conversation')")
    assert page.url.endswith("/agents/support/")
    assert not Conversation.objects.filter(user=alice).exists()
    assert page.goto(address).status == 404


def test_typed_html_shows_as_text_and_answers_render_their_markdown(
    demo: Demo, alice: User, open_page: Any, shoot: Any
) -> None:
    page = open_page(alice)  # the fixture fails the test if the page ever opens a dialog (alert)
    page.goto("/agents/support/")
    attack = "<img src=x onerror=alert(1)> **bold** Redis down"

    answer = ask(page, attack)

    question = page.locator("li.message--user .message__body").last
    assert question.inner_text() == attack
    assert page.locator("#messages img").count() == 0
    assert question.locator("strong").count() == 0
    # The extractive answer quotes Markdown: `code` spans render as code, never as backticks.
    body = answer.locator(".message__body")
    assert body.locator("code").count() > 0
    assert "`" not in body.inner_text()
    page.reload()  # and the same from the stored history
    assert page.locator("li.message--user .message__body").last.inner_text() == attack
    assert page.locator("#messages img").count() == 0
    shoot(page, "escaped")


def test_feedback_is_stored_with_the_answer_without_a_reload(demo: Demo, alice: User, open_page: Any) -> None:
    page = open_page(alice)
    page.goto("/agents/support/")
    answer = ask(page, QUESTION)
    message_id = int(answer.get_attribute("data-message-id"))

    answer.locator("input[name=comment]").fill("Exactly what I needed")
    answer.locator("button:has-text('Not helpful')").click()
    page.locator(f"#m{message_id} button[aria-pressed=true]:has-text('Not helpful')").wait_for()
    page.locator(f"#m{message_id} button:has-text('Helpful')").first.click()
    page.locator(f"#m{message_id} button[aria-pressed=true]:text-is('Helpful')").wait_for()

    stored = Message.objects.get(pk=message_id)
    assert (stored.feedback, stored.feedback_comment) == (1, "Exactly what I needed")


def test_chat_answers_while_redis_is_down_and_the_page_reconnects_a_dropped_socket(
    demo: Demo, alice: User, open_page: Any, redis_server: Any, shoot: Any
) -> None:
    page = open_page(alice)
    sockets: list[Any] = []

    def relay(socket: Any) -> None:
        socket.connect_to_server()  # a real connection to the server, which the test can cut
        sockets.append(socket)

    page.route_web_socket(re.compile(r"/ws/agents/"), relay)
    page.goto("/agents/support/")
    ask(page, QUESTION)

    redis_server.stop()
    try:
        during_outage = ask(page, QUESTION)
        assert "Cache bypassed" in during_outage.locator(".cache-badge summary").inner_text()
    finally:
        redis_server.start()
        from cachecore.store import default_store

        default_store().breaker.reset()

    sockets[-1].close(code=4000, reason="test cuts the connection")
    page.locator("#connection:has-text('Connection lost')").wait_for()
    shoot(page, "reconnecting")
    page.locator("#connection:has-text('Reconnected')").wait_for()
    assert len(sockets) == 2

    after = ask(page, "How do I check the breaker state?")
    assert after.locator(".message__body").inner_text()
    assert Message.objects.filter(role="assistant", status="ok").count() == 3


def test_a_rate_limited_question_stays_in_the_box_with_a_plain_error(
    demo: Demo, alice: User, open_page: Any, settings: Any
) -> None:
    settings.TOKENCACHE_CHAT_RATE_PER_MINUTE = 1
    page = open_page(alice)
    page.goto("/agents/support/")
    ask(page, QUESTION)

    page.fill("#question", "One more question")
    page.press("#question", "Enter")

    error = page.locator("#composer-error")
    error.wait_for()
    assert "Try again in" in error.inner_text()
    assert page.input_value("#question") == "One more question"
    assert page.locator("li.message--user").count() == 1
    assert page.locator("#send").is_enabled()


def test_a_token_made_on_the_tokens_page_works_against_the_api(
    demo: Demo, alice: User, open_page: Any, asgi_server: AsgiServer, shoot: Any
) -> None:
    page = open_page(alice)
    page.goto("/")
    page.click("a:has-text('API tokens')")
    page.fill("#token-name", "triage script")
    page.click("button:has-text('Create token')")
    token = page.locator("#new-token").inner_text()
    shoot(page, "created")

    response = httpx.get(f"{asgi_server.url}/api/agents/", headers={"Authorization": f"Bearer {token}"})

    assert response.status_code == 200
    assert "support" in [agent["slug"] for agent in response.json()["agents"]]
    page.goto("/tokens/")
    assert token not in page.content()  # shown once
    page.click("button[aria-label='Revoke triage script']")
    assert httpx.get(f"{asgi_server.url}/api/agents/", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def _pages_of_a_conversation(page: Any) -> list[str]:
    page.goto("/agents/support/")
    answer = ask(page, QUESTION)
    document = answer.locator(".citations a").first.get_attribute("href")
    return ["/", page.url, document, "/tokens/"]


def test_every_page_fits_a_375_pixel_phone(demo: Demo, alice: User, open_page: Any, shoot: Any) -> None:
    page = open_page(alice, width=375, height=740)
    for n, address in enumerate(_pages_of_a_conversation(page)):
        page.goto(address)
        shoot(page, f"375-{n}")
        assert fits_its_width(page), address
        assert page.locator("button:has-text('Log out')").is_visible()


def test_every_page_has_no_serious_accessibility_violations(demo: Demo, alice: User, open_page: Any) -> None:
    page = open_page(alice)
    for address in _pages_of_a_conversation(page):
        page.goto(address)
        assert serious_accessibility_violations(page) == [], address


def test_the_chat_works_from_the_keyboard_alone(demo: Demo, alice: User, open_page: Any) -> None:
    page = open_page(alice)
    page.goto("/")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Enter")
    for _ in range(20):  # tab to the first agent card and open it
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.classList.contains('agent-card')"):
            break
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/agents/\w+/$"))
    page.locator("#send:not([disabled])").wait_for()
    page.focus("#question")
    page.keyboard.type("Redis is down")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("what now?")
    assert page.input_value("#question") == "Redis is down\nwhat now?"
    page.keyboard.press("Enter")
    page.locator(f"{ANSWER}[data-message-id]").wait_for()
