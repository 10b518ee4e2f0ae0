"""`manage.py warm_cache [--agent SLUG]`: write chunks' token IDs into the cache now, in this process."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from agents.models import Agent, WarmingRun
from agents.warming import CacheUnavailable, run_warming


class Command(BaseCommand):
    help = (
        "Warm the token cache: every enabled agent's chunks (the most used first), or one agent's. "
        "Runs here, not on the worker, and shows in the admin's warming runs like any other run."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--agent", metavar="SLUG", help="Only this agent's knowledge.")

    def handle(self, *args: Any, **options: Any) -> None:
        agent = None
        if options["agent"]:
            agent = Agent.objects.filter(slug=options["agent"]).first()
            if agent is None:
                raise CommandError(f"No agent named {options['agent']!r}.")
        run = WarmingRun.objects.create(agent=agent, reason=WarmingRun.Reason.COMMAND)
        try:
            run = run_warming(run=run)
        except CacheUnavailable as error:
            raise CommandError(f"Nothing was warmed: {error}.") from None
        if run.status == WarmingRun.Status.SKIPPED:
            raise CommandError("Another warming run for the same agents is under way; try again when it ends.")
        rate = f"{run.tokens_per_second:,.0f} tokens/s" if run.tokens_per_second else "nothing to tokenize"
        self.stdout.write(
            f"Warmed {run.done_chunks} chunks in {run.seconds:.2f} s of work ({rate}); "
            f"{run.already_cached} were already cached, {run.tokens_written} tokens written."
        )
