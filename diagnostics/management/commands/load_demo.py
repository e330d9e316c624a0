import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from diagnostics.models import Credential, Machine, Secret
from diagnostics.roles import EMPLOYEE, HELPDESK, KB_ADMIN, ensure_groups
from winsim.hosts import load_profile

DEMO_USERS = [
    # username, role, is_staff, is_superuser, owns the demo machines
    ("tanaka", EMPLOYEE, False, False, True),
    ("suzuki", EMPLOYEE, False, False, False),
    ("helpdesk", HELPDESK, True, False, False),
    ("kbadmin", KB_ADMIN, True, False, False),
    ("admin", None, True, True, False),
]


class Command(BaseCommand):
    help = (
        "Create the demo users (new random passwords, printed) and one machine per host of a "
        "winsim profile, owned by the demo employee."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--profile", default=str(Path(settings.BASE_DIR) / "winsim/profiles/demo.yaml")
        )
        parser.add_argument(
            "--address",
            default="127.0.0.1",
            help="where the workers reach the winsim hosts (docker compose: winsim)",
        )

    @transaction.atomic
    def handle(self, *args, profile, address, **options):
        try:
            hosts = load_profile(profile)
        except (OSError, ValueError) as exc:
            raise CommandError(f"cannot read the profile {profile}: {exc}") from None
        groups = ensure_groups()
        User = get_user_model()
        logins, owners = [], []
        for username, role, staff, superuser, owns in DEMO_USERS:
            user, _ = User.objects.get_or_create(username=username)
            password = secrets.token_urlsafe(9)
            user.set_password(password)
            user.is_staff, user.is_superuser = staff, superuser
            user.email = f"{username}@example.com"  # hand-over e-mails (console in the demo)
            user.save()
            if role:
                user.groups.add(groups[role])
            if owns:
                owners.append(user)
            logins.append((username, password, role or "superuser"))
        for host in hosts:
            cred, _ = Credential.objects.get_or_create(
                name=f"{host.name}-winrm", defaults={"username": host.username}
            )
            cred.username = host.username
            cred.set_password(host.password)
            # A lab: winsim's hosts answer over plain HTTP or with a self-signed certificate,
            # so their identity cannot be verified (README, "Where credentials go").
            cred.allow_unverified = True
            cred.save()
            machine, _ = Machine.objects.update_or_create(
                name=host.name,
                defaults={
                    "address": address,
                    "port": host.port,
                    "scheme": host.scheme,
                    "verify_tls": False,  # winsim's HTTPS hosts use a self-signed certificate
                    "credential": cred,
                },
            )
            machine.bind(None)  # the demo's own set-up, by whoever runs this command
            machine.save(update_fields=["bound_target", "bound_by", "bound_at"])
            machine.owners.add(*owners)
        if hosts:
            # The company PSK that set_vpn_psk fixes send: the demo VPN server's own key.
            secret, _ = Secret.objects.get_or_create(
                name="company-l2tp-psk", defaults={"description": "Company L2TP pre-shared key"}
            )
            secret.set_value(hosts[0].server.psk)
            secret.save()
        self.stdout.write(f"{len(hosts)} demo machines from {profile}")
        self.stdout.write("Demo logins (passwords are new on every load):")
        for username, password, role in logins:
            self.stdout.write(f"  {username:<10} {password:<14} {role}")
