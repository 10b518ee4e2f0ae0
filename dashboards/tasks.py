"""Celery tasks of the dashboards: thin wrappers around `dashboards.rollup`."""

from celery import shared_task


@shared_task(name="dashboards.rollup_cache_stats", ignore_result=True)
def rollup_cache_stats() -> None:
    from dashboards.rollup import run_rollup

    run_rollup()
