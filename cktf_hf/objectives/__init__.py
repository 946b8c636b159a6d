"""The CKTF objective library: contrastive losses, the classic and logit knowledge-transfer losses, and their
combination."""

from . import classic, contrastive, logit  # noqa: F401  (registers every objective)
from .combined import FINAL, CKTFObjective, ObjectiveOutput, PairFeatures, PairShape
from .contrastive import NEGATIVE_MODES, InBatchInfoNCELoss, MemoryBankNCELoss, SpatialInfoNCELoss, nce_loss
from .logit import DISTLoss, DKDLoss
from .presets import CLASSIC_WEIGHTS, PRESETS, get_preset
from .registry import get_objective, list_objectives, register_objective
from .settings import ObjectiveSettings

__all__ = [
    "CKTFObjective", "CLASSIC_WEIGHTS", "DISTLoss", "DKDLoss", "FINAL", "InBatchInfoNCELoss", "MemoryBankNCELoss",
    "NEGATIVE_MODES", "ObjectiveOutput", "ObjectiveSettings", "PRESETS", "PairFeatures", "PairShape", "SpatialInfoNCELoss",
    "get_objective",
    "get_preset", "list_objectives", "nce_loss", "register_objective",
]
