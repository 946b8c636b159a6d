"""Spatial contrast (issue 14): intermediate pairs contrasted cell by cell, checked against loops written in the test,
the objective's wiring, its errors, and a trainer run."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

import tiny
from cktf_hf import ContrastiveDistillationConfig, ContrastiveDistillationTrainer
from cktf_hf.objectives import (
    CKTFObjective,
    InBatchInfoNCELoss,
    ObjectiveSettings,
    PairFeatures,
    PairShape,
    SpatialInfoNCELoss,
)


def _unit(*shape: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def _ce(rows: list[list[float]], target: int) -> float:
    return -rows[target] + math.log(sum(math.exp(x) for x in rows))


def _loop_spatial(e_s: torch.Tensor, e_t: torch.Tensor, tau: float) -> float:
    """Both terms written out anchor by anchor in float64."""
    e_s, e_t = e_s.detach().double(), e_t.detach().double()
    batch, cells = e_s.shape[:2]

    def score(a: torch.Tensor, b: torch.Tensor) -> float:
        return float(a @ b) / tau

    samples = 0.0
    for anchors, others in ((e_s, e_t), (e_t, e_s)):
        for l in range(cells):
            for b in range(batch):
                samples += _ce([score(anchors[b, l], others[c, l]) for c in range(batch)], b) / (2 * batch * cells)
    if cells == 1:
        return samples
    across = 0.0
    for anchors, others in ((e_s, e_t), (e_t, e_s)):
        for b in range(batch):
            for l in range(cells):
                across += _ce([score(anchors[b, l], others[b, m]) for m in range(cells)], l) / (2 * batch * cells)
    return 0.5 * (samples + across)


@pytest.mark.parametrize("batch, cells, tau", [(4, 3, 0.1), (3, 5, 0.5), (5, 1, 0.2)])
def test_spatial_infonce_matches_loop(batch, cells, tau):
    e_s, e_t = _unit(batch, cells, 6, seed=1), _unit(batch, cells, 6, seed=2)
    value = SpatialInfoNCELoss(tau)(e_s, e_t)
    assert value.shape == () and value.dtype == torch.float32
    assert value.item() == pytest.approx(_loop_spatial(e_s, e_t, tau), rel=1e-5)


def test_one_cell_is_in_batch_infonce():
    e_s, e_t = _unit(6, 1, 8, seed=3), _unit(6, 1, 8, seed=4)
    assert SpatialInfoNCELoss(0.1)(e_s, e_t).item() == pytest.approx(
        InBatchInfoNCELoss(0.1)(e_s[:, 0], e_t[:, 0]).item(), rel=1e-6)


def test_cells_in_the_wrong_place_cost_more_than_aligned_ones():
    q, _ = torch.linalg.qr(torch.randn(16, 16, generator=torch.Generator().manual_seed(5)))
    aligned = q[:12].reshape(3, 4, 16)  # 12 orthonormal cell embeddings: 3 samples × 4 cells
    shuffled = aligned[:, [1, 0, 3, 2]]  # each sample's cells swapped in place: same samples, wrong cells
    loss = SpatialInfoNCELoss(0.05)
    assert loss(aligned, aligned.clone()).item() < 1e-6
    assert loss(aligned, shuffled).item() > 1.0


def test_gradients_reach_both_sides_and_bad_shapes_are_refused():
    e_s, e_t = _unit(4, 3, 5, seed=6).requires_grad_(True), _unit(4, 3, 5, seed=7).requires_grad_(True)
    SpatialInfoNCELoss(0.1)(e_s, e_t).backward()
    assert e_s.grad.abs().sum() > 0 and e_t.grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r"both be \[B, L, D\] of one shape"):
        SpatialInfoNCELoss(0.1)(e_s.detach(), e_t.detach()[:, :2])
    with pytest.raises(ValueError, match=r"both be \[B, L, D\]"):
        SpatialInfoNCELoss(0.1)(e_s.detach()[:, 0], e_t.detach()[:, 0])


PAIRS = [
    PairShape("s0_t0", 12, 16, (3, 4, 4), (4, 4, 4), is_stem=True),
    PairShape("s1_t2", 5, 6, (5, 4, 4), (6, 2, 2)),
    PairShape("final", 6, 8),
]
B = 5


def _features(seed: int, side: str) -> PairFeatures:
    g = torch.Generator().manual_seed(seed)
    index = 0 if side == "student" else 1
    maps = {p.name: torch.randn(B, *(p.student_map, p.teacher_map)[index], generator=g) for p in PAIRS[:2]}
    pooled = {p.name: torch.randn(B, (p.student_dim, p.teacher_dim)[index], generator=g) for p in PAIRS}
    return PairFeatures(torch.randn(B, 3, generator=g), pooled, maps)


def test_objective_contrasts_intermediate_cells_on_the_common_grid():
    settings = ObjectiveSettings(final_weight=0.8, layer_weight=0.5, temperature=0.2, spatial_contrast=True,
                                 negatives="in_batch")
    objective = CKTFObjective(replace(settings, feat_dim=4), PAIRS)  # the settings' negatives
    assert objective.negatives == "in_batch"
    assert objective.cell_grids == {"s0_t0": (4, 4), "s1_t2": (2, 2)}
    assert objective.map_pairs == ["s0_t0", "s1_t2"]
    # One head per side shared by the cells: input = channels; the final pair keeps its pooled vector.
    assert objective.student_projectors["s1_t2"].net.in_features == 5
    assert objective.teacher_projectors["s1_t2"].net.in_features == 6
    assert objective.student_projectors["final"].net.in_features == 6
    student, teacher = _features(0, "student"), _features(1, "teacher")
    labels = torch.tensor([0, 1, 2, 0, 1])
    out = objective(student, teacher, labels)

    def cells(head, feature_map, grid):  # written out: pool, then project every cell on its own
        pooled = F.adaptive_avg_pool2d(feature_map, grid)
        return torch.stack([torch.stack([F.normalize(head.net(pooled[b, :, i, j]), dim=0)
                                         for i in range(grid[0]) for j in range(grid[1])]) for b in range(B)])

    expected = F.cross_entropy(student.logits, labels)
    for name, grid in (("s0_t0", (4, 4)), ("s1_t2", (2, 2))):
        e_s = cells(objective.student_projectors[name], student.maps[name], grid)
        e_t = cells(objective.teacher_projectors[name], teacher.maps[name], grid)
        term = _loop_spatial(e_s, e_t, 0.2)
        assert out.components[f"contrast_{name}"].item() == pytest.approx(term, rel=1e-5)
        expected = expected + 0.5 * term
    v_s = objective.student_projectors["final"](student.pooled["final"])
    v_t = objective.teacher_projectors["final"](teacher.pooled["final"])
    expected = expected + 0.8 * InBatchInfoNCELoss(0.2)(v_s, v_t)
    assert out.loss.item() == pytest.approx(float(expected), rel=1e-5)


def test_teacher_projector_none_contrasts_against_the_teachers_own_features():
    settings = ObjectiveSettings(final_weight=0.8, layer_weight=0.5, temperature=0.2, spatial_contrast=True,
                                 negatives="in_batch", teacher_projector="none")
    objective = CKTFObjective(replace(settings, feat_dim=4), PAIRS)
    assert not list(objective.teacher_projectors.parameters())  # nothing trained on the teacher side
    assert objective.student_projectors["s1_t2"].net.out_features == 6  # into the teacher's channels
    assert objective.student_projectors["final"].net.out_features == PAIRS[-1].teacher_dim
    student, teacher = _features(0, "student"), _features(1, "teacher")
    out = objective(student, teacher, torch.tensor([0, 1, 2, 0, 1]))
    grid = (2, 2)
    e_s = objective.student_projectors["s1_t2"](F.adaptive_avg_pool2d(student.maps["s1_t2"], grid).flatten(2).mT)
    e_t = F.normalize(F.adaptive_avg_pool2d(teacher.maps["s1_t2"], grid).flatten(2).mT, dim=-1)
    assert out.components["contrast_s1_t2"].item() == pytest.approx(_loop_spatial(e_s, e_t, 0.2), rel=1e-5)
    v_s = objective.student_projectors["final"](student.pooled["final"])
    expected = InBatchInfoNCELoss(0.2)(v_s, F.normalize(teacher.pooled["final"], dim=-1))
    assert out.components["contrast_final"].item() == pytest.approx(expected.item(), rel=1e-6)
    with pytest.raises(ValueError, match="teacher_projector must be one of"):
        ObjectiveSettings(teacher_projector="frozen")


def test_spatial_contrast_needs_in_batch_negatives_and_maps(tmp_path):
    with pytest.raises(ValueError, match="spatial_contrast contrasts cells with in-batch negatives"):
        ObjectiveSettings(spatial_contrast=True)
    settings = ObjectiveSettings(spatial_contrast=True, negatives="in_batch")
    with pytest.raises(ValueError, match="spatial_contrast contrasts cells with in-batch negatives"):
        CKTFObjective(replace(settings, negatives="memory_bank", nce_k=4), PAIRS, num_samples=20)
    vector_pair = [PairShape("s1_t2", 5, 6, None, (6, 2, 2)), PAIRS[-1]]
    with pytest.raises(ValueError, match="needs spatial maps on both sides of pair 's1_t2'"):
        CKTFObjective(replace(settings, negatives="in_batch"), vector_pair)
    with pytest.raises(ValueError, match="spatial_contrast contrasts cells with in-batch negatives"):
        ContrastiveDistillationConfig(output_dir=str(tmp_path), spatial_contrast=True, negatives="memory_bank")
    for flag in ("spatial_contrast", "feature_batch_norm"):  # a string from a hand-written file is not a boolean
        with pytest.raises(ValueError, match=f"{flag} must be true or false, got 'false'"):
            ContrastiveDistillationConfig(output_dir=str(tmp_path), negatives="in_batch", **{flag: "false"})
    args = ContrastiveDistillationConfig(output_dir=str(tmp_path), spatial_contrast=True, negatives="in_batch")
    assert args.objective_settings.spatial_contrast
    assert ContrastiveDistillationConfig(output_dir=str(tmp_path)).objective_settings.spatial_contrast  # the recipe's
    assert not ContrastiveDistillationConfig(output_dir=str(tmp_path), preset="cktf-reference").objective_settings.spatial_contrast


def test_the_recipe_preset_trains_a_vit_student_with_spatial_contrast(tmp_path):
    args = ContrastiveDistillationConfig(
        output_dir=str(tmp_path), per_device_train_batch_size=16, max_steps=2, learning_rate=3e-3, logging_steps=1,
        preset="cktf-recipe", save_strategy="no", report_to="none", disable_tqdm=True, use_cpu=True,
    )
    trainer = ContrastiveDistillationTrainer(model=tiny.vit(32, 2, seed=1), args=args,
                                             teacher_model=tiny.resnet((8, 16)), train_dataset=tiny.digits("train", 64))
    grids = trainer.objective.cell_grids
    assert grids and all(h > 1 for h, _ in grids.values())  # token layers contrasted on a spatial grid
    assert set(trainer.reader.map_only) == set(grids)  # spatial pairs are read as maps alone: no pooling for nothing
    features = trainer.reader.read("teacher", trainer._run_teacher(tiny.digits("train", 4)[:4]["pixel_values"]))
    assert set(features.maps) == set(grids) and set(features.pooled) == {"final"}
    trainer.train()
    logged = [e for e in trainer.state.log_history if "loss" in e]
    assert len(logged) == 2
    for entry in logged:
        assert all(math.isfinite(entry[f"contrast_{name}"]) for name in grids)
