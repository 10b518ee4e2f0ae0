"""The admin lists every process's breaker with the cache figures above it (dashboards.admin)."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from cachecore.models import BreakerProcess


@pytest.mark.django_db
def test_staff_see_every_process_breaker_and_the_cache_figures(client: Client, root: User) -> None:
    now = timezone.now()
    BreakerProcess.objects.create(host="web-1", pid=11, role="web", state="closed", last_change=now)
    BreakerProcess.objects.create(host="worker-1", pid=22, role="worker", state="open", last_change=now)
    client.force_login(root)
    response = client.get("/admin/cachecore/breakerprocess/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "web-1" in page and "worker-1" in page
    assert "Token cache, since each process started (all processes)" in page
    assert "hits / (hits + misses); bypassed and corrupt lookups are shown beside it" in page


@pytest.mark.django_db
def test_an_old_record_is_never_shown_as_a_plain_closed(client: Client, root: User) -> None:
    BreakerProcess.objects.create(
        host="web-1",
        pid=11,
        role="web",
        state="closed",
        last_change=timezone.now() - timedelta(minutes=5),
        last_seen=timezone.now() - timedelta(minutes=5),
    )
    client.force_login(root)
    page = client.get("/admin/cachecore/breakerprocess/").content.decode()
    assert "Closed (stale record)" in page
    assert "5 min ago" in page


@pytest.mark.django_db
def test_breaker_rows_cannot_be_added_or_edited_by_hand(client: Client, root: User) -> None:
    client.force_login(root)
    assert client.get("/admin/cachecore/breakerprocess/add/").status_code == 403


@pytest.mark.django_db
def test_the_hit_rate_leaves_bypassed_lookups_out_and_latencies_read_in_ms(client: Client, root: User) -> None:
    from cachecore.stats import collect_stats
    from cachecore.store import get_many
    from cachecore.tokenizers import get_tokenizer

    tokenizer = get_tokenizer("tiktoken:cl100k_base")
    for _ in range(2):  # a miss, then a hit
        get_many(tokenizer, ["Latency shown to admins."], ttl=60, agent="admin-test")
    stats = collect_stats(include_redis=False)
    client.force_login(root)
    page = client.get("/admin/cachecore/breakerprocess/").content.decode()
    assert "Process breakers" in page
    hit_cell = page.split("Mean hit latency</th><td>")[1].split("</td>")[0]
    assert hit_cell.endswith(" ms") and len(hit_cell.removesuffix(" ms").split(".")[1]) == 1
    rate_cell = page.split("Hit rate</th><td>")[1].split(" ")[0]
    assert rate_cell == f"{stats.hits / (stats.hits + stats.misses):.0%}"
    assert "Tokens cached (Redis now)" in page


@pytest.mark.django_db
def test_with_redis_back_the_figures_read_it_even_while_this_process_breaker_is_still_open(
    client: Client, root: User
) -> None:
    from redis.exceptions import ConnectionError

    from cachecore.breaker import State
    from cachecore.store import default_store

    breaker = default_store().breaker
    try:
        for _ in range(breaker.fail_max):
            with pytest.raises(ConnectionError), breaker.guard():
                raise ConnectionError("Redis was down a moment ago")
        assert breaker.state is State.OPEN
        client.force_login(root)
        page = client.get("/admin/cachecore/breakerprocess/").content.decode()
    finally:
        breaker.reset()
    assert "Tokens cached (Redis now)" in page and "Redis does not answer" not in page
