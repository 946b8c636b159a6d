"""Logit objectives newer than RepDistiller's zoo: Decoupled KD (DKD) and DIST.

Both read class logits ``[B, C]`` (``inputs = "logits"``) and compute in float32 with autocast disabled; teacher
logits are detached. DKD also needs the ground-truth labels (``needs_labels``) and warms its weight up over the
first epochs (``warmup``), both handled by :class:`~cktf_hf.objectives.CKTFObjective`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .classic import ClassicObjective, _float32
from .registry import register_objective

# mdistiller subtracts this from the target logit (after dividing by T) to drop it from the non-target softmax.
_MASK_LOGIT = 1000.0


def _check_logits(name: str, z_s: Tensor, z_t: Tensor) -> None:
    if z_s.dim() != 2 or z_s.shape != z_t.shape:
        raise ValueError(
            f"{name} compares class logits of equal shape [batch, classes]; got student {tuple(z_s.shape)} and "
            f"teacher {tuple(z_t.shape)}. The student needs the teacher's label space (num_labels, id2label)."
        )


@register_objective("dkd")
class DKDLoss(ClassicObjective):
    """Zhao, Cui, Song, Qiu & Liang, "Decoupled Knowledge Distillation", CVPR 2022.

    As ``dkd_loss`` in megvii-research/mdistiller, ``mdistiller/distillers/DKD.py``. With ``p = softmax(z / T)`` and
    ``g`` the label of each sample:

    - TCKD: ``KL(b_t ‖ b_s)`` on the binary distributions ``b = (p[g], Σ_{c≠g} p[c])``;
    - NCKD: ``KL(p̂_t ‖ p̂_s)`` on the non-target classes, ``p̂ = softmax(z / T − 1000·onehot(g))`` as in the code;
    - loss ``T² · (α · TCKD + β · NCKD)``, each KL summed over the batch and divided by ``B``.

    Defaults are mdistiller's (``mdistiller/engine/cfg.py``: ALPHA 1, BETA 8, T 4, WARMUP 20, CE_WEIGHT 1, the
    CIFAR-100 setting; some CIFAR pairs set BETA 6, the ImageNet configs BETA 0.5, T 1, WARMUP 1). ``DKD.forward_train``
    scales the loss by ``min(epoch / warmup, 1)``, ``epoch`` counted from 1: :meth:`weight_factor`, applied by
    :class:`~cktf_hf.objectives.CKTFObjective` to the term's weight.
    """

    inputs = "logits"
    needs_labels = True

    def __init__(self, alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0, warmup: float = 20.0) -> None:
        super().__init__()
        if alpha < 0 or beta < 0 or temperature <= 0 or warmup < 0:
            raise ValueError(
                f"DKD needs alpha, beta, warmup >= 0 and temperature > 0; got alpha={alpha}, beta={beta}, "
                f"temperature={temperature}, warmup={warmup}."
            )
        self.alpha, self.beta, self.temperature, self.warmup = alpha, beta, temperature, warmup

    def forward(self, z_s: Tensor, z_t: Tensor, labels: Tensor) -> Tensor:
        _check_logits("DKD", z_s, z_t)
        if labels.shape != z_s.shape[:1]:
            raise ValueError(f"DKD needs one label per sample, shape ({z_s.shape[0]},); got {tuple(labels.shape)}.")
        t = self.temperature
        with _float32(z_s):
            z_s, z_t = z_s.float() / t, z_t.detach().float() / t
            gt_mask = F.one_hot(labels.long(), z_s.shape[1]).to(torch.bool)
            p_s, p_t = z_s.softmax(dim=1), z_t.softmax(dim=1)
            b_s = torch.stack([p_s[gt_mask], p_s.masked_fill(gt_mask, 0.0).sum(dim=1)], dim=1)
            b_t = torch.stack([p_t[gt_mask], p_t.masked_fill(gt_mask, 0.0).sum(dim=1)], dim=1)
            tckd = F.kl_div(b_s.log(), b_t, reduction="sum") / z_s.shape[0]
            mask = _MASK_LOGIT * gt_mask.float()
            log_q_s = F.log_softmax(z_s - mask, dim=1)
            q_t = F.softmax(z_t - mask, dim=1)
            nckd = F.kl_div(log_q_s, q_t, reduction="sum") / z_s.shape[0]
            return t**2 * (self.alpha * tckd + self.beta * nckd)


@register_objective("dist")
class DISTLoss(ClassicObjective):
    """Huang, You, Wang, Qian & Xu, "Knowledge Distillation from A Stronger Teacher", NeurIPS 2022.

    As class ``DIST`` in hunto/image_classification_sota, ``lib/models/losses/dist_kd.py`` (the file the official
    hunto/DIST_KD repository names as DIST's loss). With ``y = softmax(z / τ)`` and ``ρ`` the Pearson correlation,
    computed as the cosine of the mean-centred vectors with ``eps = 1e-8`` added to the product of norms:

    - inter-class relation ``1 − mean_b ρ(y_s[b, :], y_t[b, :])`` (each sample's row across classes);
    - intra-class relation ``1 − mean_c ρ(y_s[:, c], y_t[:, c])`` (each class's column across the batch);
    - loss ``τ² · (β · inter + γ · intra)``.

    Defaults β = γ = 1 (the class's) and τ = 4: the CIFAR-100 config
    (``configs/strategies/distill/dist_cifar.yaml``, ``kd: dist_t4``). The authors weight the term by
    ``kd_loss_weight: 2`` on CIFAR-100 and ImageNet (``resnet_dist.yaml``, τ = 1) beside cross-entropy weight 1:
    the preset's weight. A batch of one sample has no intra-class correlation (that term is then 1, constant).
    """

    inputs = "logits"

    def __init__(self, beta: float = 1.0, gamma: float = 1.0, tau: float = 4.0, eps: float = 1e-8) -> None:
        super().__init__()
        if beta < 0 or gamma < 0 or tau <= 0:
            raise ValueError(f"DIST needs beta, gamma >= 0 and tau > 0; got beta={beta}, gamma={gamma}, tau={tau}.")
        self.beta, self.gamma, self.tau, self.eps = beta, gamma, tau, eps

    def relation_loss(self, y_s: Tensor, y_t: Tensor) -> Tensor:
        """``1 − mean_i ρ(y_s[i], y_t[i])`` over the rows of ``[N, D]`` tensors."""
        a = y_s - y_s.mean(dim=1, keepdim=True)
        b = y_t - y_t.mean(dim=1, keepdim=True)
        correlation = (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1) + self.eps)
        return 1.0 - correlation.mean()

    def forward(self, z_s: Tensor, z_t: Tensor) -> Tensor:
        _check_logits("DIST", z_s, z_t)
        with _float32(z_s):
            y_s = (z_s.float() / self.tau).softmax(dim=1)
            y_t = (z_t.detach().float() / self.tau).softmax(dim=1)
            inter = self.relation_loss(y_s, y_t)
            intra = self.relation_loss(y_s.T, y_t.T)
            return self.tau**2 * (self.beta * inter + self.gamma * intra)
