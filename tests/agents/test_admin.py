"""The admin: editing knowledge rebuilds chunks; tokens are shown once; records are read-only."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.test import Client

from agents.chat import run_turn
from agents.models import Agent, ApiToken, KnowledgeDocument
from agents.retrieval import search_chunks
from agents.tokens import authenticate_token, create_api_token, hash_token
from cachecore.store import Outcome, get_many
from cachecore.tokenizers import get_tokenizer
from tests.conftest import Demo
from tests.support.fake_model_server import FakeModelServer


@pytest.fixture
def admin_client(root: User) -> Client:
    client = Client()
    client.force_login(root)
    return client


def _document_form(document: KnowledgeDocument, **changes: object) -> dict[str, object]:
    data = {
        "agent": document.agent_id,
        "title": document.title,
        "source": document.source,
        "body": document.body,
        "chunks-TOTAL_FORMS": 0,
        "chunks-INITIAL_FORMS": 0,
        "chunks-MIN_NUM_FORMS": 0,
        "chunks-MAX_NUM_FORMS": 1000,
    }
    data.update(changes)
    return data


def test_editing_a_document_body_in_the_admin_rebuilds_its_chunks(demo: Demo, admin_client: Client) -> None:
    document = demo.agents["support"].documents.get(source="support/redis-down")
    old_chunks = set(document.chunks.values_list("id", flat=True))

    response = admin_client.post(
        f"/admin/agents/knowledgedocument/{document.pk}/change/",
        _document_form(document, body="# Redis down\n\nPhone the wombat hotline."),
    )

    assert response.status_code == 302
    assert list(document.chunks.values_list("text", flat=True)) == ["# Redis down\n\nPhone the wombat hotline."]
    assert not old_chunks & set(document.chunks.values_list("id", flat=True))
    assert [r.source for r in search_chunks(agent=demo.agents["support"], query="wombat", limit=4)] == [
        "support/redis-down"
    ]


def test_adding_a_document_in_the_admin_makes_it_searchable(demo: Demo, admin_client: Client) -> None:
    agent = demo.agents["business"]
    draft = KnowledgeDocument(agent=agent, title="Haiku memo", source="business/haiku", body="Quarterly haiku memo.")
    response = admin_client.post("/admin/agents/knowledgedocument/add/", _document_form(draft))
    assert response.status_code == 302
    assert agent.documents.get(source="business/haiku").chunks.count() == 1
    assert search_chunks(agent=agent, query="haiku", limit=1)[0].source == "business/haiku"


def test_deleting_documents_in_the_admin_removes_them_from_search(demo: Demo, admin_client: Client) -> None:
    agent = demo.agents["support"]
    document = agent.documents.get(source="support/redis-down")
    response = admin_client.post(
        "/admin/agents/knowledgedocument/",
        {"action": "delete_with_chunks", "_selected_action": [document.pk]},
    )
    assert response.status_code == 302
    assert not KnowledgeDocument.objects.filter(pk=document.pk).exists()
    assert "support/redis-down" not in [r.source for r in search_chunks(agent=agent, query="redis down", limit=8)]


def test_the_ttl_policy_list_shows_ttl_mode_and_the_agents_using_it(demo: Demo, admin_client: Client) -> None:
    page = admin_client.get("/admin/agents/ttlpolicy/").content.decode()
    assert "business generation" in page and '<td class="field-ttl">2 h</td>' in page and "sliding" in page
    assert '<td class="field-agents_using">documentation</td>' in page
    assert '<td class="field-agents_using">support</td>' in page


@pytest.mark.parametrize(
    "path",
    [
        "/admin/agents/agent/",
        "/admin/agents/knowledgedocument/",
        "/admin/agents/conversation/",
        "/admin/agents/message/",
        "/admin/agents/apitoken/",
        "/admin/agents/apitoken/add/",
        "/admin/agents/agent/add/",
    ],
)
def test_every_admin_page_renders(demo: Demo, admin_client: Client, path: str) -> None:
    assert admin_client.get(path).status_code == 200


def test_conversations_are_read_only_in_the_admin(demo: Demo, admin_client: Client, root: User) -> None:
    conversation = run_turn(user=root, agent=demo.agents["support"], message="redis is down").conversation
    page = admin_client.get(f"/admin/agents/conversation/{conversation.pk}/change/")
    assert page.status_code == 200 and "redis is down" in page.content.decode()
    assert admin_client.post(f"/admin/agents/conversation/{conversation.pk}/change/", {}).status_code == 403
    assert admin_client.get("/admin/agents/conversation/add/").status_code == 403


def test_creating_a_token_in_the_admin_shows_it_once_and_stores_only_its_hash(
    demo: Demo, admin_client: Client, alice: User
) -> None:
    response = admin_client.post("/admin/agents/apitoken/add/", {"user": alice.pk, "name": "laptop"}, follow=True)

    raw = re.search(r"is (tc_[A-Za-z0-9_-]+)", response.content.decode()).group(1)
    token = ApiToken.objects.get(user=alice, name="laptop")
    assert token.token_hash == hash_token(raw) and token.prefix == raw[:8]
    assert authenticate_token(raw) == alice
    assert raw not in admin_client.get(f"/admin/agents/apitoken/{token.pk}/change/").content.decode()

    admin_client.post("/admin/agents/apitoken/", {"action": "revoke", "_selected_action": [token.pk]})
    assert authenticate_token(raw) is None


@pytest.fixture
def token_staff(bob: User) -> Client:
    """bob: staff with the add, view and change permissions on API tokens, but not a superuser."""
    bob.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="agents", codename__in=["add_apitoken", "view_apitoken", "change_apitoken"]
        )
    )
    client = Client()
    client.force_login(bob)
    return client


def test_staff_cannot_mint_a_token_for_someone_else(token_staff: Client, root: User, alice: User) -> None:
    for victim in (root, alice):
        response = token_staff.post("/admin/agents/apitoken/add/", {"user": victim.pk, "name": "mine now"})

        assert response.status_code == 200
        assert "Select a valid choice" in response.content.decode()
    assert not ApiToken.objects.exists()


def test_staff_mint_tokens_for_themselves_and_are_offered_no_one_else(
    token_staff: Client, bob: User, root: User
) -> None:
    form = token_staff.get("/admin/agents/apitoken/add/").content.decode()
    assert f'<option value="{bob.pk}" selected>bob</option>' in form
    assert f'value="{root.pk}"' not in form

    response = token_staff.post("/admin/agents/apitoken/add/", {"user": bob.pk, "name": "laptop"}, follow=True)

    raw = re.search(r"is (tc_[A-Za-z0-9_-]+)", response.content.decode()).group(1)
    assert authenticate_token(raw) == bob


def test_staff_see_and_revoke_only_their_own_tokens(token_staff: Client, bob: User, alice: User) -> None:
    theirs, theirs_raw = create_api_token(user=alice, name="alice-laptop")
    mine, mine_raw = create_api_token(user=bob, name="bob-laptop")

    listing = token_staff.get("/admin/agents/apitoken/").content.decode()
    assert "bob-laptop" in listing and "alice-laptop" not in listing
    assert token_staff.get(f"/admin/agents/apitoken/{theirs.pk}/change/").status_code == 302  # "does not exist"

    token_staff.post("/admin/agents/apitoken/", {"action": "revoke", "_selected_action": [theirs.pk, mine.pk]})

    assert authenticate_token(theirs_raw) == alice
    assert authenticate_token(mine_raw) is None


def test_a_superuser_sees_every_users_tokens(admin_client: Client, alice: User, bob: User) -> None:
    create_api_token(user=alice, name="alice-laptop")
    create_api_token(user=bob, name="bob-laptop")

    listing = admin_client.get("/admin/agents/apitoken/").content.decode()

    assert "alice-laptop" in listing and "bob-laptop" in listing


def test_editing_a_document_in_the_admin_and_asking_again_never_serves_the_old_texts_tokens(
    demo: Demo, admin_client: Client, root: User, model_server: FakeModelServer
) -> None:
    # Issue 4's acceptance, end to end: admin change view -> chat turn. The support agent is pointed
    # at the loopback model server, which records the prompt token IDs the turn really sent.
    Agent.objects.filter(slug="support").update(
        backend_kind=Agent.BackendKind.OPENAI,
        backend_base_url=model_server.base_url,
        backend_model=model_server.model,
        backend_accepts_token_ids=True,
    )
    agent = Agent.objects.select_related("ttl_policy").get(slug="support")
    tokenizer = get_tokenizer(agent.tokenizer_spec)
    question = "what should I do when Redis is down"
    document = agent.documents.get(source="support/redis-down")
    old_texts = list(document.chunks.values_list("text", flat=True))

    run_turn(user=root, agent=agent, message=question)
    cached = run_turn(user=root, agent=agent, message=question).answer_message
    old_chunk_ids = set(document.chunks.values_list("id", flat=True))
    assert {o["outcome"] for o in cached.chunk_outcomes if o["chunk_id"] in old_chunk_ids} == {"hit"}

    new_body = "# Redis down\n\nWhen Redis is down, phone the wombat hotline, then restart redis-server."
    response = admin_client.post(
        f"/admin/agents/knowledgedocument/{document.pk}/change/", _document_form(document, body=new_body)
    )
    assert response.status_code == 302
    (new_chunk,) = document.chunks.all()

    answer = run_turn(user=root, agent=agent, message=question).answer_message
    sent = model_server.last_body()["prompt"]

    outcomes = {o["chunk_id"]: o["outcome"] for o in answer.chunk_outcomes}
    assert outcomes[new_chunk.pk] == "miss" and not old_chunk_ids & set(outcomes)
    new_ids = tokenizer.encode(new_chunk.text).tolist()
    assert _contains(sent, new_ids)
    for old_text in old_texts:
        assert not _contains(sent, tokenizer.encode(old_text).tolist())
    assert "wombat hotline" in tokenizer.decode(sent)
    again = get_many(tokenizer, [new_chunk.text], ttl=agent.ttl_policy.ttl_seconds, agent=agent.slug).items[0]
    assert again.outcome is Outcome.HIT and again.ids.tolist() == new_ids  # what was cached is the new text's


def _contains(ids: list[int], part: list[int]) -> bool:
    return any(ids[i : i + len(part)] == part for i in range(len(ids) - len(part) + 1))


def _agent_form(agent: Agent, **changes: object) -> dict[str, object]:
    fields = [
        "slug", "name", "description", "system_prompt", "top_k", "prompt_token_budget",
        "answer_token_limit", "temperature", "tokenizer_spec", "backend_kind", "backend_base_url",
        "backend_model", "backend_api_key_env",
    ]  # fmt: skip
    data: dict[str, object] = {name: getattr(agent, name) for name in fields}
    data.update(ttl_policy=agent.ttl_policy_id, allowed_groups=[g.pk for g in agent.allowed_groups.all()])
    data.update({"enabled": "on"} if agent.enabled else {})
    data.update(changes)
    return data


UNCHANGED = (("extractive", "", "", ""), ["business"])
SET = (("openai", "http://127.0.0.1:9999", "served", "TOKENCACHE_MODEL_KEY_VLLM"), ["support"])


@pytest.mark.parametrize(("editor", "applied"), [("superuser", SET), ("staff who tune agents", UNCHANGED)])
def test_only_a_superuser_sets_where_an_agent_sends_prompts_and_key_and_who_may_use_it(
    demo: Demo, root: User, bob: User, editor: str, applied: tuple[tuple[str, ...], list[str]]
) -> None:
    # Otherwise staff trusted with prompts could point an agent and its key at a server of their own.
    bob.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="agents", codename__in=["view_agent", "change_agent"])
    )
    client = Client()
    client.force_login(root if editor == "superuser" else bob)
    agent = demo.agents["business"]
    (kind, url, model, key_env), groups = SET

    response = client.post(
        f"/admin/agents/agent/{agent.pk}/change/",
        _agent_form(
            agent,
            system_prompt="Be brief.",
            backend_kind=kind,
            backend_base_url=url,
            backend_model=model,
            backend_api_key_env=key_env,
            allowed_groups=list(Group.objects.filter(name__in=groups).values_list("pk", flat=True)),
        ),
    )

    assert response.status_code == 302
    agent.refresh_from_db()
    assert agent.system_prompt == "Be brief."  # both may tune the prompt
    backend = (agent.backend_kind, agent.backend_base_url, agent.backend_model, agent.backend_api_key_env)
    assert (backend, list(agent.allowed_groups.values_list("name", flat=True))) == applied


def test_staff_saving_an_agent_whose_read_only_backend_no_longer_passes_are_told_not_crashed(
    demo: Demo, bob: User
) -> None:
    bob.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="agents", codename__in=["view_agent", "change_agent"])
    )
    tuner = Client()
    tuner.force_login(bob)
    agent = demo.agents["business"]
    # Written before the rule existed, or around the admin: a URL whose query would swallow /v1/...
    Agent.objects.filter(pk=agent.pk).update(backend_base_url="http://127.0.0.1:9999/?x=")

    response = tuner.post(f"/admin/agents/agent/{agent.pk}/change/", _agent_form(agent, system_prompt="Be brief."))

    assert response.status_code == 200  # the form again, with the reason; not a 500
    assert "Backend base url: The server URL must be a plain root" in response.content.decode()
    agent.refresh_from_db()
    assert agent.system_prompt != "Be brief."
