"""Every Python snippet in README.md runs, in order, in one namespace (as a reader would paste them)."""

import re
from pathlib import Path

import pytest

from cktf_hf.demo.datasets import fashion_mnist_available

ROOT = Path(__file__).resolve().parents[1]
SNIPPETS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def test_readme_has_snippets():
    assert len(SNIPPETS) >= 3


@pytest.mark.skipif(not fashion_mnist_available(), reason="needs the Debian package dataset-fashion-mnist "
                                                          "(.ci/run and make demo install it)")
def test_readme_snippets_run(tmp_path, monkeypatch, capsys):
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for number, snippet in enumerate(SNIPPETS):
        exec(compile(snippet, f"README.md snippet {number}", "exec"), namespace)
    assert (tmp_path / "outputs" / "quickstart" / "model.safetensors").is_file()
    assert (tmp_path / "outputs" / "quickstart" / "distillation_config.json").is_file()
    assert "ViTForImageClassification" in capsys.readouterr().out
