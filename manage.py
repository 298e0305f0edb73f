#!/usr/bin/env python
"""Django's command-line utility for Vigil."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "vigil.settings")
    if sys.argv[1:2] == ["makemigrations"]:
        # It reads models, never secrets: checking migrations must not need production config.
        os.environ.setdefault("VIGIL_KEYLESS_COMMAND", "1")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
