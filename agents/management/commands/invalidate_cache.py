"""`manage.py invalidate_cache --agent SLUG | --document ID | --tokenizer SPEC`: free entries now."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from agents.invalidation import forget_agent, forget_document, forget_tokenizer
from agents.models import Agent, KnowledgeDocument
from cachecore.exceptions import TokenizerUnavailable


class Command(BaseCommand):
    help = "Remove cached token IDs of one agent, one document or one tokenizer, and say how many keys went."

    def add_arguments(self, parser: CommandParser) -> None:
        which = parser.add_mutually_exclusive_group(required=True)
        which.add_argument("--agent", metavar="SLUG")
        which.add_argument("--document", metavar="ID", type=int)
        which.add_argument("--tokenizer", metavar="SPEC", help="e.g. tiktoken:cl100k_base")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["agent"]:
            agent = Agent.objects.filter(slug=options["agent"]).first()
            if agent is None:
                raise CommandError(f"No agent named {options['agent']!r}.")
            deleted, what = forget_agent(agent=agent), f"agent {agent.slug}"
        elif options["document"] is not None:
            document = KnowledgeDocument.objects.select_related("agent").filter(pk=options["document"]).first()
            if document is None:
                raise CommandError(f"No document {options['document']}.")
            deleted, what = forget_document(document=document), f"document {document.pk} ({document.title})"
        else:
            try:
                deleted, what = forget_tokenizer(tokenizer_spec=options["tokenizer"]), options["tokenizer"]
            except TokenizerUnavailable as error:
                raise CommandError(str(error)) from None
        self.stdout.write(f"Removed {deleted} cached entries of {what}.")
