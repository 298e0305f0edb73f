from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from incidents.models import ApiToken
from incidents.permissions import ROLES
from incidents.tokens import USER_KEY_PREFIX, display_prefix, hash_secret, new_secret


def set_role(user, role: str) -> None:
    """Make `role` the user's only Vigil role."""
    user.groups.remove(*Group.objects.filter(name__in=ROLES))
    user.groups.add(Group.objects.get(name=role))


class Command(BaseCommand):
    help = "Create an API key for a user and print it, alone on the last line (shown once)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument(
            "--role", choices=ROLES, help="Give the user this role (replacing others)"
        )
        parser.add_argument("--create", action="store_true", help="Create the user if unknown")
        parser.add_argument("--name", default="", help="A label for the key")

    @transaction.atomic
    def handle(self, *args, username: str, role: str | None, create: bool, name: str, **options):
        User = get_user_model()
        user = User.objects.filter(username=username).first()
        if user is None:
            if not create:
                raise CommandError(f"No user {username!r}; pass --create to create one.")
            user = User.objects.create_user(username=username)  # no password: API only
        if role:
            set_role(user, role)
        key = new_secret(USER_KEY_PREFIX)
        ApiToken.objects.create(
            user=user, name=name, key_hash=hash_secret(key), key_prefix=display_prefix(key)
        )
        self.stdout.write(f"API key for {username}{f' ({role})' if role else ''}:")
        self.stdout.write(key)
