"""The recipe options (issue 14): the bank positive, the bank warm start, the contrastive warm-up, per-stage
window pooling and the reference / recipe presets, each against values computed independently in the test."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

import tiny
from cktf_hf import ContrastiveDistillationConfig, ContrastiveDistillationTrainer
from cktf_hf.cache import cache_key
from cktf_hf.features import FeatureLayout, Pooling, pool
from cktf_hf.objectives import CKTFObjective, ObjectiveSettings, PairFeatures, PairShape, get_preset
from cktf_hf.objectives.contrastive import MemoryBankNCELoss
from cktf_hf.pairing import FeatureReader, LayerPair

N, DIM, K, TAU, EPS = 30, 6, 7, 0.1, 1e-7


def _naive(memory_s, memory_t, v_s, v_t, index, negatives, valid, current, z_s, z_t):
    """NCE written out per anchor in float64: the positive from the other side's bank row, or from its current
    embedding (detached) where ``current[b]``; negatives ``negatives[b]`` (K each) of which ``valid[b]`` count, the
    valid terms scaled by K / K_b. c = K/N."""
    c = K / N
    total = 0.0
    for anchors, other, memory, z in ((v_s, v_t, memory_t, z_s), (v_t, v_s, memory_s, z_t)):
        for b in range(anchors.shape[0]):
            positive = other[b].detach() if current[b] else memory[index[b]]
            p0 = torch.exp(positive @ anchors[b] / TAU) / z
            total = total - torch.log(p0 / (p0 + c + EPS))
            kept = [j for j in range(K) if valid[b][j]]
            for j in kept:
                p = torch.exp(memory[negatives[b][j]] @ anchors[b] / TAU) / z
                total = total - (K / len(kept)) * torch.log(c / (p + c + EPS))
    return total / v_s.shape[0]


def _naive_z(memory_s, memory_t, v_s, v_t, index, negatives, valid, current):
    """N · mean of exp(score / tau) over the positives and the valid negatives, per direction."""
    zs = []
    for anchors, other, memory in ((v_s, v_t, memory_t), (v_t, v_s, memory_s)):
        values = []
        for b in range(anchors.shape[0]):
            positive = other[b] if current[b] else memory[index[b]]
            values.append(torch.exp(positive @ anchors[b] / TAU))
            values += [torch.exp(memory[negatives[b][j]] @ anchors[b] / TAU) for j in range(K) if valid[b][j]]
        zs.append(N * torch.stack(values).mean().item())
    return zs


def _run_calls(mode: str, positive: str, warm_start: str, batches: list[torch.Tensor]) -> None:
    """Three calls of the module against :func:`_naive`, with the momentum update and the written rows tracked."""
    torch.manual_seed(0)
    module = MemoryBankNCELoss(N, feat_dim=DIM, nce_k=K, temperature=TAU, momentum=0.5, positive=positive,
                               bank_warm_start=warm_start)
    memory_s, memory_t = module.memory_student.double().clone(), module.memory_teacher.double().clone()
    written = torch.zeros(N, dtype=torch.bool)
    g = torch.Generator().manual_seed(5)
    labels = torch.randint(0, 3, (N,), generator=g)
    for call, index in enumerate(batches):
        batch = index.numel()
        v_s = F.normalize(torch.randn(batch, DIM, generator=g), dim=1)
        v_t = F.normalize(torch.randn(batch, DIM, generator=g), dim=1)
        if mode == "shared":
            shared = torch.randint(0, N, (K,), generator=g)
            mask = labels[shared][None, :] != labels[index][:, None]
            negatives, class_ok = shared.expand(batch, K), mask
            args = (index, shared, mask)
        else:
            negatives = torch.randint(0, N, (batch, K), generator=g)
            class_ok = torch.ones(batch, K, dtype=torch.bool)
            args = (index, torch.cat([index[:, None], negatives], 1))
        skip = warm_start == "skip_unwritten"
        valid = class_ok & written[negatives] if skip else class_ok
        current = torch.ones(batch, dtype=torch.bool) if positive == "current" else (
            ~written[index] if skip else torch.zeros(batch, dtype=torch.bool))
        if call == 0:
            assert skip or positive == "current"  # the cases below exercise the options
        s_leaf, t_leaf = v_s.clone().requires_grad_(), v_t.clone().requires_grad_()
        loss = module(s_leaf, t_leaf, *args)
        if call == 0:
            z_s, z_t = _naive_z(memory_s, memory_t, v_s.double(), v_t.double(), index, negatives, valid, current)
            assert module.z_student.item() == pytest.approx(z_s, rel=1e-5)
            assert module.z_teacher.item() == pytest.approx(z_t, rel=1e-5)
        s_ref, t_ref = v_s.double().requires_grad_(), v_t.double().requires_grad_()
        expected = _naive(memory_s, memory_t, s_ref, t_ref, index, negatives, valid, current,
                          module.z_student.item(), module.z_teacher.item())
        tiny.assert_bank_step_matches(loss, expected, (s_leaf, t_leaf), (s_ref, t_ref), module.flush,
                                      (memory_s, memory_t), (v_s, v_t), index)
        written[index] = True
        if skip:
            assert torch.equal(module.filled, written)


# Overlapping batches: the second and third calls see both written and unwritten own rows and negatives.
BATCHES = [torch.tensor([0, 3, 5, 8, 11]), torch.tensor([3, 4, 12, 20, 21]), torch.tensor([8, 13, 21, 25, 29])]


@pytest.mark.parametrize("mode", ["per_sample", "shared"])
@pytest.mark.parametrize("positive, warm_start", [("current", "none"), ("bank", "skip_unwritten"),
                                                   ("current", "skip_unwritten")])
def test_bank_options_match_naive_nce(mode, positive, warm_start):
    _run_calls(mode, positive, warm_start, BATCHES)


def test_current_positive_equals_bank_positive_when_the_rows_hold_the_current_embeddings():
    torch.manual_seed(2)
    bank = MemoryBankNCELoss(N, feat_dim=DIM, nce_k=K, temperature=TAU)
    current = MemoryBankNCELoss(N, feat_dim=DIM, nce_k=K, temperature=TAU, positive="current")
    g = torch.Generator().manual_seed(1)
    index = torch.tensor([1, 2, 9])
    v_s = F.normalize(torch.randn(3, DIM, generator=g), dim=1)
    v_t = F.normalize(torch.randn(3, DIM, generator=g), dim=1)
    bank.memory_student[index], bank.memory_teacher[index] = v_s, v_t
    current.load_state_dict(bank.state_dict())
    contrast_idx = torch.cat([index[:, None], torch.randint(0, N, (3, K), generator=g)], 1)
    assert current(v_s, v_t, index, contrast_idx).item() == pytest.approx(bank(v_s, v_t, index, contrast_idx).item(),
                                                                          rel=1e-6)


def test_warm_start_leaves_only_the_positive_term_at_step_one():
    module = MemoryBankNCELoss(N, feat_dim=DIM, nce_k=K, temperature=TAU, bank_warm_start="skip_unwritten")
    g = torch.Generator().manual_seed(0)
    v_s = F.normalize(torch.randn(4, DIM, generator=g), dim=1)
    v_t = F.normalize(torch.randn(4, DIM, generator=g), dim=1)
    index = torch.tensor([0, 1, 2, 3])
    loss = module(v_s, v_t, index, torch.cat([index[:, None], torch.randint(4, N, (4, K), generator=g)], 1))
    c = K / N
    e = torch.exp((v_s * v_t).sum(1) / TAU)
    p = e / (N * e.mean())  # Z from the positives alone; both directions share the same scores
    assert loss.item() == pytest.approx(-2 * torch.log(p / (p + c + EPS)).mean().item(), rel=1e-5)


def test_reference_state_is_unchanged_and_filled_round_trips():
    reference = MemoryBankNCELoss(N, feat_dim=DIM, nce_k=K)
    assert set(reference.state_dict()) == {"memory_student", "memory_teacher", "z_student", "z_teacher"}
    warm = MemoryBankNCELoss(N, feat_dim=DIM, nce_k=K, bank_warm_start="skip_unwritten")
    g = torch.Generator().manual_seed(0)
    index = torch.tensor([4, 7])
    v = F.normalize(torch.randn(2, DIM, generator=g), dim=1)
    warm(v, v, index, torch.cat([index[:, None], torch.randint(0, N, (2, K), generator=g)], 1))
    state = warm.state_dict()  # flushes the pending update first
    assert state["filled"].nonzero().flatten().tolist() == [4, 7]
    copy = MemoryBankNCELoss(N, feat_dim=DIM, nce_k=K, bank_warm_start="skip_unwritten")
    copy.load_state_dict(state)
    assert torch.equal(copy.filled, warm.filled)
    with pytest.raises(ValueError, match="positive must be one of"):
        MemoryBankNCELoss(N, positive="queue")
    with pytest.raises(ValueError, match="bank_warm_start must be one of"):
        MemoryBankNCELoss(N, bank_warm_start="fill")


PAIRS = [PairShape("s1_t1", 5, 6, None, None), PairShape("final", 4, 3)]


def _features(g: torch.Generator, side: str) -> PairFeatures:
    dims = {"s1_t1": 5 if side == "s" else 6, "final": 4 if side == "s" else 3}
    return PairFeatures(torch.randn(4, 3, generator=g), {k: torch.randn(4, d, generator=g) for k, d in dims.items()})


@pytest.mark.parametrize("progress, factor", [(0.0, 0.0), (0.05, 0.25), (0.1, 0.5), (0.3, 1.0)])
def test_contrastive_warmup_scales_beta_and_theta_linearly(progress, factor):
    settings = ObjectiveSettings(contrastive_warmup=0.2)
    objective = CKTFObjective(replace(settings, negatives="in_batch"), PAIRS)
    g = torch.Generator().manual_seed(0)
    student, teacher, labels = _features(g, "s"), _features(g, "t"), torch.tensor([0, 1, 2, 0])
    objective.set_progress(progress)
    out = objective(student, teacher, labels)
    c = out.components
    expected = c["ce"] + factor * (0.8 * c["contrast_final"] + 0.1 * c["contrast_s1_t1"])
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-6)
    objective.progress = None
    with pytest.raises(ValueError, match="contrastive_warmup=0.2 needs the training progress"):
        objective(student, teacher, labels)


def _naive_infonce(memory_s, memory_t, v_s, v_t, index, negatives, valid, current):
    """MoCo's loss written out per anchor in float64: −log softmax of the positive among it and the valid negatives."""
    total = 0.0
    for anchors, other, memory in ((v_s, v_t, memory_t), (v_t, v_s, memory_s)):
        for b in range(anchors.shape[0]):
            positive = other[b].detach() if current[b] else memory[index[b]]
            logits = [positive @ anchors[b] / TAU] + [memory[negatives[b][j]] @ anchors[b] / TAU
                                                      for j in range(K) if valid[b][j]]
            total = total - torch.log_softmax(torch.stack(logits), 0)[0]
    return total / v_s.shape[0]


@pytest.mark.parametrize("mode", ["per_sample", "shared"])
@pytest.mark.parametrize("positive, warm_start", [("bank", "none"), ("current", "skip_unwritten")])
def test_bank_infonce_matches_the_naive_softmax(mode, positive, warm_start):
    torch.manual_seed(0)
    module = MemoryBankNCELoss(N, feat_dim=DIM, nce_k=K, temperature=TAU, positive=positive,
                               bank_warm_start=warm_start, loss="infonce")
    memory_s, memory_t = module.memory_student.double().clone(), module.memory_teacher.double().clone()
    g = torch.Generator().manual_seed(5)
    labels = torch.randint(0, 3, (N,), generator=g)
    written = torch.zeros(N, dtype=torch.bool)
    for index in BATCHES:
        v_s = F.normalize(torch.randn(len(index), DIM, generator=g), dim=1)
        v_t = F.normalize(torch.randn(len(index), DIM, generator=g), dim=1)
        if mode == "shared":
            shared = torch.randint(0, N, (K,), generator=g)
            class_ok = labels[shared][None, :] != labels[index][:, None]
            negatives, args = shared.expand(len(index), K), (index, shared, class_ok)
        else:
            negatives = torch.randint(0, N, (len(index), K), generator=g)
            class_ok = torch.ones(len(index), K, dtype=torch.bool)
            args = (index, torch.cat([index[:, None], negatives], 1))
        skip = warm_start == "skip_unwritten"
        valid = class_ok & written[negatives] if skip else class_ok
        current = torch.full((len(index),), positive == "current")
        s_leaf, t_leaf = v_s.clone().requires_grad_(), v_t.clone().requires_grad_()
        loss = module(s_leaf, t_leaf, *args)
        s_ref, t_ref = v_s.double().requires_grad_(), v_t.double().requires_grad_()
        expected = _naive_infonce(memory_s, memory_t, s_ref, t_ref, index, negatives, valid, current)
        tiny.assert_bank_step_matches(loss, expected, (s_leaf, t_leaf), (s_ref, t_ref), module.flush,
                                      (memory_s, memory_t), (v_s, v_t), index)
        written[index] = True
    assert module.z_student.item() == -1  # no normaliser in InfoNCE


def test_settings_and_config_validate_and_override_the_options(tmp_path):
    with pytest.raises(ValueError, match="contrastive_warmup is a fraction"):
        ObjectiveSettings(contrastive_warmup=1.0)
    with pytest.raises(ValueError, match="positive must be one of"):
        ContrastiveDistillationConfig(output_dir=str(tmp_path), positive="queue")
    with pytest.raises(ValueError, match="stage_pooling must be one of"):
        ContrastiveDistillationConfig(output_dir=str(tmp_path), stage_pooling="max")
    with pytest.raises(ValueError, match="leave grid_size"):
        ContrastiveDistillationConfig(output_dir=str(tmp_path), stage_pooling="fixed_window", grid_size=2)
    with pytest.raises(ValueError, match="pool_window must be a positive integer"):
        ContrastiveDistillationConfig(output_dir=str(tmp_path), stage_pooling="fixed_window", pool_window=0)
    with pytest.raises(ValueError, match=r"bank_loss must be one of \('nce', 'infonce'\), got 'softmax'"):
        ContrastiveDistillationConfig(output_dir=str(tmp_path), bank_loss="softmax")
    with pytest.raises(ValueError, match="loss must be one of"):
        MemoryBankNCELoss(N, loss="moco")
    args = ContrastiveDistillationConfig(output_dir=str(tmp_path), preset="cktf-recipe", positive="bank",
                                         contrastive_warmup=0.0, bank_loss="infonce")
    settings = args.objective_settings
    assert (settings.positive, settings.bank_warm_start, settings.contrastive_warmup) == ("bank", "skip_unwritten", 0)
    assert settings.bank_loss == "infonce" and get_preset("cktf-recipe").bank_loss == "nce"


def test_bank_options_with_in_batch_negatives_are_reported_unused(tmp_path, caplog):
    with caplog.at_level("WARNING", logger="cktf_hf"):
        ContrastiveDistillationConfig(output_dir=str(tmp_path), nce_k=4096, bank_dtype="bfloat16")
    assert "nce_k=4096, bank_dtype='bfloat16' only act on memory-bank negatives" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="cktf_hf"):
        ContrastiveDistillationConfig(output_dir=str(tmp_path), nce_k=4096, negatives="memory_bank")
        ContrastiveDistillationConfig(output_dir=str(tmp_path))
    assert "only act on memory-bank negatives" not in caplog.text


def test_reference_presets_hold_the_reference_values(tmp_path):
    # Written out from the paper's code (../shared/method/cktf.md), not read from PRESETS.
    reference = dict(ce_weight=1.0, kd_weight=0.0, final_weight=0.8, layer_weight=0.1, temperature=0.1,
                     kd_temperature=4.0, classic={}, feature_batch_norm=True, classic_options={}, positive="bank",
                     bank_warm_start="none", contrastive_warmup=0.0)
    assert get_preset("cktf-reference") == ObjectiveSettings(**reference)
    assert get_preset("crd-reference") == ObjectiveSettings(**{**reference, "layer_weight": 0.0,
                                                               "feature_batch_norm": False})
    recipe = get_preset("cktf-recipe")
    assert (recipe.positive, recipe.bank_warm_start, recipe.contrastive_warmup) == ("current", "skip_unwritten", 0.1)
    assert (recipe.negatives, recipe.spatial_contrast, recipe.layer_weight, recipe.final_weight,
            recipe.teacher_projector) == ("in_batch", True, 2.0, 0.8, "none")
    # 0.2.0's recipe, frozen: the same knobs but "auto" pairing (intermediate pairs for every teacher).
    assert get_preset("cktf-recipe-v1") == replace(recipe, layer_pairs="auto") and recipe.layer_pairs == "auto-by-family"
    assert get_preset("cktf-reference").teacher_projector == "trained"  # the reference trains both heads
    for x in ("kd", "fitnets", "pkt", "rkd", "dkd"):  # X + the recipe's contrast: X's own weight kept
        combined, paper = get_preset(f"{x}+cktf-recipe"), get_preset("cktf+kd" if x == "kd" else f"{x}+cktf")
        assert (combined.negatives, combined.spatial_contrast, combined.teacher_projector, combined.layer_pairs) == (
            "in_batch", True, "none", "auto-by-family")
        assert (combined.classic, combined.kd_weight, combined.layer_weight) == (paper.classic, paper.kd_weight, 0.8)
    assert ContrastiveDistillationConfig(output_dir=str(tmp_path), preset="cktf-recipe").negatives == "in_batch"
    assert get_preset("cktf") == recipe  # the default preset is the recipe; the paper's settings stay under -reference
    assert ContrastiveDistillationConfig(output_dir=str(tmp_path)).objective_settings == recipe
    assert ContrastiveDistillationConfig(output_dir=str(tmp_path), preset="cktf-reference").negatives == "memory_bank"
    # The recipe with the bank: its pairs pooled (the bank holds one vector per pair), the bank fixes kept.
    banked = ContrastiveDistillationConfig(output_dir=str(tmp_path), negatives="memory_bank").objective_settings
    assert (banked.negatives, banked.spatial_contrast, banked.positive, banked.bank_warm_start, banked.layer_weight) == (
        "memory_bank", False, "current", "skip_unwritten", 2.0)
    with pytest.raises(ValueError, match="spatial_contrast contrasts cells with in-batch negatives"):
        ContrastiveDistillationConfig(output_dir=str(tmp_path), negatives="memory_bank", spatial_contrast=True)


def _window_mean(x: torch.Tensor, w: int) -> torch.Tensor:
    b, c, h, width = x.shape
    return x.reshape(b, c, h // w, w, width // w, w).mean(dim=(3, 5)).flatten(1)


@pytest.mark.parametrize("side, grid", [(32, 4), (16, 2), (8, 1)])
def test_fixed_window_pooling_gives_the_reference_grids(side, grid):
    x = torch.randn(2, 3, side, side)
    out = pool(x, FeatureLayout("map"), stage_pooling="fixed_window", pool_window=8)
    assert out.shape == (2, 3 * grid * grid)
    torch.testing.assert_close(out, _window_mean(x, 8))


def test_fixed_window_pools_small_maps_globally_and_tokens_on_their_patch_grid():
    small = torch.randn(2, 3, 4, 6)
    torch.testing.assert_close(pool(small, FeatureLayout("map"), stage_pooling="fixed_window"), small.mean(dim=(2, 3)))
    tokens = torch.randn(2, 1 + 16, 5)  # CLS + a 4×4 patch grid
    out = pool(tokens, FeatureLayout("tokens", 1), stage_pooling="fixed_window", pool_window=2)
    grid = tokens[:, 1:].reshape(2, 4, 4, 5).permute(0, 3, 1, 2)
    torch.testing.assert_close(out, _window_mean(grid, 2))


def test_fixed_window_changes_the_teacher_cache_key():
    teacher, data = tiny.resnet((8, 16)), tiny.digits("train", 8)
    pairs = (LayerPair("s1_t1", 1, 1), LayerPair("final", None, None))
    reader = FeatureReader(pairs, {"student": [], "teacher": []})
    assert cache_key(teacher, data, reader) != cache_key(teacher, data, FeatureReader(
        pairs, {"student": [], "teacher": []}, Pooling(stage_pooling="fixed_window")))


def test_trainer_pairs_with_fixed_windows(tmp_path):
    args = ContrastiveDistillationConfig(
        output_dir=str(tmp_path), per_device_train_batch_size=16, max_steps=1, nce_k=32, save_strategy="no",
        report_to="none", disable_tqdm=True, use_cpu=True, layer_pairs="1:1", stage_pooling="fixed_window",
        pool_window=2,
    )
    trainer = ContrastiveDistillationTrainer(model=tiny.resnet((8, 16), seed=1), args=args,
                                             teacher_model=tiny.resnet((16, 32)),
                                             train_dataset=tiny.digits("train", 64))
    shape = next(s for s in trainer.pairing.shapes if s.name == "s1_t1")
    (c_s, h_s, w_s), (c_t, h_t, w_t) = shape.student_map, shape.teacher_map
    assert shape.student_dim == c_s * (h_s // 2) * (w_s // 2) and shape.teacher_dim == c_t * (h_t // 2) * (w_t // 2)
    assert h_s >= 4  # the window kept a spatial grid
    trainer.train()


@pytest.mark.parametrize("preset, sampling", [("cktf-reference", "per_sample"), ("crd-reference", "per_sample"),
                                              ("cktf-recipe", "shared")])
def test_presets_train(tmp_path, preset, sampling):
    args = ContrastiveDistillationConfig(
        output_dir=str(tmp_path), per_device_train_batch_size=16, max_steps=2, nce_k=32, learning_rate=3e-3,
        preset=preset, negative_sampling=sampling, logging_steps=1, save_strategy="no", report_to="none",
        disable_tqdm=True, use_cpu=True, negatives="memory_bank", spatial_contrast=False,  # the bank options
    )
    trainer = ContrastiveDistillationTrainer(model=tiny.vit(32, 2, seed=1), args=args, teacher_model=tiny.vit(64, 4),
                                             train_dataset=tiny.digits("train", 64))
    trainer.train()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    bank = trainer.objective.contrastive["final"]
    assert bank.positive == get_preset(preset).positive
    if preset == "cktf-recipe":
        assert bank.state_dict()["filled"].sum() == 32  # two batches of 16 distinct examples written (after flush)
        assert losses[0] == pytest.approx(trainer.state.log_history[0]["ce"])  # warm-up: β = θ = 0 at step 1


def _two_steps(tmp_path, preset: str, teacher: torch.nn.Module, student: torch.nn.Module, name: str):
    args = ContrastiveDistillationConfig(
        output_dir=str(tmp_path / name), per_device_train_batch_size=16, max_steps=2, learning_rate=3e-3, seed=3,
        preset=preset, save_strategy="no", report_to="none", disable_tqdm=True, use_cpu=True)
    trainer = ContrastiveDistillationTrainer(model=student, args=args, teacher_model=teacher,
                                             train_dataset=tiny.digits("train", 64))
    trainer.train()
    return trainer


def test_the_default_pairs_a_vit_teacher_and_a_cnn_student_on_their_final_features_alone(tmp_path, caplog):
    """ViT teacher → CNN student: the default contrasts the final pair alone and says so in the pairing table;
    cktf-recipe-v1 (0.2.0's default) still pairs their intermediate layers."""
    with caplog.at_level("INFO", logger="cktf_hf.trainer"):
        default = _two_steps(tmp_path, "cktf", tiny.vit(32, 2), tiny.resnet((8, 16), seed=1), "default")
    assert [p.name for p in default.pairing.pairs] == ["final"]
    assert "final features alone" in default.pairing.table and "final features alone" in caplog.text
    default.create_model_card()
    card = (tmp_path / "default" / "README.md").read_text()
    assert "| auto-by-family |" in card and "paired on their final features alone" in card  # the card says why
    assert all(math.isfinite(e["loss"]) for e in default.state.log_history if "loss" in e)
    v1 = _two_steps(tmp_path, "cktf-recipe-v1", tiny.vit(32, 2), tiny.resnet((8, 16), seed=1), "v1")
    assert len(v1.pairing.pairs) > 1 and "final features alone" not in v1.pairing.table


def test_by_family_pairing_keeps_the_intermediate_pairs_a_classic_term_reads(tmp_path):
    """fitnets+cktf-recipe with a ViT teacher and a CNN student: FitNets' hint needs an intermediate pair, so the
    by-family rule plans them as "auto" does; a bank whose only contrast the rule dropped trains on cross-entropy."""
    assert get_preset("fitnets+cktf-recipe").planned_layer_pairs == "auto"
    assert get_preset("cktf").planned_layer_pairs == get_preset("kd+cktf-recipe").planned_layer_pairs == "auto-by-family"
    hinted = _two_steps(tmp_path, "fitnets+cktf-recipe", tiny.vit(32, 2), tiny.resnet((8, 16), seed=1), "hint")
    assert len(hinted.pairing.pairs) > 1 and "fitnets" in hinted.objective.classic
    args = ContrastiveDistillationConfig(
        output_dir=str(tmp_path / "bank"), per_device_train_batch_size=16, max_steps=2, learning_rate=3e-3,
        negatives="memory_bank", final_weight=0.0, nce_k=8, save_strategy="no", report_to="none", disable_tqdm=True,
        use_cpu=True)
    trainer = ContrastiveDistillationTrainer(model=tiny.resnet((8, 16), seed=1), args=args,
                                             teacher_model=tiny.vit(32, 2), train_dataset=tiny.digits("train", 64))
    assert [p.name for p in trainer.pairing.pairs] == ["final"] and not trainer.objective.contrastive
    trainer.train()
    assert all(math.isfinite(e["loss"]) for e in trainer.state.log_history if "loss" in e)


def test_the_default_trains_exactly_as_before_with_a_cnn_teacher(tmp_path):
    """With a CNN teacher the by-family pairing plans what "auto" plans: the default's run is bit for bit
    cktf-recipe-v1's, for a CNN and a ViT student."""
    for name, student in (("resnet", lambda: tiny.resnet((8, 16), seed=1)), ("vit", lambda: tiny.vit(32, 2, seed=1))):
        runs = [_two_steps(tmp_path, preset, tiny.resnet((8, 16, 32)), student(), f"{name}-{preset}")
                for preset in ("cktf", "cktf-recipe-v1")]
        assert [p.name for p in runs[0].pairing.pairs] == [p.name for p in runs[1].pairing.pairs]
        assert len(runs[0].pairing.pairs) > 1
        weights = [run.model.state_dict() for run in runs]
        assert weights[0].keys() == weights[1].keys()
        for key in weights[0]:
            assert torch.equal(weights[0][key], weights[1][key]), key
