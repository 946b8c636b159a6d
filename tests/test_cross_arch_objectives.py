"""Cross-architecture rows of issue 25: OFA-KD's ε-loss and stage branches, timm's logit / feature distillation and its
teacher-input re-normalisation, and FBT's pooled contrast with a learnable temperature. Values against NumPy
re-implementations written from the papers' formulas and hand-worked cases; branch shapes for both hidden-state
layouts; gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tests.tiny as tiny
from tests.logit_math import B, C, random_logits, softmax
from cktf_hf.objectives.classic import KDLoss
from cktf_hf.objectives.fbt import FBTContrastLoss, LearnableTemperatureInfoNCELoss
from cktf_hf.objectives.ofa import (
    OFA_WEIGHTS,
    CNNStageBranch,
    OFABranchLoss,
    OFALoss,
    PatchMerging,
    SepConv,
    TransformerBlock,
    ViTStageBranch,
    ofa_stage_branch,
)
from cktf_hf.objectives.timm_kd import TimmFeatureLoss
from cktf_hf.teacher_input import renormalize_for_teacher



# --- NumPy references, from the papers --------------------------------------------------------------------------------


def numpy_ofa(z_s, z_t, labels, eps: float, temperature: float = 1.0) -> float:
    """Hao et al. 2023, eq. (4) with the code's temperature: per sample −Σ_c [(p_t + y)^ε − y]_c · log p_s,c, with y
    the one-hot label; averaged over the batch."""
    total = 0.0
    for zs, zt, g in zip(np.asarray(z_s, np.float64), np.asarray(z_t, np.float64), np.asarray(labels)):
        p_s, p_t = softmax(zs / temperature), softmax(zt / temperature)
        y = np.zeros_like(p_t)
        y[g] = 1.0
        total += -np.sum(((p_t + y) ** eps - y) * np.log(p_s))
    return total / len(z_s)


def numpy_timm_kl(z_s, z_t, temperature: float) -> float:
    """Hinton et al. 2015 as timm's LogitDistillationTask states it: KL(p_t ‖ p_s) at temperature T, averaged over
    the batch, times T²."""
    p_s = softmax(np.asarray(z_s, np.float64) / temperature)
    p_t = softmax(np.asarray(z_t, np.float64) / temperature)
    return float(np.mean(np.sum(p_t * (np.log(p_t) - np.log(p_s)), axis=1)) * temperature**2)


def numpy_symmetric_infonce(v_s, v_t, scale: float) -> float:
    """CLIP (Radford et al. 2021, Fig. 3): S = scale · v_s v_tᵀ; ½ [CE over rows + CE over columns], targets the
    diagonal."""
    s = scale * np.asarray(v_s, np.float64) @ np.asarray(v_t, np.float64).T
    rows = -np.mean(np.diag(np.log(softmax(s))))
    cols = -np.mean(np.diag(np.log(softmax(s.T))))
    return 0.5 * (rows + cols)


def _l2(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# --- OFA's ε-loss -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("eps, temperature", [(1.0, 1.0), (1.5, 1.0), (1.5, 2.0), (2.0, 1.0)])
def test_ofa_loss_matches_numpy_from_the_paper(eps, temperature):
    z_s, z_t = random_logits(0)
    labels = torch.tensor([0, 1, 2, 3, 4, 2])
    loss = OFALoss(eps, temperature)(z_s, z_t, labels)
    expected = numpy_ofa(z_s.numpy(), z_t.numpy(), labels.numpy(), eps, temperature)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_ofa_loss_by_hand_two_classes():
    # Teacher uniform over 2 classes, student p_s = [3/4, 1/4], label 0.
    # ε = 1: −(½ ln ¾ + ½ ln ¼).  ε = 2: target weight (½ + 1)² − 1 = 5/4, non-target (½)² = 1/4.
    z_s, z_t, labels = torch.tensor([[math.log(3.0), 0.0]]), torch.zeros(1, 2), torch.tensor([0])
    assert OFALoss(eps=1.0)(z_s, z_t, labels).item() == pytest.approx(
        -(0.5 * math.log(0.75) + 0.5 * math.log(0.25)), rel=1e-6)
    assert OFALoss(eps=2.0)(z_s, z_t, labels).item() == pytest.approx(
        -(1.25 * math.log(0.75) + 0.25 * math.log(0.25)), rel=1e-6)


def test_ofa_loss_at_eps_one_is_kd_plus_the_teachers_entropy():
    # (p_t + y)¹ − y = p_t: cross-entropy against the soft labels = KL(p_t ‖ p_s) + H(p_t), without KD's T².
    z_s, z_t = random_logits(1)
    labels = torch.tensor([4, 3, 2, 1, 0, 0])
    for t in (1.0, 4.0):
        p_t = torch.softmax(z_t / t, dim=1)
        entropy = -(p_t * p_t.log()).sum(dim=1).mean()
        torch.testing.assert_close(OFALoss(1.0, t)(z_s, z_t, labels), KDLoss(t)(z_s, z_t) / t**2 + entropy,
                                   rtol=1e-5, atol=1e-6)


def test_ofa_loss_at_eps_one_runs_without_labels_other_eps_do_not():
    # At ε = 1 the labels cancel, so unlabelled images (the transfer protocol) can be distilled with OFA.
    z_s, z_t = random_logits(4)
    labels = torch.tensor([4, 3, 2, 1, 0, 0])
    loss = OFALoss(1.0, 2.0)
    assert not loss.labels_required and OFALoss(1.5).labels_required
    torch.testing.assert_close(loss(z_s, z_t), loss(z_s, z_t, labels), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="eps=1.5 needs the labels"):
        OFALoss(1.5)(z_s, z_t)


def test_ofa_loss_eps_above_one_depends_on_labels_and_teacher_is_detached():
    z_s, z_t = random_logits(2)
    z_s.requires_grad_(True)
    z_t.requires_grad_(True)
    a, b = torch.tensor([0, 1, 2, 3, 4, 0]), torch.tensor([1, 2, 3, 4, 0, 1])
    loss = OFALoss(eps=1.5)(z_s, z_t, a)
    assert abs(loss.item() - OFALoss(eps=1.5)(z_s, z_t, b).item()) > 1e-3
    loss.backward()
    assert z_t.grad is None and torch.isfinite(z_s.grad).all() and z_s.grad.abs().sum() > 0


def test_ofa_loss_rejects_bad_input():
    z_s, z_t = random_logits(3)
    with pytest.raises(ValueError, match="equal shape"):
        OFALoss()(z_s, z_t[:, :3], torch.zeros(B, dtype=torch.long))
    with pytest.raises(ValueError, match="one label per sample"):
        OFALoss()(z_s, z_t, torch.zeros(B, C))
    with pytest.raises(ValueError, match="eps > 0"):
        OFALoss(eps=0.0)


def test_ofa_weights_are_the_authors_defaults():
    assert OFA_WEIGHTS == {"ce": 1.0, "output": 1.0, "branches": 1.0}
    assert (OFALoss().eps, OFALoss().temperature) == (1.0, 1.0)


# --- OFA's branches ---------------------------------------------------------------------------------------------------


def test_cnn_branch_follows_ofa_for_each_stage():
    # ResNet-like stage widths 8, 16, 32, 64, student feature dim 64, teacher 96 → branch width max(64, 96) = 96.
    for stage, (channels, size) in enumerate([(8, 16), (16, 8), (32, 4), (64, 2)], start=1):
        branch = ofa_stage_branch((channels, size, size), stage, 4, 64, 96, num_classes=10)
        assert isinstance(branch, CNNStageBranch)
        sepconvs = [m for m in branch if isinstance(m, SepConv)]
        assert len(sepconvs) == 4 - stage
        # channels double block by block; the last block (or the 1×1 conv at stage 4) gives max(512, 768)
        assert [s[0].in_channels for s in sepconvs] == [channels * 2**i for i in range(4 - stage)]
        last_conv = [m for m in branch.modules() if isinstance(m, nn.Conv2d)][-1]
        assert last_conv.out_channels == 96 and branch[-1].in_features == 96
        if stage == 4:
            assert last_conv.kernel_size == (1, 1)
        out = branch(torch.randn(2, channels, size, size))
        assert out.shape == (2, 10)


def test_vit_branch_follows_ofa():
    # A DeiT-style stage: 197 tokens (CLS + 14×14), here of width 32 → one merge to 7×7 (width 32, the student's
    # feature dim, whatever the teacher's), max(4 − stage, 1) blocks, CLS → Linear.
    for stage in (1, 2, 3, 4):
        branch = ofa_stage_branch((197, 32), stage, 4, 32, 768, num_classes=100, prefix_tokens=1)
        assert isinstance(branch, ViTStageBranch)
        assert len(branch.blocks) == max(4 - stage, 1)
        assert len(branch.merge) == 1 and isinstance(branch.merge[0].act, nn.GELU)
        assert branch.merge[0].reduction.out_features == 32 and branch.head.in_features == 32
        assert branch(torch.randn(2, 197, 32)).shape == (2, 100)
    # A 28×28 grid merges twice: GELU after the first, none after the last (OFA's act_layer choice).
    branch = ViTStageBranch(8, 16, 10, grid_size=28, prefix_tokens=0, num_blocks=1)
    assert [type(m.act) for m in branch.merge] == [nn.GELU, nn.Identity]
    assert [m.reduction.in_features for m in branch.merge] == [4 * 8, 4 * 16]
    assert branch(torch.randn(2, 784, 8)).shape == (2, 10)


def test_vit_branch_reads_the_cls_token_or_the_mean_token():
    torch.manual_seed(0)
    with_cls = ViTStageBranch(16, 16, 3, grid_size=4, prefix_tokens=1, num_blocks=1)
    tokens = torch.randn(2, 17, 16)
    x = with_cls.blocks(tokens)  # a 4×4 grid is not merged
    torch.testing.assert_close(with_cls(tokens), with_cls.head(x[:, 0]))
    without = ViTStageBranch(16, 16, 3, grid_size=4, prefix_tokens=0, num_blocks=1)
    x = without.blocks(tokens[:, 1:])
    torch.testing.assert_close(without(tokens[:, 1:]), without.head(x.mean(dim=1)))


def test_patch_merging_groups_each_two_by_two_block():
    # Token (r, c) of a 4×4 grid holds the value 10·r + c; each merged token concatenates (r, c), (r+1, c),
    # (r, c+1), (r+1, c+1) for even r, c (Swin's x0, x1, x2, x3), in row-major order of the 2×2 groups.
    merge = PatchMerging(grid=4, dim=1, out_dim=4, act=False)
    merge.norm, merge.reduction = nn.Identity(), nn.Identity()
    grid = torch.tensor([[10.0 * r + c for c in range(4)] for r in range(4)])
    out = merge(grid.reshape(1, 16, 1))
    expected = [[10 * r + c, 10 * (r + 1) + c, 10 * r + c + 1, 10 * (r + 1) + c + 1]
                for r in (0, 2) for c in (0, 2)]
    assert out[0].tolist() == expected


def test_transformer_block_matches_torch_multihead_attention():
    torch.manual_seed(0)
    block = TransformerBlock(16, num_heads=4)
    reference = nn.MultiheadAttention(16, 4, bias=True, batch_first=True)
    with torch.no_grad():
        reference.in_proj_weight.copy_(block.qkv.weight)
        reference.in_proj_bias.zero_()  # timm 0.6.5's Block: qkv_bias=False
        reference.out_proj.weight.copy_(block.proj.weight)
        reference.out_proj.bias.copy_(block.proj.bias)
    x = torch.randn(2, 5, 16)
    h = block.norm1(x)
    y = x + reference(h, h, h, need_weights=False)[0]
    expected = y + block.mlp(block.norm2(y))
    torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-5)
    assert block.qkv.bias is None and block.mlp[0].out_features == 64


def test_branches_start_from_ofas_initialisation():
    # init_weights: convs Kaiming-normal with fan_out (std √(2 / fan_out)), BatchNorm 1 / 0, linears N(0, 0.02²)
    # truncated to [−2, 2] (timm's absolute bounds), biases 0.
    torch.manual_seed(0)
    cnn = ofa_stage_branch((64, 4, 4), 3, 4, 512, 768, num_classes=10)  # one SepConv 64 → 768
    pointwise = cnn[0][5]
    assert pointwise.weight.shape == (768, 64, 1, 1)
    assert pointwise.weight.std().item() == pytest.approx(math.sqrt(2 / 768), rel=0.05)
    bns = [m for m in cnn.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 2 and all(bool((m.weight == 1).all() and (m.bias == 0).all()) for m in bns)
    vit = ofa_stage_branch((197, 192), 3, 4, 192, 768, num_classes=10, prefix_tokens=1)
    qkv = vit.blocks[0].qkv.weight
    assert qkv.std().item() == pytest.approx(0.02, rel=0.05)
    assert bool((vit.head.bias == 0).all()) and bool((vit.blocks[0].mlp[0].bias == 0).all())


def test_branches_reject_what_ofa_cannot_build():
    with pytest.raises(ValueError, match="odd"):
        ViTStageBranch(8, 8, 3, grid_size=30, prefix_tokens=0, num_blocks=1)  # 2 merges: 30 → 15, odd
    with pytest.raises(ValueError, match="square patch grid"):
        ofa_stage_branch((20, 8), 1, 4, 8, 8, 3, prefix_tokens=1)
    with pytest.raises(ValueError, match="must equal"):
        ViTStageBranch(8, 16, 3, grid_size=4, prefix_tokens=1, num_blocks=1)
    branch = ofa_stage_branch((17, 8), 1, 4, 8, 8, 3, prefix_tokens=1)
    with pytest.raises(ValueError, match="tokens"):
        branch(torch.randn(2, 16, 8))


@pytest.mark.parametrize("student", ["resnet", "vit"])
def test_ofa_branch_loss_on_hf_hidden_states(student):
    # The student's stage hidden states as HF returns them (maps for ResNet, CLS + patch tokens for ViT), the teacher's
    # logits only. Values against NumPy per branch; gradients reach the student and the branches, finite.
    model = tiny.resnet() if student == "resnet" else tiny.vit(layers=2)
    teacher_logits = torch.randn(4, 10)
    labels = torch.tensor([1, 2, 3, 4])
    pixel_values = tiny.digits(limit=4)[:4]["pixel_values"]
    out = model(pixel_values, output_hidden_states=True)
    stages = list(out.hidden_states[1:])
    prefix = 1 if student == "vit" else 0
    feature_dim = 16 if student == "resnet" else 32
    loss_fn = OFABranchLoss([tuple(h.shape[1:]) for h in stages], feature_dim, 24, 10, prefix, eps=1.5)
    assert len(loss_fn.branches) == len(stages)
    loss = loss_fn(stages, teacher_logits, labels)
    with torch.no_grad():
        branch_logits = [branch(h) for branch, h in zip(loss_fn.branches, stages)]
    assert all(z.shape == (4, 10) for z in branch_logits)
    expected = sum(numpy_ofa(z.numpy(), teacher_logits.numpy(), labels.numpy(), 1.5) for z in branch_logits)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    grads = [p.grad for p in [*model.parameters(), *loss_fn.parameters()] if p.grad is not None]
    assert all(torch.isfinite(g).all() for g in grads)
    assert all(p.grad is not None for p in loss_fn.parameters())
    first_layer = next(model.parameters())
    assert first_layer.grad is not None and first_layer.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="stage hidden states"):
        loss_fn(stages[:1], teacher_logits, labels)


# --- timm -------------------------------------------------------------------------------------------------------------


def test_timm_logit_is_kd_at_t4():
    z_s, z_t = random_logits(5)
    assert KDLoss(4.0)(z_s, z_t).item() == pytest.approx(numpy_timm_kl(z_s.numpy(), z_t.numpy(), 4.0), rel=1e-5)
    # by hand: T = 1, teacher [½, ½], student [¾, ¼]: KL = ½ ln(½/¾) + ½ ln(½/¼) = ½ ln(4/3)
    loss = KDLoss(1.0)(torch.tensor([[math.log(3.0), 0.0]]), torch.zeros(1, 2))
    assert loss.item() == pytest.approx(0.5 * math.log(4 / 3), rel=1e-6)


def test_timm_feature_loss_projects_only_when_widths_differ():
    same = TimmFeatureLoss.from_shapes([(2,)], [(2,)])
    assert isinstance(same.projection, nn.Identity) and not list(same.parameters())
    # by hand: ((1 − 0)² + (2 − 1)²) / 2 = 1
    assert same(torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 1.0]])).item() == pytest.approx(1.0)

    torch.manual_seed(0)
    loss_fn = TimmFeatureLoss(6, 4)
    f_s, f_t = torch.randn(5, 6, requires_grad=True), torch.randn(5, 4, requires_grad=True)
    loss = loss_fn(f_s, f_t)
    w, b = loss_fn.projection.weight.detach().numpy(), loss_fn.projection.bias.detach().numpy()
    expected = np.mean((f_s.detach().numpy() @ w.T + b - f_t.detach().numpy()) ** 2)
    assert loss.item() == pytest.approx(float(expected), rel=1e-5)
    loss.backward()
    assert f_t.grad is None and torch.isfinite(loss_fn.projection.weight.grad).all()
    with pytest.raises(ValueError, match="pooled features"):
        loss_fn(f_s, torch.randn(5, 3))


def test_renormalize_for_teacher_by_hand():
    # A student pixel 0 under mean ½, std ½ is the raw value ½; for ImageNet's R channel (0.485, 0.229) that is
    # (0.5 − 0.485) / 0.229.
    x = torch.zeros(1, 3, 2, 2)
    out = renormalize_for_teacher(x, [0.5] * 3, [0.5] * 3, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    expected = [(0.5 - m) / s for m, s in zip((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))]
    torch.testing.assert_close(out[0, :, 0, 0], torch.tensor(expected))


def test_renormalize_for_teacher_equals_the_teachers_own_processing():
    raw = torch.rand(2, 3, 8, 8)
    s_mean, s_std, t_mean, t_std = [0.286] * 3, [0.353] * 3, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    student_input = (raw - torch.tensor(s_mean).view(1, 3, 1, 1)) / torch.tensor(s_std).view(1, 3, 1, 1)
    teacher_input = (raw - torch.tensor(t_mean).view(1, 3, 1, 1)) / torch.tensor(t_std).view(1, 3, 1, 1)
    torch.testing.assert_close(renormalize_for_teacher(student_input, s_mean, s_std, t_mean, t_std), teacher_input,
                               rtol=1e-5, atol=1e-5)
    # another size: the teacher's processing resized (the affine map commutes with bilinear resizing)
    out = renormalize_for_teacher(student_input, s_mean, s_std, t_mean, t_std, teacher_size=(16, 12))
    expected = F.interpolate(teacher_input, size=(16, 12), mode="bilinear", align_corners=False)
    assert out.shape == (2, 3, 16, 12)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    # equal statistics and size: the batch itself, as timm's normalize_input
    assert renormalize_for_teacher(student_input, s_mean, s_std, s_mean, s_std, teacher_size=8) is student_input
    shrunk = renormalize_for_teacher(torch.full((1, 3, 8, 8), 0.7), [0.5], [0.5], [0.5], [0.5], teacher_size=4)
    torch.testing.assert_close(shrunk, torch.full((1, 3, 4, 4), 0.7))


def test_renormalize_for_teacher_rejects_bad_statistics():
    x = torch.zeros(1, 3, 4, 4)
    with pytest.raises(ValueError, match="2 values"):
        renormalize_for_teacher(x, [0.5, 0.5], [0.5] * 3, [0.5] * 3, [0.5] * 3)
    with pytest.raises(ValueError, match="> 0"):
        renormalize_for_teacher(x, [0.5] * 3, [0.5] * 3, [0.5] * 3, [0.0] * 3)
    with pytest.raises(ValueError, match="teacher_size"):
        renormalize_for_teacher(x, [0.5] * 3, [0.5] * 3, [0.5] * 3, [0.4] * 3, teacher_size=(4, 4, 4))


# --- FBT's pooled contrast --------------------------------------------------------------------------------------------


def test_learnable_temperature_infonce_matches_numpy_clip():
    g = torch.Generator().manual_seed(6)
    v_s = F.normalize(torch.randn(B, 8, generator=g), dim=1)
    v_t = F.normalize(torch.randn(B, 8, generator=g), dim=1)
    loss_fn = LearnableTemperatureInfoNCELoss()
    assert loss_fn.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    expected = numpy_symmetric_infonce(v_s.numpy(), v_t.numpy(), 1 / 0.07)
    assert loss_fn(v_s, v_t).item() == pytest.approx(expected, rel=1e-5)


def test_learnable_temperature_is_clamped_like_clip_and_trained():
    g = torch.Generator().manual_seed(7)
    v_s = F.normalize(torch.randn(B, 8, generator=g), dim=1)
    v_t = F.normalize(v_s + torch.randn(B, 8, generator=g), dim=1)
    loss_fn = LearnableTemperatureInfoNCELoss()
    for raw, used_scale in ((10.0, 100.0), (-1.0, 1.0), (2.0, math.exp(2.0))):
        with torch.no_grad():
            loss_fn.logit_scale.fill_(raw)
        loss_fn.logit_scale.grad = None
        loss = loss_fn(v_s, v_t)
        assert loss.item() == pytest.approx(numpy_symmetric_infonce(v_s.numpy(), v_t.numpy(), used_scale), rel=1e-5)
        loss.backward()
        inside = 0 < raw < math.log(100)
        assert (loss_fn.logit_scale.grad.abs().item() > 0) == inside
    with pytest.raises(ValueError, match="init_temperature"):
        LearnableTemperatureInfoNCELoss(init_temperature=0.001)
    # inside the bounds the gradient is d loss / d s, checked by central differences in float64
    h = 1e-3
    numeric = (numpy_symmetric_infonce(v_s.numpy(), v_t.numpy(), math.exp(2.0 + h))
               - numpy_symmetric_infonce(v_s.numpy(), v_t.numpy(), math.exp(2.0 - h))) / (2 * h)
    assert loss_fn.logit_scale.grad.item() == pytest.approx(numeric, rel=1e-3)


def test_fbt_contrast_projects_both_sides_and_matches_numpy():
    torch.manual_seed(0)
    loss_fn = FBTContrastLoss.from_shapes([(6,)], [(10,)], feat_dim=4)
    f_s, f_t = torch.randn(B, 6, requires_grad=True), torch.randn(B, 10, requires_grad=True)
    loss = loss_fn(f_s, f_t)

    def head(projector, x):
        return _l2(x.detach().numpy() @ projector.net.weight.detach().numpy().T + projector.net.bias.detach().numpy())

    expected = numpy_symmetric_infonce(head(loss_fn.student_head, f_s), head(loss_fn.teacher_head, f_t), 1 / 0.07)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert f_t.grad is None and torch.isfinite(f_s.grad).all()
    trained = [loss_fn.student_head.net.weight, loss_fn.teacher_head.net.weight, loss_fn.contrast.logit_scale]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in trained)
