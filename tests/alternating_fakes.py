"""Stand-ins for ``Trainer`` in tests/test_alternating_steps.py, in a module of their own so that the processes
harness.alternating spawns import nothing heavier than it."""

from __future__ import annotations

import os
import time


class FakeTrainer:
    """Calls its callbacks as ``Trainer.train`` does; each step appends "name step" to ``log_path`` and sleeps."""

    def __init__(self, name: str, steps: int, log_path: str, step_s: float, raise_at: int, die_at: int) -> None:
        self.name, self.steps, self.log_path, self.step_s = name, steps, log_path, step_s
        self.raise_at, self.die_at = raise_at, die_at
        self.callbacks: list = []

    def add_callback(self, callback) -> None:
        self.callbacks.append(callback)

    def train(self) -> None:
        for callback in self.callbacks:
            callback.on_train_begin(None, None, None)
        for step in range(self.steps):
            if step == self.raise_at:
                raise ValueError(f"{self.name} broke at step {step}")
            if step == self.die_at:  # the process dies without a word, holding the baton
                os._exit(3)
            with open(self.log_path, "a") as log:
                log.write(f"{self.name} {step}\n")
            time.sleep(self.step_s)
            for callback in self.callbacks:
                callback.on_step_end(None, None, None)


def fake_trainer(name: str, steps: int, log_path: str, step_s: float = 0.002, raise_at: int = -1,
                 die_at: int = -1) -> FakeTrainer:
    return FakeTrainer(name, steps, log_path, step_s, raise_at, die_at)


def read_log(path: str) -> list:
    return [(name, int(step)) for name, step in (line.split() for line in open(path).read().splitlines())]
