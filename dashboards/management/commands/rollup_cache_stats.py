"""`manage.py rollup_cache_stats`: what the beat task does, by hand (catch up, backfill)."""

from typing import Any

from django.core.management.base import BaseCommand

from dashboards.rollup import run_rollup


class Command(BaseCommand):
    help = "Roll the answer records up into the dashboards' minute, hour and day figures, and prune old minutes."

    def handle(self, *args: Any, **options: Any) -> None:
        report = run_rollup()
        self.stdout.write(
            f"Rolled up {report.answers} answers into {report.minutes} minute rows up to "
            f"{report.rolled_until:%Y-%m-%d %H:%M} UTC; pruned {report.pruned} old rows; {report.seconds:.2f} s."
        )
