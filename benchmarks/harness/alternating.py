"""Step times of several trainers measured in one process, one optimizer step each in turn.

Timings of separate processes on a shared machine drift by tens of percent from one process (or minute) to the next,
so a ratio of two processes' medians carries that drift. Here every trainer runs its own unmodified
``Trainer.train()`` in a thread of one process, and a :class:`Baton` lets exactly one of them work at a time, in a
fixed order: trainer A takes one step, hands over, B takes one step, and so on. The i-th steps of all trainers are
seconds apart, so a ratio of step times taken step by step (:func:`paired_ratio`) cancels what drifts more slowly.
A step is timed from the moment its trainer receives the baton to its ``on_step_end``: its batch's loading included,
as between two consecutive ``on_step_end`` of a trainer running alone.
"""

from __future__ import annotations

import statistics
import threading
import time
from typing import Any, Callable, Optional, Sequence

from transformers import Trainer, TrainerCallback


class Baton:
    """Turn-taking among named workers in a fixed cyclic order; a finished worker is skipped from then on."""

    def __init__(self, names: Sequence[str]) -> None:
        if len(set(names)) != len(names) or not names:
            raise ValueError(f"The names must be distinct and at least one, got {list(names)}.")
        self.order, self.turn, self.done = list(names), 0, set()
        self.condition = threading.Condition()

    def wait(self, name: str) -> None:
        """Block until it is ``name``'s turn."""
        with self.condition:
            self.condition.wait_for(lambda: self.order[self.turn] == name)

    def pass_on(self, name: str) -> None:
        """``name`` hands the baton to the next unfinished worker (itself when it is the last one)."""
        with self.condition:
            self._advance_from(name)

    def finish(self, name: str) -> None:
        """``name`` is done: the others no longer wait for it."""
        with self.condition:
            self.done.add(name)
            if self.order[self.turn] == name:
                self._advance_from(name)
            self.condition.notify_all()

    def _advance_from(self, name: str) -> None:
        start = self.order.index(name)
        for offset in range(1, len(self.order) + 1):
            candidate = (start + offset) % len(self.order)
            if self.order[candidate] not in self.done or offset == len(self.order):
                self.turn = candidate
                break
        self.condition.notify_all()


class AlternatingStepTimer(TrainerCallback):
    """Times each optimizer step of one trainer while it holds the :class:`Baton`, then hands the baton over."""

    def __init__(self, name: str, baton: Baton, synchronize: Optional[Callable[[], None]] = None) -> None:
        self.name, self.baton, self.synchronize = name, baton, synchronize
        self.durations: list[float] = []
        self.started = 0.0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.baton.wait(self.name)
        self.started = time.perf_counter()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.synchronize is not None:
            self.synchronize()
        self.durations.append(time.perf_counter() - self.started)
        self.baton.pass_on(self.name)
        self.baton.wait(self.name)
        self.started = time.perf_counter()


def time_alternating(trainers: dict[str, Trainer], warmup: int,
                     synchronize: Optional[Callable[[], None]] = None) -> dict[str, list[float]]:
    """Train every trainer in turn, one step each (see the module docstring); each one's step times in seconds after
    its first ``warmup`` steps. ``synchronize`` (e.g. ``torch.cuda.synchronize``) runs before a step's end is read.
    Each trainer must have been built without an :class:`AlternatingStepTimer`; one is added here."""
    baton = Baton(list(trainers))
    timers = {name: AlternatingStepTimer(name, baton, synchronize) for name in trainers}
    errors: dict[str, BaseException] = {}

    def run(name: str) -> None:
        try:
            trainers[name].train()
        except BaseException as error:  # re-raised in the calling thread
            errors[name] = error
        finally:
            baton.finish(name)

    for name, trainer in trainers.items():
        trainer.add_callback(timers[name])
    threads = [threading.Thread(target=run, args=(name,), name=f"alternating-{name}") for name in trainers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        name, error = next(iter(errors.items()))
        raise RuntimeError(f"{name} failed while timed in alternation") from error
    return {name: timer.durations[warmup:] for name, timer in timers.items()}


def paired_ratio(durations: dict[str, list[float]], name: str, base: str) -> float:
    """Median over step indices i of ``name``'s i-th step time over ``base``'s i-th (steps taken seconds apart)."""
    pairs = list(zip(durations[name], durations[base]))
    if not pairs:
        raise ValueError(f"No timed steps to compare for {name!r} and {base!r}.")
    return statistics.median(a / b for a, b in pairs)
