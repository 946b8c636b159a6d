"""CKTFObjective against the weighted sum of stand-alone terms computed in the test, presets, errors, and the
ContrastiveDistillationConfig objective fields."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from cktf_hf.config import CONFIG_NAME, ContrastiveDistillationConfig
from cktf_hf.objectives import (
    CKTFObjective,
    InBatchInfoNCELoss,
    MemoryBankNCELoss,
    ObjectiveSettings,
    PairFeatures,
    PairShape,
    get_preset,
)
from cktf_hf.objectives.classic import AttentionTransferLoss, FitNetsLoss, PKTLoss

B, N, K, FEAT, CLASSES = 4, 20, 5, 8, 5

PAIRS = [
    PairShape("s0_t0", 3, 4, (3, 4, 4), (4, 4, 4), is_stem=True),
    PairShape("s1_t2", 5, 6, (5, 4, 4), (6, 2, 2)),
    PairShape("s2_t4", 7, 8, (7, 2, 2), (8, 2, 2)),
    PairShape("final", 6, 8),
]
INTERMEDIATE = ["s0_t0", "s1_t2", "s2_t4"]
STAGES = ["s1_t2", "s2_t4"]  # AT reads every stage map but the stem; FitNets the middle one (index len//2 = 1)

# preset → (γ, α, β, θ, τ, classic weights), written out from the method notes, not read from PRESETS.
EXPECTED = {
    "cktf-reference": (1.0, 0.0, 0.8, 0.1, 0.1, {}),  # "cktf" is the recipe: tests/test_recipe.py pins it
    "cktf+kd": (1.0, 1.0, 0.8, 0.1, 0.1, {}),
    "crd": (1.0, 0.0, 0.8, 0.0, 0.1, {}),
    "crd+kd": (1.0, 1.0, 0.8, 0.0, 0.1, {}),
    "kd": (0.1, 0.9, 0.0, 0.0, 0.1, {}),
    "transfer": (0.0, 0.0, 1.0, 0.04, 0.07, {}),
    "scratch": (1.0, 0.0, 0.0, 0.0, 0.1, {}),
    "at": (1.0, 0.0, 0.0, 0.0, 0.1, {"at": 1000.0}),
    "pkt": (1.0, 0.0, 0.0, 0.0, 0.1, {"pkt": 30000.0}),
    "fitnets": (1.0, 0.0, 0.0, 0.0, 0.1, {"fitnets": 100.0}),
    "at+cktf": (1.0, 0.0, 0.8, 0.8, 0.1, {"at": 1000.0}),
}


def _side(dims: str, g: torch.Generator, shapes=PAIRS) -> PairFeatures:
    pooled, maps = {}, {}
    for pair in shapes:
        pooled[pair.name] = torch.randn(B, pair.student_dim if dims == "s" else pair.teacher_dim, generator=g)
        shape = pair.student_map if dims == "s" else pair.teacher_map
        if shape is not None:
            maps[pair.name] = torch.randn(B, *shape, generator=g)
    return PairFeatures(torch.randn(B, CLASSES, generator=g), pooled, maps)


def _batch(seed: int):
    g = torch.Generator().manual_seed(seed)
    student, teacher = _side("s", g), _side("t", g)
    labels = torch.randint(0, CLASSES, (B,), generator=g)
    index = torch.randperm(N, generator=g)[:B]
    contrast_idx = torch.cat([index[:, None], torch.randint(0, N, (B, K), generator=g)], dim=1)
    return student, teacher, labels, index, contrast_idx


def _ce(logits: torch.Tensor, labels: torch.Tensor) -> float:
    total = 0.0
    for b in range(logits.shape[0]):
        row = logits[b].tolist()
        total += -row[int(labels[b])] + math.log(sum(math.exp(x) for x in row))
    return total / logits.shape[0]


def _kd(z_s: torch.Tensor, z_t: torch.Tensor, temperature: float) -> float:
    total = 0.0
    for b in range(z_s.shape[0]):
        s = [x / temperature for x in z_s[b].tolist()]
        t = [x / temperature for x in z_t[b].tolist()]
        log_zs, log_zt = math.log(sum(map(math.exp, s))), math.log(sum(map(math.exp, t)))
        for si, ti in zip(s, t):
            p_t = math.exp(ti - log_zt)
            total += p_t * ((ti - log_zt) - (si - log_zs))
    return temperature**2 * total / z_s.shape[0]


def _project(projector, x: torch.Tensor) -> torch.Tensor:
    linear = projector.net
    return F.normalize(F.linear(x, linear.weight.detach(), linear.bias.detach()), dim=1)


def _expected_components(objective, standalone, student, teacher, labels, index, contrast_idx, weights, negatives):
    gamma, alpha, beta, theta, tau, classic = weights
    values = {}
    if gamma > 0:
        values["ce"] = (gamma, _ce(student.logits, labels))
    if alpha > 0:
        values["kd"] = (alpha, _kd(student.logits, teacher.logits, 4.0))
    for pair in PAIRS:
        weight = beta if pair.name == "final" else theta
        if weight == 0:
            continue
        v_s = _project(objective.student_projectors[pair.name], student.pooled[pair.name])
        v_t = _project(objective.teacher_projectors[pair.name], teacher.pooled[pair.name])
        loss_fn = standalone[pair.name]
        value = loss_fn(v_s, v_t, index, contrast_idx) if negatives == "memory_bank" else loss_fn(v_s, v_t)
        values[f"contrast_{pair.name}"] = (weight, value.item())
    for name, weight in classic.items():
        if name == "at":
            value = AttentionTransferLoss()([student.maps[n] for n in STAGES], [teacher.maps[n] for n in STAGES])
        elif name == "pkt":
            value = PKTLoss()(student.pooled["final"], teacher.pooled["final"])
        elif name == "fitnets":
            fitnets = FitNetsLoss((7, 2, 2), (8, 2, 2))
            fitnets.load_state_dict(objective.classic["fitnets"].state_dict())
            value = fitnets(student.maps["s2_t4"], teacher.maps["s2_t4"])
        else:
            raise AssertionError(name)
        values[name] = (weight, value.item())
    return values


def _standalone(objective, negatives, tau):
    """Fresh stand-alone contrastive losses with τ from the test's table, banks copied from the combined module."""
    out = {}
    for name, module in objective.contrastive.items():
        if negatives == "memory_bank":
            bank = MemoryBankNCELoss(N, feat_dim=FEAT, nce_k=K, temperature=tau, momentum=0.5)
            bank.load_state_dict(module.state_dict())
            out[name] = bank
        else:
            out[name] = InBatchInfoNCELoss(tau)
    return out


@pytest.mark.parametrize("negatives", ["memory_bank", "in_batch"])
@pytest.mark.parametrize("preset", sorted(EXPECTED))
def test_combined_equals_weighted_sum_of_standalone_terms(preset, negatives):
    weights = EXPECTED[preset]
    gamma, alpha, beta, theta, tau, classic = weights
    torch.manual_seed(0)
    settings = replace(get_preset(preset), negatives=negatives, nce_k=K, feat_dim=FEAT)
    objective = CKTFObjective(settings, PAIRS, num_samples=N)
    expected_pairs = {p.name for p in PAIRS if (beta if p.name == "final" else theta) > 0}
    assert set(objective.contrastive) == expected_pairs
    assert set(objective.student_projectors) == expected_pairs == set(objective.teacher_projectors)
    assert set(objective.classic) == set(classic)
    assert (objective.kd is not None) == (alpha > 0)
    assert objective.needs_indices == (negatives == "memory_bank" and bool(expected_pairs))
    for module in objective.contrastive.values():
        assert module.temperature == tau
    standalone = _standalone(objective, negatives, tau)
    for call in range(2):  # the second call sees the banks updated by the first, in both implementations
        student, teacher, labels, index, contrast_idx = _batch(seed=10 + call)
        expected = _expected_components(objective, standalone, student, teacher, labels, index, contrast_idx,
                                        weights, negatives)
        out = objective(student, teacher, labels=None if gamma == 0 else labels, index=index,
                        contrast_idx=contrast_idx)
        assert set(out.components) == set(expected)
        for name, (_, value) in expected.items():
            assert out.components[name].item() == pytest.approx(value, rel=1e-5, abs=1e-7), (call, name)
        total = sum(w * v for w, v in expected.values())
        assert out.loss.dtype == torch.float32 and out.loss.shape == ()
        assert out.loss.item() == pytest.approx(total, rel=1e-5, abs=1e-7)


def test_kd_preset_by_hand():
    objective = CKTFObjective(get_preset("kd"), PAIRS)  # no contrastive term: no num_samples needed
    assert len(objective.contrastive) == 0 and len(objective.student_projectors) == 0
    assert not objective.needs_indices
    student, teacher, labels, _, _ = _batch(seed=3)
    out = objective(student, teacher, labels=labels)  # no index / contrast_idx
    assert set(out.components) == {"ce", "kd"}
    expected = 0.1 * _ce(student.logits, labels) + 0.9 * _kd(student.logits, teacher.logits, 4.0)
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)


def test_crd_preset_is_ce_plus_final_bank_nce_only():
    torch.manual_seed(1)
    objective = CKTFObjective(replace(get_preset("crd"), nce_k=K, feat_dim=FEAT), PAIRS, num_samples=N)
    assert list(objective.student_projectors) == ["final"] and list(objective.contrastive) == ["final"]
    assert objective.kd is None and len(objective.classic) == 0
    bank = MemoryBankNCELoss(N, feat_dim=FEAT, nce_k=K, temperature=0.1)
    bank.load_state_dict(objective.contrastive["final"].state_dict())
    student, teacher, labels, index, contrast_idx = _batch(seed=4)
    v_s = _project(objective.student_projectors["final"], student.pooled["final"])
    v_t = _project(objective.teacher_projectors["final"], teacher.pooled["final"])
    expected = _ce(student.logits, labels) + 0.8 * bank(v_s, v_t, index, contrast_idx).item()
    out = objective(student, teacher, labels, index, contrast_idx)
    assert set(out.components) == {"ce", "contrast_final"}
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)


def test_transfer_preset_without_labels():
    torch.manual_seed(2)
    objective = CKTFObjective(replace(get_preset("transfer"), nce_k=K, feat_dim=FEAT), PAIRS, num_samples=N)
    assert objective.pair_weights == {"s0_t0": 0.04, "s1_t2": 0.04, "s2_t4": 0.04, "final": 1.0}
    assert all(m.temperature == 0.07 for m in objective.contrastive.values())
    student, teacher, _, index, contrast_idx = _batch(seed=5)
    out = objective(student, teacher, labels=None, index=index, contrast_idx=contrast_idx)
    assert "ce" not in out.components and "kd" not in out.components
    assert set(out.components) == {f"contrast_{n}" for n in INTERMEDIATE + ["final"]}


def test_projector_parameters_and_gradients():
    torch.manual_seed(3)
    settings = replace(get_preset("cktf-reference"), nce_k=K, feat_dim=FEAT, projector="mlp")
    objective = CKTFObjective(settings, PAIRS, num_samples=N)
    student, teacher, labels, index, contrast_idx = _batch(seed=6)
    for pooled in student.pooled.values():
        pooled.requires_grad_(True)
    for pooled in teacher.pooled.values():
        pooled.requires_grad_(True)
    student.logits.requires_grad_(True)
    objective(student, teacher, labels, index, contrast_idx).loss.backward()
    for name in INTERMEDIATE + ["final"]:
        assert student.pooled[name].grad is not None and student.pooled[name].grad.abs().sum() > 0
        assert teacher.pooled[name].grad is None  # teacher features are detached
        for side in (objective.student_projectors, objective.teacher_projectors):  # both heads are trained
            assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in side[name].parameters())
    assert student.logits.grad is not None
    # banks are buffers, not parameters
    assert not any("memory" in n for n, _ in objective.named_parameters())
    assert any(n.endswith("memory_student") for n, _ in objective.named_buffers())


def test_zero_weight_terms_not_built():
    settings = ObjectiveSettings(layer_weight=0.0, classic={"at": 0.0, "pkt": 2.0})
    objective = CKTFObjective(replace(settings, nce_k=K, feat_dim=FEAT), PAIRS, num_samples=N)
    assert list(objective.contrastive) == ["final"] and list(objective.teacher_projectors) == ["final"]
    assert list(objective.classic) == ["pkt"]
    student, teacher, labels, index, contrast_idx = _batch(seed=7)
    assert set(objective(student, teacher, labels, index, contrast_idx).components) == {"ce", "contrast_final", "pkt"}


# --- errors ----------------------------------------------------------------------------------------------------------
def test_unknown_preset_lists_known():
    with pytest.raises(ValueError, match="Unknown preset 'nope'") as info:
        get_preset("nope")
    for known in ("cktf", "cktf+kd", "crd", "kd", "transfer", "scratch", "at", "pkt+cktf"):
        assert known in str(info.value)


def test_unknown_classic_objective_lists_known():
    with pytest.raises(ValueError, match="Unknown objective 'nope'") as info:
        ObjectiveSettings(classic={"nope": 1.0})
    for known in ("at", "fitnets", "pkt", "nst", "vid"):
        assert known in str(info.value)


@pytest.mark.parametrize("field", ["ce_weight", "kd_weight", "final_weight", "layer_weight"])
def test_negative_weight_rejected(field):
    with pytest.raises(ValueError, match=field):
        ObjectiveSettings(**{field: -0.1})


def test_negative_classic_weight_and_bad_temperature_rejected():
    with pytest.raises(ValueError, match="'at'"):
        ObjectiveSettings(classic={"at": -1.0})
    with pytest.raises(ValueError, match="temperature"):
        ObjectiveSettings(temperature=0.0)


@pytest.mark.parametrize("name, hint", [("kd", "kd_weight"), ("crd", "final_weight"), ("infonce", "in_batch")])
def test_weighted_by_field_names_rejected_as_classic(name, hint):
    with pytest.raises(ValueError, match=hint):
        ObjectiveSettings(classic={name: 1.0})


def test_memory_bank_needs_num_samples():
    with pytest.raises(ValueError, match="num_samples") as info:
        CKTFObjective(get_preset("cktf-reference"), PAIRS)
    assert "in_batch" in str(info.value)
    CKTFObjective(replace(get_preset("cktf-reference"), negatives="in_batch", feat_dim=FEAT), PAIRS)  # fine without it


def test_forward_without_indices_in_bank_mode_rejected():
    objective = CKTFObjective(replace(get_preset("cktf-reference"), nce_k=K, feat_dim=FEAT), PAIRS, num_samples=N)
    student, teacher, labels, index, contrast_idx = _batch(seed=8)
    with pytest.raises(ValueError, match="contrast_idx"):
        objective(student, teacher, labels)
    with pytest.raises(ValueError, match="contrast_idx"):
        objective(student, teacher, labels, index=index)


def test_ce_without_labels_and_all_zero_weights_rejected():
    objective = CKTFObjective(get_preset("scratch"), PAIRS)
    student, teacher, *_ = _batch(seed=9)
    with pytest.raises(ValueError, match="labels"):
        objective(student, teacher)
    nothing = CKTFObjective(ObjectiveSettings(ce_weight=0.0, final_weight=0.0, layer_weight=0.0), PAIRS)
    with pytest.raises(ValueError, match="zero"):
        nothing(student, teacher)


def test_bad_negatives_and_missing_final_pair_rejected():
    with pytest.raises(ValueError, match="negatives"):
        CKTFObjective(replace(get_preset("cktf-reference"), negatives="queue"), PAIRS, num_samples=N)
    with pytest.raises(ValueError, match="final"):
        CKTFObjective(get_preset("cktf-reference"), PAIRS[:-1], num_samples=N)


def test_map_objective_with_vector_features_rejected():
    vector_pairs = [PairShape("s1_t1", 5, 6), PairShape("s2_t2", 7, 8), PairShape("final", 6, 8)]
    with pytest.raises(ValueError, match="spatial feature maps") as info:
        CKTFObjective(get_preset("at"), vector_pairs)
    assert "vector-only" in str(info.value) and "'at'" in str(info.value)
    with pytest.raises(ValueError, match="spatial feature maps") as info:
        CKTFObjective(get_preset("at"), [PairShape("final", 6, 8)])
    assert "none" in str(info.value)
    # vector objectives are fine with vector pairs
    CKTFObjective(get_preset("pkt"), vector_pairs)


# --- ContrastiveDistillationConfig ------------------------------------------------------------------------------------
def test_config_preset_overrides(tmp_path):
    config = ContrastiveDistillationConfig(output_dir=str(tmp_path), preset="cktf", layer_weight=0.2)
    settings = config.objective_settings
    assert settings.layer_weight == 0.2
    assert (settings.ce_weight, settings.kd_weight, settings.final_weight) == (1.0, 0.0, 0.8)
    assert (settings.temperature, settings.kd_temperature, settings.feature_batch_norm) == (0.1, 4.0, True)
    transfer = ContrastiveDistillationConfig(output_dir=str(tmp_path), preset="transfer", temperature=0.2).objective_settings
    assert (transfer.ce_weight, transfer.final_weight, transfer.layer_weight, transfer.temperature) == (0.0, 1.0, 0.04, 0.2)


def test_config_classic_objectives_parsed(tmp_path):
    config = ContrastiveDistillationConfig(output_dir=str(tmp_path), preset="cktf-reference",
                                           classic_objectives="at=1000,pkt=30000")
    assert config.objective_settings.classic == {"at": 1000.0, "pkt": 30000.0}
    assert config.objective_settings.layer_weight == 0.1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"negatives": "x"},
        {"projector": "x"},
        {"token_pooling": "x"},
        {"teacher_dtype": "x"},
        {"preset": "nope"},
        {"nce_momentum": 1.5},
        {"layer_pairs": "1-2"},
        {"classic_objectives": "at=abc"},
        {"classic_objectives": "nope=1"},
        {"kd_weight": -1.0},
    ],
)
def test_config_bad_values_rejected(tmp_path, kwargs):
    with pytest.raises(ValueError):
        ContrastiveDistillationConfig(output_dir=str(tmp_path), **kwargs)


def test_config_layer_pairs_list_normalised(tmp_path):
    config = ContrastiveDistillationConfig(output_dir=str(tmp_path), layer_pairs=[(0, 0), (2, 4)])
    assert config.layer_pairs == "0:0,2:4"


def test_config_save_and_load_round_trip(tmp_path):
    config = ContrastiveDistillationConfig(
        output_dir=str(tmp_path / "run"), teacher="org/teacher", preset="cktf+kd", layer_weight=0.2,
        classic_objectives="at=1000", negatives="in_batch", nce_k=128, nce_momentum=0.9, feat_dim=64,
        projector="mlp", layer_pairs="0:0,2:4", token_pooling="cls", grid_size=2, label_column="fine_label",
    )
    path = config.save_distillation_config(str(tmp_path / "saved"), student_pairs=3)
    assert path == str(tmp_path / "saved" / CONFIG_NAME)
    saved = json.loads((tmp_path / "saved" / CONFIG_NAME).read_text())
    assert saved["student_pairs"] == 3 and "output_dir" not in saved and "learning_rate" not in saved
    assert saved["resolved_objective"]["layer_weight"] == 0.2 and saved["resolved_objective"]["kd_weight"] == 1.0
    assert saved["resolved_objective"]["classic"] == {"at": 1000.0}
    restored = ContrastiveDistillationConfig.from_distillation_config(str(tmp_path / "saved"), output_dir=str(tmp_path / "b"))
    assert restored.distillation_dict() == config.distillation_dict()
    assert restored.objective_settings == config.objective_settings
    again = ContrastiveDistillationConfig.from_distillation_config(path, output_dir=str(tmp_path / "c"), nce_k=7)
    assert again.nce_k == 7 and again.teacher == "org/teacher"


def test_a_saved_config_whose_preset_changed_meaning_is_refused(tmp_path):
    """A distillation_config.json written when "cktf" meant the paper's settings does not silently train the recipe."""
    old = ContrastiveDistillationConfig(output_dir=str(tmp_path / "a"), preset="cktf-reference", nce_k=8)
    path = old.save_distillation_config(str(tmp_path / "saved"))
    saved = json.loads(open(path).read())
    saved["preset"] = "cktf"  # as an earlier version wrote it: "cktf" resolved to the reference settings
    (tmp_path / "saved" / CONFIG_NAME).write_text(json.dumps(saved))
    with pytest.raises(ValueError, match=r"preset 'cktf' no longer gives \(.*layer_weight: 0\.1 saved, 2\.0 now.*"
                                         r"pass preset='cktf-reference'"):
        ContrastiveDistillationConfig.from_distillation_config(str(tmp_path / "saved"), output_dir=str(tmp_path / "b"))
    again = ContrastiveDistillationConfig.from_distillation_config(str(tmp_path / "saved"), output_dir=str(tmp_path / "b"),
                                                                   preset="cktf-reference")
    assert again.objective_settings == old.objective_settings
    # An explicit override of a weight is the caller's intent, not a mismatch.
    tuned = ContrastiveDistillationConfig(output_dir=str(tmp_path / "c"), preset="cktf", layer_weight=0.5)
    tuned.save_distillation_config(str(tmp_path / "tuned"))
    restored = ContrastiveDistillationConfig.from_distillation_config(str(tmp_path / "tuned"),
                                                                      output_dir=str(tmp_path / "d"), temperature=0.2)
    assert restored.objective_settings.layer_weight == 0.5 and restored.objective_settings.temperature == 0.2


@pytest.mark.parametrize("products", ["bfloat16", "bfloat16-gradient", "float32"])
def test_every_bank_multiplies_shared_negatives_at_the_settings_precision(products):
    settings = replace(get_preset("cktf-reference"), nce_k=K, feat_dim=FEAT, negative_sampling="shared",
                       bank_products=products)
    objective = CKTFObjective(settings, PAIRS, num_samples=N)
    banks = objective.contrastive.values()
    assert banks and {bank.products for bank in banks} == {products}
    assert all(bank.row_of is not None for bank in banks)  # shared negatives: the banks keep the shuffled order
    per_sample = CKTFObjective(replace(settings, negative_sampling="per_sample"), PAIRS, num_samples=N)
    assert all(bank.row_of is None for bank in per_sample.contrastive.values())  # the reference's layout
