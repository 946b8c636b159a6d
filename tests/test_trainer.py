"""ContrastiveDistillationTrainer end to end on tiny models and real small data (sklearn digits)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from transformers import AutoModelForImageClassification, TrainerCallback, ViTImageProcessor, pipeline

import tiny
from cktf_hf import ContrastiveDistillationConfig, ContrastiveDistillationTrainer
from cktf_hf.attachment import OBJECTIVE_ATTRIBUTE
from cktf_hf.trainer import STATE_NAME


def make_args(tmp_path, **overrides) -> ContrastiveDistillationConfig:
    # The paper's settings (memory bank): these tests exercise the bank's machinery; the recipe has its own tests.
    defaults = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=32, per_device_eval_batch_size=64,
                    learning_rate=3e-3, max_steps=20, logging_steps=5, save_strategy="no", nce_k=64,
                    report_to="none", seed=0, disable_tqdm=True, preset="cktf-reference",
                    teacher_check=False)  # untrained teachers: near chance by design
    return ContrastiveDistillationConfig(**{**defaults, **overrides})


def train_losses(trainer) -> list[float]:
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


@pytest.mark.parametrize(
    "teacher_fn, student_fn",
    [
        (lambda: tiny.vit(64, 4), lambda: tiny.vit(32, 2, seed=1)),
        (lambda: tiny.resnet((16, 32, 64)), lambda: tiny.resnet((8, 16), seed=1)),
        (lambda: tiny.resnet((16, 32, 64)), lambda: tiny.vit(32, 2, seed=1)),
    ],
    ids=["vit-to-vit", "resnet-to-resnet", "resnet-to-vit"],
)
def test_distillation_trains_and_loss_goes_down(tmp_path, teacher_fn, student_fn):
    trainer = ContrastiveDistillationTrainer(
        model=student_fn(), args=make_args(tmp_path), teacher_model=teacher_fn(),
        train_dataset=tiny.digits("train"), eval_dataset=tiny.digits("test"),
    )
    trainer.train()
    losses = train_losses(trainer)
    assert np.mean(losses[-2:]) < np.mean(losses[:2]), losses
    logged = next(entry for entry in trainer.state.log_history if "loss" in entry)
    assert {"ce", "contrast_final", "contrast_s0_t0"} <= set(logged)
    metrics = trainer.evaluate()
    assert 0 <= metrics["eval_accuracy"] <= 1 and "eval_top5_accuracy" in metrics


@pytest.fixture(scope="module")
def trained_teacher():
    """A tiny ResNet trained on digits for a few epochs (about 89% test accuracy)."""
    teacher = tiny.resnet((16, 32, 64))
    train = tiny.digits("train")[:]
    optimizer = torch.optim.AdamW(teacher.parameters(), 3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(6):
        for batch in torch.randperm(len(train["labels"]), generator=generator).split(64):
            loss = teacher(pixel_values=train["pixel_values"][batch], labels=train["labels"][batch]).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return teacher.eval()


@pytest.mark.slow  # trains a teacher (about 140 steps), then 60 distillation steps
def test_student_learns_from_a_trained_teacher(tmp_path, trained_teacher):
    args = make_args(tmp_path, max_steps=60, logging_steps=20, lr_scheduler_type="constant", teacher_check=True)
    trainer = ContrastiveDistillationTrainer(model=tiny.resnet((8, 16), seed=1), args=args,
                                             teacher_model=trained_teacher, train_dataset=tiny.digits("train"),
                                             eval_dataset=tiny.digits("test"))
    trainer.train()
    assert trainer.evaluate()["eval_accuracy"] > 0.4  # chance is 0.1

    test = tiny.digits("test")[:]
    with torch.no_grad():
        expected = (trained_teacher(pixel_values=test["pixel_values"]).logits.argmax(-1) == test["labels"]).float()
    assert trainer.evaluate_teacher()["teacher_accuracy"] == pytest.approx(expected.mean().item())
    assert trainer.model is not trainer.teacher  # the student is back in place


def test_pairing_follows_model_families(tmp_path):
    trainer = ContrastiveDistillationTrainer(
        model=tiny.resnet((8, 16), seed=1), args=make_args(tmp_path, max_steps=1, nce_k=32),
        teacher_model=tiny.resnet((16, 32, 64, 128)), train_dataset=tiny.digits("train", 64),
    )
    assert [(p.student_index, p.teacher_index) for p in trainer.pairs] == [(0, 0), (1, 2), (2, 4), (None, None)]
    assert [row.student_layer for row in trainer.pairing_rows] == ["embeddings", "stage1", "stage2", "classifier input"]
    explicit = ContrastiveDistillationTrainer(
        model=tiny.vit(32, 2, seed=1),
        args=make_args(tmp_path, max_steps=1, nce_k=32, layer_pairs="layer1:layer3,-1:-1"),
        teacher_model=tiny.vit(64, 4), train_dataset=tiny.digits("train", 64),
    )
    assert [p.name for p in explicit.pairs] == ["s1_t3", "s2_t4", "final"]


class StopAt(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def test_resume_equals_uninterrupted_training(tmp_path):
    def build(out: str, **extra):
        args = make_args(tmp_path, output_dir=out, max_steps=8, save_strategy="steps", save_steps=4,
                         logging_steps=1, per_device_train_batch_size=16, classic_objectives="fitnets=1")
        return ContrastiveDistillationTrainer(model=tiny.vit(32, 2, seed=1), args=args, teacher_model=tiny.vit(64, 4),
                                              train_dataset=tiny.digits("train", 200), **extra)

    straight = build(str(tmp_path / "straight"))
    straight.train()
    interrupted = build(str(tmp_path / "resumed"), callbacks=[StopAt(4)])
    interrupted.train()
    assert interrupted.state.global_step == 4
    checkpoint = tmp_path / "resumed" / "checkpoint-4"
    assert (checkpoint / STATE_NAME).is_file()
    resumed = build(str(tmp_path / "resumed"))
    resumed.train(resume_from_checkpoint=str(checkpoint))

    assert train_losses(resumed)[-4:] == pytest.approx(train_losses(straight)[-4:], rel=1e-5)
    straight_state, resumed_state = straight.model.state_dict(), resumed.model.state_dict()
    assert any(k.startswith(OBJECTIVE_ATTRIBUTE + ".contrastive") and "memory" in k for k in straight_state)
    for key, value in straight_state.items():
        torch.testing.assert_close(resumed_state[key], value, rtol=1e-5, atol=1e-6, msg=key)


def test_export_holds_only_the_student_and_reloads_identically(tmp_path):
    processor = ViTImageProcessor(size={"height": 16, "width": 16}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    trainer = ContrastiveDistillationTrainer(
        model=tiny.vit(32, 2, seed=1), args=make_args(tmp_path, max_steps=3), teacher_model=tiny.vit(64, 4),
        train_dataset=tiny.digits("train", 128), processing_class=processor,
    )
    trainer.train()
    out = tmp_path / "export"
    trainer.save_model(str(out))
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert keys and not any(OBJECTIVE_ATTRIBUTE in k for k in keys)
    assert not any(name.startswith("_") for name in os.listdir(out))
    saved = json.loads((out / "distillation_config.json").read_text())
    assert saved["preset"] == "cktf-reference" and [row["pair"] for row in saved["layer_pairing"]][-1] == "final"

    reloaded, info = AutoModelForImageClassification.from_pretrained(str(out), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    pixels = tiny.digits("test", 4)[:]["pixel_values"]
    student = trainer.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded.eval()(pixel_values=pixels).logits, student(pixel_values=pixels).logits)

    image = Image.fromarray((np.random.default_rng(0).random((16, 16, 3)) * 255).astype("uint8"))
    scores = pipeline("image-classification", model=str(out), top_k=10)(image)
    with torch.no_grad():
        expected = reloaded(**processor(image, return_tensors="pt")).logits.softmax(-1)[0]
    for entry in scores:
        assert entry["score"] == pytest.approx(expected[reloaded.config.label2id[entry["label"]]].item(), abs=1e-5)


def test_teacher_is_frozen_unsaved_and_outside_the_optimizer(tmp_path):
    teacher = tiny.vit(64, 4)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    trainer = ContrastiveDistillationTrainer(model=tiny.vit(32, 2, seed=1), args=make_args(tmp_path, max_steps=3),
                                             teacher_model=teacher, train_dataset=tiny.digits("train", 128))
    trainer.train()
    assert not trainer.teacher.training and not any(p.requires_grad for p in trainer.teacher.parameters())
    optimized = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert not optimized & {id(p) for p in trainer.teacher.parameters()}
    assert optimized >= {id(p) for p in trainer.objective.parameters()}  # projectors are trained
    for key, value in trainer.teacher.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_gradient_accumulation_matches_a_large_batch(tmp_path):
    def one_step(batch_size: int, accumulation: int):
        args = make_args(tmp_path, max_steps=1, per_device_train_batch_size=batch_size, preset="kd",
                         gradient_accumulation_steps=accumulation, logging_steps=1, dataloader_drop_last=True)
        trainer = ContrastiveDistillationTrainer(model=tiny.vit(32, 2, seed=1), args=args,
                                                 teacher_model=tiny.vit(64, 4), train_dataset=tiny.digits("train", 16))
        trainer.train()
        return trainer

    big, accumulated = one_step(16, 1), one_step(8, 2)
    assert train_losses(accumulated) == pytest.approx(train_losses(big), rel=1e-5)
    for (name, a), b in zip(big.model.named_parameters(), accumulated.model.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6, msg=name)


def test_bf16_autocast_on_cpu(tmp_path):
    trainer = ContrastiveDistillationTrainer(
        model=tiny.vit(32, 2, seed=1), args=make_args(tmp_path, max_steps=4, bf16=True, use_cpu=True, logging_steps=2),
        teacher_model=tiny.vit(64, 4), train_dataset=tiny.digits("train", 128),
    )
    assert trainer.teacher.dtype == torch.bfloat16
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert logged and all(np.isfinite(entry[key]) for entry in logged for key in ("loss", "ce", "contrast_final"))


def test_in_batch_negatives_need_no_indices(tmp_path):
    trainer = ContrastiveDistillationTrainer(
        model=tiny.vit(32, 2, seed=1), args=make_args(tmp_path, max_steps=3, negatives="in_batch"),
        teacher_model=tiny.vit(64, 4), train_dataset=tiny.digits("train", 128),
    )
    trainer.train()
    assert not any("memory" in k for k in trainer.objective.state_dict())
    assert np.isfinite(train_losses(trainer)).all() if train_losses(trainer) else True
