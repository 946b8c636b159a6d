"""Contrastive objectives: CRD's NCE with momentum memory banks, and in-batch InfoNCE.

Both take the two L2-normalised embeddings of one layer pair (``v_s`` from the student's projector, ``v_t`` from
the teacher's) and return a scalar. Scores and losses are computed in float32 with autocast disabled, because
``exp(<v, w> / tau)`` reaches ``e^(1/0.07) ≈ 1.6e6``, beyond float16's range.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .registry import register_objective


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _gather(tensor: torch.Tensor) -> list[torch.Tensor]:
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return parts


def all_gather_no_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` from every rank along dim 0 (identity on a single process)."""
    return torch.cat(_gather(tensor)) if _distributed() else tensor


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Like :func:`all_gather_no_grad`, but gradients flow back to this rank's slice."""
    if not _distributed():
        return tensor
    parts = _gather(tensor)
    parts[dist.get_rank()] = tensor
    return torch.cat(parts)


def nce_loss(probabilities: torch.Tensor, num_samples: int, eps: float = 1e-7) -> torch.Tensor:
    """CRD's binary NCE loss (CRD paper eq. 18) on ``P = exp(s / tau) / Z`` of shape ``[B, K+1]``.

    Column 0 holds the positive, columns ``1..K`` the noise samples; the noise prior is ``1/N``, so ``c = K/N``:
    ``-(1/B) Σ_b [log(P_b0 / (P_b0 + c + eps)) + Σ_k log(c / (P_bk + c + eps))]``.
    """
    batch_size, num_negatives = probabilities.shape[0], probabilities.shape[1] - 1
    c = num_negatives / num_samples
    positive, negatives = probabilities[:, 0], probabilities[:, 1:]
    log_d1 = torch.log(positive / (positive + c + eps))
    log_d0 = torch.log(c / (negatives + c + eps))
    return -(log_d1.sum() + log_d0.sum()) / batch_size


def masked_nce_loss(probabilities: torch.Tensor, valid: torch.Tensor, num_samples: int,
                    eps: float = 1e-7) -> torch.Tensor:
    """:func:`nce_loss` with some negatives left out: ``valid`` ``[B, K]`` (True = a real negative). ``c = K/N`` as in
    the reference, and an anchor with ``K_b`` valid negatives has its negative sum scaled by ``K / K_b``, as
    :func:`shared_nce_loss` does (no negative term when ``K_b = 0``)."""
    batch_size, k = probabilities.shape[0], probabilities.shape[1] - 1
    c = k / num_samples
    positive, negatives = probabilities[:, 0], probabilities[:, 1:]
    log_d1 = torch.log(positive / (positive + c + eps))
    weights = valid.to(negatives.dtype) * (k / valid.sum(1, keepdim=True).clamp(min=1).to(negatives.dtype))
    log_d0 = torch.log(c / (negatives + c + eps)) * weights
    return -(log_d1.sum() + log_d0.sum()) / batch_size


class SharedMask(NamedTuple):
    """The valid shared negatives of a batch as :class:`SharedNegativeNCE` reads them (see :func:`shared_mask`)."""

    bias: torch.Tensor  # [K, B] float32 (the scores' layout): 0 where negative k counts for anchor b, else −inf
    row_weights: torch.Tensor  # [B] float32, K / K_b (K_b: anchor b's valid negatives, at least 1)
    total_weight: torch.Tensor  # Σ_b K_b · K / K_b, the sum of every entry's weight


def shared_mask(mask: Optional[torch.Tensor], k: int) -> Optional[SharedMask]:
    """The ``[B, K]`` mask of valid shared negatives (True = another class than the anchor) as :class:`SharedMask`:
    an entry's weight is ``mask_bk · K / K_b`` (see :func:`shared_nce_loss`); None without a mask (every weight 1).

    Built once per mask: the result is kept on the mask tensor, so the layer pairs of a step, which share their
    batch's mask, pay for the ``[B, K]`` passes once (a mask changed in place is prepared again)."""
    if mask is None:
        return None
    key = None if mask.is_inference() else (mask._version, k)  # inference tensors have no version counter
    cached = getattr(mask, "_cktf_shared_mask", None)
    if key is not None and cached is not None and cached[0] == key:
        return cached[1]
    counts = mask.sum(1).to(torch.float32)
    row_weights = k / counts.clamp(min=1)
    prepared = SharedMask(torch.where(mask.t().contiguous(), 0.0, -math.inf), row_weights,
                          torch.dot(row_weights, counts))
    if key is not None:
        mask._cktf_shared_mask = (key, prepared)
    return prepared


class SharedNegativeNCE(torch.autograd.Function):
    """The negative half of the NCE loss against K negatives shared by the batch, fused into one function.

    With ``S = anchors @ negativesᵀ``, ``t = exp(S / tau) / (Z·c)`` and weights ``w_bk = valid_bk · K / K_b`` (no mask:
    all 1), returns ``Σ_bk w_bk · log(1 + t_bk + eps/c)``, i.e. ``-Σ w log(c / (P_bk + c + eps))``, ``P = exp(S/tau)/Z``,
    computed as ``Σ w · softplus(x) + log(1 + eps/c) · Σ w`` with ``x = S/tau − log(Z·c·(1 + eps/c))`` (the same
    value: ``1 + e + t = (1 + e)(1 + t/(1 + e))``). The scores are laid out ``[K, B]`` (``negatives @ anchorsᵀ``, the
    faster product on CPU when B ≪ K) and written onto ``−shift``, or ``−inf`` where a negative is masked, so that
    softplus and its derivative sigmoid are 0 there and the mask costs no pass of its own; the row weights ``K / K_b``
    scale the ``[B]`` sums and the ``[B, D]`` gradient. Forward: one product, the sigmoid in place over ``x`` while it
    is still in cache, softplus as ``−log(1 − sigmoid)`` and one column sum; backward: one
    ``[D, K] × [K, B]`` product. Only ``sigmoid(x)`` (``[K, B]``) is kept for the backward pass. bfloat16
    ``negatives`` (see :func:`product_dtypes`) are multiplied in bfloat16, the anchors and the gradient rounded to it;
    everything elementwise stays float32.
    """

    @staticmethod
    def forward(ctx: Any, anchors: torch.Tensor, negatives: torch.Tensor, mask: Optional[SharedMask],
                log_zc: float, temperature: float, eps_c: float,
                gradient_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        shift = log_zc + math.log1p(eps_c)
        if mask is None:
            base = anchors.new_full((negatives.shape[0], anchors.shape[0]), -shift, dtype=torch.float32)
        else:
            base = torch.sub(mask.bias, shift)
        if negatives.dtype == anchors.dtype:
            x = base.addmm_(negatives, anchors.t(), alpha=1.0 / temperature)
        else:  # out of place: a float32 result read from the low-precision product in one pass
            x = torch.add(base, torch.mm(negatives, anchors.to(negatives.dtype).t()), alpha=1.0 / temperature)
        # d/dS log(1 + t + eps/c) = sigmoid(x) / tau (0 where masked), taken now while x is in cache; on a CPU,
        # softplus(x) = −log(1 − sigmoid(x)) then costs one pass less than softplus itself, exact to float32 rounding
        # while 1 − sigmoid(x) is not small (x ≤ 4; beyond, softplus itself; no such check, a sync, on an accelerator)
        if x.device.type == "cpu" and float(x.amax()) <= 4.0:
            g = torch.sigmoid_(x)
            sums = torch.neg(g).log1p_().sum(0).neg_()
        else:
            sums = F.softplus(x).sum(0)
            g = torch.sigmoid_(x)
        if mask is None:
            value = sums.sum() + math.log1p(eps_c) * x.numel()
        else:
            value = torch.dot(sums, mask.row_weights) + math.log1p(eps_c) * mask.total_weight
        g = g if ctx.needs_input_grad[0] else None
        ctx.save_for_backward(g, negatives, None if mask is None else mask.row_weights)
        ctx.temperature, ctx.gradient_dtype = temperature, gradient_dtype or negatives.dtype
        return value

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Optional[torch.Tensor], None, None, None, None, None, None]:
        g, negatives, row_weights = ctx.saved_tensors
        # the row weights scale the [B, D] result
        # (negativesᵀ · g)ᵀ: the [D, B] product of the [K, B] layout, faster on CPU than g's transpose times negatives
        dtype = ctx.gradient_dtype
        grad_anchors = torch.mm(negatives.to(dtype).t(), g.to(dtype)).t().float() if dtype != g.dtype \
            else torch.mm(negatives.t(), g).t()
        scale = grad / ctx.temperature
        return grad_anchors.mul_(scale if row_weights is None else (row_weights * scale).unsqueeze(1)), \
            None, None, None, None, None, None


# precision of the shared negatives' products (see product_dtypes)
BANK_PRODUCTS = ("float32", "bfloat16-gradient", "bfloat16")


def product_dtypes(products: str, device: torch.device) -> tuple[torch.dtype, torch.dtype]:
    """The dtypes of the shared-negative products, ``(scores, gradient)``: float32 for ``"float32"`` (bank rows of any
    storage read back to float32); bfloat16 for the gradient's product alone (``"bfloat16-gradient"``) or for both
    (``"bfloat16"``) on a device that multiplies bfloat16 natively (a CPU with AVX512-BF16 or AMX, a CUDA GPU that
    supports it), else float32."""
    if products not in BANK_PRODUCTS:
        raise ValueError(f"products must be one of {BANK_PRODUCTS}, got {products!r}.")
    low = torch.bfloat16 if products != "float32" and _multiplies_bfloat16(device) else torch.float32
    return (low if products == "bfloat16" else torch.float32), low


def _multiplies_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` multiplies bfloat16 natively."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return False
    return torch.float32


def shared_nce_loss(
    anchors: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor,
    mask: Optional[SharedMask],
    z: float,
    num_samples: int,
    temperature: float,
    eps: float = 1e-7,
    gradient_dtype: Optional[torch.dtype] = None,
) -> torch.Tensor:
    """CRD's NCE loss (:func:`nce_loss`) with K negatives shared by the batch: ``positives`` ``[B, D]`` are the bank
    rows of the anchors' own indices, ``negatives`` ``[K, D]`` the shared bank rows, ``mask`` from :func:`shared_mask`
    (the negatives valid for each anchor, e.g. of another class) or None; ``gradient_dtype``: the dtype of the
    gradient's ``[D, K] × [K, B]`` product (default: the negatives').

    ``c = K/N`` as in the reference. An anchor with ``K_b`` valid negatives has its negative sum scaled by ``K / K_b``:
    the valid draws are i.i.d. from that anchor's noise distribution, so the scaled sum estimates the same
    ``K·E_noise[log(1 − h)]`` as the reference's K per-sample draws (unscaled when nothing is masked).
    """
    batch_size, k = anchors.shape[0], negatives.shape[0]
    c = k / num_samples
    positive = torch.exp((anchors * positives).sum(1) / temperature) / z
    log_d1 = torch.log(positive / (positive + c + eps))
    noise = SharedNegativeNCE.apply(anchors, negatives, mask, math.log(z * c), temperature, eps / c, gradient_dtype)
    return -(log_d1.sum() - noise) / batch_size


class BankScores(torch.autograd.Function):
    """``scores[b, k] = <memory[idx[b, k]], anchors[b]>`` with a gradient for ``anchors`` only.

    Forward: one dense product ``anchors @ memoryᵀ`` (``[B, N]``) and a gather, while the bank is at most 64 times
    wider than the ``K+1`` columns needed (a GEMM is far faster per dot product than a row gather); else the
    reference's gather of ``[B, K+1, D]`` rows. Backward: ``embedding_bag`` sums the K+1 bank rows of each sample
    weighted by the incoming gradient, reading each row once instead of materialising them.
    """

    @staticmethod
    def forward(ctx: Any, anchors: torch.Tensor, memory: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(memory, idx)  # saved, so an in-place bank update before backward raises
        if memory.shape[0] <= 64 * idx.shape[1]:
            return torch.gather(anchors @ memory.t(), 1, idx)
        rows = memory.index_select(0, idx.reshape(-1)).view(*idx.shape, memory.shape[1])
        return torch.bmm(rows, anchors.unsqueeze(2)).squeeze(2)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Optional[torch.Tensor], None, None]:
        memory, idx = ctx.saved_tensors
        grad_anchors = F.embedding_bag(idx, memory, per_sample_weights=grad.contiguous(), mode="sum")
        return grad_anchors, None, None


def _products(anchors: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
    """``anchors @ negativesᵀ`` in float32, multiplied in the negatives' dtype (see :func:`product_dtypes`)."""
    return torch.mm(anchors.to(negatives.dtype), negatives.t()).float()


def _shared_scores_exp(anchors: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor,
                       mask: Optional[torch.Tensor], temperature: float) -> torch.Tensor:
    """``exp(score / tau)`` of every positive and every valid shared negative, flattened (for ``Z``)."""
    e_neg = torch.exp(_products(anchors, negatives) / temperature)
    e_neg = e_neg.reshape(-1) if mask is None else e_neg[mask]
    return torch.cat([torch.exp((anchors * positives).sum(1) / temperature), e_neg])


BANK_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
ROW_ORDERS = ("dataset", "shuffled")  # a bank's row r holds dataset index r, or bank_row_order(N)[r]
_ROW_ORDER_SEED = 0


def bank_row_order(num_samples: int) -> torch.Tensor:
    """The fixed shuffle of the ``num_samples`` dataset indices in which a bank with ``row_order="shuffled"`` keeps its
    rows (row r holds dataset index ``order[r]``). The shared sampler (:class:`cktf_hf.data.NegativeSampler`) draws
    its K negatives as consecutive entries of this order, so such a bank reads them as one slice of its rows instead
    of K scattered ones; the shuffle keeps a window a uniform draw whatever order the dataset is in (e.g. by class)."""
    return torch.randperm(num_samples, generator=torch.Generator().manual_seed(_ROW_ORDER_SEED))
POSITIVES = ("bank", "current")
BANK_WARM_STARTS = ("none", "skip_unwritten")
BANK_LOSSES = ("nce", "infonce")
NEGATIVE_MODES = ("memory_bank", "in_batch")
NEGATIVE_SAMPLING = ("per_sample", "shared")  # memory-bank negatives drawn per sample or once per batch


def bank_infonce(logits: torch.Tensor, valid: Optional[torch.Tensor] = None) -> torch.Tensor:
    """MoCo's loss over bank negatives: ``mean_b(logsumexp_k logits[b] − logits[b, 0])`` with column 0 the positive
    and ``valid`` ``[B, K]`` (True = a negative that counts) masking the other columns."""
    if valid is not None:
        logits = torch.cat([logits[:, :1], logits[:, 1:].masked_fill(~valid, float("-inf"))], 1)
    return (torch.logsumexp(logits, 1) - logits[:, 0]).mean()


@register_objective("crd")
class MemoryBankNCELoss(nn.Module):
    """CRD / CKTF contrastive loss with two momentum memory banks (Tian et al., "Contrastive Representation
    Distillation", ICLR 2020; used per layer pair by Zhao et al., "A Contrastive Knowledge Transfer Framework for
    Model Compression and Transfer Learning", ICASSP 2023).

    With banks ``M_s, M_t ∈ R^{N×D}`` and ``idx = contrast_idx`` (``[B, K+1]``, column 0 the sample's own index):

    - student-anchored scores ``e_s[b,k] = exp(<M_t[idx[b,k]], v_s[b]> / tau)``, teacher-anchored
      ``e_t[b,k] = exp(<M_s[idx[b,k]], v_t[b]> / tau)``; the positive is read from the bank, like the reference;
    - ``Z_s = N·mean(e_s)``, ``Z_t = N·mean(e_t)`` on the first call only, then frozen;
    - ``loss = nce(e_s / Z_s) + nce(e_t / Z_t)`` (see :func:`nce_loss`), the two directions summed;
    - afterwards, under no grad: ``M_s[index] ← normalize(m·M_s[index] + (1−m)·v_s)``, the same for ``M_t``.

    The scores are the same dot products as the reference's, computed by :class:`BankScores` without materialising
    the ``[B, K+1, D]`` bank rows or their gradient.

    Shared negatives (``contrast_idx`` of shape ``[K]``, the same K indices for every anchor, with an optional
    ``contrast_mask`` ``[B, K]`` of the valid ones): the positives are the anchors' own rows, the negatives one
    ``[B, D] × [D, K]`` product per direction (:func:`shared_nce_loss`), so the cost follows K, not N; ``Z`` is fixed
    from the first call's positive and valid negative scores. With ``row_order="shuffled"`` the banks keep their rows in
    the fixed shuffle :func:`bank_row_order` (``row_of`` maps a dataset index to its row; a saved bank is read back in
    whichever order it was saved), so that the shared sampler's negatives, consecutive entries of that shuffle, are
    one slice of each bank instead of K scattered rows; the values are the same as with rows in dataset order
    (``row_order="dataset"``, the reference). ``bank_dtype`` (bfloat16 or float16) stores the banks
    in half the memory; rows are read back into float32 for every product and update (per-sample mode converts the
    whole bank each call). ``products`` (the trainer's setting ``bank_products``) sets the precision of the shared
    negatives' products (:func:`product_dtypes`): ``"float32"`` (the default, whatever the banks' storage);
    ``"bfloat16-gradient"``, the gradient's product in bfloat16 where the device multiplies it natively (the scores
    and the loss stay float32); ``"bfloat16"``, the scores' product too (the scores rounded to bfloat16). Everything
    elementwise stays float32. The backward pass
    reads the banks, so the momentum update of a call is applied at the start of the next call (or by :meth:`flush`,
    which ``state_dict()`` runs first): every call still sees every earlier update, as in the reference. Under
    torch.distributed the update gathers ``(index, v_s, v_t)`` from every rank, so every rank's banks stay identical.

    Three options depart from the reference (all off by default):

    - ``positive="current"`` (MoCo-style): the positive score of the student-anchored direction is
      ``<v_s, v_t>`` with ``v_t`` the teacher's current embedding, and of the teacher-anchored one ``<v_t, v_s>``;
      bank rows serve only as negatives. The other side is detached, so each direction still gives gradient to its
      anchor only, as the bank positive does in the reference.
    - ``bank_warm_start="skip_unwritten"``: a ``filled`` buffer (saved in the state) marks the bank rows written
      at least once; never-written rows (uniform noise from the initialisation) are left out of the negatives, with
      the ``K / K_b`` rescaling of :func:`shared_nce_loss` (so at step 1 only the positive term remains), and an
      anchor whose own row is unwritten takes the current-embedding positive. ``Z`` is fixed from the first call's
      positive and valid negative scores.
    - ``loss="infonce"`` (MoCo's loss): per direction, a softmax cross-entropy of the positive against the K bank
      negatives, ``logsumexp(scores / tau) − positive / tau`` (:func:`bank_infonce`), instead of CRD's binary NCE
      with a fixed normaliser ``Z``; masked negatives are left out.
    """

    def __init__(
        self,
        num_samples: int,
        feat_dim: int = 128,
        nce_k: int = 16384,
        temperature: float = 0.1,
        momentum: float = 0.5,
        eps: float = 1e-7,
        bank_dtype: torch.dtype = torch.float32,
        positive: str = "bank",
        bank_warm_start: str = "none",
        loss: str = "nce",
        row_order: str = "dataset",
        products: str = "float32",
    ) -> None:
        super().__init__()
        product_dtypes(products, torch.device("cpu"))  # an unknown choice fails here, not at the first step
        if row_order not in ROW_ORDERS:
            raise ValueError(f"row_order must be one of {ROW_ORDERS}, got {row_order!r}.")
        if loss not in BANK_LOSSES:
            raise ValueError(f"loss must be one of {BANK_LOSSES}, got {loss!r}.")
        if positive not in POSITIVES:
            raise ValueError(f"positive must be one of {POSITIVES}, got {positive!r}.")
        if bank_warm_start not in BANK_WARM_STARTS:
            raise ValueError(f"bank_warm_start must be one of {BANK_WARM_STARTS}, got {bank_warm_start!r}.")
        if bank_dtype not in BANK_DTYPES.values():
            raise ValueError(f"bank_dtype must be one of {list(BANK_DTYPES)}, got {bank_dtype}.")
        if num_samples < 2:
            raise ValueError(f"The memory bank needs the dataset size (num_samples >= 2), got {num_samples}.")
        self.num_samples, self.feat_dim, self.nce_k = num_samples, feat_dim, nce_k
        self.temperature, self.momentum, self.eps = temperature, momentum, eps
        self.positive, self.bank_warm_start, self.loss, self.products = positive, bank_warm_start, loss, products
        stdv = 1.0 / math.sqrt(feat_dim / 3)
        order = bank_row_order(num_samples) if row_order == "shuffled" else None
        # row_of[i]: the bank row of dataset index i (saved: a checkpoint's rows are read in the order they were kept)
        self.row_of: Optional[torch.Tensor]
        self.register_buffer("row_of", None if order is None else torch.argsort(order))
        self.register_buffer("_order", order, persistent=False)
        for name in ("memory_student", "memory_teacher"):
            if order is None:
                bank = torch.rand(num_samples, feat_dim).mul_(2 * stdv).add_(-stdv)
                bank = bank if bank_dtype == torch.float32 else bank.to(bank_dtype)
            else:  # the same draws, index by index, written in blocks to their rows (no second bank-sized copy)
                bank = torch.empty(num_samples, feat_dim, dtype=bank_dtype)
                for start in range(0, num_samples, 4096):
                    block = torch.rand(min(4096, num_samples - start), feat_dim).mul_(2 * stdv).add_(-stdv)
                    bank.index_copy_(0, self.row_of[start:start + block.shape[0]], block.to(bank_dtype))
            self.register_buffer(name, bank)
        # Normalising constants, -1 until the first call fixes them.
        self.register_buffer("z_student", torch.tensor(-1.0, dtype=torch.float64))
        self.register_buffer("z_teacher", torch.tensor(-1.0, dtype=torch.float64))
        if bank_warm_start == "skip_unwritten":  # registered only then: the reference's state is unchanged
            self.register_buffer("filled", torch.zeros(num_samples, dtype=torch.bool))
        self._pending: Optional[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = None
        self.register_state_dict_pre_hook(lambda module, prefix, keep_vars: module.flush())
        self.register_load_state_dict_pre_hook(self._drop_pending)
        self.register_load_state_dict_pre_hook(self._adopt_row_order)

    def _rows(self, index: torch.Tensor) -> torch.Tensor:
        """The bank rows of dataset indices ``index``."""
        return index if self.row_of is None else self.row_of.index_select(0, index.reshape(-1)).view_as(index)

    def bank_entries(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The student and the teacher bank entries of dataset indices ``index`` (pending updates applied), whatever
        order the rows are kept in."""
        self.flush()
        rows = self._rows(index)
        return self.memory_student.index_select(0, rows), self.memory_teacher.index_select(0, rows)

    def _window(self, negatives: torch.Tensor) -> Optional[int]:
        """The first bank row of ``negatives`` when they are consecutive rows (wrapping round), as the shared
        sampler draws them for a shuffled bank; else None. On an accelerator, where a gather is cheap and the check
        would wait for the device, always None. Checked once per negatives tensor: the result is kept on it, so the
        banks of a step, which share their batch's negatives (and the row order of ``bank_row_order``), check once."""
        if self.row_of is None or negatives.numel() > self.num_samples or negatives.device.type != "cpu":
            return None
        key = None if negatives.is_inference() else (negatives._version, self.num_samples)
        cached = getattr(negatives, "_cktf_window", None)
        if key is not None and cached is not None and cached[0] == key:
            return cached[1]
        rows = self._rows(negatives)
        start = int(rows[0])
        expected = torch.arange(start, start + rows.numel(), device=rows.device).remainder_(self.num_samples)
        window = start if torch.equal(rows, expected) else None
        if key is not None:
            negatives._cktf_window = (key, window)
        return window

    def _negative_rows(self, memory: torch.Tensor, negatives: torch.Tensor, window: Optional[int]) -> torch.Tensor:
        """The bank rows of shared ``negatives``: a slice of ``memory`` for a window of its rows (two pieces joined
        when it wraps round), else a row gather."""
        if window is None:
            return memory.index_select(0, self._rows(negatives))
        end = window + negatives.numel()
        if end <= self.num_samples:
            return memory[window:end]
        return torch.cat([memory[window:], memory[:end - self.num_samples]])

    def _adopt_row_order(self, module: nn.Module, state_dict: dict, prefix: str, *args: object,
                         **kwargs: object) -> None:
        """Read a saved bank in this module's row order, whichever order it was saved in (its ``row_of``, or none:
        dataset order)."""
        saved = state_dict.pop(prefix + "row_of", None)
        if self.row_of is not None:
            state_dict[prefix + "row_of"] = self.row_of
        for name in ("memory_student", "memory_teacher"):
            bank = state_dict.get(prefix + name)
            if bank is None or bank.shape[0] != self.num_samples or (saved is None and self._order is None):
                continue  # nothing to reorder, or a size the load will report
            if saved is not None:
                if saved.shape != (self.num_samples,):
                    raise ValueError(f"A saved memory bank's row order has {saved.numel()} entries, its bank "
                                     f"{bank.shape[0]} rows.")
                bank = bank.index_select(0, saved.to(bank.device))  # dataset order
            if self._order is not None:
                bank = bank.index_select(0, self._order.to(bank.device))  # this module's order
            state_dict[prefix + name] = bank

    def _scores(self, anchors: torch.Tensor, memory: torch.Tensor, contrast_idx: torch.Tensor) -> torch.Tensor:
        """``<memory[contrast_idx[b, k]], anchors[b]>`` for every b, k, as ``[B, K+1]``."""
        return BankScores.apply(anchors, memory, contrast_idx)

    def forward(
        self,
        v_s: torch.Tensor,
        v_t: torch.Tensor,
        index: torch.Tensor,
        contrast_idx: torch.Tensor,
        contrast_mask: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """``contrast_idx``: ``[B, K+1]`` per-sample indices (column 0 the anchor's own), or ``[K]`` negatives shared
        by the batch with an optional ``contrast_mask`` ``[B, K]`` (True = valid negative for that anchor)."""
        self.flush()
        with torch.autocast(device_type=v_s.device.type, enabled=False):
            v_s, v_t = v_s.float(), v_t.float()
            if contrast_idx.dim() == 1:
                loss = self._shared_loss(v_s, v_t, index, contrast_idx, contrast_mask)
            else:
                loss = self._per_sample_loss(v_s, v_t, index, contrast_idx)
        with torch.no_grad():
            self._pending = (all_gather_no_grad(index), all_gather_no_grad(v_s.detach()), all_gather_no_grad(v_t.detach()))
        return loss

    def _current_positive(self, index: torch.Tensor) -> Optional[torch.Tensor]:
        """``[B]`` True where the positive is read from the other side's current embedding, or None (bank rows)."""
        if self.positive == "current":
            return torch.ones_like(index, dtype=torch.bool)
        if self.bank_warm_start == "skip_unwritten":
            return ~self.filled.index_select(0, index)
        return None

    def _per_sample_loss(self, v_s: torch.Tensor, v_t: torch.Tensor, index: torch.Tensor,
                         contrast_idx: torch.Tensor) -> torch.Tensor:
        """The reference: K negatives per sample, scored through :class:`BankScores`."""
        memory_s, memory_t = self.memory_student.detach().float(), self.memory_teacher.detach().float()
        rows = self._rows(contrast_idx)
        s_s = self._scores(v_s, memory_t, rows)
        s_t = self._scores(v_t, memory_s, rows)
        current = self._current_positive(index)
        if current is not None:  # column 0 from the other side's current (detached) embedding
            s_s = torch.cat([torch.where(current, (v_s * v_t.detach()).sum(1), s_s[:, 0]).unsqueeze(1), s_s[:, 1:]], 1)
            s_t = torch.cat([torch.where(current, (v_t * v_s.detach()).sum(1), s_t[:, 0]).unsqueeze(1), s_t[:, 1:]], 1)
        valid = None
        if self.bank_warm_start == "skip_unwritten":
            valid = self.filled.index_select(0, contrast_idx[:, 1:].reshape(-1)).view(contrast_idx.shape[0], -1)
        if self.loss == "infonce":
            return bank_infonce(s_s / self.temperature, valid) + bank_infonce(s_t / self.temperature, valid)
        e_s, e_t = torch.exp(s_s / self.temperature), torch.exp(s_t / self.temperature)
        if valid is None:
            if self.z_student < 0:
                self._fix_normalisers(e_s, e_t)
            loss = nce_loss(e_s / self.z_student.float(), self.num_samples, self.eps)
            return loss + nce_loss(e_t / self.z_teacher.float(), self.num_samples, self.eps)
        if self.z_student < 0:
            keep = torch.cat([torch.ones_like(valid[:, :1]), valid], 1)
            self._fix_normalisers(e_s[keep], e_t[keep])
        loss = masked_nce_loss(e_s / self.z_student.float(), valid, self.num_samples, self.eps)
        return loss + masked_nce_loss(e_t / self.z_teacher.float(), valid, self.num_samples, self.eps)

    def _shared_loss(self, v_s: torch.Tensor, v_t: torch.Tensor, index: torch.Tensor, negatives: torch.Tensor,
                     mask: Optional[torch.Tensor]) -> torch.Tensor:
        """K negatives shared by the batch: ``[B, D] × [D, K]`` per direction (see :func:`shared_nce_loss`)."""
        memory_s, memory_t = self.memory_student.detach(), self.memory_teacher.detach()
        # the shared rows' dtypes in the [B, D] × [D, K] products of the scores and of their gradient
        products, gradient_dtype = product_dtypes(self.products, v_s.device)
        # the negatives: one slice per bank when they are a window of a shuffled bank's rows, else one row gather
        # (index_select: ten times faster on CPU than advanced indexing, ``memory[rows]``)
        own, window = self._rows(index), self._window(negatives)
        pos_t, pos_s = memory_t.index_select(0, own).float(), memory_s.index_select(0, own).float()
        neg_t = self._negative_rows(memory_t, negatives, window).to(products)
        neg_s = self._negative_rows(memory_s, negatives, window).to(products)
        current = self._current_positive(index)
        if current is not None:
            pos_t = torch.where(current.unsqueeze(1), v_t.detach(), pos_t)
            pos_s = torch.where(current.unsqueeze(1), v_s.detach(), pos_s)
        if self.bank_warm_start == "skip_unwritten":
            written = self.filled.index_select(0, negatives).unsqueeze(0).expand(v_s.shape[0], -1)
            mask = written if mask is None else mask & written
        if self.loss == "infonce":
            return sum(bank_infonce(torch.cat([(anchor * pos).sum(1, keepdim=True), _products(anchor, neg)], 1)
                                    / self.temperature, mask)
                       for anchor, pos, neg in ((v_s, pos_t, neg_t), (v_t, pos_s, neg_s)))
        if self.z_student < 0:
            with torch.no_grad():
                self._fix_normalisers(*(
                    _shared_scores_exp(anchor, pos, neg, mask, self.temperature)
                    for anchor, pos, neg in ((v_s, pos_t, neg_t), (v_t, pos_s, neg_s))
                ))
        valid = shared_mask(mask, negatives.shape[0])  # shared by both directions
        loss = shared_nce_loss(v_s, pos_t, neg_t, valid, self.z_student.item(), self.num_samples, self.temperature,
                               self.eps, gradient_dtype)
        return loss + shared_nce_loss(v_t, pos_s, neg_s, valid, self.z_teacher.item(), self.num_samples,
                                      self.temperature, self.eps, gradient_dtype)

    @torch.no_grad()
    def _fix_normalisers(self, e_s: torch.Tensor, e_t: torch.Tensor) -> None:
        means = torch.stack([e_s.mean(), e_t.mean()]).double()
        if _distributed():  # every rank fixes the same Z: the mean over all ranks' first batches
            dist.all_reduce(means)
            means /= dist.get_world_size()
        self.z_student.fill_(means[0].item() * self.num_samples)
        self.z_teacher.fill_(means[1].item() * self.num_samples)

    @torch.no_grad()
    def flush(self) -> None:
        """Apply the pending momentum update: ``M[index] ← normalize(m·M[index] + (1−m)·v)`` for both banks."""
        if self._pending is None:
            return
        index, v_s, v_t = self._pending
        self._pending = None
        rows = self._rows(index)
        for memory, v in ((self.memory_student, v_s), (self.memory_teacher, v_t)):
            updated = F.normalize(memory.index_select(0, rows).float() * self.momentum + v * (1 - self.momentum),
                                  dim=1)
            memory.index_copy_(0, rows, updated.to(memory.dtype))
        if self.bank_warm_start == "skip_unwritten":
            self.filled[index] = True

    def _drop_pending(self, *args: object, **kwargs: object) -> None:
        self._pending = None  # a loaded state replaces everything, updates included


@register_objective("infonce")
class InBatchInfoNCELoss(nn.Module):
    """Symmetric in-batch InfoNCE (Oord et al. 2018; CLIP's form, Radford et al. 2021) on one layer pair.

    ``S = v_s · v_tᵀ / tau`` over the batch (gathered from every rank when torch.distributed is running; gradients
    flow to this rank's rows), ``loss = ½·[CE(S, diag) + CE(Sᵀ, diag)]``. No memory bank, indices or Z: a cheaper,
    DDP-friendly deviation from the reference's bank NCE.
    """

    def __init__(self, temperature: float = 0.1) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, v_s: torch.Tensor, v_t: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=v_s.device.type, enabled=False):
            v_s, v_t = v_s.float(), v_t.float()
            return _anchored_cross_entropy(_cross_scores(v_s.unsqueeze(0), v_t.unsqueeze(0), self.temperature))


class SpatialInfoNCELoss(nn.Module):
    """In-batch InfoNCE per spatial cell, for intermediate pairs whose maps are kept (``spatial_contrast``).

    Inputs are L2-normalised cell embeddings ``[B, L, D]`` of both sides on the same ``L``-cell grid. Two symmetric
    InfoNCE terms, averaged: **across samples**, each cell's positive is the other side's same cell of the same sample
    against that cell of every other sample in the (all-gathered) batch, a per-cell :class:`InBatchInfoNCELoss`; and
    **across cells**, against the other cells of the same sample (left out when ``L = 1``, where the loss equals
    :class:`InBatchInfoNCELoss`). Cost ``B·L·(B + L)·D`` per direction, where contrasting every cell of the batch with
    every other would cost ``(B·L)²·D``.
    """

    def __init__(self, temperature: float = 0.1) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, e_s: torch.Tensor, e_t: torch.Tensor) -> torch.Tensor:
        if e_s.dim() != 3 or e_s.shape != e_t.shape:
            raise ValueError(f"Cell embeddings must both be [B, L, D] of one shape, got {list(e_s.shape)} and "
                             f"{list(e_t.shape)}.")
        with torch.autocast(device_type=e_s.device.type, enabled=False):
            e_s, e_t = e_s.float(), e_t.float()
            cells = e_s.shape[1]
            # per cell: this rank's anchors of each side against that cell of every rank's other side
            across_samples = _anchored_cross_entropy(
                _cross_scores(e_s.transpose(0, 1), e_t.transpose(0, 1), self.temperature))
            if cells == 1:
                return across_samples
            within = torch.bmm(e_s, e_t.transpose(1, 2)).div_(self.temperature)  # [B, L_s, L_t]
            across_cells = 0.5 * (_diagonal_cross_entropy(within, -1) + _diagonal_cross_entropy(within, -2))
            return 0.5 * (across_samples + across_cells)


def _cross_scores(anchors_s: torch.Tensor, anchors_t: torch.Tensor,
                  temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores of ``[G, B, D]`` embeddings (G groups, e.g. cells) against every rank's other side (dim 1 gathered):
    the student-anchored ``s_g · all_t_gᵀ / tau`` and the teacher-anchored ``t_g · all_s_gᵀ / tau``, each
    ``[G, B, B_all]``. On one process the teacher-anchored scores are the transpose of the student-anchored ones, so
    one product serves both directions."""
    if not _distributed():
        student_anchored = torch.matmul(anchors_s, anchors_t.transpose(1, 2)).div_(temperature)
        return student_anchored, student_anchored.transpose(1, 2)
    all_s = all_gather_with_grad(anchors_s.transpose(0, 1)).transpose(0, 1)
    all_t = all_gather_with_grad(anchors_t.transpose(0, 1)).transpose(0, 1)
    return (torch.matmul(anchors_s, all_t.transpose(1, 2)).div_(temperature),
            torch.matmul(anchors_t, all_s.transpose(1, 2)).div_(temperature))


def _anchored_cross_entropy(scores: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Mean of both directions' cross-entropies (:func:`_cross_scores`), each anchor's target its own sample at this
    rank's offset in the gathered batch."""
    offset = dist.get_rank() * scores[0].shape[-2] if _distributed() else 0
    return 0.5 * (_diagonal_cross_entropy(scores[0], -1, offset) + _diagonal_cross_entropy(scores[1], -1, offset))


def _diagonal_cross_entropy(scores: torch.Tensor, dim: int, offset: int = 0) -> torch.Tensor:
    """``mean(−log_softmax(scores, dim)[..., i, i + offset])``: the cross-entropy of every row (``dim=-1``) or column
    (``dim=-2``) of ``[..., R, C]`` scores whose target is its own position (column ``i + offset`` of row ``i``)."""
    return -scores.log_softmax(dim).diagonal(offset, -2, -1).mean()
