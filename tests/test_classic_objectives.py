"""Classic objectives: values against independent loop / by-hand computations, plus the shared contract."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cktf_hf.objectives.classic import (
    AttentionTransferLoss,
    CorrelationCongruenceLoss,
    FitNetsLoss,
    KDLoss,
    NSTLoss,
    PKTLoss,
    RKDLoss,
    SimilarityPreservingLoss,
    VIDLoss,
)
from cktf_hf.objectives.registry import get_objective

EXPECTED = {
    "kd": (KDLoss, "logits"),
    "fitnets": (FitNetsLoss, "hint"),
    "at": (AttentionTransferLoss, "stages"),
    "sp": (SimilarityPreservingLoss, "last_stage"),
    "cc": (CorrelationCongruenceLoss, "final"),
    "vid": (VIDLoss, "stages"),
    "rkd": (RKDLoss, "final"),
    "pkt": (PKTLoss, "final"),
    "nst": (NSTLoss, "stages"),
}

# Per-sample (student_shapes, teacher_shapes) with mismatched channels / sizes wherever the objective allows them.
SHAPES = {
    "kd": ([(5,)], [(5,)]),
    "fitnets": ([(3, 4, 4)], [(5, 2, 2)]),
    "at": ([(3, 4, 4), (4, 2, 2)], [(5, 2, 2), (6, 2, 2)]),
    "sp": ([(3, 2, 2)], [(5, 3, 3)]),
    "cc": ([(6,)], [(8,)]),
    "vid": ([(3, 4, 4), (4, 2, 2)], [(5, 2, 2), (6, 4, 4)]),
    "rkd": ([(6,)], [(8,)]),
    "pkt": ([(6,)], [(8,)]),
    "nst": ([(3, 4, 4), (4, 2, 2)], [(5, 2, 2), (6, 4, 4)]),
}
B = 4


def _random(shapes, batch=B, **kwargs):
    return [torch.randn(batch, *shape, **kwargs) for shape in shapes]


def _call(objective, kind, student, teacher):
    return objective(student, teacher) if kind == "stages" else objective(student[0], teacher[0])


def _block_mean(x: torch.Tensor, k: int) -> torch.Tensor:
    """Average non-overlapping k×k blocks of [B, C, H, W]."""
    b, c, h, w = x.shape
    return x.reshape(b, c, h // k, k, w // k, k).mean(dim=(3, 5))


def _smooth_l1(a: float, b: float) -> float:
    d = abs(a - b)
    return 0.5 * d * d if d < 1 else d - 0.5


def _unit(v: list[float], eps: float = 1e-12) -> list[float]:
    n = max(math.sqrt(sum(x * x for x in v)), eps)
    return [x / n for x in v]


def _dot(u, v) -> float:
    return sum(float(a) * float(b) for a, b in zip(u, v, strict=True))


# --- values ----------------------------------------------------------------------------------------------------------


def test_kd_matches_explicit_kl_sum():
    torch.manual_seed(0)
    z_s, z_t = torch.randn(3, 5), torch.randn(3, 5)
    T = 4.0
    expected = 0.0
    for b in range(3):
        e_s = [math.exp(float(z) / T) for z in z_s[b]]
        e_t = [math.exp(float(z) / T) for z in z_t[b]]
        p_s = [e / sum(e_s) for e in e_s]
        p_t = [e / sum(e_t) for e in e_t]
        expected += sum(pt * math.log(pt / ps) for pt, ps in zip(p_t, p_s, strict=True))
    expected = expected / 3 * T**2
    assert KDLoss(temperature=T)(z_s, z_t).item() == pytest.approx(expected, rel=1e-5)


def test_kd_by_hand_two_classes():
    # T = 1, z_s = [0, 0] → p_s = [½, ½]; z_t = [ln 3, 0] → p_t = [¾, ¼]. KL = ¾ ln(3/2) + ¼ ln(1/2).
    loss = KDLoss(temperature=1.0)(torch.zeros(1, 2), torch.tensor([[math.log(3.0), 0.0]]))
    assert loss.item() == pytest.approx(0.75 * math.log(1.5) + 0.25 * math.log(0.5), rel=1e-5)


def test_fitnets_same_size_conv_then_batchnorm():
    torch.manual_seed(0)
    loss_fn = FitNetsLoss((2, 3, 3), (3, 2, 2))  # kernel 1 + 3 − 2 = 2
    conv = loss_fn.regressor[0]
    assert conv.kernel_size == (2, 2)
    f_s, f_t = torch.randn(4, 2, 3, 3), torch.randn(4, 3, 2, 2)
    y = F.conv2d(f_s, conv.weight.detach(), conv.bias.detach())
    mean = y.mean(dim=(0, 2, 3), keepdim=True)
    var = y.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    prediction = (y - mean) / torch.sqrt(var + 1e-5)  # BN in training mode, weight 1, bias 0
    expected = ((prediction - f_t) ** 2).mean()
    torch.testing.assert_close(loss_fn(f_s, f_t), expected, rtol=1e-5, atol=1e-6)


def test_fitnets_pools_teacher_when_student_is_smaller():
    torch.manual_seed(0)
    loss_fn = FitNetsLoss((2, 2, 2), (2, 6, 6)).eval()  # BN with running stats 0 / 1
    conv = loss_fn.regressor[0]
    assert conv.kernel_size == (1, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(2).view(2, 2, 1, 1))
        conv.bias.zero_()
    f_s, f_t = torch.randn(2, 2, 2, 2), torch.randn(2, 2, 6, 6)
    expected = 0.0
    for b in range(2):
        for c in range(2):
            for i in range(2):
                for j in range(2):
                    target = float(f_t[b, c, 3 * i : 3 * i + 3, 3 * j : 3 * j + 3].sum()) / 9
                    prediction = float(f_s[b, c, i, j]) / math.sqrt(1 + 1e-5)
                    expected += (prediction - target) ** 2
    assert loss_fn(f_s, f_t).item() == pytest.approx(expected / 16, rel=1e-5)


@pytest.mark.parametrize(
    ("student_shape", "teacher_shape", "conv_type", "kernel_size"),
    [
        ((3, 8, 8), (5, 4, 4), nn.Conv2d, (3, 3)),  # H_s = 2·H_t
        ((3, 4, 4), (5, 8, 8), nn.ConvTranspose2d, (4, 4)),  # 2·H_s = H_t
        ((3, 7, 7), (5, 4, 4), nn.Conv2d, (4, 4)),  # H_s ≥ H_t
        ((3, 4, 4), (5, 6, 6), nn.Conv2d, (1, 1)),  # H_s < H_t, not 2×: pool the teacher
    ],
)
def test_fitnets_regressor_cases(student_shape, teacher_shape, conv_type, kernel_size):
    loss_fn = FitNetsLoss.from_shapes([student_shape], [teacher_shape])
    conv = loss_fn.regressor[0]
    assert type(conv) is conv_type and conv.kernel_size == kernel_size
    assert not any(isinstance(m, nn.ReLU) for m in loss_fn.modules())
    f_s, f_t = torch.randn(2, *student_shape), torch.randn(2, *teacher_shape)
    expected_hw = student_shape[1:] if teacher_shape[1] == 6 else teacher_shape[1:]
    assert loss_fn.regressor(f_s).shape == (2, teacher_shape[0], *expected_hw)
    loss = loss_fn(f_s, f_t)
    assert loss.dim() == 0 and torch.isfinite(loss)


def _attention(f: torch.Tensor, b: int) -> list[float]:
    channels, height, width = f.shape[1:]
    positions = [(h, w) for h in range(height) for w in range(width)]
    return _unit([sum(float(f[b, c, h, w]) ** 2 for c in range(channels)) / channels for h, w in positions])


def test_at_matches_loops_with_pooling_and_sum_over_stages():
    torch.manual_seed(0)
    g_s = [torch.randn(2, 3, 4, 4), torch.randn(2, 2, 2, 2)]
    g_t = [torch.randn(2, 5, 2, 2), torch.randn(2, 4, 2, 2)]
    expected = 0.0
    for f_s, f_t in zip(g_s, g_t, strict=True):
        if f_s.shape[2] > f_t.shape[2]:
            f_s = _block_mean(f_s, 2)
        diffs = [
            (a_s - a_t) ** 2
            for b in range(2)
            for a_s, a_t in zip(_attention(f_s, b), _attention(f_t, b), strict=True)
        ]
        expected += sum(diffs) / len(diffs)
    assert AttentionTransferLoss()(g_s, g_t).item() == pytest.approx(expected, rel=1e-5)


def test_at_by_hand():
    # One channel, two positions: A_s = normalize([1, 0]) = [1, 0]; A_t = normalize([1, 1]) = [1/√2, 1/√2].
    f_s = torch.tensor([1.0, 0.0]).view(1, 1, 1, 2)
    f_t = torch.tensor([1.0, -1.0]).view(1, 1, 1, 2)
    r = 1 / math.sqrt(2)
    expected = ((1 - r) ** 2 + r**2) / 2
    assert AttentionTransferLoss()([f_s], [f_t]).item() == pytest.approx(expected, rel=1e-6)
    # Odd p uses |f|^p (as in the paper), so a sign flip changes nothing.
    assert AttentionTransferLoss(p=3.0)([f_t], [-f_t]).item() == pytest.approx(0.0, abs=1e-7)


def test_sp_matches_loops():
    torch.manual_seed(0)
    f_s, f_t = torch.randn(3, 2, 2, 2), torch.randn(3, 5)
    xs, xt = f_s.reshape(3, -1).tolist(), f_t.tolist()
    g_s = [_unit([_dot(xs[i], xs[j]) for j in range(3)]) for i in range(3)]
    g_t = [_unit([_dot(xt[i], xt[j]) for j in range(3)]) for i in range(3)]
    expected = sum((g_t[i][j] - g_s[i][j]) ** 2 for i in range(3) for j in range(3)) / 9
    assert SimilarityPreservingLoss()(f_s, f_t).item() == pytest.approx(expected, rel=1e-5)


def test_cc_with_known_embeddings():
    torch.manual_seed(0)
    loss_fn = CorrelationCongruenceLoss(student_dim=3, teacher_dim=4, feat_dim=2)
    w_s, b_s, w_t, b_t = torch.randn(2, 3), torch.randn(2), torch.randn(2, 4), torch.randn(2)
    with torch.no_grad():
        loss_fn.embed_s.weight.copy_(w_s)
        loss_fn.embed_s.bias.copy_(b_s)
        loss_fn.embed_t.weight.copy_(w_t)
        loss_fn.embed_t.bias.copy_(b_t)
    f_s, f_t = torch.randn(4, 3), torch.randn(4, 4)
    e_s = [[_dot(w_s[d], f_s[b]) + float(b_s[d]) for d in range(2)] for b in range(4)]
    e_t = [[_dot(w_t[d], f_t[b]) + float(b_t[d]) for d in range(2)] for b in range(4)]
    delta = [[abs(e_s[b][d] - e_t[b][d]) for d in range(2)] for b in range(4)]
    expected = sum(delta[b][d] * delta[b + 1][d] for b in range(3) for d in range(2)) / 3
    assert loss_fn(f_s, f_t).item() == pytest.approx(expected, rel=1e-5)


def test_vid_initial_variance_and_value_with_known_parameters():
    torch.manual_seed(0)
    loss_fn = VIDLoss([(2, 4, 4), (3, 2, 2)], [(3, 2, 2), (2, 2, 2)], init_pred_var=5.0)
    for log_scale in loss_fn.log_scales:
        torch.testing.assert_close(F.softplus(log_scale) + 1e-5, torch.full_like(log_scale, 5.0))
    rhos = [torch.tensor([-1.0, 0.0, 2.0]), torch.tensor([0.5, 1.5])]
    weights = []
    with torch.no_grad():
        channels = [[(2, 3), (3, 3), (3, 3)], [(3, 2), (2, 2), (2, 2)]]  # C_s → C_t → C_t → C_t
        for regressor, log_scale, rho, io in zip(loss_fn.regressors, loss_fn.log_scales, rhos, channels, strict=True):
            log_scale.copy_(rho)
            convs = [m for m in regressor if isinstance(m, nn.Conv2d)]
            assert [(c.in_channels, c.out_channels) for c in convs] == io
            assert all(c.kernel_size == (1, 1) and c.bias is None for c in convs)
            weights.append([c.weight.clone() for c in convs])
    g_s = [torch.randn(2, 2, 4, 4), torch.randn(2, 3, 2, 2)]
    g_t = [torch.randn(2, 3, 2, 2), torch.randn(2, 2, 2, 2)]
    expected = 0.0
    for f_s, f_t, (w1, w2, w3), rho in zip(g_s, g_t, weights, rhos, strict=True):
        if f_s.shape[2] > f_t.shape[2]:
            f_s = _block_mean(f_s, 2)
        mean = F.conv2d(F.relu(F.conv2d(F.relu(F.conv2d(f_s, w1)), w2)), w3)
        terms = []
        for c in range(len(rho)):
            var = math.log(1 + math.exp(float(rho[c]))) + 1e-5
            for value in (mean[:, c] - f_t[:, c]).flatten().tolist():
                terms.append(0.5 * (value**2 / var + math.log(var)))
        expected += sum(terms) / len(terms)
    assert loss_fn(g_s, g_t).item() == pytest.approx(expected, rel=1e-5)


def test_rkd_matches_loops():
    torch.manual_seed(0)
    f_s, f_t = torch.randn(4, 3), torch.randn(4, 5)

    def distances(x):
        d = [[math.dist(x[i], x[j]) for j in range(4)] for i in range(4)]
        nonzero = [v for row in d for v in row if v > 0]
        mean = sum(nonzero) / len(nonzero)
        return [v / mean for row in d for v in row]

    def angles(x):
        out = []
        for i in range(4):
            for j in range(4):
                for k in range(4):
                    e_ij = _unit([a - b for a, b in zip(x[j], x[i], strict=True)])
                    e_ik = _unit([a - b for a, b in zip(x[k], x[i], strict=True)])
                    out.append(_dot(e_ij, e_ik))
        return out

    xs, xt = f_s.tolist(), f_t.tolist()
    loss_d = sum(map(_smooth_l1, distances(xs), distances(xt))) / 16
    loss_a = sum(map(_smooth_l1, angles(xs), angles(xt))) / 64
    expected = 25 * loss_d + 50 * loss_a
    assert RKDLoss()(f_s, f_t).item() == pytest.approx(expected, rel=1e-5)
    assert RKDLoss(distance_weight=1.0, angle_weight=0.0)(f_s, f_t).item() == pytest.approx(loss_d, rel=1e-5)


def test_pkt_matches_loops():
    torch.manual_seed(0)
    f_s, f_t = torch.randn(3, 4), torch.randn(3, 6)
    eps = 1e-7

    def probabilities(x):
        unit = [[v / (math.sqrt(sum(u * u for u in row)) + eps) for v in row] for row in x]
        sim = [[(_dot(unit[i], unit[j]) + 1) / 2 for j in range(3)] for i in range(3)]
        return [[v / sum(row) for v in row] for row in sim]

    p_s, p_t = probabilities(f_s.tolist()), probabilities(f_t.tolist())
    expected = sum(p_t[i][j] * math.log((p_t[i][j] + eps) / (p_s[i][j] + eps)) for i in range(3) for j in range(3)) / 9
    assert PKTLoss()(f_s, f_t).item() == pytest.approx(expected, rel=1e-5)


def test_nst_matches_loops_with_pooling_and_sum_over_stages():
    torch.manual_seed(0)
    g_s = [torch.randn(2, 2, 2, 2), torch.randn(2, 3, 2, 2)]
    g_t = [torch.randn(2, 3, 4, 4), torch.randn(2, 2, 2, 2)]
    expected = 0.0
    for f_s, f_t in zip(g_s, g_t, strict=True):
        if f_t.shape[2] > f_s.shape[2]:
            f_t = _block_mean(f_t, 2)
        s = [[_unit(f_s[b, c].flatten().tolist()) for c in range(f_s.shape[1])] for b in range(2)]
        t = [[_unit(f_t[b, c].flatten().tolist()) for c in range(f_t.shape[1])] for b in range(2)]

        def mean_kernel(a, c):
            values = [_dot(a[b][i], c[b][j]) ** 2 for b in range(2) for i in range(len(a[b])) for j in range(len(c[b]))]
            return sum(values) / len(values)

        expected += mean_kernel(t, t) + mean_kernel(s, s) - 2 * mean_kernel(s, t)
    assert NSTLoss()(g_s, g_t).item() == pytest.approx(expected, rel=1e-5)


# --- properties ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["kd", "at", "sp", "rkd", "pkt", "nst"])
def test_zero_loss_for_identical_inputs(name):
    torch.manual_seed(0)
    shapes = SHAPES[name][0]
    cls = get_objective(name)
    objective = cls.from_shapes(shapes, shapes)
    x = _random(shapes)
    loss = _call(objective, cls.inputs, x, [t.clone() for t in x])
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_gradients_reach_student_and_parameters_not_teacher(name):
    torch.manual_seed(0)
    cls = get_objective(name)
    student_shapes, teacher_shapes = SHAPES[name]
    objective = cls.from_shapes(student_shapes, teacher_shapes)
    student = _random(student_shapes, requires_grad=True)
    teacher = _random(teacher_shapes, requires_grad=True)
    _call(objective, cls.inputs, student, [t.detach() for t in teacher]).backward()
    # Even a teacher tensor passed without detaching is treated as a constant.
    _call(objective, cls.inputs, student, teacher).backward()
    for s in student:
        assert s.grad is not None and s.grad.abs().sum() > 0
    for t in teacher:
        assert t.grad is None
    for parameter_name, parameter in objective.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, parameter_name


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_float32_scalar_under_bf16_autocast(name):
    torch.manual_seed(0)
    cls = get_objective(name)
    student_shapes, teacher_shapes = SHAPES[name]
    objective = cls.from_shapes(student_shapes, teacher_shapes).eval()
    student, teacher = _random(student_shapes), _random(teacher_shapes)
    reference = _call(objective, cls.inputs, student, teacher)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = _call(objective, cls.inputs, [s.bfloat16() for s in student], [t.bfloat16() for t in teacher])
    assert loss.dtype == torch.float32 and loss.dim() == 0 and torch.isfinite(loss)
    torch.testing.assert_close(loss, reference, rtol=0.05, atol=0.05)
    if not list(objective.parameters()):  # no learnable parts: everything after the input cast is float32
        with torch.autocast("cpu", dtype=torch.bfloat16):
            exact = _call(objective, cls.inputs, student, teacher)
        torch.testing.assert_close(exact, reference)


# --- registry --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_registered_with_inputs_kind_and_from_shapes(name):
    cls, kind = EXPECTED[name]
    assert get_objective(name) is cls
    assert get_objective(name.upper()) is cls
    assert cls.inputs == kind
    objective = cls.from_shapes(*SHAPES[name])
    assert isinstance(objective, cls)
    student_shapes, teacher_shapes = SHAPES[name]
    loss = _call(objective, kind, _random(student_shapes), _random(teacher_shapes))
    assert loss.dim() == 0 and torch.isfinite(loss)


def test_from_shapes_forwards_keyword_arguments():
    assert KDLoss.from_shapes([(5,)], [(5,)], temperature=2.0).temperature == 2.0
    assert CorrelationCongruenceLoss.from_shapes([(6,)], [(8,)], feat_dim=16).embed_s.out_features == 16
    vid = VIDLoss.from_shapes([(3, 2, 2)], [(4, 2, 2)], init_pred_var=2.0)
    torch.testing.assert_close(F.softplus(vid.log_scales[0]) + 1e-5, torch.full((4,), 2.0))


def test_unknown_name_lists_known_objectives():
    with pytest.raises(ValueError, match="Known objectives") as info:
        get_objective("no_such_loss")
    for name in EXPECTED:
        assert name in str(info.value)


# --- zero rows (an all-zero feature row, e.g. a dead ReLU student) -------------------------------------------------


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_an_all_zero_row_gives_finite_gradients(name):
    """RepDistiller's PKT divides by ``sqrt(sum x²) + eps``: finite, but the square root's gradient at 0 is inf and
    0 · inf a NaN. Every objective, normalising or not, must give a finite loss and gradients on a zero row."""
    torch.manual_seed(0)
    cls = get_objective(name)
    student_shapes, teacher_shapes = SHAPES[name]
    objective = cls.from_shapes(student_shapes, teacher_shapes)
    student = _random(student_shapes)
    teacher = _random(teacher_shapes)
    for s, t in zip(student, teacher):
        s[0] = 0.0                # a zero row on the student's side
        t[1] = 0.0                # and on the teacher's
    student = [s.requires_grad_() for s in student]
    loss = _call(objective, cls.inputs, student, teacher)
    loss.backward()
    assert torch.isfinite(loss)
    for s in student:
        assert torch.isfinite(s.grad).all(), s.grad
    for parameter_name, parameter in objective.named_parameters():
        assert torch.isfinite(parameter.grad).all(), parameter_name


def test_pkt_on_an_all_zero_batch_is_finite():
    student, teacher = torch.zeros(4, 6, requires_grad=True), torch.zeros(4, 8)
    loss = PKTLoss()(student, teacher)
    loss.backward()
    assert loss.item() == pytest.approx(0.0, abs=1e-6) and torch.isfinite(student.grad).all()
