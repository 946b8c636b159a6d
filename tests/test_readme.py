"""README.md stays true: its Python snippets run, in order, in one namespace (as a reader would paste them), and every
number of its overview (the result table and its caption) is read from the committed benchmark results."""

import json
import re
from pathlib import Path

import pytest

import cktf_hf
from cktf_hf.demo.datasets import fashion_mnist_available

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
SNIPPETS = re.findall(r"```python\n(.*?)```", README, flags=re.S)
OVERVIEW = README.split("\n## ", 1)[0]  # what a visitor reads first: the pitch and the result table
RESULTS = ROOT / "benchmarks" / "results" / "protocol_10k.json"  # the compression benchmark's main protocol
CELL = re.compile(r"^(\d+\.\d{2}) ± (\d+\.\d{2})$")


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


def _result_table() -> tuple[list[str], dict[str, list[str]]]:
    """The overview's table: the students of its header, and each row's method (its first `name`) → its cells."""
    lines = [line for line in OVERVIEW.splitlines() if line.startswith("|")]
    assert len(lines) > 2, "README.md's overview has no result table"
    students = re.findall(r"`([^`]+)`", lines[0])
    rows = {}
    for line in lines[2:]:
        first, *cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows[re.search(r"`([^`]+)`", first).group(1)] = cells
    return students, rows


def _percent(fraction: float) -> str:
    return f"{100 * fraction:.2f}"


def test_the_result_table_is_the_committed_protocol_results():
    results = json.loads(RESULTS.read_text())
    aggregates = {(row["method"], row["student"]): row for row in results["aggregates"]}
    students, rows = _result_table()
    assert students and set(students) <= set(results["students"]), students
    assert len(rows) >= 3
    for method, cells in rows.items():
        assert len(cells) == len(students), (method, cells)
        for student, cell in zip(students, cells):
            row = aggregates[(method, student)]  # a KeyError names a row the results do not hold
            assert row["n"] == len(results["settings"]["seeds"]), (method, student)
            assert CELL.match(cell), (method, student, cell)
            assert cell == f"{_percent(row['test_mean'])} ± {_percent(row['test_std'])}", (method, student)


def test_every_number_of_the_overview_comes_from_the_results():
    results = json.loads(RESULTS.read_text())
    settings, teacher = results["settings"], results["teacher"]
    allowed = {
        f"{settings['train_subset']:,}", str(settings["epochs"]), str(len(settings["seeds"])),
        f"{teacher['parameters']:,}", _percent(teacher["test_accuracy"]),
        *(f"{student['parameters']:,}" for student in results["students"].values()),
        *(_percent(row[key]) for row in results["aggregates"] for key in ("test_mean", "test_std")),
    }
    prose = re.sub(r"`[^`]*`|\([^()\s]*\)", "", OVERVIEW)  # names in code and link targets are not figures
    numbers = re.findall(r"\d[\d,]*(?:\.\d+)?", prose)
    assert numbers and set(numbers) <= allowed, sorted(set(numbers) - allowed)


def test_the_software_citation_names_this_version():
    versions = re.findall(r"@software\{.*?version\s*=\s*\{([^}]*)\}", README, flags=re.S)
    assert versions == [cktf_hf.__version__]


def test_every_module_the_readme_names_exists():
    named = set(re.findall(r"`(cktf_hf/[\w/]*(?:\.py)?)`", README))
    assert named, "README.md names no module"
    assert sorted(path for path in named if not (ROOT / path).exists()) == []
