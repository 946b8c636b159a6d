"""ObjectiveSettings as the one home of every objective knob: the config derived from it, presets setting any knob,
one memory-bank rule, the card's description."""

from __future__ import annotations

import json
from dataclasses import fields, replace

import pytest
from transformers import HfArgumentParser

import tiny
from cktf_hf import ContrastiveDistillationConfig, ContrastiveDistillationTrainer
from cktf_hf.config import CONFIG_NAME
from cktf_hf.data import IndexedDataset
from cktf_hf.objectives import CKTFObjective, ObjectiveSettings, PairShape, get_preset
from cktf_hf.objectives import presets

# A value other than the default preset's (the recipe's) for every knob, as the config takes it, and as the spec holds
# it. A knob missing here fails test_every_knob_is_a_labelled_config_field_that_reaches_the_spec.
EXAMPLES = {
    "ce_weight": (0.5, 0.5), "kd_weight": (0.3, 0.3), "final_weight": (0.2, 0.2), "layer_weight": (0.7, 0.7),
    "temperature": (0.2, 0.2), "kd_temperature": (2.0, 2.0), "classic": ("at=3", {"at": 3.0}),
    "feature_batch_norm": (False, False), "classic_options": ('{"dkd": {"warmup": 2.0}}', {"dkd": {"warmup": 2.0}}),
    "positive": ("bank", "bank"), "bank_warm_start": ("none", "none"), "contrastive_warmup": (0.3, 0.3),
    "bank_loss": ("infonce", "infonce"), "spatial_contrast": (False, False),
    "negatives": ("memory_bank", "memory_bank"),
    "teacher_projector": ("trained", "trained"), "nce_k": (64, 64), "negative_sampling": ("shared", "shared"),
    "bank_dtype": ("bfloat16", "bfloat16"), "bank_products": ("bfloat16", "bfloat16"), "nce_momentum": (0.9, 0.9), "feat_dim": (32, 32),
    "projector": ("mlp", "mlp"), "token_pooling": ("cls", "cls"), "grid_size": (2, 2),
    "stage_pooling": ("fixed_window", "fixed_window"), "pool_window": (2, 2), "layer_pairs": ("1:1", "1:1"),
    "ofa_eps": (1.5, 1.5), "ofa_temperature": (2.0, 2.0),
}


def test_every_knob_is_a_labelled_config_field_that_reaches_the_spec(tmp_path):
    config_fields = {f.name: f for f in fields(ContrastiveDistillationConfig)}
    names = ObjectiveSettings.config_names()
    labels = [spec.metadata["label"] for spec in fields(ObjectiveSettings)]
    assert len(set(labels)) == len(labels) and all(labels)  # each knob its own words on the card
    assert set(EXAMPLES) == {spec.name for spec in fields(ObjectiveSettings)}
    recipe = get_preset("cktf")
    for spec in fields(ObjectiveSettings):
        field = config_fields[names[spec.name]]  # a config field per knob ...
        assert field.default is None and field.metadata["help"].startswith(spec.metadata["help"])  # ... its help
        typed, value = EXAMPLES[spec.name]
        assert getattr(recipe, spec.name) != value
        extra = {"stage_pooling": "fixed_window"} if spec.name == "pool_window" else {}
        args = ContrastiveDistillationConfig(output_dir=str(tmp_path), **{names[spec.name]: typed}, **extra)
        assert getattr(args.objective_settings, spec.name) == value  # ... that reaches the spec
    documented = [ContrastiveDistillationConfig.__doc__.count(f"        {name} (") for name in names.values()]
    assert documented == [1] * len(names)  # the docstring's list, from the spec too


def test_the_command_line_lists_every_knob_with_the_specs_help(tmp_path):
    parser = HfArgumentParser(ContrastiveDistillationConfig)
    actions = {action.dest: action for action in parser._actions}
    for spec in fields(ObjectiveSettings):
        action = actions[ObjectiveSettings.config_names()[spec.name]]
        assert action.default is None and spec.metadata["help"] in action.help
    (args,) = parser.parse_args_into_dataclasses([
        "--output_dir", str(tmp_path), "--preset", "cktf-reference", "--nce_k", "32", "--feature_batch_norm", "false",
        "--classic_options", '{"dkd": {"warmup": 2.0}}', "--classic_objectives", "dkd=1", "--layer_pairs", "0:0,1:2",
    ])
    settings = args.objective_settings
    assert (settings.nce_k, settings.feature_batch_norm, settings.classic_options, settings.classic) == (
        32, False, {"dkd": {"warmup": 2.0}}, {"dkd": 1.0})
    assert settings.layer_pairs == "0:0,1:2" and settings.temperature == get_preset("cktf-reference").temperature
    assert args.nce_k == 32 and args.feat_dim == 128 and args.negatives == "memory_bank"  # fields hold what runs


@pytest.mark.parametrize("overrides, expected", [
    (dict(negatives="memory_bank"), True),
    (dict(negatives="in_batch"), False),
    (dict(negatives="memory_bank", final_weight=0.0, layer_weight=0.0), False),
    (dict(negatives="memory_bank", final_weight=0.0), True),  # θ on the auto pairs (stem ↔ stem at least)
    (dict(negatives="memory_bank", final_weight=0.0, layer_pairs="1:1"), True),
    # No intermediate pair: θ weighs nothing. The trainer's old rule (β > 0 or θ > 0) said "bank", the objective's
    # (a contrastive pair with weight > 0) said "no bank".
    (dict(negatives="memory_bank", final_weight=0.0, layer_pairs="final:final"), False),
    (dict(negatives="memory_bank", layer_pairs="final:final"), True),
])
def test_uses_memory_bank_is_one_rule(overrides, expected):
    assert ObjectiveSettings(**overrides).uses_memory_bank is expected


def test_a_run_without_intermediate_pairs_and_without_beta_builds_no_bank(tmp_path, caplog):
    """The case where the old rules disagreed: the trainer wrapped the data for a bank the objective never built."""
    with caplog.at_level("WARNING", logger="cktf_hf"):
        args = ContrastiveDistillationConfig(
            output_dir=str(tmp_path), preset="cktf-reference", final_weight=0.0, kd_weight=1.0,
            layer_pairs="final:final", per_device_train_batch_size=8, max_steps=1, save_strategy="no",
            report_to="none", disable_tqdm=True, use_cpu=True, nce_k=16,
        )
    assert "nce_k=16 only act on memory-bank negatives" in caplog.text  # a knob set for a bank that is not there
    trainer = ContrastiveDistillationTrainer(model=tiny.resnet((8, 16), seed=1), args=args, train_dataset=tiny.digits(
        "train", 32), teacher_model=tiny.resnet((16, 32)))
    assert [pair.name for pair in trainer.pairs] == ["final"]
    assert not trainer.objective.contrastive and not trainer.objective.needs_indices
    assert not isinstance(trainer.train_dataset, IndexedDataset) and trainer.data_collator.negative_sampler is None
    trainer.train()


def test_the_objective_refuses_pairs_planned_from_other_layer_pairs():
    settings = ObjectiveSettings(final_weight=0.0, layer_pairs="auto")  # θ on intermediate pairs, with a bank
    with pytest.raises(ValueError, match=r"pairs \['final'\] were not planned from layer_pairs='auto'"):
        CKTFObjective(settings, [PairShape("final", 6, 8)], num_samples=20)
    CKTFObjective(replace(settings, layer_pairs="final:final"), [PairShape("final", 6, 8)])  # no bank: no size


def test_a_preset_sets_knobs_that_lived_only_on_the_config(tmp_path, monkeypatch):
    monkeypatch.setitem(presets.PRESETS, "small-bank", replace(
        get_preset("cktf-reference"), nce_k=16, feat_dim=24, projector="mlp", nce_momentum=0.9, layer_pairs="1:1",
        stage_pooling="fixed_window", pool_window=2, negative_sampling="shared"))
    args = ContrastiveDistillationConfig(output_dir=str(tmp_path), preset="small-bank", use_cpu=True, report_to="none")
    assert (args.nce_k, args.layer_pairs, args.stage_pooling) == (16, "1:1", "fixed_window")
    trainer = ContrastiveDistillationTrainer(model=tiny.resnet((8, 16), seed=1), args=args, train_dataset=tiny.digits(
        "train", 32), teacher_model=tiny.resnet((16, 32)))
    assert [pair.name for pair in trainer.pairs] == ["s1_t1", "final"]
    bank = trainer.objective.contrastive["final"]
    assert (bank.nce_k, bank.momentum, bank.feat_dim) == (16, 0.9, 24)
    assert trainer.reader.pooling == args.objective_settings.pooling and trainer.data_collator.negative_sampler.shared
    assert len(trainer.objective.student_projectors["final"].net) == 3  # the mlp head


def test_describe_lists_the_knobs_that_matter_for_the_run():
    reference = dict(get_preset("cktf-reference").describe())
    assert reference["K: negatives per sample"] == 16384
    assert reference["Memory-bank loss (CRD's NCE or MoCo's InfoNCE)"] == "nce"
    assert reference["τ: contrastive temperature"] == 0.1 and "T: KD temperature" not in reference
    assert "Pooling window" not in reference and "Teacher-side heads" not in reference
    recipe = dict(get_preset("cktf").describe())
    assert "K: negatives per sample" not in recipe and "Memory-bank momentum" not in recipe  # in-batch negatives
    assert recipe["Teacher-side heads"] == "none" and recipe["Intermediate pairs contrasted cell by cell"] is True
    assert dict(get_preset("cktf+kd").describe())["T: KD temperature"] == 4.0
    kd = dict(get_preset("kd").describe())  # no contrastive term: no τ, projector or negatives
    assert not {"τ: contrastive temperature", "Projector heads", "Negatives"} & set(kd)
    labels = ObjectiveSettings.labels()
    assert [label for label, _ in get_preset("cktf-reference").describe()] == [
        labels[name] for name in labels if labels[name] in reference]  # in field order
    fixed = dict(replace(get_preset("cktf-reference"), stage_pooling="fixed_window", pool_window=4).describe())
    assert (fixed["Stage pooling"], fixed["Pooling window"]) == ("fixed_window", 4) and "Stage pooling" not in reference


def test_a_distillation_config_written_before_the_spec_still_loads(tmp_path):
    """As 0.1.0 wrote it: the bank, projector and pooling fields concrete, negatives resolved, 16 resolved knobs."""
    old = {"preset": "cktf-reference", "negatives": "memory_bank", "nce_k": 16384, "negative_sampling": "per_sample",
           "bank_dtype": "float32", "nce_momentum": 0.5, "feat_dim": 128, "projector": "linear", "layer_pairs": "auto",
           "token_pooling": "mean", "grid_size": 1, "stage_pooling": "global", "pool_window": 8, "ce_weight": None,
           "layer_weight": None, "classic_objectives": None, "positive": None, "teacher": "org/teacher",
           "resolved_objective": {f.name: getattr(get_preset("cktf-reference"), f.name)
                                  for f in fields(ObjectiveSettings)
                                  if f.name not in ("nce_k", "negative_sampling", "bank_dtype", "nce_momentum",
                                                    "feat_dim", "projector", "token_pooling", "grid_size",
                                                    "stage_pooling", "pool_window", "layer_pairs",
                                                    "ofa_eps", "ofa_temperature", "bank_products")}}  # knobs added since
    assert len(old["resolved_objective"]) == 16
    (tmp_path / CONFIG_NAME).write_text(json.dumps(old))
    args = ContrastiveDistillationConfig.from_distillation_config(str(tmp_path), output_dir=str(tmp_path / "out"))
    assert args.objective_settings == get_preset("cktf-reference") and args.teacher == "org/teacher"
