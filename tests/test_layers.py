"""The import layering of aha (the import-linter contracts in pyproject.toml) holds.

The same check as `make lint`'s `lint-imports`, run with the tests so that a wrong-way import
(eval importing train, a task importing a reward, ...) fails CI.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# import-linter's command, run by this interpreter (the `lint-imports` script may not be on PATH)
LINT = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"


def test_import_contracts_are_kept():
    if importlib.util.find_spec("importlinter") is None:
        pytest.fail("import-linter is not installed: it is in the dev extra (pip install -e '.[dev]', or make install)")
    env = dict(os.environ)
    # check this checkout's source, whatever copy of aha is installed
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("COLUMNS", "120")
    proc = subprocess.run([sys.executable, "-c", LINT, "--no-cache"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    report = proc.stdout + proc.stderr
    if proc.returncode != 0:
        pytest.fail("an import breaks aha's layering (contracts in pyproject.toml, [tool.importlinter]): a module "
                    "may import only from the layers below its own. Move the code down to the layer that both "
                    "sides may import, or pass it in from above, instead of importing upwards.\n\n" + report,
                    pytrace=False)
    assert "KEPT" in report and "BROKEN" not in report, report
