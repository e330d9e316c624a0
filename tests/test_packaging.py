"""What the production image installs: the runtime list, without the simulator's extra."""

from __future__ import annotations

import json
import subprocess
import sys

from scripts.deps import PYPROJECT, requirements
from tests.conftest import ROOT

# Every module a production process imports: web, worker, and each management command.
PROBE = """
import importlib, json, pkgutil, sys
import django
django.setup()
import portal.asgi, portal.urls, diagnostics.tasks, diagnostics.management.commands as commands
for module in pkgutil.iter_modules(commands.__path__):
    importlib.import_module(f"{commands.__name__}.{module.name}")
print(json.dumps(sorted(name for name in sys.modules if name.startswith("tree_sitter"))))
"""


def test_the_runtime_dependencies_leave_the_simulators_parser_out():
    runtime = requirements(PYPROJECT, [])
    assert not [r for r in runtime if r.startswith("tree-sitter")]
    assert [r for r in requirements(PYPROJECT, ["winsim"]) if r.startswith("tree-sitter")]


def test_the_portal_imports_nothing_from_the_simulators_extra():
    env = {"PATH": "/usr/bin:/bin", "DJANGO_SETTINGS_MODULE": "portal.settings", "DEBUG": "true"}
    probe = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert probe.returncode == 0, probe.stderr[-2000:]
    assert json.loads(probe.stdout.splitlines()[-1]) == []
