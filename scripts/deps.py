"""Print pyproject.toml's dependency lists as a pip requirements file.

Usage: python scripts/deps.py [--extra NAME ...] > requirements.txt

The project is not an installable package (no modules), so the Makefile and the Dockerfile
install its dependency lists directly instead of building a wheel: no build backend, no
egg-info in the checkout, and the same lists the lead keeps in pyproject.toml.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def requirements(pyproject: Path, extras: list[str]) -> list[str]:
    """Runtime dependencies plus those of each named optional extra, in file order."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    wanted = list(project.get("dependencies", []))
    optional = project.get("optional-dependencies", {})
    for extra in extras:
        if extra not in optional:
            raise SystemExit(f"{pyproject}: no optional-dependencies extra named {extra!r}")
        wanted.extend(optional[extra])
    return wanted


def main(argv: list[str] | None = None) -> int:
    """Write the requirement lines to stdout."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extra", action="append", default=[], help="optional extra to add")
    parser.add_argument("--pyproject", type=Path, default=PYPROJECT)
    args = parser.parse_args(argv)
    sys.stdout.write("".join(f"{line}\n" for line in requirements(args.pyproject, args.extra)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
