"""`ruff check .` on the whole tree, with the rules in pyproject.toml ([tool.ruff]), as part of the fast lane."""
import importlib.util
import subprocess
import sys

import pytest

from tests.conftest import REPO


def test_ruff_finds_nothing():
    if importlib.util.find_spec("ruff") is None:
        pytest.skip("ruff is not installed (it is in the test extra: pip install -e '.[test]')")
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", "."],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"ruff check . found problems:\n{proc.stdout}{proc.stderr}"
