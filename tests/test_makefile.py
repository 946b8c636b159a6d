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


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_two_tiers_split_the_suite_on_the_slow_marker_and_ci_runs_both(tmp_path):
    plans = {target: subprocess.run(["make", "-n", target, f"VENV={tmp_path / 'venv'}"], capture_output=True,
                                    text=True, cwd=ROOT, timeout=60) for target in ("test", "test-slow")}
    assert all(plan.returncode == 0 for plan in plans.values())
    assert '-m pytest tests -m "not slow"' in plans["test"].stdout
    assert "-m pytest tests -m slow" in plans["test-slow"].stdout
    assert "make test test-slow" in (ROOT / ".ci" / "run").read_text()
    assert "slow:" in (ROOT / "setup.cfg").read_text()  # registered, so --strict-markers would accept it
