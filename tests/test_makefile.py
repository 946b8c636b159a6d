"""`make test` sets up what the suite needs, so that a fresh machine runs it without skips."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_test_installs_fashion_mnist_first(tmp_path):
    missing = tmp_path / "fashion-mnist" / "t10k-images-idx3-ubyte.gz"
    plan = subprocess.run(["make", "-n", "test", f"FASHION_MNIST={missing}", f"VENV={tmp_path / 'venv'}"],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert plan.returncode == 0, plan.stderr
    commands = plan.stdout
    assert "dataset-fashion-mnist" in commands and "-m pytest tests" in commands
    assert commands.index("dataset-fashion-mnist") < commands.index("-m pytest tests")
