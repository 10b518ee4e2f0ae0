"""The admin lists every process's breaker with the cache figures above it."""

import pytest
from django.test import Client

from cachecore.models import BreakerProcess


@pytest.mark.django_db
def test_staff_see_every_process_breaker_and_the_cache_figures(client: Client, root) -> None:
    BreakerProcess.objects.create(host="web-1", pid=11, role="web", state="closed", last_change="2026-01-01T00:00Z")
    BreakerProcess.objects.create(host="worker-1", pid=22, role="worker", state="open", last_change="2026-01-01T00:00Z")
    client.force_login(root)
    response = client.get("/admin/cachecore/breakerprocess/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "web-1" in page and "worker-1" in page
    assert "Token cache (all processes)" in page and "Hit rate" in page


@pytest.mark.django_db
def test_breaker_rows_cannot_be_added_or_edited_by_hand(client: Client, root) -> None:
    client.force_login(root)
    assert client.get("/admin/cachecore/breakerprocess/add/").status_code == 403


@pytest.mark.django_db
def test_the_cache_figures_show_latencies_in_milliseconds_after_lookups(client: Client, root) -> None:
    from cachecore.store import get_many
    from cachecore.tokenizers import get_tokenizer

    tokenizer = get_tokenizer("tiktoken:cl100k_base")
    for _ in range(2):  # a miss, then a hit
        get_many(tokenizer, ["Latency shown to admins."], ttl=60, agent="admin-test")
    client.force_login(root)
    page = client.get("/admin/cachecore/breakerprocess/").content.decode()
    assert "Process breakers" in page
    hit_cell = page.split("Mean hit latency</th><td>")[1].split("</td>")[0]
    assert hit_cell.endswith(" ms") and float(hit_cell.removesuffix(" ms")) > 0
