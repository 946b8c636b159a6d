"""cktf_hf: the Contrastive Knowledge Transfer Framework (CKTF, ICASSP 2023) for Hugging Face image classifiers."""

from .logs import follow_transformers

follow_transformers()  # before the modules below log anything

from .attachment import detach_objective, objective_of  # noqa: E402
from .config import ContrastiveDistillationConfig
from .data import DistillationCollator, IndexedDataset, NegativeSampler
from .divergence import TrainingDiverged
from .objectives import (
    PRESETS,
    CKTFObjective,
    InBatchInfoNCELoss,
    MemoryBankNCELoss,
    ObjectiveSettings,
    get_objective,
    get_preset,
    list_objectives,
)
from .hub import HubPushError, HubRepoError
from .shrink import shrink_teacher
from .run_guard import OutputDirLocked, RunFinished, TrainingInterrupted
from .trainer import ContrastiveDistillationTrainer

__version__ = "0.2.0"

__all__ = [
    "CKTFObjective", "ContrastiveDistillationConfig", "ContrastiveDistillationTrainer", "DistillationCollator",
    "HubPushError", "HubRepoError", "InBatchInfoNCELoss", "IndexedDataset", "MemoryBankNCELoss", "NegativeSampler",
    "ObjectiveSettings", "OutputDirLocked", "PRESETS", "RunFinished", "TrainingDiverged", "TrainingInterrupted",
    "detach_objective", "get_objective", "get_preset", "list_objectives", "objective_of", "shrink_teacher",
]
