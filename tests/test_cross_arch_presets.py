"""Issue 25's rows wired in: the presets ofa, ofa-eps1.5, timm-logit, timm-feature and fbt-contrast train through the
trainer; OFA's branches are training-only state; the teacher gets its own input normalisation and size."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import TrainerCallback, ViTImageProcessor

import tiny
from cktf_hf import ContrastiveDistillationConfig, ContrastiveDistillationTrainer
from cktf_hf.attachment import OBJECTIVE_ATTRIBUTE
from cktf_hf.card_facts import objective_from_args
from cktf_hf.features import FeatureLayout
from cktf_hf.model_card import describe_method
from cktf_hf.objectives import ObjectiveSettings, get_preset
from cktf_hf.objectives.ofa import CNNStageBranch, ViTStageBranch
from cktf_hf.pairing import student_stage_indices
from cktf_hf.teacher_input import TeacherInput
from cktf_hf.trainer import STATE_NAME

NEW_PRESETS = {  # preset → the terms it logs
    "ofa": {"ce", "ofa", "ofa-branches"},
    "ofa-eps1.5": {"ce", "ofa", "ofa-branches"},
    "timm-logit": {"ce", "kd"},
    "timm-feature": {"ce", "timm-feature"},
    "fbt-contrast": {"ce", "fbt-contrast", "ofa", "ofa-branches"},
    "ofa+cktf-recipe": {"ce", "ofa", "ofa-branches", "contrast_final"},
    "timm-feature+cktf-recipe": {"ce", "timm-feature", "contrast_final"},
}
STUDENTS = {"cnn": lambda: tiny.resnet((8, 16), seed=1), "vit": lambda: tiny.vit(32, 2, seed=1)}


def processor(mean: float = 0.5, std: float = 0.5, size: int = tiny.IMAGE_SIZE) -> ViTImageProcessor:
    return ViTImageProcessor(size={"height": size, "width": size}, image_mean=[mean] * 3, image_std=[std] * 3)


def make_args(tmp_path, **overrides) -> ContrastiveDistillationConfig:
    defaults = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=16, learning_rate=3e-3, max_steps=3,
                    logging_steps=1, save_strategy="no", report_to="none", seed=0, disable_tqdm=True)
    return ContrastiveDistillationConfig(**{**defaults, **overrides})


class Inputs:
    """The pixel_values every forward of ``model`` receives."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.seen: list[torch.Tensor] = []
        model.register_forward_pre_hook(lambda m, args, kwargs: self.seen.append(kwargs["pixel_values"].clone()),
                                        with_kwargs=True)


@pytest.mark.parametrize("student", sorted(STUDENTS))
@pytest.mark.parametrize("preset", sorted(NEW_PRESETS))
def test_new_presets_train_their_terms(tmp_path, preset, student):
    trainer = ContrastiveDistillationTrainer(model=STUDENTS[student](), args=make_args(tmp_path, preset=preset),
                                             teacher_model=tiny.resnet((16, 32, 64)),
                                             train_dataset=tiny.digits("train", 64))
    before = {k: v.clone() for k, v in trainer.objective.state_dict().items()}
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logged) == 3 and all(math.isfinite(entry["loss"]) for entry in logged)
    assert NEW_PRESETS[preset] <= set(logged[0])
    combined = preset.endswith("+cktf-recipe")  # the default's contrast on every pair, beside the method's terms
    assert bool({"contrast_final", "contrast_s0_t0"} & set(logged[0])) == combined
    # the training-only parts (OFA's branches, timm's projector, FBT's heads and temperature) learn
    changed = {k for k, v in trainer.objective.state_dict().items() if not torch.equal(v, before[k])}
    for term in NEW_PRESETS[preset] - {"ce", "kd", "ofa", "contrast_final"}:
        assert any(k.startswith(f"classic.{term}.") for k in changed), term
    if "ofa-branches" in NEW_PRESETS[preset]:
        branches = trainer.objective.classic["ofa-branches"].branches
        kind = CNNStageBranch if student == "cnn" else ViTStageBranch
        assert len(branches) == 2 and all(isinstance(b, kind) for b in branches)  # one per student stage


def test_ofa_presets_follow_the_authors_weights():
    ofa, ablation = get_preset("ofa"), get_preset("ofa-eps1.5")
    assert (ofa.ce_weight, ofa.kd_weight, ofa.final_weight, ofa.layer_weight) == (1.0, 0.0, 0.0, 0.0)
    assert ofa.classic == {"ofa": 1.0, "ofa-branches": 1.0} and (ofa.ofa_eps, ofa.ofa_temperature) == (1.0, 1.0)
    assert ablation.ofa_eps == 1.5 and ablation.classic == ofa.classic
    timm_logit = get_preset("timm-logit")
    assert (timm_logit.ce_weight, timm_logit.kd_weight, timm_logit.kd_temperature) == (1.0, 1.0, 4.0)
    assert get_preset("fbt-contrast").classic == {"fbt-contrast": 1.0, "ofa": 1.0, "ofa-branches": 1.0}


def test_ofa_knobs_reach_both_terms_and_have_one_home(tmp_path):
    trainer = ContrastiveDistillationTrainer(model=tiny.vit(32, 2, seed=1),
                                             args=make_args(tmp_path, preset="ofa", ofa_eps=2.5, ofa_temperature=3.0),
                                             teacher_model=tiny.resnet((16, 32, 64)),
                                             train_dataset=tiny.digits("train", 32))
    output, branches = trainer.objective.classic["ofa"], trainer.objective.classic["ofa-branches"]
    assert (output.eps, output.temperature) == (branches.loss.eps, branches.loss.temperature) == (2.5, 3.0)
    with pytest.raises(ValueError, match="ofa_eps"):
        ObjectiveSettings(classic={"ofa": 1.0}, classic_options={"ofa": {"eps": 2.0}})
    with pytest.raises(ValueError, match="ofa_eps must be a finite number > 0"):
        ObjectiveSettings(classic={"ofa": 1.0}, ofa_eps=0.0)
    assert get_preset("fbt-contrast").term_options("fbt-contrast") == {"feat_dim": 128}


def test_student_stages_follow_ofa():
    maps = [FeatureLayout("map")] * 5  # HF ResNet / ConvNeXt: embeddings, then four stages
    tokens = lambda depth: [FeatureLayout("tokens", 1)] * (depth + 1)  # noqa: E731
    assert student_stage_indices(maps) == [1, 2, 3, 4]
    assert student_stage_indices(tokens(12)) == [2, 4, 10, 12]  # OFAKD's BEiT/DeiT stage_info: blocks 2, 4, 10, 12
    assert student_stage_indices(tokens(4)) == [1, 2, 3, 4]  # cktf-vit-tiny
    assert student_stage_indices(tokens(6)) == [2, 3, 5, 6]
    assert student_stage_indices(tokens(2)) == [1, 2]


class StopAt(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        control.should_training_stop = state.global_step >= self.step


def test_branches_are_checkpointed_never_exported_and_resume(tmp_path):
    def build(out: str, **extra):
        args = make_args(tmp_path, output_dir=out, preset="fbt-contrast", max_steps=6, save_strategy="steps",
                         save_steps=3)
        return ContrastiveDistillationTrainer(model=tiny.resnet((8, 16), seed=1), args=args,
                                              teacher_model=tiny.resnet((16, 32, 64)),
                                              train_dataset=tiny.digits("train", 96), **extra)

    straight = build(str(tmp_path / "straight"))
    straight.train()
    interrupted = build(str(tmp_path / "resumed"), callbacks=[StopAt(3)])
    interrupted.train()
    checkpoint = tmp_path / "resumed" / "checkpoint-3"
    state = load_file(str(checkpoint / STATE_NAME))
    assert any(k.startswith("classic.ofa-branches.branches.") and k.endswith("running_mean") for k in state)
    assert "classic.fbt-contrast.contrast.logit_scale" in state
    with safe_open(str(checkpoint / "model.safetensors"), "pt") as f:
        assert not any(OBJECTIVE_ATTRIBUTE in k or "branches" in k for k in f.keys())
    resumed = build(str(tmp_path / "resumed"))
    resumed.train(resume_from_checkpoint=str(checkpoint))
    straight_losses = [e["loss"] for e in straight.state.log_history if "loss" in e]
    resumed_losses = [e["loss"] for e in resumed.state.log_history if "loss" in e]
    assert resumed_losses[-3:] == pytest.approx(straight_losses[-3:], rel=1e-5)
    for key, value in straight.objective.state_dict().items():
        torch.testing.assert_close(resumed.objective.state_dict()[key], value, rtol=1e-5, atol=1e-6, msg=key)
    # FBT's learnable temperature is kept out of weight decay, as CLIP does
    decayed = resumed.get_decay_parameter_names(resumed.model)
    assert not any(name.endswith("logit_scale") for name in decayed) and any("branches" in n for n in decayed)


def teacher_folder(tmp_path, teacher_processor: ViTImageProcessor):
    folder = tmp_path / "teacher"
    tiny.resnet((16, 32, 64)).save_pretrained(folder)
    teacher_processor.save_pretrained(folder)
    return str(folder)


def test_teacher_gets_its_own_normalisation_and_size(tmp_path):
    teacher = teacher_folder(tmp_path, processor(mean=0.2, std=0.4, size=24))
    trainer = ContrastiveDistillationTrainer(model=tiny.vit(32, 2, seed=1),
                                             args=make_args(tmp_path, preset="ofa", teacher=teacher, max_steps=1),
                                             train_dataset=tiny.digits("train", 32), processing_class=processor())
    assert "re-normalised from mean (0.5, 0.5, 0.5), std (0.5, 0.5, 0.5) to the teacher's mean (0.2, 0.2, 0.2), " \
           "std (0.4, 0.4, 0.4) and resized to the teacher's 24×24" in trainer.pairing.table.splitlines()[-1]
    student_in, teacher_in = Inputs(trainer.model), Inputs(trainer.teacher)
    trainer.train()
    (x_s,), (x_t,) = student_in.seen, teacher_in.seen
    assert x_t.shape[-2:] == (24, 24)
    as_teacher = lambda x: torch.nn.functional.interpolate(  # noqa: E731
        (x * 0.5 + 0.5 - 0.2) / 0.4, size=(24, 24), mode="bilinear", align_corners=False)
    torch.testing.assert_close(x_t, as_teacher(x_s))
    evaluation = tiny.digits("test", 8)
    trainer.evaluate_teacher(evaluation)  # evaluating the teacher feeds it its own input too
    torch.testing.assert_close(teacher_in.seen[-1], as_teacher(evaluation[:]["pixel_values"]))


def test_teacher_cache_is_keyed_by_the_teacher_input(tmp_path):
    def cache_folders(teacher_processor: ViTImageProcessor, name: str) -> set:
        cache = tmp_path / "cache"
        args = make_args(tmp_path, preset="timm-logit", teacher=teacher_folder(tmp_path / name, teacher_processor),
                         teacher_cache_dir=str(cache))
        ContrastiveDistillationTrainer(model=tiny.vit(32, 2, seed=1), args=args, train_dataset=tiny.digits("train", 32),
                                       processing_class=processor())
        return {p.name for p in cache.iterdir()}

    same = cache_folders(processor(), "same")
    assert len(cache_folders(processor(mean=0.3), "other") - same) == 1


def test_same_processor_leaves_the_teacher_input_alone(tmp_path):
    teacher = teacher_folder(tmp_path, processor())
    plain = ContrastiveDistillationTrainer(model=tiny.vit(32, 2, seed=1), args=make_args(tmp_path, preset="cktf"),
                                           teacher_model=tiny.resnet((16, 32, 64)),
                                           train_dataset=tiny.digits("train", 32))
    trainer = ContrastiveDistillationTrainer(model=tiny.vit(32, 2, seed=1),
                                             args=make_args(tmp_path, preset="cktf", teacher=teacher, max_steps=1),
                                             train_dataset=tiny.digits("train", 32), processing_class=processor())
    assert trainer.pairing.rows == plain.pairing.rows and not trainer.pairing.teacher_input.changes_input
    assert trainer.pairing.table.splitlines()[-1] == ("teacher input: the student's pixel_values, unchanged (the "
                                                      "teacher's processor has the data's mean, std and size)")
    student_in, teacher_in = Inputs(trainer.model), Inputs(trainer.teacher)
    trainer.train()
    assert torch.equal(teacher_in.seen[0], student_in.seen[0])
    batch = torch.randn(2, 3, 16, 16)
    assert TeacherInput.between(processor(), processor(), (3, 16, 16))(batch) is batch
    assert TeacherInput.between(None, processor(0.1), (3, 16, 16))(batch) is batch  # the data's processor unknown


@pytest.mark.parametrize("preset, shown, hidden", [
    ("ofa-eps1.5", {"ofa_eps": 1.5, "ofa_temperature": 1.0, "classic": {"ofa": 1.0, "ofa-branches": 1.0}},
     {"temperature", "feat_dim", "kd_temperature"}),
    ("fbt-contrast", {"feat_dim": 128, "ofa_eps": 1.0}, {"temperature", "negatives", "kd_temperature"}),
    ("timm-logit", {"kd_weight": 1.0, "kd_temperature": 4.0}, {"ofa_eps", "feat_dim", "temperature", "classic"}),
    ("timm-feature", {"classic": {"timm-feature": 1.0}}, {"ofa_eps", "feat_dim", "kd_temperature"}),
])
def test_card_lists_the_new_presets_objective(tmp_path, preset, shown, hidden):
    objective = objective_from_args(make_args(tmp_path, preset=preset))
    assert objective["preset"] == preset and shown.items() <= objective.items() and not hidden & set(objective)
    labels = ObjectiveSettings.labels()
    described = dict(get_preset(preset).describe())
    assert {labels[name] for name in shown} <= set(described)
    if "ofa_eps" in shown:
        assert described["ε: OFA's loss exponent"] == shown["ofa_eps"]
    method = describe_method(objective)
    for term in objective.get("classic", {}):
        assert f"L_{term}" in method


def test_registry_knows_the_new_terms():
    from cktf_hf.objectives import get_objective, list_objectives

    assert {"ofa", "ofa-branches", "timm-feature", "fbt-contrast"} <= set(list_objectives())
    assert get_objective("ofa-branches").inputs == "student_stages" and get_objective("ofa").needs_labels
    assert np.isclose(get_objective("fbt-contrast")(8, 8).contrast.temperature.item(), 0.07)


@pytest.mark.parametrize("method", ["ofa", "timm-feature"])
def test_combined_rows_are_the_default_plus_the_methods_terms(method):
    from dataclasses import replace

    combined, default = get_preset(f"{method}+cktf-recipe"), get_preset("cktf")
    assert combined.classic == get_preset(method).classic and not default.classic
    assert replace(combined, classic={}) == default


@pytest.mark.parametrize("method", ["ofa", "timm-feature"])
def test_transfer_protocol_distils_unlabelled_images_with_todays_methods(tmp_path, method):
    from cktf_hf.demo.transfer import distill_unlabelled, without_labels

    student = tiny.vit(32, 2, seed=1)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    distilled, _ = distill_unlabelled(student, tiny.resnet((16, 32, 64)), without_labels(tiny.digits("train", 32)),
                                      method, str(tmp_path), epochs=1, batch_size=16, nce_k=16)
    assert not hasattr(distilled, OBJECTIVE_ATTRIBUTE)  # branches and projectors are not part of the student
    assert any(not torch.equal(v, before[k]) for k, v in distilled.state_dict().items())
