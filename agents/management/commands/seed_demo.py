"""Create the demo logins (idempotent): `make run` calls this on every start."""

import os
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

DEMO_PASSWORD_ENV = "TOKENCACHE_DEMO_PASSWORD"
DEFAULT_DEMO_PASSWORD = "tokencache-demo"  # a laptop demo login, refused without DEBUG


class Command(BaseCommand):
    help = "Create the demo admin (idempotent). Passwords come from TOKENCACHE_DEMO_PASSWORD."

    def handle(self, *args: Any, **options: Any) -> None:
        password = os.environ.get(DEMO_PASSWORD_ENV, "")
        if not password:
            if not settings.DEBUG:
                raise CommandError(f"Set {DEMO_PASSWORD_ENV} to seed demo logins when DEBUG is off")
            password = DEFAULT_DEMO_PASSWORD
        user_model = get_user_model()
        admin, created = user_model.objects.get_or_create(
            username="admin", defaults={"email": "admin@example.com", "is_staff": True, "is_superuser": True}
        )
        if created:
            admin.set_password(password)
            admin.save()
        shown = password if password == DEFAULT_DEMO_PASSWORD else f"(the password in {DEMO_PASSWORD_ENV})"
        self.stdout.write(f"Demo login: admin / {shown}")
