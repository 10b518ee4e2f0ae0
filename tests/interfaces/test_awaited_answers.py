"""Answers to turns on a model server hold no HTTP thread while the model writes.

Through uvicorn and the HTTP bridge (tokencache_project/http_bridge.py), as deployed: the JSON
API and the OpenAI API answer with an `AwaitedResponse` that the bridge resolves on its event
loop (agents/interfaces/awaited.py): once the turn has ended, or for a stream once its first
event is in. The Django test client, which cannot await one, gets the same answers from the
view's own thread (tests/interfaces/test_api_chat.py, test_openai_api.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import uvicorn
from channels.routing import ProtocolTypeRouter

from agents.models import Message
from tests.conftest import _free_port
from tokencache_project.http_bridge import ThreadedWsgiHttp

pytestmark = pytest.mark.django_db(transaction=True)

HTTP_THREADS = 2


@pytest.fixture
def two_thread_server() -> Iterator[str]:
    """The production HTTP path with only HTTP_THREADS threads, served by uvicorn on loopback."""
    port = _free_port()
    app = ProtocolTypeRouter({"http": ThreadedWsgiHttp(threads=HTTP_THREADS)})
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, lifespan="off", log_level="warning", timeout_graceful_shutdown=1
        )
    )
    thread = threading.Thread(target=server.run, name="uvicorn-two-threads", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def _until(condition, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    ("path", "payload"),
    [
        ("/api/agents/modelled/chat", lambda n: {"message": f"Question {n}?"}),
        ("/v1/chat/completions", lambda n: {"model": "modelled", "messages": [{"role": "user", "content": f"Q{n}?"}]}),
        (
            "/v1/chat/completions",
            lambda n: {"model": "modelled", "stream": True, "messages": [{"role": "user", "content": f"Q{n}?"}]},
        ),
    ],
    ids=["json-api", "openai-api", "openai-api-stream"],
)
def test_more_turns_than_http_threads_all_wait_on_the_model_at_once(
    model_agent, model_server, alice, token_for, two_thread_server, path, payload
):
    count = HTTP_THREADS * 3
    # Every turn waits this long for the model's first byte: a request holding its HTTP thread
    # while it waits would leave all but two queued until these hangs end.
    model_server.knobs.hang_seconds = 8
    headers = {"Authorization": f"Bearer {token_for(alice)}"}

    def ask(n: int) -> httpx.Response:
        return httpx.post(two_thread_server + path, json=payload(n), headers=headers, timeout=60)

    with ThreadPoolExecutor(count) as pool:
        started = time.monotonic()
        futures = []
        for n in range(count):
            futures.append(pool.submit(ask, n))
            # One at a time, so the turns' database writes (SQLite in memory here, whose shared
            # cache refuses a write beside a read at once) do not collide.
            _until(lambda n=n: len(model_server.requests) == n + 1)
        all_waiting_after = time.monotonic() - started
        model_server.resume()
        responses = [future.result() for future in futures]

    assert all_waiting_after < 8, f"the {count} turns reached the model only after {all_waiting_after:.1f} s"
    assert [response.status_code for response in responses] == [200] * count
    assert Message.objects.filter(role="assistant", status="ok").count() == count
    if payload(0).get("stream"):
        assert all(response.text.endswith("data: [DONE]\n\n") for response in responses)


def _ask(server, token: str, message: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}/api/agents/modelled/chat",
        json={"message": message},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


def test_an_awaited_answer_is_the_stored_answer(model_agent, model_server, alice, token_for, asgi_server):
    response = _ask(asgi_server, token_for(alice), "What do I do when Redis is down?")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["X-Content-Type-Options"] == "nosniff"  # the middleware's headers stay
    body = response.json()
    stored = Message.objects.get(pk=body["message_id"])
    assert (stored.status, stored.content) == ("ok", body["answer"])
    assert set(body) >= {"conversation_id", "message_id", "answer", "citations", "cache", "timings"}


def test_an_awaited_failure_is_a_503_and_the_question_is_kept(model_agent, model_server, alice, token_for, asgi_server):
    model_server.stop()
    response = _ask(asgi_server, token_for(alice), "Is anyone there?")
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "model_unavailable"
    question, answer = Message.objects.filter(conversation_id=error["conversation_id"]).order_by("pk")
    assert (question.role, question.content) == ("user", "Is anyone there?")
    assert (answer.pk, answer.status) == (error["message_id"], "error")
