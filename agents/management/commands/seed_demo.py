"""Seed the demo (idempotent): `make run` calls this on every start.

Logins, TTL policies, agents and groups are created once and then left to the admin:
an operator's tuning survives restarts. Knowledge follows its files: a changed file
updates its document (and chunks), a removed file removes it, an unchanged one is not
touched, so running the seed twice leaves the same rows.
"""

from __future__ import annotations

import os
import pydoc_data.topics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from agents.knowledge import delete_document, upsert_document
from agents.models import Agent, TTLPolicy

DEMO_PASSWORD_ENV = "TOKENCACHE_DEMO_PASSWORD"
DEFAULT_DEMO_PASSWORD = "tokencache-demo"  # a laptop demo login, refused without DEBUG
DEMO_KNOWLEDGE_DIR = Path(__file__).resolve().parents[2] / "demo"

# The original system's TTLs and their reasons, with the guidance an operator needs to
# change them. Token entries are content-addressed, so a TTL never decides staleness
# (an edited chunk has a new key); it decides how long unused entries hold memory.
TTL_POLICIES: list[dict[str, Any]] = [
    {
        "name": "support",
        "ttl_seconds": 3600,
        "expiry_mode": TTLPolicy.ExpiryMode.FIXED,
        "min_ttl_seconds": 900,
        "max_ttl_seconds": 14400,
        "rationale": (
            "Support articles are updated frequently as the product and its known problems change. "
            "One hour keeps the entries of the articles people are asking about right now, and lets "
            "the entries of superseded chunks (which no request asks for after an edit) leave Redis "
            "within the hour instead of waiting for memory pressure."
        ),
        "tuning_guidance": (
            "Watch the support agent's hit rate on the cache dashboard after warm-up. Below 70% while "
            "the same questions recur: raise the TTL in steps of 30 minutes (up to 4 h), because "
            "entries are expiring between repeats. If Redis memory nears maxmemory and evictions "
            "rise: lower it towards 15 minutes. Edits never need a shorter TTL: changed text gets a "
            "new key, so old tokens are never served whatever the TTL."
        ),
    },
    {
        "name": "documentation",
        "ttl_seconds": 7200,
        "expiry_mode": TTLPolicy.ExpiryMode.SLIDING,
        "min_ttl_seconds": 3600,
        "max_ttl_seconds": 86400,
        "rationale": (
            "Reference documentation is stable content: it changes with a release, not daily. Two hours, "
            "sliding (each hit restarts the clock), keeps the popular reference topics cached for as "
            "long as anyone reads them, while topics nobody asks about expire."
        ),
        "tuning_guidance": (
            "A hit rate above 90% with flat memory: the TTL may grow towards 24 h for fewer misses after "
            "quiet periods (nights, weekends). If the documentation agent's entries crowd out the other "
            "agents' (their hit rates fall while documentation's stays high), shorten it or switch to "
            "fixed expiry. After a documentation release, nothing needs flushing: new text, new keys."
        ),
    },
    {
        "name": "business generation",
        "ttl_seconds": 3600,
        "expiry_mode": TTLPolicy.ExpiryMode.FIXED,
        "min_ttl_seconds": 900,
        "max_ttl_seconds": 14400,
        "rationale": (
            "Business templates evolve: proposals, invoices and onboarding emails are reworded as the "
            "business changes, and a template is used in bursts (a week of proposals, then none). One "
            "hour covers a burst without holding entries of retired wording for long."
        ),
        "tuning_guidance": (
            "If the business agent's misses cluster at the start of each working session, the bursts "
            "are longer than the TTL: raise it to 2 h. If templates are edited several times a day and "
            "memory matters more than the first request after an edit, lower it to 30 minutes. The "
            "dashboard's tokens-from-cache share is the figure to watch, not the hit count alone."
        ),
    },
]


@dataclass(frozen=True)
class DemoAgent:
    slug: str
    name: str
    description: str
    system_prompt: str
    policy: str
    group: str
    knowledge: str  # "pydoc", or a folder of markdown files under the knowledge directory


DEMO_AGENTS = [
    DemoAgent(
        slug="support",
        name="Support",
        description="Troubleshooting and how-to answers about Tokencache itself.",
        system_prompt=(
            "You are the Tokencache support assistant. Answer from the context below, cite the "
            "documents you used, and say so when the context does not cover the question."
        ),
        policy="support",
        group="support",
        knowledge="support",
    ),
    DemoAgent(
        slug="documentation",
        name="Python documentation",
        description="The Python language reference topics shipped with Python (pydoc).",
        system_prompt=(
            "You answer questions about the Python language from its reference documentation in the "
            "context below. Quote the relevant rules precisely and cite the topics you used."
        ),
        policy="documentation",
        group="support",
        knowledge="pydoc",
    ),
    DemoAgent(
        slug="business",
        name="Business templates",
        description="Proposals, invoices, onboarding emails and other business templates.",
        system_prompt=(
            "You help write business documents from the templates in the context below. Follow the "
            "template's structure, keep placeholders in brackets, and cite the templates you used."
        ),
        policy="business generation",
        group="business",
        knowledge="business",
    ),
]


def _demo_password() -> str:
    password = os.environ.get(DEMO_PASSWORD_ENV, "")
    if not password:
        if not settings.DEBUG:
            raise CommandError(f"Set {DEMO_PASSWORD_ENV} to seed demo logins when DEBUG is off")
        password = DEFAULT_DEMO_PASSWORD
    return password


def _pydoc_documents() -> dict[str, tuple[str, str]]:
    """source -> (title, body): one document per reference topic, titled by its first line."""
    return {
        f"pydoc/{key}": (body.strip().splitlines()[0].strip(), body)
        for key, body in sorted(pydoc_data.topics.topics.items())
    }


def _markdown_documents(folder: Path, prefix: str) -> dict[str, tuple[str, str]]:
    """source -> (title, body) for every `*.md` file, titled by its `# ` first line."""
    documents = {}
    for path in sorted(folder.glob("*.md")):
        body = path.read_text(encoding="utf-8")
        first_line = body.lstrip().splitlines()[0] if body.strip() else ""
        title = first_line[2:].strip() if first_line.startswith("# ") else path.stem.replace("-", " ").capitalize()
        documents[f"{prefix}/{path.stem}"] = (title, body)
    return documents


class Command(BaseCommand):
    help = "Seed the demo logins, TTL policies, agents, groups and knowledge (idempotent)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--knowledge-dir",
            type=Path,
            default=DEMO_KNOWLEDGE_DIR,
            help="Folder holding support/*.md and business/*.md (default: agents/demo).",
        )

    def handle(self, *args: Any, knowledge_dir: Path, **options: Any) -> None:
        password = _demo_password()
        with transaction.atomic():
            self._seed_logins(password)
            agents = self._seed_agents()
        for demo in DEMO_AGENTS:
            if demo.knowledge == "pydoc":
                documents = _pydoc_documents()
            else:
                documents = _markdown_documents(knowledge_dir / demo.knowledge, demo.knowledge)
            self._seed_knowledge(agents[demo.slug], prefix=f"{demo.knowledge}/", documents=documents)
        shown = password if password == DEFAULT_DEMO_PASSWORD else f"(the password in {DEMO_PASSWORD_ENV})"
        self.stdout.write(
            f"Demo logins: admin / {shown} (superuser), support / {shown} (support group), "
            f"viewer / {shown} (dashboards only)"
        )

    def _seed_logins(self, password: str) -> None:
        user_model = get_user_model()
        for username, flags in (
            ("admin", {"is_staff": True, "is_superuser": True}),
            ("support", {"is_staff": False, "is_superuser": False}),
            ("viewer", {"is_staff": False, "is_superuser": False}),
        ):
            user, created = user_model.objects.get_or_create(
                username=username, defaults={"email": f"{username}@example.com", **flags}
            )
            # The password is set only once: an operator's later change survives restarts.
            if created:
                user.set_password(password)
                user.save()
        user_model.objects.get(username="support").groups.add(Group.objects.get_or_create(name="support")[0])
        # The dashboards are for staff and this group (dashboards.access): the viewer watches, uses no agent.
        user_model.objects.get(username="viewer").groups.add(Group.objects.get_or_create(name="viewers")[0])

    def _seed_agents(self) -> dict[str, Agent]:
        policies = {
            spec["name"]: TTLPolicy.objects.get_or_create(name=spec["name"], defaults=spec)[0] for spec in TTL_POLICIES
        }
        agents = {}
        for demo in DEMO_AGENTS:
            agent, _ = Agent.objects.get_or_create(
                slug=demo.slug,
                defaults={
                    "name": demo.name,
                    "description": demo.description,
                    "system_prompt": demo.system_prompt,
                    "ttl_policy": policies[demo.policy],
                },
            )
            agent.allowed_groups.add(Group.objects.get_or_create(name=demo.group)[0])
            agents[demo.slug] = agent
        return agents

    def _seed_knowledge(self, agent: Agent, *, prefix: str, documents: dict[str, tuple[str, str]]) -> None:
        changed = 0
        for source, (title, body) in documents.items():
            changed += upsert_document(agent=agent, source=source, title=title, body=body)[1]
        # The seed owns its prefix: a document whose file is gone goes too; others stay.
        removed = list(agent.documents.filter(source__startswith=prefix).exclude(source__in=documents))
        for document in removed:
            delete_document(document=document)
        self.stdout.write(
            f"{agent.slug}: {len(documents)} documents ({changed} created or updated, {len(removed)} removed)"
        )
