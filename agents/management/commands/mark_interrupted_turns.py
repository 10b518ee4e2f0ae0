"""`manage.py mark_interrupted_turns`: answer questions left hanging by a stopped process (scripts/run.sh)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from agents.interrupted import mark_interrupted_turns


class Command(BaseCommand):
    help = (
        "Give every question older than the model's total timeout that has no answer an `interrupted` "
        "error answer. Safe to run at any time, and again."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        marked = mark_interrupted_turns()
        self.stdout.write(f"{len(marked)} interrupted turn(s) answered with an error.")
