"""The Hub round trip against a Hub-API-compatible server on 127.0.0.1: a teacher by repo id, a pushed student with
its model card, and push failures that lose nothing and leak no token."""

from __future__ import annotations


import numpy as np
import pytest
from huggingface_hub import ModelCard
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForImageClassification, ViTImageProcessor, pipeline

import tiny
from cktf_hf import ContrastiveDistillationConfig, ContrastiveDistillationTrainer
from cktf_hf import HubPushError

PROCESSOR = dict(size={"height": 16, "width": 16}, image_mean=[0.5] * 3, image_std=[0.5] * 3)


@pytest.fixture
def teacher_repo(fake_hub, tmp_path):
    """A tiny ViT teacher with its image processor, published as tester/tiny-teacher; returns (repo id, commit)."""
    folder = tmp_path / "teacher"
    tiny.vit(64, 4).save_pretrained(folder)
    ViTImageProcessor(**PROCESSOR).save_pretrained(folder)
    commit = fake_hub.publish("tester/tiny-teacher", str(folder))
    return "tester/tiny-teacher", commit


def distil(tmp_path, teacher: str, **config) -> ContrastiveDistillationTrainer:
    defaults = dict(output_dir=str(tmp_path / "student"), teacher=teacher, max_steps=4, per_device_train_batch_size=32,
                    nce_k=16, report_to="none", save_strategy="no", disable_tqdm=True,
                    teacher_check=False)  # an untrained teacher
    args = ContrastiveDistillationConfig(**{**defaults, **config})
    processor = AutoImageProcessor.from_pretrained(teacher, revision=args.teacher_revision)
    trainer = ContrastiveDistillationTrainer(model=tiny.vit(32, 2, seed=1), args=args,
                                             train_dataset=tiny.digits("train", 128),
                                             eval_dataset=tiny.digits("test", 128), processing_class=processor)
    trainer.train()
    return trainer


def test_distil_from_a_hub_teacher_push_and_reload(fake_hub, teacher_repo, tmp_path):
    repo_id, commit = teacher_repo
    trainer = distil(tmp_path, repo_id, teacher_revision=commit, push_to_hub=True,
                     hub_model_id="tester/tiny-student", hub_strategy="end")
    metrics = trainer.evaluate()
    trainer.evaluate_teacher()
    trainer.push_to_hub(dataset="sklearn/digits", dataset_split="test", license="apache-2.0")

    files = set(fake_hub.repo_files("tester/tiny-student"))
    assert {"model.safetensors", "config.json", "preprocessor_config.json", "distillation_config.json",
            "README.md"} <= files
    assert not [f for f in files if "cktf" in f or "checkpoint" in f or f.startswith("_") or "teacher" in f]

    student = AutoModelForImageClassification.from_pretrained("tester/tiny-student")
    assert type(student).__name__ == "ViTForImageClassification"
    assert student.num_parameters() == sum(p.numel() for n, p in trainer.model.named_parameters()
                                           if not n.startswith("cktf_objective."))
    processor = AutoImageProcessor.from_pretrained("tester/tiny-student")
    image = Image.fromarray((np.random.default_rng(0).random((20, 20)) * 255).astype("uint8"))  # grayscale
    predictions = pipeline("image-classification", model="tester/tiny-student")(image.convert("RGB"))
    assert predictions and predictions[0]["label"] in student.config.label2id
    assert processor.size == {"height": 16, "width": 16}

    card = ModelCard.load("tester/tiny-student")
    data = card.data.to_dict()
    assert data["teacher_model"] == repo_id and data["datasets"] == ["sklearn/digits"]
    assert "base_model" not in data  # the student was built from a config, not from the teacher's weights
    assert {"knowledge-distillation", "cktf", "image-classification"} <= set(data["tags"])
    assert data["license"] == "apache-2.0" and "accuracy" in data["metrics"]
    accuracy = next(r for r in card.data.eval_results if r.metric_type == "accuracy")
    assert accuracy.metric_value == pytest.approx(metrics["eval_accuracy"])
    assert accuracy.dataset_type == "sklearn/digits" and accuracy.task_type == "image-classification"
    assert f"https://huggingface.co/{repo_id}" in card.text and "zhao2023cktf" in card.text


def test_checkpoint_pushes_leave_out_the_distillation_state(fake_hub, teacher_repo, tmp_path):
    trainer = distil(tmp_path, teacher_repo[0], push_to_hub=True, hub_model_id="tester/ckpt-student",
                     hub_strategy="checkpoint", save_strategy="steps", save_steps=2)
    trainer.push_to_hub()
    files = set(fake_hub.repo_files("tester/ckpt-student"))
    assert "last-checkpoint/model.safetensors" in files and "model.safetensors" in files
    assert not [f for f in files if "cktf" in f or "/_" in f or f.startswith("_")]


@pytest.mark.parametrize("failure", ["down", "500", "401"])
def test_push_failure_keeps_the_student_and_leaks_no_token(fake_hub, teacher_repo, tmp_path, capsys, failure):
    trainer = distil(tmp_path, teacher_repo[0], hub_model_id="tester/failing-student",
                     hub_token=fake_hub.token)
    trainer.evaluate()
    if failure == "down":
        fake_hub.stop()
    elif failure == "500":
        fake_hub.fail_writes = True
    else:
        fake_hub.reject_auth = True
    with pytest.raises(HubPushError) as raised:
        trainer.push_to_hub()
    message = str(raised.value)
    assert "tester/failing-student" in message and "trainer.push_to_hub()" in message
    assert {"down": "Error", "500": "HTTP 500", "401": "HTTP 401"}[failure] in message
    output = tmp_path / "student"
    reloaded = AutoModelForImageClassification.from_pretrained(str(output))
    assert reloaded.config.num_labels == 10
    token = fake_hub.token.encode()
    written = [p for p in output.rglob("*") if p.is_file()]
    assert written and not [p for p in written if token in p.read_bytes()]
    captured = capsys.readouterr()
    assert fake_hub.token not in captured.out + captured.err + message


def test_teacher_repo_not_found_is_explained(fake_hub, tmp_path):
    args = ContrastiveDistillationConfig(output_dir=str(tmp_path), teacher="tester/missing", report_to="none")
    with pytest.raises(OSError, match=r"Could not load the teacher 'tester/missing' from the Hugging Face Hub. Check"):
        ContrastiveDistillationTrainer(model=tiny.vit(32, 2), args=args, train_dataset=tiny.digits("train", 8))
