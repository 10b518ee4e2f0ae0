"""A TTL policy always yields a usable expiry: at least 1 s and within its tuning bounds.

Redis refuses a zero expiry, so a policy with `ttl_seconds=0` would fail every chat turn
of every agent using it; validation names the field, and the database refuses what is
written around validation.
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.test import Client

from agents.models import TTLPolicy
from tests.conftest import Demo


def _policy(**fields: int) -> TTLPolicy:
    values = {"ttl_seconds": 3600, "min_ttl_seconds": 900, "max_ttl_seconds": 14400, **fields}
    return TTLPolicy(name="draft", **values)


def test_a_policy_with_its_ttl_inside_its_bounds_is_valid(db: None) -> None:
    _policy().full_clean()
    _policy(ttl_seconds=1, min_ttl_seconds=1, max_ttl_seconds=1).full_clean()


@pytest.mark.parametrize("field", ["ttl_seconds", "min_ttl_seconds", "max_ttl_seconds"])
def test_a_zero_second_value_is_refused_on_its_field(db: None, field: str) -> None:
    with pytest.raises(ValidationError) as refused:
        _policy(**{field: 0}).full_clean()
    assert field in refused.value.message_dict


@pytest.mark.parametrize("ttl", [899, 14401])
def test_a_ttl_outside_its_bounds_is_refused_naming_them(db: None, ttl: int) -> None:
    with pytest.raises(ValidationError) as refused:
        _policy(ttl_seconds=ttl).full_clean()
    assert refused.value.message_dict["ttl_seconds"] == [
        "The TTL must lie between the minimum (900 s) and the maximum (14400 s)."
    ]


def test_a_minimum_above_the_maximum_is_refused(db: None) -> None:
    with pytest.raises(ValidationError) as refused:
        _policy(min_ttl_seconds=20000).full_clean()
    assert "must not exceed the maximum" in refused.value.message_dict["min_ttl_seconds"][0]


@pytest.mark.parametrize(
    "changes",
    [
        {"ttl_seconds": 0, "min_ttl_seconds": 0},
        {"min_ttl_seconds": 0},
        {"ttl_seconds": 600},
        {"ttl_seconds": 20000},
    ],
)
def test_the_database_refuses_a_policy_written_around_validation(demo: Demo, changes: dict[str, int]) -> None:
    policy = demo.agents["support"].ttl_policy
    with pytest.raises(IntegrityError), transaction.atomic():
        TTLPolicy.objects.filter(pk=policy.pk).update(**changes)
    policy.refresh_from_db()
    assert policy.ttl_seconds == 3600


def test_every_seeded_policy_satisfies_the_rules(demo: Demo) -> None:
    for policy in TTLPolicy.objects.all():
        policy.full_clean()


def test_the_admin_refuses_a_zero_ttl_with_a_form_error(demo: Demo, root: User) -> None:
    client = Client()
    client.force_login(root)
    policy = demo.agents["support"].ttl_policy
    form = {
        "name": policy.name,
        "ttl_seconds": 0,
        "expiry_mode": policy.expiry_mode,
        "rationale": policy.rationale,
        "tuning_guidance": policy.tuning_guidance,
        "min_ttl_seconds": 0,
        "max_ttl_seconds": policy.max_ttl_seconds,
    }

    response = client.post(f"/admin/agents/ttlpolicy/{policy.pk}/change/", form)

    assert response.status_code == 200
    assert "Ensure this value is greater than or equal to 1." in response.content.decode()
    policy.refresh_from_db()
    assert policy.ttl_seconds == 3600
