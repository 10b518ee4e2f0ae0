"""`manage.py create_api_token <username> [--name NAME]`: prints a new API token once."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from agents.tokens import create_api_token


class Command(BaseCommand):
    help = "Create an API token for a user and print it. It is shown once: only its hash is stored."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", default="cli", help="A label to recognise the token by (default: cli).")

    def handle(self, *args: Any, **options: Any) -> None:
        User = get_user_model()
        try:
            user = User.objects.get(**{User.USERNAME_FIELD: options["username"]})
        except User.DoesNotExist:
            raise CommandError(f"No user named {options['username']!r}.") from None
        if not user.is_active:
            raise CommandError(f"User {options['username']!r} is inactive; a token would not authenticate.")
        token, raw = create_api_token(user=user, name=options["name"])
        # The token alone on stdout, so `TOKEN=$(manage.py create_api_token alice)` works; the rest on stderr.
        self.stdout.write(raw)
        self.stderr.write(
            f"Token {token.prefix}... ({token.name}) for {options['username']}. "
            "Store it now: it cannot be shown again. Use it as `Authorization: Bearer <token>`."
        )
