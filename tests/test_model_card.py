"""Model card: measured stats of tiny models, Hub metadata round trip, rendered text, optional parts, packaging."""

from __future__ import annotations

import configparser
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from huggingface_hub.repocard_data import model_index_to_eval_results
from setuptools import find_packages
from torch import nn
from transformers import ViTConfig, ViTForImageClassification

from cktf_hf import ContrastiveDistillationConfig
from cktf_hf.measure import ModelStats, count_parameters, measure_latency, measure_model, model_size_bytes, saved_size_bytes
from cktf_hf.model_card import (
    DistillationCardInfo,
    build_model_card,
    checkpoint_from_args,
    default_template_path,
    format_count,
    format_ms,
    format_ratio,
    hyperparameters_from_args,
    objective_from_args,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
PIXELS = (3, 16, 16)
TEACHER_ID = "google/vit-base-patch16-224"
REPO_ID = "someone/vit-tiny-cktf-digits"
PAIRING = [
    {"pair": "h1", "student_layer": "hidden_states[1] (tokens)", "student_shape": [17, 32],
     "teacher_layer": "hidden_states[2] (tokens)", "teacher_shape": [17, 64], "weight": 0.1},
    {"pair": "final", "student_layer": "classifier input", "student_shape": [32],
     "teacher_layer": "classifier input", "teacher_shape": [64], "weight": 0.8},
]
FORBIDDEN = ("None", "N/A", "TODO", "nan")


def _vit(hidden_size: int, layers: int) -> ViTForImageClassification:
    torch.manual_seed(0)
    return ViTForImageClassification(ViTConfig(
        image_size=16, patch_size=4, hidden_size=hidden_size, num_hidden_layers=layers, num_attention_heads=2,
        intermediate_size=2 * hidden_size, num_labels=3,
    ))


@pytest.fixture(scope="module")
def models():
    return _vit(32, 2), _vit(64, 4)


@pytest.fixture(scope="module")
def stats(models):
    student, teacher = models
    kwargs = dict(warmup=1, repeats=3, num_threads=1)
    return measure_model(student, PIXELS, **kwargs), measure_model(teacher, PIXELS, **kwargs)


def _full_info(stats, **overrides) -> DistillationCardInfo:
    student_stats, teacher_stats = stats
    info = dict(
        teacher=TEACHER_ID, student_architecture="ViTForImageClassification", repo_id=REPO_ID,
        teacher_architecture="ViTForImageClassification",
        student_stats=student_stats, teacher_stats=teacher_stats,
        student_metrics={"eval_accuracy": 0.9123, "eval_top5_accuracy": 0.9987},
        teacher_metrics={"accuracy": 0.9512, "top5_accuracy": 1.0},
        baselines={"from scratch": {"accuracy": 0.801, "top5_accuracy": 0.97},
                   "KD": {"accuracy": 0.873, "top5_accuracy": 0.99}},
        dataset_id="uoft-cs/cifar100", dataset_name="CIFAR-100", dataset_split="test", license="apache-2.0",
        objective={"preset": "cktf", "ce_weight": 1.0, "kd_weight": 0.0, "final_weight": 0.8, "layer_weight": 0.1,
                   "temperature": 0.1, "negatives": "memory_bank", "nce_k": 16384, "feat_dim": 128,
                   "projector": "linear"},
        pairing=PAIRING,
        hyperparameters={"learning_rate": 5e-4, "train_batch_size": 64, "optimizer": "adamw_torch",
                         "lr_scheduler_type": "cosine", "num_epochs": 30, "mixed_precision": "fp32"},
        seed=1234, checkpoint="best",
    )
    info.update(overrides)
    return DistillationCardInfo(**info)


def _assert_clean(text: str) -> None:
    for word in FORBIDDEN:
        assert not re.search(rf"\b{re.escape(word)}\b", text), f"{word!r} in the card"
    for line in text.splitlines():
        if line.startswith("|") and not set(line) <= set("|-: "):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            assert all(cells[1:]), f"empty cell in {line!r}"  # the first header cell of a stats table may be blank
    assert "\n\n\n" not in text


# ---------------------------------------------------------------------------------------------- metadata
def test_metadata_round_trip_through_the_hub_parser(stats):
    card = build_model_card(_full_info(stats))
    reparsed = ModelCard(str(card))
    data = reparsed.data.to_dict()
    assert data["base_model"] == TEACHER_ID
    assert data["datasets"] == ["uoft-cs/cifar100"]
    assert data["metrics"] == ["accuracy"]
    assert data["tags"] == ["knowledge-distillation", "cktf", "image-classification"]
    assert data["license"] == "apache-2.0"
    assert data["library_name"] == "transformers" and data["pipeline_tag"] == "image-classification"

    [entry] = data["model-index"]
    assert entry["name"] == REPO_ID
    [result] = entry["results"]
    assert result["task"]["type"] == "image-classification"
    assert result["dataset"] == {"name": "CIFAR-100", "type": "uoft-cs/cifar100", "split": "test"}
    assert {m["type"]: m["value"] for m in result["metrics"]} == {"accuracy": 0.9123, "top_5_accuracy": 0.9987}

    name, results = model_index_to_eval_results(data["model-index"])
    assert name == REPO_ID
    top1 = next(r for r in results if r.metric_type == "accuracy")
    assert top1.metric_value == 0.9123
    assert top1.task_type == "image-classification"
    assert (top1.dataset_type, top1.dataset_split) == ("uoft-cs/cifar100", "test")
    assert [(r.metric_type, r.metric_value) for r in reparsed.data.eval_results] == [
        ("accuracy", 0.9123), ("top_5_accuracy", 0.9987)]


def test_no_dataset_means_no_datasets_or_model_index(stats):
    card = build_model_card(_full_info(stats, dataset_id=None, dataset_name=None, dataset_split=None))
    data = ModelCard(str(card)).data.to_dict()
    assert "datasets" not in data and "model-index" not in data
    assert data["base_model"] == TEACHER_ID


# ------------------------------------------------------------------------------------------------- text
def test_rendered_text(stats):
    student_stats, teacher_stats = stats
    text = str(build_model_card(_full_info(stats)))
    assert f"[{TEACHER_ID}](https://huggingface.co/{TEACHER_ID})" in text
    ratio = format_ratio(teacher_stats.parameters, student_stats.parameters)
    assert f"{ratio} fewer parameters" in text
    params = f"{format_count(teacher_stats.parameters)} | {format_count(student_stats.parameters)} | {ratio}"
    assert f"| Parameters | {params} |" in text
    for batch in (1, 32):
        speedup = format_ratio(teacher_stats.latency_ms[batch], student_stats.latency_ms[batch])
        assert (f"| CPU latency, batch {batch} (ms) | {format_ms(teacher_stats.latency_ms[batch])} | "
                f"{format_ms(student_stats.latency_ms[batch])} | {speedup} |") in text
    assert "1 thread, torch" in text and "median of 3 runs after 1 warm-up run, input 3×16×16" in text
    # results, with top-5 and baselines
    assert "| Model | Top-1 accuracy | Top-5 accuracy |" in text
    assert "| Teacher (google/vit-base-patch16-224) | 95.12% | 100.00% |" in text
    assert "| Student, CKTF (ViTForImageClassification) | 91.23% | 99.87% |" in text
    assert "| from scratch | 80.10% | 97.00% |" in text and "| KD | 87.30% | 99.00% |" in text
    assert "Accuracy on the `test` split of CIFAR-100" in text
    # method and pairing
    assert "| β: contrastive weight, final pair | 0.8 |" in text and "| K: negatives per sample | 16,384 |" in text
    assert "| h1 | hidden_states[1] (tokens) | 17×32 | hidden_states[2] (tokens) | 17×64 | 0.1 |" in text
    assert "| final | classifier input | 32 | classifier input | 64 | 0.8 |" in text
    # training
    assert "| learning_rate | 0.0005 |" in text and "| seed | 1234 |" in text and "best checkpoint" in text
    # usage, versions, citations
    assert f'pipeline("image-classification", model="{REPO_ID}")' in text
    assert f'AutoModelForImageClassification.from_pretrained("{REPO_ID}")' in text
    assert f'AutoImageProcessor.from_pretrained("{REPO_ID}")' in text
    assert f"- Transformers: {__import__('transformers').__version__}" in text and "- PyTorch:" in text
    assert "@inproceedings{zhao2023cktf," in text and "@inproceedings{tian2019crd," in text
    assert "2303.07599" in text and "1910.10699" in text
    _assert_clean(text.split("---", 2)[2])


def test_optional_parts_disappear(stats):
    student_stats, _ = stats
    partial = _full_info(stats, teacher_stats=None, teacher_metrics=None, baselines=None,
                         student_metrics={"accuracy": 0.9}, hyperparameters={}, seed=None, checkpoint=None)
    text = str(build_model_card(partial))
    _assert_clean(text)
    assert "Top-5" not in text and "Teacher /" not in text and "fewer parameters" not in text
    assert "| Parameters | " + format_count(student_stats.parameters) + " |" in text
    assert "## Training" not in text and "| Student, CKTF (ViTForImageClassification) | 90.00% |" in text

    # a top-5 column only when every row has one
    mixed = str(build_model_card(_full_info(stats, baselines={"from scratch": 0.8}))).split("---", 2)[2]
    assert "Top-5" not in mixed and "| from scratch | 80.00% |" in mixed
    _assert_clean(mixed)

    bare = str(build_model_card(DistillationCardInfo(teacher=TEACHER_ID)))
    _assert_clean(bare)
    for section in ("## Results", "## Compression", "## Training", "## Usage", "Layer pairing"):
        assert section not in bare
    assert "## Teacher" in bare and "## Citation" in bare and "## Framework versions" in bare


def test_local_teacher_has_no_link_and_no_base_model(stats, tmp_path):
    folder = tmp_path / "my-teacher"
    folder.mkdir()
    info = _full_info(stats, teacher=str(folder))
    assert info.teacher_on_hub is False and info.teacher_display_name == "my-teacher"
    card = build_model_card(info)
    assert "base_model" not in ModelCard(str(card)).data.to_dict()
    text = str(card)
    assert "my-teacher (a local model)" in text and str(tmp_path) not in text
    assert "huggingface.co/my-teacher" not in text


def test_bad_checkpoint_kind():
    with pytest.raises(ValueError, match="checkpoint"):
        DistillationCardInfo(teacher=TEACHER_ID, checkpoint="final")


def test_info_from_config(tmp_path):
    args = ContrastiveDistillationConfig(output_dir=str(tmp_path), learning_rate=3e-4, num_train_epochs=2,
                                         load_best_model_at_end=True, eval_strategy="epoch", save_strategy="epoch",
                                         report_to="none")
    objective = objective_from_args(args)
    assert objective["final_weight"] == 0.8 and objective["layer_weight"] == 0.1 and objective["nce_k"] == 16384
    assert "kd_temperature" not in objective  # α = 0 under the cktf preset
    hp = hyperparameters_from_args(args)
    assert hp["learning_rate"] == 3e-4 and hp["num_epochs"] == 2 and hp["mixed_precision"] == "fp32"
    assert checkpoint_from_args(args) == "best"


# ------------------------------------------------------------------------------------------ measurements
def test_count_parameters_and_size_exclude_the_objective(tmp_path):
    model = _vit(32, 2)
    plain = sum(p.numel() for p in model.parameters())
    size = model_size_bytes(model)
    model.save_pretrained(tmp_path)
    assert saved_size_bytes(tmp_path) == size
    model.cktf_objective = nn.Linear(100, 100)
    assert count_parameters(model) == plain
    assert count_parameters(model, exclude_prefixes=()) == plain + 100 * 100 + 100
    assert model_size_bytes(model) == size
    assert isinstance(model.cktf_objective, nn.Linear)  # put back


@pytest.mark.parametrize("training", [True, False])
def test_measure_latency(training):
    model = _vit(32, 2)
    model.cktf_objective = nn.Linear(4, 4)
    model.train(training)
    model.vit.embeddings.eval()  # mixed modes (e.g. a frozen part) are restored module by module
    modes = [m.training for m in model.modules()]
    threads = torch.get_num_threads()
    latency, setup = measure_latency(model, PIXELS, batch_sizes=(1, 4), warmup=1, repeats=2, num_threads=1)
    assert set(latency) == {1, 4} and all(v > 0 for v in latency.values())
    assert [m.training for m in model.modules()] == modes and model.training is training
    assert torch.get_num_threads() == threads
    assert setup.startswith("CPU") and "median of 2 runs after 1 warm-up run" in setup and "3×16×16" in setup
    assert isinstance(model.cktf_objective, nn.Linear)


def test_measure_latency_of_a_non_float32_model_uses_a_cpu_copy():
    model = _vit(32, 2).to(torch.bfloat16)
    latency, _ = measure_latency(model, PIXELS, batch_sizes=(2,), warmup=0, repeats=1, num_threads=1)
    assert latency[2] > 0 and next(model.parameters()).dtype == torch.bfloat16


def test_model_stats_fields(stats):
    student_stats, teacher_stats = stats
    assert isinstance(student_stats, ModelStats)
    assert 0 < student_stats.parameters < teacher_stats.parameters
    assert 0 < student_stats.size_bytes < teacher_stats.size_bytes
    assert set(student_stats.latency_ms) == {1, 32}


# ------------------------------------------------------------------------------------------- packaging
def test_template_is_found_as_package_data_of_the_source_checkout():
    assert Path(default_template_path()) == REPO_ROOT / "model_cards" / "cktf_model_card.md"


def test_wheel_ships_the_template_and_the_demo_package(tmp_path):
    # The one lookup (importlib.resources on cktf_hf.model_cards) works in a wheel only if the wheel holds the file.
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                             "-w", str(tmp_path), str(REPO_ROOT)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    wheel = next(tmp_path.glob("cktf_hf-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"cktf_hf/model_cards/cktf_model_card.md", "cktf_hf/model_cards/__init__.py", "cktf_hf/trainer.py",
            "cktf_hf/demo/datasets.py", "cktf_hf/objectives/combined.py"} <= names


def test_setup_cfg_ships_the_template_and_every_package():
    cfg = configparser.ConfigParser()
    cfg.read(REPO_ROOT / "setup.cfg")
    listed = set(cfg["options"]["packages"].split())
    assert set(find_packages(str(REPO_ROOT), include=["cktf_hf*"])) | {"cktf_hf.model_cards"} <= listed
    assert "cktf_hf.model_cards = model_cards" in cfg["options"]["package_dir"]
    assert "*.md" in cfg["options.package_data"]["cktf_hf.model_cards"]


# ---------------------------------------------------------------------------------------------- escaping
def _cells(line: str) -> list[str]:
    """The cells of a markdown table row, splitting only at unescaped pipes."""
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def test_pipes_and_newlines_in_names_do_not_break_the_card(stats):
    info = _full_info(stats, dataset_name="fashion|mnist\nv2", student_architecture="Vi|T",
                      baselines={"from scratch | seed 0\nrun 2": 0.801},
                      pairing=[{**PAIRING[0], "student_layer": "stage|1\nx"}] + PAIRING[1:])
    text = str(build_model_card(info))
    body = text.split("---", 2)[2]
    table_rows = [line for line in body.splitlines() if line.startswith("|")]
    result_rows = [line for line in table_rows if "seed 0" in line]
    assert result_rows and len(_cells(result_rows[0])) == 2  # model | top-1 (the baseline has no top-5)
    assert "from scratch \\| seed 0 run 2" in result_rows[0]
    pairing_row = next(line for line in table_rows if "stage\\|1 x" in line)
    assert len(_cells(pairing_row)) == 6
    assert "fashion\\|mnist v2" in body and "fashion|mnist\nv2" not in body
    assert "`Vi\\|T`" in body
