"""Step times of several trainers measured side by side, one optimizer step each in turn.

Timings of separate runs on a shared machine drift by tens of percent from one run (or minute) to the next, so a
ratio of two runs' medians carries that drift. Here every trainer runs its own unmodified ``Trainer.train()`` in
its own process (in its main thread: OpenMP regions started from another thread of a process run up to 1.8× slower),
all at once, and a :class:`Baton` lets exactly one of them work at a time, in a fixed order: trainer A takes one
step, hands over, B takes one step, and so on. The i-th steps of all trainers are seconds apart, so a ratio of step
times taken step by step (:func:`paired_ratio`) cancels what drifts more slowly. A step is timed from the moment its
trainer receives the baton to its ``on_step_end``: its batch's loading included, as between two consecutive
``on_step_end`` of a trainer running alone. A process waiting for its turn sleeps.
"""

from __future__ import annotations

import multiprocessing
import resource
import statistics
import sys
import time
from typing import Any, Callable, Optional, Sequence

_CONTEXT = multiprocessing.get_context("spawn")


class Baton:
    """Turn-taking among named workers (threads or processes) in a fixed cyclic order; a finished worker is skipped
    from then on."""

    def __init__(self, names: Sequence[str]) -> None:
        if len(set(names)) != len(names) or not names:
            raise ValueError(f"The names must be distinct and at least one, got {list(names)}.")
        self.names = list(names)
        self._turn = _CONTEXT.Value("i", 0, lock=False)
        self._done = _CONTEXT.Array("b", len(self.names), lock=False)
        self._condition = _CONTEXT.Condition()

    def wait(self, name: str) -> None:
        """Block until it is ``name``'s turn."""
        index = self.names.index(name)
        with self._condition:
            self._condition.wait_for(lambda: self._turn.value == index)

    def pass_on(self, name: str) -> None:
        """``name`` hands the baton to the next unfinished worker (itself when it is the last one)."""
        with self._condition:
            self._advance_from(self.names.index(name))

    def finish(self, name: str) -> None:
        """``name`` is done: the others no longer wait for it."""
        index = self.names.index(name)
        with self._condition:
            self._done[index] = 1
            if self._turn.value == index:
                self._advance_from(index)
            self._condition.notify_all()

    def _advance_from(self, index: int) -> None:
        count = len(self.names)
        for offset in range(1, count + 1):
            candidate = (index + offset) % count
            if not self._done[candidate] or offset == count:
                self._turn.value = candidate
                break
        self._condition.notify_all()


class StepTimer:
    """Times each optimizer step of one trainer while it holds the :class:`Baton`, then hands the baton over (the
    ``on_train_begin`` and ``on_step_end`` events of a trainer callback; see :func:`as_callback`)."""

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


def as_callback(timer: StepTimer, trainer: Any) -> Any:
    """``timer`` as ``trainer`` takes callbacks: for a transformers ``Trainer``, a ``TrainerCallback`` (no-ops for
    the other events); for a stand-in that calls the two events itself, the timer. transformers is imported only in
    a process that already runs it, so that a process of stand-ins starts fast."""
    transformers = sys.modules.get("transformers")
    if transformers is None or not isinstance(trainer, transformers.Trainer):
        return timer
    callback = type("AlternatingStepTimer", (transformers.TrainerCallback,), {
        "on_train_begin": lambda self, *args, **kwargs: timer.on_train_begin(*args, **kwargs),
        "on_step_end": lambda self, *args, **kwargs: timer.on_step_end(*args, **kwargs)})
    return callback()


def _worker(name: str, build: Callable[[], Any], baton: Baton, synchronize: Optional[Callable[[], None]],
            results: Any) -> None:
    """One trainer in its own process: build it (untimed, while the others may build theirs), train it in turn."""
    try:
        trainer = build()
        timer = StepTimer(name, baton, synchronize)
        trainer.add_callback(as_callback(timer, trainer))
        trainer.train()
        results.put((name, {"step_s": timer.durations,
                            "peak_memory_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
    except BaseException as error:  # reported to the parent, which raises it
        results.put((name, {"error": f"{type(error).__name__}: {error}"}))
    finally:
        baton.finish(name)


def time_alternating(builders: dict[str, Callable[[], Any]], warmup: int,
                     synchronize: Optional[Callable[[], None]] = None, timeout_s: float = 3600) -> dict[str, dict]:
    """Build and train every trainer in its own process, one step each in turn (see the module docstring).

    ``builders`` maps a name to a picklable function that returns a ``Trainer`` (e.g. a ``functools.partial`` of a
    module-level function); ``synchronize`` (e.g. ``torch.cuda.synchronize``) runs before a step's end is read. Each
    name's result: ``step_s``, its step times in seconds after its first ``warmup`` steps, and ``peak_memory_bytes``,
    the peak resident memory of its process. A trainer that fails, or whose process dies, is raised as an error once
    the others are done; the others go on without it."""
    baton = Baton(list(builders))
    results = _CONTEXT.Queue()
    processes = {name: _CONTEXT.Process(target=_worker, args=(name, build, baton, synchronize, results),
                                        name=f"alternating-{name}", daemon=True)
                 for name, build in builders.items()}
    for process in processes.values():
        process.start()
    collected: dict[str, dict] = {}
    deadline = time.monotonic() + timeout_s
    while len(collected) < len(processes):
        try:
            name, result = results.get(timeout=1.0)
            collected[name] = result
        except Exception:  # queue.Empty: see whether a process died without a word
            for name, process in processes.items():
                if name not in collected and process.exitcode is not None and results.empty():
                    collected[name] = {"error": f"its process exited with code {process.exitcode}"}
                    baton.finish(name)
        if time.monotonic() > deadline:
            for process in processes.values():
                process.kill()
            raise TimeoutError(f"The alternating trainers did not finish within {timeout_s:.0f} s.")
    for process in processes.values():
        process.join()
    failed = {name: result["error"] for name, result in collected.items() if "error" in result}
    if failed:
        raise RuntimeError(f"Failed while timed in alternation: {failed}")
    return {name: {"step_s": collected[name]["step_s"][warmup:],
                   "peak_memory_bytes": collected[name]["peak_memory_bytes"]} for name in builders}


def paired_ratio(durations: dict[str, list[float]], name: str, base: str) -> float:
    """Median over step indices i of ``name``'s i-th step time over ``base``'s i-th (steps taken seconds apart)."""
    pairs = list(zip(durations[name], durations[base]))
    if not pairs:
        raise ValueError(f"No timed steps to compare for {name!r} and {base!r}.")
    return statistics.median(a / b for a, b in pairs)
