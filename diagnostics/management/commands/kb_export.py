from django.core.management.base import BaseCommand

from diagnostics.kbstore import export_dir


class Command(BaseCommand):
    help = "Write every article as canonical YAML (kb/<slug>.yaml form) into a directory."

    def add_arguments(self, parser):
        parser.add_argument("path", help="target directory (created if missing)")

    def handle(self, *args, path, **options):
        written = export_dir(path)
        self.stdout.write(f"{len(written)} articles written to {path}")
