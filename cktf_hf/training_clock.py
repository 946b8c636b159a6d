"""Wall time of a training run that was interrupted and resumed: what came before this ``train()`` call, kept in the
checkpoints' ``trainer_state.json`` (transformers' own ``train_runtime`` covers the last ``train()`` call only)."""

from __future__ import annotations

import time
from typing import Any, Optional

from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

__all__ = ["TrainingClock", "earlier_segments"]


class TrainingClock(TrainerCallback, ExportableState):
    """Counts the wall time of training over resumed segments.

    Its state rides in ``TrainerState.stateful_callbacks`` (saved with every checkpoint): ``elapsed``, the seconds of
    training up to that moment over every segment, ``earlier``, the seconds of the segments before the current
    ``train()`` call, and ``segments``. A ``train()`` that resumes a checkpoint starts from that checkpoint's ``elapsed``
    (the work after the checkpoint was lost and is not counted); a fresh one from zero.
    """

    def __init__(self) -> None:
        self.earlier, self.segments, self.elapsed = 0.0, 0, 0.0
        self._started: Optional[float] = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        stored = _attributes(state) if state.global_step > 0 else {}  # a resumed checkpoint's clock
        self.earlier = float(stored.get("elapsed", 0.0))
        self.segments = int(stored.get("segments", 0)) + 1
        self._started = time.monotonic()
        state.stateful_callbacks[type(self).__name__] = self.state()  # also for a checkpoint written without one

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        state.stateful_callbacks[type(self).__name__] = self.state()  # read by the model card, kept by save_state()

    def state(self) -> dict[str, Any]:
        if self._started is not None:
            self.elapsed = self.earlier + time.monotonic() - self._started
        return {"args": {}, "attributes": {"elapsed": self.elapsed, "earlier": self.earlier,
                                           "segments": self.segments}}


def earlier_segments(state: Any) -> tuple[float, int]:
    """``(seconds, number of segments)`` of the training before the last ``train()`` call, from a ``TrainerState``
    (``(0.0, 0)`` when the run was never resumed or kept no clock)."""
    attributes = _attributes(state)
    return float(attributes.get("earlier", 0.0)), max(int(attributes.get("segments", 1)) - 1, 0)


def _attributes(state: Any) -> dict[str, Any]:
    stored = (getattr(state, "stateful_callbacks", None) or {}).get(TrainingClock.__name__) or {}
    return stored.get("attributes", {}) if isinstance(stored, dict) else {}
