"""One question, three interfaces, one answer: they all call the same chat turn.

The extractive backend is deterministic, so the JSON API, the OpenAI-compatible API
(plain and streamed, over a real server) and the websocket must agree on the answer text
and on the citations, exactly.
"""

from __future__ import annotations

import openai
import pytest
from django.test import Client

from agents.models import Message
from tests.interfaces.conftest import post_json
from tests.interfaces.test_websocket import communicator, run, session_cookie, until_done

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize(
    ("slug", "question"),
    [("support", "What do I do when Redis is down?"), ("documentation", "how does the with statement work")],
)
def test_the_three_interfaces_give_the_same_answer_and_citations(demo, alice, token_for, asgi_server, slug, question):
    json_api = post_json(
        Client(headers={"Authorization": f"Bearer {token_for(alice)}"}),
        f"/api/agents/{slug}/chat",
        {"message": question},
    ).json()

    client = openai.OpenAI(base_url=f"{asgi_server.url}/v1", api_key=token_for(alice), max_retries=0)
    messages = [{"role": "user", "content": question}]
    completion = client.chat.completions.create(model=slug, messages=messages)
    chunks = list(client.chat.completions.create(model=slug, messages=messages, stream=True))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    streamed_citations = next(c.model_extra["citations"] for c in chunks if c.choices and c.choices[0].finish_reason)

    cookie = session_cookie(alice)

    async def over_websocket():
        comm = communicator(f"/ws/agents/{slug}/", cookie=cookie)
        assert (await comm.connect())[0]
        await comm.send_json_to({"type": "message", "message": question})
        frames = await until_done(comm)
        await comm.disconnect()
        return frames

    frames = run(over_websocket)
    websocket_answer = "".join(f["text"] for f in frames[:-1])
    done = frames[-1]

    assert json_api["answer"]
    assert json_api["citations"]
    assert completion.choices[0].message.content == json_api["answer"]
    assert streamed == json_api["answer"]
    assert websocket_answer == json_api["answer"]
    assert completion.model_extra["citations"] == json_api["citations"]
    assert streamed_citations == json_api["citations"]
    assert done["citations"] == json_api["citations"]
    # Four turns, each stored whole, each answer the same.
    answers = Message.objects.filter(role="assistant", conversation__user=alice)
    assert answers.count() == 4 and {a.content for a in answers} == {json_api["answer"]}
