from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from diagnostics import access, jobs
from diagnostics.models import Job


class Command(BaseCommand):
    help = (
        "Cancel a queued or waiting job and free its machine, as the helpdesk user named by "
        "--by (written to the audit trail), as the button on the helpdesk's job page does."
    )

    def add_arguments(self, parser):
        parser.add_argument("job", type=int, help="the job's number")
        parser.add_argument("--by", required=True, help="the helpdesk user who cancels it")

    def handle(self, *args, job, by, **options):
        user = get_user_model().objects.filter(username=by).first()
        if user is None or not access.can_cancel_jobs(user):
            raise CommandError(f"{by!r} is not a helpdesk user: only the helpdesk cancels jobs")
        found = Job.objects.select_related("machine").filter(pk=job).first()
        if found is None:
            raise CommandError(f"there is no job #{job}")
        try:
            jobs.cancel(found, user)
        except jobs.JobRefused as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"job #{job} cancelled; {found.machine.name} is free")
