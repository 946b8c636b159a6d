"""DKD and DIST: values against NumPy re-implementations written from the papers' equations and hand-worked cases,
their invariances and limits, the labels / warm-up plumbing of CKTFObjective, and the presets."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

import tests.tiny as tiny
from tests.logit_math import B, C, random_logits, softmax
from cktf_hf.config import ContrastiveDistillationConfig
from cktf_hf.objectives import (
    CKTFObjective,
    DISTLoss,
    DKDLoss,
    ObjectiveSettings,
    PairFeatures,
    PairShape,
    get_objective,
    get_preset,
)
from cktf_hf.objectives.classic import KDLoss
from cktf_hf.trainer import ContrastiveDistillationTrainer



def _kl(p: np.ndarray, q: np.ndarray) -> float:
    return float(np.sum(p * (np.log(p) - np.log(q))))


# --- NumPy references, from the papers --------------------------------------------------------------------------------


def numpy_dkd(z_s, z_t, labels, alpha: float, beta: float, temperature: float) -> float:
    """Zhao et al. 2022, eqs. (1)-(5): b = [p_gt, 1 − p_gt], p̂ = the distribution renormalised over the non-target
    classes; DKD = α·KL(b_t‖b_s) + β·KL(p̂_t‖p̂_s), times T², averaged over the batch."""
    z_s, z_t = np.asarray(z_s, np.float64) / temperature, np.asarray(z_t, np.float64) / temperature
    total = 0.0
    for zs, zt, g in zip(z_s, z_t, np.asarray(labels)):
        p_s, p_t = softmax(zs), softmax(zt)
        b_s, b_t = np.array([p_s[g], 1 - p_s[g]]), np.array([p_t[g], 1 - p_t[g]])
        others = np.arange(len(zs)) != g
        hat_s, hat_t = p_s[others] / p_s[others].sum(), p_t[others] / p_t[others].sum()
        total += alpha * _kl(b_t, b_s) + beta * _kl(hat_t, hat_s)
    return temperature**2 * total / len(z_s)


def numpy_dist(z_s, z_t, beta: float, gamma: float, tau: float) -> float:
    """Huang et al. 2022, eqs. (6)-(9): Y = softmax(Z/τ); inter = 1 − mean over samples of the Pearson correlation
    of the rows, intra = the same over the columns (classes); τ²·(β·inter + γ·intra)."""
    y_s = softmax(np.asarray(z_s, np.float64) / tau)
    y_t = softmax(np.asarray(z_t, np.float64) / tau)
    inter = 1 - np.mean([np.corrcoef(a, b)[0, 1] for a, b in zip(y_s, y_t)])
    intra = 1 - np.mean([np.corrcoef(a, b)[0, 1] for a, b in zip(y_s.T, y_t.T)])
    return tau**2 * (beta * inter + gamma * intra)


# --- DKD values -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha, beta, temperature", [(1.0, 8.0, 4.0), (1.0, 0.5, 1.0), (0.3, 2.0, 2.0)])
def test_dkd_matches_numpy_from_the_paper(alpha, beta, temperature):
    z_s, z_t = random_logits(0)
    labels = torch.tensor([0, 1, 2, 3, 4, 2])
    loss = DKDLoss(alpha, beta, temperature)(z_s, z_t, labels)
    expected = numpy_dkd(z_s.numpy(), z_t.numpy(), labels.numpy(), alpha, beta, temperature)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_dkd_by_hand_two_samples_three_classes():
    # Teacher uniform; student p = [1/2, 1/4, 1/4]; labels 0 and 1, T = 1, α = 1, β = 8.
    # Sample 1: TCKD = KL([1/3, 2/3] ‖ [1/2, 1/2]) = 5/3 ln2 − ln3; NCKD = 0 (both uniform over classes 1, 2).
    # Sample 2: TCKD = KL([1/3, 2/3] ‖ [1/4, 3/4]) = 8/3 ln2 − 5/3 ln3;
    #           NCKD = KL([1/2, 1/2] ‖ [2/3, 1/3]) = ln3 − 3/2 ln2.
    # Mean: (16 ln3 − 23 ln2) / 6.
    z_s = torch.tensor([[math.log(2.0), 0.0, 0.0]] * 2)
    z_t = torch.zeros(2, 3)
    loss = DKDLoss(alpha=1.0, beta=8.0, temperature=1.0)(z_s, z_t, torch.tensor([0, 1]))
    assert loss.item() == pytest.approx((16 * math.log(3) - 23 * math.log(2)) / 6, rel=1e-6)


def test_dkd_reassembles_kd_as_the_paper_decomposes_it():
    # Eq. (4): KD = TCKD + (1 − p_t[gt]) · NCKD, per sample (the teacher's target probability at temperature T).
    z_s, z_t = random_logits(1, batch=4)
    labels = torch.tensor([3, 0, 4, 1])
    for b in range(4):
        s, t, y = z_s[b:b + 1], z_t[b:b + 1], labels[b:b + 1]
        tckd = DKDLoss(alpha=1.0, beta=0.0, temperature=4.0)(s, t, y)
        nckd = DKDLoss(alpha=0.0, beta=1.0, temperature=4.0)(s, t, y)
        p_gt = torch.softmax(t / 4.0, dim=1)[0, y[0]]
        torch.testing.assert_close(tckd + (1 - p_gt) * nckd, KDLoss(4.0)(s, t), rtol=1e-5, atol=1e-6)


def test_dkd_temperature_scaling():
    # softmax((T·z) / T) = softmax(z): the loss at temperature T on T·z is T² times the loss at T = 1 on z.
    z_s, z_t = random_logits(2)
    labels = torch.tensor([1, 1, 0, 4, 3, 2])
    at_one = DKDLoss(temperature=1.0)(z_s, z_t, labels)
    torch.testing.assert_close(DKDLoss(temperature=4.0)(4 * z_s, 4 * z_t, labels), 16 * at_one, rtol=1e-5, atol=0)


def test_dkd_zero_for_identical_logits_and_positive_otherwise():
    z_s, z_t = random_logits(3)
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    assert DKDLoss()(z_s, z_s.clone(), labels).item() == pytest.approx(0.0, abs=1e-5)
    assert DKDLoss()(z_s, z_t, labels).item() > 0.1


def test_dkd_depends_on_the_labels():
    z_s, z_t = random_logits(4)
    a, b = torch.tensor([0, 1, 2, 3, 4, 0]), torch.tensor([1, 2, 3, 4, 0, 1])
    assert abs(DKDLoss()(z_s, z_t, a).item() - DKDLoss()(z_s, z_t, b).item()) > 1e-3


def test_dkd_warmup_factor_as_mdistiller():
    dkd = DKDLoss(warmup=20.0)
    assert [dkd.weight_factor(e) for e in (1, 10, 20, 21, 240)] == [0.05, 0.5, 1.0, 1.0, 1.0]
    assert DKDLoss(warmup=0.0).weight_factor(1) == 1.0


# --- DIST values ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("beta, gamma, tau", [(1.0, 1.0, 4.0), (1.0, 1.0, 1.0), (2.0, 0.5, 2.0)])
def test_dist_matches_numpy_pearson(beta, gamma, tau):
    z_s, z_t = random_logits(5)
    loss = DISTLoss(beta, gamma, tau)(z_s, z_t)
    assert loss.item() == pytest.approx(numpy_dist(z_s.numpy(), z_t.numpy(), beta, gamma, tau), rel=1e-4)


def test_dist_by_hand_two_samples_three_classes():
    # Rows (τ = 1): teacher [1/2, 1/4, 1/4], [1/4, 5/8, 1/8]; student [1/4, 1/4, 1/2], [1/2, 1/8, 3/8].
    # Inter: ρ(row 1) = −1/2; row 2 centred ∝ [−2, 7, −5] and [4, −5, 1], ρ = −48/√(78·42) = −8/√91;
    #   inter = 1 − (−1/2 − 8/√91)/2 = 5/4 + 4/√91.
    # Intra: two samples, so each column's ρ is the sign of Δs·Δt: Δt = [−1/4, 3/8, −1/8], Δs = [1/4, −1/8, −1/8]
    #   → ρ = −1, −1, +1; intra = 1 − (−1/3) = 4/3.
    y_t = torch.tensor([[1 / 2, 1 / 4, 1 / 4], [1 / 4, 5 / 8, 1 / 8]])
    y_s = torch.tensor([[1 / 4, 1 / 4, 1 / 2], [1 / 2, 1 / 8, 3 / 8]])
    loss = DISTLoss(beta=1.0, gamma=1.0, tau=1.0)(y_s.log(), y_t.log())
    assert loss.item() == pytest.approx(5 / 4 + 4 / math.sqrt(91) + 4 / 3, rel=1e-5)
    only_inter = DISTLoss(beta=1.0, gamma=0.0, tau=1.0)(y_s.log(), y_t.log())
    assert only_inter.item() == pytest.approx(5 / 4 + 4 / math.sqrt(91), rel=1e-5)


def test_dist_tau_scaling():
    z_s, z_t = random_logits(6)
    at_one = DISTLoss(tau=1.0)(z_s, z_t)
    torch.testing.assert_close(DISTLoss(tau=4.0)(4 * z_s, 4 * z_t), 16 * at_one, rtol=1e-5, atol=0)


def test_dist_identical_logits_give_only_the_eps_residue():
    # ρ(y, y) = ‖y_c‖² / (‖y_c‖² + eps) with y_c the centred vector: 0 up to eps, exactly as the authors' code.
    # Nearly uniform rows (tiny logits) make the eps residue large enough to measure in float32.
    z, _ = random_logits(7, scale=0.05)
    dist = DISTLoss(beta=1.0, gamma=1.0, tau=4.0)
    y = np.asarray(torch.softmax(z / 4.0, dim=1).double())

    def residue(rows):
        n2 = ((rows - rows.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)
        return 1 - np.mean(n2 / (n2 + 1e-8))

    expected = 16 * (residue(y) + residue(y.T))
    loss = dist(z, z.clone())
    assert 1e-3 < expected < 0.1
    assert loss.item() == pytest.approx(expected, rel=1e-3)
    assert DISTLoss(eps=0.0)(z, z.clone()).item() == pytest.approx(0.0, abs=1e-5)


# --- DIST invariances: what holds and what does not ------------------------------------------------------------------


def test_dist_invariant_to_per_sample_logit_shifts_and_consistent_permutations():
    z_s, z_t = random_logits(8)
    dist = DISTLoss()
    reference = dist(z_s, z_t)
    shift = torch.randn(B, 1)
    torch.testing.assert_close(dist(z_s + shift, z_t - 2 * shift), reference)  # softmax ignores a per-row constant
    classes, samples = torch.randperm(C), torch.randperm(B)
    torch.testing.assert_close(dist(z_s[:, classes], z_t[:, classes]), reference)
    torch.testing.assert_close(dist(z_s[samples], z_t[samples]), reference)
    # Permuting the student's classes alone is not a symmetry.
    assert abs(dist(z_s[:, classes.roll(1)], z_t).item() - reference.item()) > 1e-3


def test_relation_loss_invariant_to_positive_affine_maps_of_each_row_only():
    g = torch.Generator().manual_seed(9)
    y_s, y_t = torch.rand(B, C, generator=g), torch.rand(B, C, generator=g)
    dist = DISTLoss(eps=0.0)
    reference = dist.relation_loss(y_s, y_t)
    scale, offset = torch.rand(B, 1, generator=g) + 0.5, torch.randn(B, 1, generator=g)
    torch.testing.assert_close(dist.relation_loss(scale * y_s + offset, y_t), reference)
    # A negative scale flips each row's correlation: 1 − ρ becomes 1 + ρ.
    torch.testing.assert_close(dist.relation_loss(-y_s, y_t), 2 - reference)
    # Per-column maps are not a symmetry of the row relation.
    column_scale = torch.rand(1, C, generator=g) + 0.5
    assert abs(dist.relation_loss(column_scale * y_s, y_t).item() - reference.item()) > 1e-4


def test_dist_relaxed_match_zero_where_kd_is_not():
    # A student whose probabilities are the teacher's softened per sample, y_s = λ_b·y_t + (1 − λ_b)/C, keeps every
    # row's correlation (inter = 0) although KD is positive; with a single λ the columns keep theirs too.
    _, z_t = random_logits(10)
    y_t = torch.softmax(z_t, dim=1)
    per_sample = torch.linspace(0.2, 0.9, B)[:, None]
    for lam, intra_zero in ((per_sample, False), (torch.tensor(0.5), True)):
        z_s = (lam * y_t + (1 - lam) / C).log()
        inter = DISTLoss(beta=1.0, gamma=0.0, tau=1.0, eps=0.0)(z_s, z_t)
        intra = DISTLoss(beta=0.0, gamma=1.0, tau=1.0, eps=0.0)(z_s, z_t)
        assert inter.item() == pytest.approx(0.0, abs=1e-5)
        assert (intra.item() == pytest.approx(0.0, abs=1e-5)) is intra_zero
        assert KDLoss(1.0)(z_s, z_t).item() > 1e-2


# --- shared contract --------------------------------------------------------------------------------------------------


def _call(name: str, z_s, z_t, labels):
    objective = get_objective(name)()
    return objective(z_s, z_t, labels) if objective.needs_labels else objective(z_s, z_t)


@pytest.mark.parametrize("name", ["dkd", "dist"])
def test_gradients_reach_only_the_student(name):
    z_s, z_t = random_logits(11)
    z_s.requires_grad_(True)
    z_t.requires_grad_(True)
    _call(name, z_s, z_t, torch.tensor([0, 1, 2, 3, 4, 0])).backward()
    assert z_s.grad is not None and z_s.grad.abs().sum() > 0
    assert z_t.grad is None


@pytest.mark.parametrize("name", ["dkd", "dist"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_computed_in_float32(name, dtype):
    z_s, z_t = random_logits(12)
    z_s, z_t = z_s.to(dtype), z_t.to(dtype)
    labels = torch.tensor([4, 3, 2, 1, 0, 0])
    exact = _call(name, z_s.float(), z_t.float(), labels)
    loss = _call(name, z_s, z_t, labels)
    assert loss.dtype == torch.float32 and loss.dim() == 0
    torch.testing.assert_close(loss, exact)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = _call(name, z_s, z_t, labels)
    assert under_autocast.dtype == torch.float32
    torch.testing.assert_close(under_autocast, exact)


def test_registered_as_logit_objectives():
    assert get_objective("DKD") is DKDLoss and get_objective("dist") is DISTLoss
    assert DKDLoss.inputs == DISTLoss.inputs == "logits"
    assert DKDLoss.needs_labels and not DISTLoss.needs_labels
    assert DKDLoss.from_shapes([(C,)], [(C,)], beta=6.0).beta == 6.0


def test_bad_shapes_and_parameters_rejected():
    z_s, z_t = random_logits(13)
    with pytest.raises(ValueError, match="label space"):
        DISTLoss()(z_s, z_t[:, :3])
    with pytest.raises(ValueError, match="label space"):
        DKDLoss()(z_s, z_t[:, :3], torch.zeros(B, dtype=torch.long))
    with pytest.raises(ValueError, match="one label per sample"):
        DKDLoss()(z_s, z_t, torch.zeros(B, 1, dtype=torch.long))
    for kwargs in (dict(alpha=-1.0), dict(beta=-1.0), dict(temperature=0.0), dict(warmup=-1.0)):
        with pytest.raises(ValueError, match="DKD needs"):
            DKDLoss(**kwargs)
    for kwargs in (dict(beta=-1.0), dict(gamma=-1.0), dict(tau=0.0)):
        with pytest.raises(ValueError, match="DIST needs"):
            DISTLoss(**kwargs)


# --- CKTFObjective: labels, warm-up, presets --------------------------------------------------------------------------

PAIRS = [PairShape("s1_t2", 5, 6, (5, 4, 4), (6, 2, 2)), PairShape("final", 6, 8)]


def _sides(seed: int) -> tuple[PairFeatures, PairFeatures, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)

    def side(k: int) -> PairFeatures:
        pooled = {p.name: torch.randn(B, p.student_dim if k == 0 else p.teacher_dim, generator=g) for p in PAIRS}
        return PairFeatures(3 * torch.randn(B, C, generator=g), pooled)

    return side(0), side(1), torch.randint(0, C, (B,), generator=g)


def _objective(settings: ObjectiveSettings) -> CKTFObjective:
    return CKTFObjective(replace(settings, negatives="in_batch"), PAIRS)


def test_dkd_term_without_labels_rejected_naming_it():
    student, teacher, _ = _sides(0)
    objective = _objective(ObjectiveSettings(ce_weight=0.0, final_weight=0.0, layer_weight=0.0, classic={"dkd": 1.0},
                                             classic_options={"dkd": {"warmup": 0.0}}))
    with pytest.raises(ValueError, match=r"\['dkd'\] need the ground-truth labels"):
        objective(student, teacher, labels=None)
    dist = _objective(ObjectiveSettings(ce_weight=0.0, final_weight=0.0, layer_weight=0.0, classic={"dist": 1.0}))
    assert dist(student, teacher, labels=None).loss.item() > 0  # DIST reads no labels


def test_labels_reach_dkd_inside_the_combined_objective():
    student, teacher, labels = _sides(1)
    settings = ObjectiveSettings(ce_weight=0.0, final_weight=0.0, layer_weight=0.0, classic={"dkd": 1.0},
                                 classic_options={"dkd": {"warmup": 0.0}})
    out = _objective(settings)(student, teacher, labels=labels)
    expected = numpy_dkd(student.logits.numpy(), teacher.logits.numpy(), labels.numpy(), 1.0, 8.0, 4.0)
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)


def test_dkd_warmup_follows_the_epoch_and_needs_it():
    student, teacher, labels = _sides(2)
    objective = _objective(get_preset("dkd"))
    with pytest.raises(ValueError, match="set_epoch"):
        objective(student, teacher, labels=labels)
    dkd = DKDLoss()(student.logits, teacher.logits, labels).item()
    ce = torch.nn.functional.cross_entropy(student.logits, labels).item()
    # Trainer.state.epoch (epochs done) → mdistiller's epoch counted from 1 → min(epoch / 20, 1).
    for epochs_done, factor in ((0.0, 1 / 20), (0.75, 1 / 20), (1.0, 2 / 20), (9.5, 10 / 20), (19.0, 1.0), (30.0, 1.0)):
        objective.set_epoch(epochs_done)
        out = objective(student, teacher, labels=labels)
        assert out.loss.item() == pytest.approx(ce + factor * dkd, rel=1e-5), epochs_done
        assert out.components["dkd"].item() == pytest.approx(dkd, rel=1e-5)  # the unweighted value


def test_classic_options_reach_the_term_and_are_validated():
    settings = ObjectiveSettings(classic={"dkd": 1.0}, classic_options={"dkd": {"beta": 6.0, "warmup": 1.0}})
    objective = _objective(settings)
    assert objective.classic["dkd"].beta == 6.0 and objective.classic["dkd"].warmup == 1.0
    with pytest.raises(ValueError, match=r"Unknown option\(s\) \['betta'\].*accepts"):
        ObjectiveSettings(classic={"dkd": 1.0}, classic_options={"dkd": {"betta": 6.0}})
    with pytest.raises(ValueError, match="Known objectives"):
        ObjectiveSettings(classic_options={"dkdd": {"beta": 6.0}})
    with pytest.raises(ValueError, match="must be a finite number >= 0"):
        ObjectiveSettings(classic={"dist": -2.0})


# preset → (CE weight, classic weights, contrastive on both pairs), written out from the authors' configs.
PRESET_EXPECTED = {
    "dkd": (1.0, {"dkd": 1.0}, False),
    "dist": (1.0, {"dist": 2.0}, False),
    "dkd+cktf": (1.0, {"dkd": 1.0}, True),
    "dist+cktf": (1.0, {"dist": 2.0}, True),
}


@pytest.mark.parametrize("preset", sorted(PRESET_EXPECTED))
def test_presets_build_the_named_components(preset):
    ce_weight, classic, contrastive = PRESET_EXPECTED[preset]
    settings = get_preset(preset)
    assert settings.ce_weight == ce_weight and settings.classic == classic and settings.kd_weight == 0.0
    objective = _objective(settings)
    objective.set_epoch(100.0)  # past DKD's warm-up
    student, teacher, labels = _sides(3)
    out = objective(student, teacher, labels=labels)
    names = {"ce", *classic} | ({"contrast_s1_t2", "contrast_final"} if contrastive else set())
    assert set(out.components) == names
    weights = {"ce": ce_weight, **classic, "contrast_s1_t2": 0.8, "contrast_final": 0.8}
    total = sum(weights[name] * value for name, value in out.components.items())
    assert out.loss.item() == pytest.approx(total.item(), rel=1e-6)
    (name,) = classic
    z_s, z_t = student.logits.numpy(), teacher.logits.numpy()
    expected = (numpy_dkd(z_s, z_t, labels.numpy(), 1.0, 8.0, 4.0) if name == "dkd"
                else numpy_dist(z_s, z_t, 1.0, 1.0, 4.0))
    assert out.components[name].item() == pytest.approx(expected, rel=1e-4)


def test_trainer_passes_the_epoch_to_the_objective(tmp_path):
    args = ContrastiveDistillationConfig(
        output_dir=str(tmp_path / "out"), preset="dkd", per_device_train_batch_size=16, num_train_epochs=2,
        save_strategy="no", report_to="none", seed=0, disable_tqdm=True, learning_rate=1e-3,
    )
    trainer = ContrastiveDistillationTrainer(
        model=tiny.resnet((8, 16), seed=1), args=args, teacher_model=tiny.resnet((8, 16)),
        train_dataset=tiny.digits(limit=32),
    )
    seen, set_epoch = [], trainer.objective.set_epoch
    trainer.objective.set_epoch = lambda epochs_done: (seen.append(epochs_done), set_epoch(epochs_done))
    trainer.train()
    assert seen == [0.0, 0.5, 1.0, 1.5]
