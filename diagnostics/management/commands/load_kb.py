from diagnostics.management.commands.kb_import import Command as ImportCommand


class Command(ImportCommand):
    help = "Load the shipped knowledge base (kb/*.yaml); the same as kb_import with its default."
