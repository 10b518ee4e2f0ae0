"""`manage.py seed_demo`: idempotent, and the knowledge follows its files."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest
from django.contrib.auth.models import Group, User
from django.core.management import CommandError, call_command
from django.test import override_settings

from agents.management.commands.seed_demo import DEMO_KNOWLEDGE_DIR
from agents.models import Agent, Chunk, KnowledgeDocument, TTLPolicy
from agents.selectors import agents_for_user
from tests.conftest import PASSWORD, Demo


def _snapshot() -> dict[str, list[tuple[object, ...]]]:
    return {
        "policies": list(TTLPolicy.objects.values_list()),
        "agents": list(Agent.objects.values_list()),
        "groups": sorted((g.name, sorted(g.agents.values_list("slug", flat=True))) for g in Group.objects.all()),
        "users": list(User.objects.order_by("username").values_list("username", "password", "is_superuser")),
        "documents": list(KnowledgeDocument.objects.values_list()),
        "chunks": list(Chunk.objects.values_list()),
    }


def _seed(**options: object) -> str:
    out = io.StringIO()
    call_command("seed_demo", stdout=out, **options)
    return out.getvalue()


@pytest.fixture(autouse=True)
def _demo_password(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests run with DEBUG off, where the seed insists on a password from the environment.
    monkeypatch.setenv("TOKENCACHE_DEMO_PASSWORD", PASSWORD)


@pytest.fixture
def knowledge_dir(tmp_path: Path) -> Path:
    """A private copy of the demo knowledge that a test may edit."""
    for folder in ("support", "business"):
        shutil.copytree(DEMO_KNOWLEDGE_DIR / folder, tmp_path / folder)
    return tmp_path


def test_it_leaves_the_same_rows_when_run_twice(demo: Demo) -> None:
    before = _snapshot()
    _seed()
    _seed()
    assert _snapshot() == before


def test_it_seeds_the_three_agents_with_their_ttl_policies(demo: Demo) -> None:
    policies = {a.slug: (a.ttl_policy.name, a.ttl_policy.ttl_seconds) for a in demo.agents.values()}
    assert policies == {
        "support": ("support", 3600),
        "documentation": ("documentation", 7200),
        "business": ("business generation", 3600),
    }
    for policy in TTLPolicy.objects.all():
        assert len(policy.rationale) > 100 and len(policy.tuning_guidance) > 100


def test_it_gives_each_agent_its_own_knowledge(demo: Demo) -> None:
    for slug, prefix, at_least in (
        ("support", "support/", 15),
        ("business", "business/", 15),
        ("documentation", "pydoc/", 75),
    ):
        sources = list(demo.agents[slug].documents.values_list("source", flat=True))
        assert len(sources) >= at_least
        assert all(source.startswith(prefix) for source in sources)
    with_topic = demo.agents["documentation"].documents.get(source="pydoc/with")
    assert with_topic.title == 'The "with" statement'
    assert demo.agents["support"].documents.get(source="support/redis-down").title == "What to do when Redis is down"
    assert not Chunk.objects.filter(document__agent__in=demo.agents.values(), text="").exists()


def test_the_support_login_may_use_support_and_documentation_only(demo: Demo) -> None:
    support = User.objects.get(username="support")
    assert support.check_password(PASSWORD)
    assert not support.is_staff
    assert set(agents_for_user(support).values_list("slug", flat=True)) == {"support", "documentation"}
    assert User.objects.get(username="admin").is_superuser


def test_the_viewer_login_may_watch_the_dashboards_and_use_no_agent(demo: Demo) -> None:
    viewer = User.objects.get(username="viewer")
    assert viewer.check_password(PASSWORD)
    assert not viewer.is_staff
    assert list(viewer.groups.values_list("name", flat=True)) == ["viewers"]
    assert not agents_for_user(viewer).exists()


def test_an_edited_file_updates_its_document_and_chunks(demo: Demo, knowledge_dir: Path) -> None:
    _seed(knowledge_dir=knowledge_dir)
    document = demo.agents["support"].documents.get(source="support/redis-down")
    old_chunk_ids = set(document.chunks.values_list("id", flat=True))
    (knowledge_dir / "support" / "redis-down.md").write_text(
        "# Redis is down, revised\n\nCall the on-call engineer on the purple phone.\n", encoding="utf-8"
    )

    output = _seed(knowledge_dir=knowledge_dir)

    document.refresh_from_db()
    assert document.title == "Redis is down, revised"
    assert "purple phone" in document.body
    assert list(document.chunks.values_list("text", flat=True)) == [
        "# Redis is down, revised\n\nCall the on-call engineer on the purple phone."
    ]
    assert not old_chunk_ids & set(document.chunks.values_list("id", flat=True))
    assert "support: " in output and "(1 created or updated, 0 removed)" in output


def test_a_removed_file_removes_its_document_but_not_documents_added_by_hand(demo: Demo, knowledge_dir: Path) -> None:
    support = demo.agents["support"]
    KnowledgeDocument.objects.create(agent=support, source="manual/escalation", title="Escalation", body="Call Sam.")
    (knowledge_dir / "support" / "rate-limits.md").unlink()

    _seed(knowledge_dir=knowledge_dir)

    sources = set(support.documents.values_list("source", flat=True))
    assert "support/rate-limits" not in sources
    assert {"support/redis-down", "manual/escalation"} <= sources


def test_it_keeps_an_operators_changes_to_agents_and_policies(demo: Demo) -> None:
    TTLPolicy.objects.filter(name="support").update(ttl_seconds=5400)
    Agent.objects.filter(slug="support").update(top_k=6)

    _seed()

    assert TTLPolicy.objects.get(name="support").ttl_seconds == 5400
    assert Agent.objects.get(slug="support").top_k == 6


def test_it_refuses_to_invent_a_password_when_debug_is_off(demo: Demo, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOKENCACHE_DEMO_PASSWORD")
    with override_settings(DEBUG=False), pytest.raises(CommandError, match="TOKENCACHE_DEMO_PASSWORD"):
        _seed()
