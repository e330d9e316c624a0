from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from diagnostics.kbstore import KBError, import_dir


class Command(BaseCommand):
    help = "Import knowledge-base YAML files (kb/*.yaml by default) into the database, all or none."

    def add_arguments(self, parser):
        parser.add_argument("path", nargs="?", default=str(Path(settings.BASE_DIR) / "kb"))

    def handle(self, *args, path, **options):
        if not Path(path).is_dir():
            raise CommandError(f"{path} is not a directory")
        try:
            articles = import_dir(path)
        except KBError as exc:
            raise CommandError(f"nothing imported:\n{exc}") from None
        self.stdout.write(f"{len(articles)} articles imported from {path}")
