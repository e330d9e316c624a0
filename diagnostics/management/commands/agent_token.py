from django.core.management.base import BaseCommand, CommandError

from diagnostics import agents
from diagnostics.models import Machine


class Command(BaseCommand):
    help = (
        "Create a one-time enrolment code for the Kaiketsu agent (agent/install.ps1 -Token): "
        "for one machine (--machine NAME), or for a batch of N machines (--batch N; each "
        "agent's computer name picks or creates its machine). Prints the code, shown only once."
    )

    def add_arguments(self, parser):
        group = parser.add_mutually_exclusive_group(required=True)
        group.add_argument("--machine", help="the machine the code enrols")
        group.add_argument("--batch", type=int, help="how many machines may enrol with it")
        parser.add_argument("--hours", type=int, default=72, help="validity (default 72)")
        parser.add_argument(
            "--revoke", action="store_true", help="revoke --machine's agent instead"
        )

    def handle(self, *args, machine, batch, hours, revoke, **options):
        target = None
        if machine:
            target = Machine.objects.filter(name=machine).first()
            if target is None:
                raise CommandError(f"no machine named {machine!r}")
        if revoke:
            if target is None:
                raise CommandError("--revoke needs --machine")
            agents.revoke(target)
            self.stdout.write(f"revoked the agent of {target.name}")
            return
        if batch is not None and not 1 <= batch <= 10_000:
            raise CommandError("--batch must be between 1 and 10000")
        if not 1 <= hours <= 24 * 30:
            raise CommandError("--hours must be between 1 and 720")
        _token, code = agents.create_token(machine=target, uses=batch or 1, hours=hours)
        self.stdout.write(code)
