#!/usr/bin/env python
"""Django's command-line utility for Kaiketsu."""

import os
import sys


def main() -> None:
    from portal.envfiles import read_env_files

    # The running demo's settings and .env, under the real environment (portal/envfiles.py).
    read_env_files()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
