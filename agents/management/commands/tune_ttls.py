"""`manage.py tune_ttls`: recommend every TTL policy's TTL now (and apply where the policy says so)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from agents.tuner import MIN_REUSES, tune_all


class Command(BaseCommand):
    help = "Run the TTL tuner once, as Celery beat does hourly, and print each policy's recommendation."

    def handle(self, *args: Any, **options: Any) -> None:
        for name, result in tune_all().items():
            if result.recommendation is None:
                self.stdout.write(f"{name}: no recommendation (fewer than {MIN_REUSES} chunk reuses this week)")
            else:
                applied = " — applied" if result.applied else ""
                self.stdout.write(f"{name}: {result.recommendation}{applied}")
