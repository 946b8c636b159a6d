"""The cheaper step (issue 29): the in-batch and per-cell InfoNCE and the shared-negative bank NCE give the losses and
gradients of their former formulations (written out here), and the bfloat16 product options multiply in bfloat16 only
where the device does so natively."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cktf_hf.objectives import InBatchInfoNCELoss, SpatialInfoNCELoss
from cktf_hf.objectives.combined import _cells
from cktf_hf.objectives.contrastive import MemoryBankNCELoss, product_dtypes


def _unit(*shape: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def _former_spatial(e_s: torch.Tensor, e_t: torch.Tensor, tau: float) -> torch.Tensor:
    """The per-cell loss as it was computed before: two einsum products per term and flattened cross-entropies."""
    batch, cells = e_s.shape[:2]
    targets = torch.arange(batch).repeat(cells)
    student_anchored = torch.einsum("bld,cld->lbc", e_s, e_t).flatten(0, 1) / tau
    teacher_anchored = torch.einsum("bld,cld->lbc", e_t, e_s).flatten(0, 1) / tau
    across_samples = 0.5 * (F.cross_entropy(student_anchored, targets) + F.cross_entropy(teacher_anchored, targets))
    if cells == 1:
        return across_samples
    scores = torch.einsum("bld,bmd->blm", e_s, e_t) / tau
    cell_targets = torch.arange(cells).repeat(batch)
    across_cells = 0.5 * (F.cross_entropy(scores.flatten(0, 1), cell_targets)
                          + F.cross_entropy(scores.transpose(1, 2).flatten(0, 1), cell_targets))
    return 0.5 * (across_samples + across_cells)


def _loss_and_grads(fn, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
    leaves = [x.clone().requires_grad_() for x in inputs]
    value = fn(*leaves)
    value.backward()
    return (value.detach(), *(leaf.grad for leaf in leaves))


@pytest.mark.parametrize("batch, cells, tau", [(6, 4, 0.1), (5, 1, 0.07), (3, 9, 0.5)])
def test_spatial_infonce_equals_its_former_formulation(batch, cells, tau):
    e_s, e_t = _unit(batch, cells, 8, seed=1), _unit(batch, cells, 8, seed=2)
    new = _loss_and_grads(SpatialInfoNCELoss(tau), e_s, e_t)
    old = _loss_and_grads(lambda s, t: _former_spatial(s, t, tau), e_s, e_t)
    for a, b in zip(new, old):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_in_batch_infonce_equals_its_former_formulation():
    v_s, v_t = _unit(7, 16, seed=3), _unit(7, 16, seed=4)

    def former(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        targets = torch.arange(7)
        return 0.5 * (F.cross_entropy(s @ t.t() / 0.1, targets) + F.cross_entropy(t @ s.t() / 0.1, targets))

    for a, b in zip(_loss_and_grads(InBatchInfoNCELoss(0.1), v_s, v_t), _loss_and_grads(former, v_s, v_t)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_cells_of_a_map_already_on_the_grid_are_a_view_equal_to_pooling():
    tokens = torch.randn(3, 1 + 16, 5)  # a ViT layer: CLS + a 4×4 patch grid
    feature_map = tokens[:, 1:].transpose(1, 2).reshape(3, 5, 4, 4)
    cells = _cells(feature_map, (4, 4))
    assert torch.equal(cells, F.adaptive_avg_pool2d(feature_map, (4, 4)).flatten(2).transpose(1, 2))
    assert cells.data_ptr() == tokens[:, 1:].data_ptr()  # the patch tokens themselves: no copy
    nchw = torch.randn(3, 6, 4, 4)
    assert torch.equal(_cells(nchw, (4, 4)), nchw.flatten(2).transpose(1, 2)) and _cells(nchw, (4, 4)).stride(-1) == 1
    assert torch.equal(_cells(nchw, (2, 2)), F.adaptive_avg_pool2d(nchw, 2).flatten(2).transpose(1, 2))


def _former_shared_negative_terms(anchors, negatives, weights, log_zc, tau, eps_c):
    """``Σ w · log(1 + t + eps/c)``, ``t = exp(S/tau)/(Z·c)``, as the fused function computed it before."""
    t = torch.exp(anchors @ negatives.t() / tau - log_zc)
    return (torch.log1p(t + eps_c) * weights).sum()


@pytest.mark.parametrize("log_zc", [2.5, 12.0, -5.0])  # 12: every x below 4 (softplus from the sigmoid); -5: above
@pytest.mark.parametrize("masked", [False, True])
def test_shared_negative_terms_equal_their_former_formulation(masked, log_zc):
    from cktf_hf.objectives.contrastive import SharedNegativeNCE, shared_mask

    anchors, negatives = _unit(6, 8, seed=5), _unit(50, 8, seed=6)
    mask = torch.rand(6, 50, generator=torch.Generator().manual_seed(7)) > 0.3 if masked else None
    if masked:
        mask[2] = False  # an anchor without a valid negative: no negative term
    args = (log_zc, 0.1, 1.5e-6)
    new = _loss_and_grads(lambda a: SharedNegativeNCE.apply(a, negatives, shared_mask(mask, 50), *args), anchors)
    weights = torch.ones(6, 50) if mask is None else mask * (50 / mask.sum(1, keepdim=True).clamp(min=1))
    old = _loss_and_grads(lambda a: _former_shared_negative_terms(a, negatives, weights, *args), anchors)
    for a, b in zip(new, old):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_shared_mask_is_prepared_once_per_batch_mask():
    from cktf_hf.objectives.contrastive import shared_mask

    mask = torch.rand(4, 10, generator=torch.Generator().manual_seed(11)) > 0.4
    mask[1] = False
    prepared = shared_mask(mask, 10)
    assert prepared.bias.shape == (10, 4) and prepared.bias.is_contiguous()  # the scores' [K, B] layout
    assert torch.equal(prepared.bias == 0, mask.t()) and torch.equal(prepared.bias == float("-inf"), ~mask.t())
    counts = mask.sum(1).float()
    torch.testing.assert_close(prepared.row_weights, 10 / counts.clamp(min=1))
    torch.testing.assert_close(prepared.total_weight, 10.0 * (counts > 0).sum())
    assert shared_mask(mask, 10) is prepared  # the pairs of a step share one preparation
    assert shared_mask(mask.clone(), 10) is not prepared
    mask[0, :] = True  # changed in place: prepared again
    again = shared_mask(mask, 10)
    assert again is not prepared and bool((again.bias[:, 0] == 0).all())
    with torch.inference_mode():
        frozen = torch.ones(2, 3, dtype=torch.bool)
        assert shared_mask(frozen, 3).row_weights.tolist() == [1.0, 1.0]
    assert shared_mask(None, 10) is None


@pytest.mark.parametrize("native", [False, True])
def test_bfloat16_products_only_where_the_cpu_multiplies_it_natively(monkeypatch, native):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    cpu, low = torch.device("cpu"), torch.bfloat16 if native else torch.float32
    assert product_dtypes("float32", cpu) == (torch.float32, torch.float32)
    assert product_dtypes("bfloat16-gradient", cpu) == (torch.float32, low)
    assert product_dtypes("bfloat16", cpu) == (low, low)
    assert product_dtypes("bfloat16", torch.device("meta")) == (torch.float32, torch.float32)
    with pytest.raises(ValueError, match="products must be one of"):
        product_dtypes("auto", cpu)
    with pytest.raises(ValueError, match="products must be one of"):
        MemoryBankNCELoss(200, products="half")  # refused when built, not at the first step


@pytest.mark.parametrize("products", ["bfloat16-gradient", "bfloat16"])
@pytest.mark.parametrize("bank_dtype", [torch.float32, torch.bfloat16])
def test_bfloat16_products_give_the_float32_loss_and_gradients_to_bfloat16_precision(bank_dtype, products):
    torch.manual_seed(0)
    full = MemoryBankNCELoss(200, feat_dim=32, nce_k=64, products="float32")
    low = MemoryBankNCELoss(200, feat_dim=32, nce_k=64, bank_dtype=bank_dtype, products=products)
    with torch.no_grad():  # the same (bf16-representable) rows in both
        for name in ("memory_student", "memory_teacher"):
            getattr(full, name).copy_(getattr(low, name).to(torch.bfloat16).float())
            getattr(low, name).copy_(getattr(full, name))
    g = torch.Generator().manual_seed(8)
    index, negatives = torch.randperm(200, generator=g)[:8], torch.randint(0, 200, (64,), generator=g)
    mask = torch.rand(8, 64, generator=g) > 0.1
    v_s, v_t = _unit(8, 32, seed=9), _unit(8, 32, seed=10)
    outs = [_loss_and_grads(lambda s, t, m=m: m(s, t, index, negatives, mask), v_s, v_t) for m in (full, low)]
    assert outs[1][0].dtype == torch.float32
    for a, b in zip(*outs):
        torch.testing.assert_close(b, a, rtol=2e-2, atol=2e-3)
    scores, gradient = product_dtypes(products, torch.device("cpu"))
    if gradient == torch.bfloat16:  # bfloat16 was really used: the gradients are not bit-equal
        assert not all(torch.equal(a, b) for a, b in zip(outs[0][1:], outs[1][1:]))
    if scores == torch.float32:  # the loss itself is the float32 one
        assert torch.equal(outs[0][0], outs[1][0])
