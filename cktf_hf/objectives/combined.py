"""The framework's combined objective over every layer pair, with its projectors and memory banks."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..projectors import Normalize, Projector
from .contrastive import BANK_DTYPES, InBatchInfoNCELoss, MemoryBankNCELoss, SpatialInfoNCELoss
from .registry import INPUTS_WITHOUT_PAIR_MAPS, get_objective
from .settings import BY_FAMILY_PAIRING, FINAL, ObjectiveSettings, automatic_pairing


@dataclass(frozen=True)
class PairShape:
    """Per-sample shapes of one layer pair: pooled dims (for the projectors) and maps (for classic map losses)."""

    name: str
    student_dim: int
    teacher_dim: int
    student_map: Optional[tuple[int, int, int]] = None
    teacher_map: Optional[tuple[int, int, int]] = None
    is_stem: bool = False

    @property
    def is_final(self) -> bool:
        return self.name == FINAL


@dataclass
class PairFeatures:
    """One side's inputs: logits, pooled vectors per pair name, and spatial maps of the intermediate pairs; on the
    student side also its stage hidden states as they are (``stages``, read by terms with ``inputs="student_stages"``,
    e.g. OFA's branches)."""

    logits: torch.Tensor
    pooled: dict[str, torch.Tensor]
    maps: dict[str, torch.Tensor] = field(default_factory=dict)
    stages: list[torch.Tensor] = field(default_factory=list)

    def float(self) -> "PairFeatures":
        """A float32 copy (a no-op for float32 tensors)."""
        return PairFeatures(
            self.logits.float(),
            {k: v.float() for k, v in self.pooled.items()},
            {k: v.float() for k, v in self.maps.items()},
            [v.float() for v in self.stages],
        )


@dataclass(frozen=True)
class StudentStages:
    """The student's stage hidden states that terms with ``inputs="student_stages"`` read (OFA's branches): their
    hidden-state ``indices``, per-sample ``shapes`` (``(C, H, W)`` maps or ``(prefix + P, D)`` tokens), the tokens'
    ``prefix_tokens`` and the teacher's ``num_classes``."""

    indices: tuple[int, ...]
    shapes: tuple[tuple[int, ...], ...]
    prefix_tokens: int
    num_classes: int


@dataclass
class ObjectiveOutput:
    loss: torch.Tensor
    components: dict[str, torch.Tensor]


@dataclass
class TermInputs:
    """What one step gives the terms: both sides' features (float32) and the batch's labels and bank indices."""

    student: PairFeatures
    teacher: PairFeatures
    labels: Optional[torch.Tensor] = None
    index: Optional[torch.Tensor] = None
    contrast_idx: Optional[torch.Tensor] = None
    contrast_mask: Optional[torch.Tensor] = None


@dataclass(frozen=True)
class Term:
    """One weighted term of the objective, logged under ``name``: ``kind`` ("ce", "kd", "contrastive" or
    "classic") says how its weight and inputs are found, ``key`` is its pair or classic objective."""

    name: str
    kind: str
    key: str
    module: nn.Module


class CKTFObjective(nn.Module):
    """``γ·CE + α·KD + β·C(final) + θ·Σ_m C(pair m) + Σ_X w_X·L_X`` (Zhao et al., ICASSP 2023).

    ``C`` is :class:`MemoryBankNCELoss` (``negatives="memory_bank"``, the reference) or
    :class:`InBatchInfoNCELoss` (``"in_batch"``) on the projected pair embeddings; each pair has its own student and
    teacher projector (both trained) and, in bank mode, its own banks. Terms with zero weight are not built.
    Classic terms read: ``logits`` (KD, DKD, DIST), ``final`` pooled features (CC, RKD, PKT), the middle stage map
    (FitNets), the last stage map (SP) or every stage map but the stem (AT, VID, NST). Terms that need labels (DKD)
    receive them; terms with a warm-up (DKD) read the training progress given by :meth:`set_epoch`. Every knob
    comes from ``settings``; ``pairs`` are the shapes planned from its ``layer_pairs`` and ``num_samples`` is the
    training-set size, which the memory banks need (``settings.uses_memory_bank``).
    """

    def __init__(self, settings: ObjectiveSettings, pairs: Sequence[PairShape],
                 num_samples: Optional[int] = None, student_stages: Optional[StudentStages] = None) -> None:
        super().__init__()
        self.student_stages = student_stages  # what OFA's branches are built from (see StudentStages)
        if not any(pair.is_final for pair in pairs):
            raise ValueError("The pairs must include the 'final' pair (the classifier inputs).")
        self.settings, self.negatives = settings, settings.negatives
        self.pairs = {pair.name: pair for pair in pairs}
        self.pair_weights = {
            pair.name: settings.final_weight if pair.is_final else settings.layer_weight for pair in pairs
        }
        contrastive = [name for name, weight in self.pair_weights.items() if weight > 0]
        # The by-family pairing may plan no contrasted pair where the settings could have one.
        if (self.negatives == "memory_bank" and bool(contrastive)) != settings.uses_memory_bank and not (
                automatic_pairing(settings.layer_pairs) == BY_FAMILY_PAIRING and not contrastive):
            raise ValueError(
                f"The pairs {list(self.pairs)} were not planned from layer_pairs={settings.layer_pairs!r}: plan them "
                "with cktf_hf.pairing.plan_pairs(..., layer_pairs=settings.planned_layer_pairs), or set layer_pairs to "
                "them."
            )
        if settings.uses_memory_bank and not num_samples:
            raise ValueError(
                "negatives='memory_bank' needs the training-set size (num_samples) and dataset indices in every "
                "batch; pass num_samples, or use negatives='in_batch'."
            )
        self.cell_grids = self._cell_grids(contrastive) if settings.spatial_contrast else {}
        self.student_projectors = nn.ModuleDict()
        self.teacher_projectors = nn.ModuleDict()
        self.contrastive = nn.ModuleDict()
        for name in contrastive:
            pair = self.pairs[name]
            spatial = name in self.cell_grids
            s_dim, t_dim = (pair.student_map[0], pair.teacher_map[0]) if spatial else (pair.student_dim, pair.teacher_dim)
            trained = settings.teacher_projector == "trained"
            embed_dim = settings.feat_dim if trained else t_dim
            self.student_projectors[name] = Projector(s_dim, embed_dim, settings.projector)
            self.teacher_projectors[name] = (Projector(t_dim, settings.feat_dim, settings.projector) if trained
                                             else Normalize())
            if spatial:
                self.contrastive[name] = SpatialInfoNCELoss(settings.temperature)
            elif self.negatives == "memory_bank":
                self.contrastive[name] = MemoryBankNCELoss(
                    num_samples, embed_dim, settings.nce_k, settings.temperature, settings.nce_momentum,
                    bank_dtype=BANK_DTYPES[settings.bank_dtype], positive=settings.positive,
                    bank_warm_start=settings.bank_warm_start, loss=settings.bank_loss,
                    # shared negatives are drawn as a window of the shuffled row order: one slice per bank
                    row_order="shuffled" if settings.negative_sampling == "shared" else "dataset",
                    products=settings.bank_products)
            else:
                self.contrastive[name] = InBatchInfoNCELoss(settings.temperature)
        self.kd = get_objective("kd")(settings.kd_temperature) if settings.kd_weight > 0 else None
        self.classic = nn.ModuleDict(
            {name: self._build_classic(name) for name, weight in settings.classic.items() if weight > 0}
        )
        self.epochs_done: Optional[float] = None
        self.progress: Optional[float] = None
        self.cross_entropy = nn.CrossEntropyLoss()
        self.terms = self._build_terms()

    def _cell_grids(self, contrastive: Sequence[str]) -> dict[str, tuple[int, int]]:
        """The common cell grid ``(min(H_s, H_t), min(W_s, W_t))`` of every intermediate contrastive pair."""
        grids = {}
        for name in contrastive:
            pair = self.pairs[name]
            if pair.is_final:
                continue
            if pair.student_map is None or pair.teacher_map is None:
                raise ValueError(f"spatial_contrast needs spatial maps on both sides of pair {name!r}, but one side is "
                                 "a pooled vector; pair stage or token layers, or turn spatial_contrast off.")
            grids[name] = (min(pair.student_map[1], pair.teacher_map[1]), min(pair.student_map[2], pair.teacher_map[2]))
        return grids

    def _build_terms(self) -> list[Term]:
        """Every term with a positive weight, in a fixed order: CE, KD, the contrastive pairs, the classic terms."""
        terms = [Term("ce", "ce", "", self.cross_entropy)] if self.settings.ce_weight > 0 else []
        if self.kd is not None:
            terms.append(Term("kd", "kd", "", self.kd))
        terms += [Term(f"contrast_{name}", "contrastive", name, fn) for name, fn in self.contrastive.items()]
        return terms + [Term(name, "classic", name, fn) for name, fn in self.classic.items()]

    def _weight(self, term: Term) -> float:
        s = self.settings
        if term.kind == "ce":
            return s.ce_weight
        if term.kind == "kd":
            return s.kd_weight
        if term.kind == "contrastive":
            return self.pair_weights[term.key] * self._contrastive_factor()
        return s.classic[term.key] * self._weight_factor(term.key, term.module)

    def _inputs(self, term: Term, b: TermInputs) -> tuple:
        if term.kind == "ce":
            return b.student.logits, b.labels
        if term.kind == "kd":
            return b.student.logits, b.teacher.logits.detach()
        if term.kind == "contrastive" and term.key in self.cell_grids:
            grid = self.cell_grids[term.key]
            return (self.student_projectors[term.key](_cells(b.student.maps[term.key], grid)),
                    self.teacher_projectors[term.key](_cells(b.teacher.maps[term.key].detach(), grid)))
        if term.kind == "contrastive":
            v_s = self.student_projectors[term.key](b.student.pooled[term.key])
            v_t = self.teacher_projectors[term.key](b.teacher.pooled[term.key].detach())
            bank = (b.index, b.contrast_idx, b.contrast_mask) if self.negatives == "memory_bank" else ()
            return (v_s, v_t, *bank)
        return self._classic_args(term.key, term.module, b)

    def set_epoch(self, epochs_done: float) -> None:
        """Record the training progress in epochs (``Trainer.state.epoch``: 0 at the start, fractional within an
        epoch); warm-ups count epochs from 1 as mdistiller does, so epoch ``floor(epochs_done) + 1`` is running."""
        self.epochs_done = float(epochs_done)

    def set_progress(self, progress: float) -> None:
        """Record the fraction of training done (steps done / total steps), read by ``contrastive_warmup``."""
        self.progress = float(progress)

    def _contrastive_factor(self) -> float:
        """``min(1, progress / contrastive_warmup)``: the linear warm-up of β and θ (1 without a warm-up)."""
        warmup = self.settings.contrastive_warmup
        if warmup <= 0:
            return 1.0
        if self.progress is None:
            raise ValueError(
                f"contrastive_warmup={warmup:g} needs the training progress: call set_progress(steps done / total "
                "steps) before each step (ContrastiveDistillationTrainer does)."
            )
        return min(1.0, self.progress / warmup)

    @property
    def needs_indices(self) -> bool:
        """Whether batches must carry ``index`` and ``contrast_idx``: ``settings.uses_memory_bank``."""
        return self.settings.uses_memory_bank

    @property
    def needs_teacher(self) -> bool:
        """Whether any term reads the teacher (not so for plain cross-entropy, preset "scratch")."""
        return self.kd is not None or len(self.contrastive) > 0 or len(self.classic) > 0

    @property
    def reads_student_stages(self) -> bool:
        """Whether a term reads the student's stage hidden states (``inputs="student_stages"``: OFA's branches)."""
        return any(loss.inputs == "student_stages" for loss in self.classic.values())

    @property
    def stage_pairs(self) -> list[str]:
        """Intermediate pairs other than the stem: what AT, VID, NST, FitNets and SP read."""
        return [name for name, pair in self.pairs.items() if not pair.is_final and not pair.is_stem]

    @property
    def map_pairs(self) -> list[str]:
        """Pairs whose spatial maps the classic terms and the spatial contrast read."""
        names = {n for name, loss in self.classic.items() if loss.inputs not in INPUTS_WITHOUT_PAIR_MAPS
                 for n in self._classic_inputs(name, loss.inputs)} | set(self.cell_grids)
        return [name for name in self.pairs if name in names]

    @property
    def pooled_pairs(self) -> list[str]:
        """Pairs whose pooled vector :meth:`forward` reads: the final pair and the contrastive pairs not spatially
        contrasted (the others are read only as maps)."""
        return [name for name in self.pairs if name == FINAL or (name in self.contrastive and name not in self.cell_grids)]

    @property
    def read_pairs(self) -> list[str]:
        """Every pair whose features :meth:`forward` reads: the final pair, the contrastive pairs and the map pairs."""
        used = {FINAL, *self.contrastive, *self.map_pairs}
        return [name for name in self.pairs if name in used]

    def _classic_inputs(self, name: str, inputs: str) -> list[str]:
        if inputs in ("logits", "final"):
            return [FINAL]
        stages = self.stage_pairs
        if not stages or any(self.pairs[s].student_map is None or self.pairs[s].teacher_map is None for s in stages):
            raise ValueError(
                f"Objective {name!r} needs spatial feature maps of intermediate layer pairs, but the pairing has "
                f"{'none' if not stages else 'vector-only features'}; pair stage or token layers, or drop {name!r}."
            )
        if inputs == "hint":
            return [stages[len(stages) // 2]]
        if inputs == "last_stage":
            return [stages[-1]]
        return stages

    def _build_classic(self, name: str) -> nn.Module:
        cls = get_objective(name)
        if cls.inputs == "student_stages":
            if self.student_stages is None:
                raise ValueError(f"Objective {name!r} reads the student's stage hidden states: build the objective "
                                 "with student_stages (cktf_hf.pairing.plan_pairs plans them).")
            stages, final = self.student_stages, self.pairs[FINAL]
            return cls(stages.shapes, final.student_dim, final.teacher_dim, stages.num_classes, stages.prefix_tokens,
                       **self.settings.term_options(name))
        names = self._classic_inputs(name, cls.inputs)
        if cls.inputs == "final":
            student_shapes = [(self.pairs[FINAL].student_dim,)]
            teacher_shapes = [(self.pairs[FINAL].teacher_dim,)]
        else:
            student_shapes = [self.pairs[n].student_map for n in names]
            teacher_shapes = [self.pairs[n].teacher_map for n in names]
        return cls.from_shapes(student_shapes, teacher_shapes, **self.settings.term_options(name))

    def _weight_factor(self, name: str, loss_fn: nn.Module) -> float:
        if loss_fn.warmup <= 0:
            return 1.0
        if self.epochs_done is None:
            raise ValueError(
                f"Objective {name!r} warms its weight up over {loss_fn.warmup:g} epochs and needs the training "
                "progress: call set_epoch(trainer.state.epoch) before each step (ContrastiveDistillationTrainer does)."
            )
        return loss_fn.weight_factor(math.floor(self.epochs_done) + 1)

    def forward(
        self,
        student: PairFeatures,
        teacher: PairFeatures,
        labels: Optional[torch.Tensor] = None,
        index: Optional[torch.Tensor] = None,
        contrast_idx: Optional[torch.Tensor] = None,
        contrast_mask: Optional[torch.Tensor] = None,
    ) -> ObjectiveOutput:
        if self.settings.ce_weight > 0 and labels is None:
            raise ValueError("ce_weight > 0 needs labels; set ce_weight=0 (e.g. preset 'transfer') for unlabelled data.")
        if labels is None and (missing := [name for name, fn in self.classic.items()
                                          if getattr(fn, "labels_required", getattr(fn, "needs_labels", False))]):
            raise ValueError(
                f"Objective(s) {missing} need the ground-truth labels: pass labels (a 'labels' column in the batch), "
                "or drop them for unlabelled data."
            )
        if self.needs_indices and (index is None or contrast_idx is None):
            raise ValueError("The memory bank needs 'index' and 'contrast_idx' in the batch (see DistillationCollator).")
        if not self.terms:
            raise ValueError("Every objective weight is zero: nothing to train.")
        # bf16/fp16 model outputs meet float32 heads
        batch = TermInputs(student.float(), teacher.float(), labels, index, contrast_idx, contrast_mask)
        weighted: list[torch.Tensor] = []
        components: dict[str, torch.Tensor] = {}
        for term in self.terms:
            value = term.module(*self._inputs(term, batch))
            components[term.name] = value.detach()
            weighted.append(self._weight(term) * value.float())
        return ObjectiveOutput(torch.stack(weighted).sum(), components)

    def _classic_args(self, name: str, loss_fn: nn.Module, b: TermInputs) -> tuple:
        kind = loss_fn.inputs
        if kind == "logits":
            return (b.student.logits, b.teacher.logits.detach(), *((b.labels,) if loss_fn.needs_labels else ()))
        if kind == "final":
            return b.student.pooled[FINAL], b.teacher.pooled[FINAL].detach()
        if kind == "student_stages":
            return b.student.stages, b.teacher.logits.detach(), b.labels
        names = self._classic_inputs(name, kind)
        s_maps = [b.student.maps[n] for n in names]
        t_maps = [b.teacher.maps[n].detach() for n in names]
        return (s_maps, t_maps) if kind == "stages" else (s_maps[0], t_maps[0])


def _cells(feature_map: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """``[B, C, H, W]`` average-pooled to ``grid`` → ``[B, L, C]`` cells (``L = grid[0]·grid[1]``). A map already on
    the grid is only viewed as cells (a token layer's patch tokens themselves, no copy)."""
    if tuple(feature_map.shape[-2:]) != tuple(grid):
        feature_map = F.adaptive_avg_pool2d(feature_map, grid)
    cells = feature_map.flatten(2).transpose(1, 2)
    return cells if cells.stride(-1) == 1 else cells.contiguous()  # channels last: the products read rows of C
