"""Tests of benchmarks/cross_arch_report.py on synthetic protocols and results JSONs (written in tmp_path, no
training): the pair names, the table cells, each target's verdict with its numbers, and a protocol whose results JSON
is missing (a partial report, not a crash)."""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Optional

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS = os.path.join(ROOT, "benchmarks")
if BENCHMARKS not in sys.path:  # as when the script runs: its own folder first on the path (benchmarks' `harness`)
    sys.path.insert(0, BENCHMARKS)

import cross_arch_report as xreport  # noqa: E402

METHODS = ["cktf", "ofa", "kd", "crd-reference", "ofa+cktf-recipe"]
TARGETS = {"recipe": {"method": "cktf", "rivals": ["ofa", "kd", "crd-reference"]},
           "ordering": {"label": "OFA > KD > CRD", "order": ["ofa", "kd", "crd-reference"]}}


def _protocol(folder: str, name: str, teacher: str, students: list[str]) -> str:
    path = os.path.join(folder, f"{name}.yaml")
    with open(path, "w") as f:
        yaml.safe_dump({"name": name, "benchmark": "compression", "teacher": teacher, "students": students,
                        "methods": METHODS, "seeds": [0, 1, 2], "targets": TARGETS}, f)
    return path


def _row(method: str, student: str, mean: float, std: float, n: int = 3, lr: float = 2e-3) -> dict[str, Any]:
    return {"method": method, "student": student, "n": n, "seeds": list(range(n)), "test_mean": mean,
            "test_std": std, "val_mean": mean + 0.01, "learning_rate": lr}


def _grid(method: str, student: str, chosen: float, at_edge: bool, widened: Optional[list[str]] = None) -> dict:
    return {"method": method, "student": student, "chosen": chosen, "val": {f"{chosen:g}": 0.9},
            "widened": widened or [], "at_edge": at_edge}


def _results(folder: str, name: str, architecture: str, accuracy: float, rows: list[dict], grid: list[dict]) -> None:
    with open(os.path.join(folder, f"{name}.json"), "w") as f:
        json.dump({"teacher": {"architecture": architecture, "test_accuracy": accuracy}, "aggregates": rows,
                   "grid": grid}, f)


@pytest.fixture
def folder(tmp_path) -> str:
    """Two protocols (a ResNet teacher into vit-tiny and resnet-small; a ViT teacher into resnet-small) and the
    first one's results: on resnet-small `kd` has not run and `ofa` has two of its three seeds."""
    _protocol(str(tmp_path), "synth_cnn", "examples/teachers/fashion-mnist-resnet", ["vit-tiny", "resnet-small"])
    _protocol(str(tmp_path), "synth_vit", "examples/teachers/fashion-mnist-vit", ["resnet-small"])
    rows = [_row("cktf", "vit-tiny", 0.85, 0.003, lr=8e-3), _row("ofa", "vit-tiny", 0.84, 0.002),
            _row("kd", "vit-tiny", 0.80, 0.01), _row("crd-reference", "vit-tiny", 0.70, 0.02),
            _row("ofa+cktf-recipe", "vit-tiny", 0.849, 0.003),
            _row("cktf", "resnet-small", 0.90, 0.001), _row("ofa", "resnet-small", 0.899, 0.002, n=2),
            _row("crd-reference", "resnet-small", 0.88, 0.001), _row("ofa+cktf-recipe", "resnet-small", 0.895, 0.002)]
    grid = [_grid("cktf", "vit-tiny", 8e-3, True, ["0.008"]), _grid("ofa", "vit-tiny", 2e-3, False),
            _grid("ofa", "resnet-small", 2e-3, True), _grid("not-in-protocol", "resnet-small", 4e-3, True)]
    _results(str(tmp_path), "synth_cnn", "ResNetForImageClassification", 0.9328, rows, grid)
    return str(tmp_path)


def _report(folder: str) -> tuple[dict, str]:
    protocols = [os.path.join(folder, "synth_cnn.yaml"), os.path.join(folder, "synth_vit.yaml")]
    return xreport.build_report(protocols, folder, "pairs")


def test_family_names_teachers_and_students():
    assert [xreport.family(n) for n in ("ResNetForImageClassification", "ConvNextForImageClassification",
                                        "resnet-small", "examples/teachers/fashion-mnist-resnet")] == ["CNN"] * 4
    assert [xreport.family(n) for n in ("ViTForImageClassification", "DeiTForImageClassification",
                                        "SwinForImageClassification", "vit-tiny")] == ["ViT"] * 4
    assert xreport.family("MobileNetV2") == "MobileNetV2"  # unknown: named as it is


def test_missing_protocol_json_gives_a_partial_report(folder):
    payload, markdown = _report(folder)
    assert [p["pair"] for p in payload["protocols"]] == ["CNN → ViT", "CNN → CNN", "ViT → CNN"]
    assert "| method | CNN → ViT | CNN → CNN | ViT → CNN |" in markdown
    assert [p["results"] is None for p in payload["protocols"]] == [False, False, True]
    assert "not run yet: no" in markdown and "synth_vit.json" in markdown
    assert "python benchmarks/run.py synth_vit --resume" in markdown
    assert "synth_cnn.json" in markdown and "python benchmarks/run.py synth_cnn --report_only" in markdown
    assert "teacher ResNetForImageClassification 93.28 %" in markdown
    # The table: single-method rows first, mean ± std, chosen rate, edge marker, short rows, "—" when not run.
    assert payload["methods"] == METHODS
    assert "| cktf | 85.00 ± 0.30 · lr 0.008 · at edge | 90.00 ± 0.10 · lr 0.002 | — |" in markdown
    assert "| ofa | 84.00 ± 0.20 · lr 0.002 | 89.90 ± 0.20 · lr 0.002 · at edge (2 of 3 seeds) | — |" in markdown
    assert "| kd | 80.00 ± 1.00 · lr 0.002 | — | — |" in markdown
    assert payload["table"]["kd"]["CNN → CNN"] is None and payload["table"]["ofa"]["CNN → CNN"]["n"] == 2
    assert payload["fewer_seeds_than_asked"][0]["row"] == "ofa / CNN → CNN"
    assert "FEWER SEEDS THAN THE PROTOCOL ASKS" in markdown


def test_targets_met_missed_and_not_measured(folder):
    payload, markdown = _report(folder)
    a, b, c = (payload["targets"][key] for key in "abc")
    # (a): met on CNN → ViT, missed on CNN → CNN (ofa within one std, with its numbers), not measured on ViT → CNN
    assert [r["met"] for r in a["per_pair"].values()] == [True, False, None] and a["met"] is False
    missed = a["per_pair"]["CNN → CNN"]
    assert [s["pair"] for s in missed["not_beaten"]] == ["cktf > ofa"] and missed["not_run"] == ["kd"]
    assert missed["not_beaten"][0]["difference"] == pytest.approx(0.001)
    assert "cktf > ofa: 90.00 ± 0.10 vs 89.90 ± 0.20 (+0.10 pts, means ordered, within one std)" in markdown
    assert "ViT → CNN: not measured — cktf not run" in markdown
    # (b): no combined row ahead of cktf where it ran, the ViT-teacher pair not run: not measured.
    assert [r["met"] for r in b["per_pair"].values()] == [True, True, None] and b["met"] is None
    # (c): OFA > KD > CRD on CNN → ViT, each step beyond one std.
    assert c["met"] is True and c["order"] == "ofa > kd > crd-reference"
    assert "**(c) OFA > KD > CRD on CNN → ViT, each step beyond one std: MET**" in markdown


def test_combined_row_ahead_reports_what_the_default_loses_elsewhere(folder):
    rows = [_row("cktf", "resnet-small", 0.88, 0.002), _row("ofa", "resnet-small", 0.87, 0.002),
            _row("kd", "resnet-small", 0.86, 0.002), _row("crd-reference", "resnet-small", 0.85, 0.002),
            _row("ofa+cktf-recipe", "resnet-small", 0.89, 0.001)]
    _results(folder, "synth_vit", "ViTForImageClassification", 0.91, rows, [])
    payload, markdown = _report(folder)
    b = payload["targets"]["b"]
    vit_cnn = b["per_pair"]["ViT → CNN"]
    assert vit_cnn["met"] is False and b["met"] is False
    elsewhere = vit_cnn["elsewhere"]["ofa+cktf-recipe"]
    assert elsewhere["CNN → ViT"]["difference"] == pytest.approx(-0.001)
    assert elsewhere["CNN → CNN"]["difference"] == pytest.approx(-0.005)
    assert "ofa+cktf-recipe as the default, against cktf in the other pairs" in markdown
    assert payload["targets"]["a"]["per_pair"]["ViT → CNN"]["met"] is True
    assert "teacher ViTForImageClassification 91.00 %" in markdown
    _results(folder, "synth_vit", "ViTForImageClassification", 0.91, [r for r in rows if r["method"] != "kd"], [])
    without_kd = _report(folder)[0]["targets"]["a"]["per_pair"]["ViT → CNN"]
    assert without_kd["met"] is None and without_kd["not_run"] == ["kd"]  # beats those that ran: not a verdict yet


def test_a_win_on_a_short_row_is_not_a_verdict_yet(folder):
    path = os.path.join(folder, "synth_cnn.json")
    with open(path) as f:
        results = json.load(f)
    for row in results["aggregates"]:
        if row["method"] == "ofa" and row["student"] == "resnet-small":
            row["test_mean"] = 0.85  # beaten beyond one std, but on 2 of 3 seeds
        if row["method"] == "kd" and row["student"] == "vit-tiny":
            row["student"] = "resnet-small"  # every rival ran on resnet-small
    with open(path, "w") as f:
        json.dump(results, f)
    payload, markdown = _report(folder)
    cnn_cnn = payload["targets"]["a"]["per_pair"]["CNN → CNN"]
    assert cnn_cnn["not_beaten"] == [] and cnn_cnn["met"] is None and cnn_cnn["short"] == ["ofa (2 of 3)"]
    assert payload["targets"]["c"]["met"] is None and "not run: kd" in markdown  # kd gone from CNN → ViT


def test_grid_edges_count_the_protocol_rows(folder):
    payload, markdown = _report(folder)
    edges = payload["grid_edges"]
    assert edges["rows"] == 3 and edges["at_edge_count"] == 2  # the row outside the protocol is not counted
    assert edges["at_edge"] == {"CNN → ViT": ["cktf (0.008)"], "CNN → CNN": ["ofa (0.002)"]}
    assert edges["rates_added"] == [0.008]
    assert "Rates added at the edges: 0.008 (cktf (CNN → ViT): 0.008)." in markdown


def test_default_protocols_without_results_write_a_partial_report(tmp_path):
    payload = xreport.main(["--results_dir", str(tmp_path)])
    assert [p["pair"] for p in payload["protocols"]] == ["CNN → ViT", "CNN → CNN", "ViT → CNN"]
    assert all(r["met"] is None for r in payload["targets"]["a"]["per_pair"].values())
    markdown = (tmp_path / "cross_arch_10k_pairs.md").read_text()
    assert "python benchmarks/cross_arch_report.py`" in markdown and markdown.count("not run yet") == 3
    assert json.loads((tmp_path / "cross_arch_10k_pairs.json").read_text())["targets"]["c"]["met"] is None
