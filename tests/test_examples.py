"""examples/distill_vit.py end to end on tiny settings: plain python and under `accelerate launch`."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageClassification, ResNetConfig, ResNetForImageClassification, ViTImageProcessor

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["circle", "square", "stripe"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A local image folder (3 classes, grayscale and RGB PNGs) and a tiny ResNet teacher folder with its processor."""
    root = tmp_path_factory.mktemp("examples")
    rng = np.random.default_rng(0)
    for label, name in enumerate(CLASSES):
        (root / "images" / name).mkdir(parents=True)
        for i in range(12):
            pixels = (rng.random((20, 20)) * 80 + label * 80).astype("uint8")
            image = Image.fromarray(pixels) if i % 2 else Image.fromarray(pixels).convert("RGB")
            image.save(root / "images" / name / f"{i}.png")
    torch.manual_seed(0)
    labels = dict(num_labels=3, id2label=dict(enumerate(CLASSES)), label2id={n: i for i, n in enumerate(CLASSES)})
    teacher = ResNetForImageClassification(ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 32], depths=[1, 1, 1],
                                                        **labels))
    teacher.save_pretrained(root / "teacher")
    ViTImageProcessor(size={"height": 16, "width": 16}, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(
        root / "teacher")
    return root


def run_script(workspace, launcher: list[str], output: Path, *extra: str) -> subprocess.CompletedProcess:
    command = launcher + [
        str(ROOT / "examples" / "distill_vit.py"), "--teacher", str(workspace / "teacher"),
        "--dataset", str(workspace / "images"), "--eval_split", "train", "--student", "vit-nano",
        "--output_dir", str(output), "--max_steps", "3", "--per_device_train_batch_size", "8", "--nce_k", "8",
        "--eval_strategy", "no", "--save_strategy", "no", "--use_cpu", "--disable_tqdm", "true", *extra,
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=str(workspace))


def run_example(workspace, launcher: list[str], output: Path, *extra: str) -> str:
    result = run_script(workspace, launcher, output, *extra)
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


@pytest.mark.parametrize("launcher", ["python", "accelerate"])
def test_distill_vit_end_to_end(workspace, tmp_path, launcher):
    prefix = [sys.executable] if launcher == "python" else [
        sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--cpu"]
    output = tmp_path / "student"
    stdout = run_example(workspace, prefix, output)
    assert "accuracy (top-1)" in stdout and "parameters" in stdout and "CPU latency, batch 32" in stdout
    student = AutoModelForImageClassification.from_pretrained(output)
    assert type(student).__name__ == "ViTForImageClassification" and student.config.id2label[1] == "square"
    config = json.loads((output / "distillation_config.json").read_text())
    assert config["teacher"] == str(workspace / "teacher") and config["layer_pairing"][-1]["pair"] == "final"
    card = (output / "README.md").read_text()
    assert "cktf" in card and "Compression" in card


def test_distill_vit_resumes_and_refuses_to_overwrite(workspace, tmp_path):
    python, output = [sys.executable], tmp_path / "student"
    output.mkdir()
    (output / "notes.txt").write_text("someone else's file")
    refused = run_script(workspace, python, output)
    assert refused.returncode != 0 and "--overwrite_output_dir" in refused.stderr and "no checkpoint" in refused.stderr

    saving = ("--save_strategy", "steps", "--save_steps", "2", "--logging_steps", "1")
    run_example(workspace, python, output, *saving, "--max_steps", "2", "--seed", "1", "--overwrite_output_dir")
    first_losses = _losses(output / "checkpoint-2")
    shutil.copytree(output / "checkpoint-2", tmp_path / "kept" / "checkpoint-2")
    # Another seed: a run that started over would log other losses for steps 1-2 than the first run did.
    resumed = run_script(workspace, python, output, *saving, "--max_steps", "3")
    assert resumed.returncode == 0 and f"Resuming from {output / 'checkpoint-2'}" in resumed.stderr
    assert sorted(p.name for p in output.glob("checkpoint-*")) == ["checkpoint-3"]
    assert _losses(output / "checkpoint-3")[:2] == first_losses and len(_losses(output / "checkpoint-3")) == 3

    explicit = tmp_path / "kept" / "checkpoint-2"
    resumed = run_script(workspace, python, output, *saving, "--max_steps", "4", "--resume_from_checkpoint",
                         str(explicit))
    assert resumed.returncode == 0 and f"Resuming from {explicit}" in resumed.stderr
    assert _losses(output / "checkpoint-4")[:2] == first_losses and len(_losses(output / "checkpoint-4")) == 4


def _losses(checkpoint: Path) -> list[float]:
    """The training loss of every logged step, in a checkpoint's trainer state (resumed runs carry the earlier ones)."""
    history = json.loads((checkpoint / "trainer_state.json").read_text())["log_history"]
    return [entry["loss"] for entry in history if "loss" in entry]
