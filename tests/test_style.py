"""The code base stays ruff clean (configuration in ruff.toml)."""

import subprocess
import sys

from conftest import REPO


def test_ruff_is_clean():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", str(REPO)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
