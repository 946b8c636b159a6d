"""Runs in worker processes: ``run_tasks`` maps a function over tasks in spawned workers (or in this process), with a
progress line per finished run and every result appended to the run journal at once."""

from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Optional

from . import journal as run_journal


def default_jobs(device: str) -> int:
    """One run per CPU core (each single-threaded) on CPU, up to 2; one at a time on a GPU."""
    return 1 if device != "cpu" else max(1, min(2, os.cpu_count() or 1))


def worker_pool(jobs: int, initializer: Any, initargs: tuple) -> ProcessPoolExecutor:
    """``jobs`` spawned worker processes, each set up once by ``initializer(*initargs)``, for successive
    ``run_tasks(..., pool=...)`` calls (shut it down when done)."""
    return ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=initializer,
                               initargs=initargs)


def run_tasks(fn: Any, tasks: list[dict[str, Any]], jobs: int, initializer: Any, initargs: tuple,
              describe: Any = lambda result: "", journal: Optional[str] = None, resume: bool = False,
              pool: Optional[ProcessPoolExecutor] = None, result_fields: run_journal.Fields = ()) -> list[Any]:
    """``[fn(task) for task in tasks]``, in ``jobs`` spawned worker processes (each set up by
    ``initializer(*initargs)``; ``pool``: those of a ``worker_pool`` instead, kept for later calls) or in this
    process when ``jobs`` is 1; a progress line per finished task.

    With ``journal`` (a ``.jsonl`` path) every finished task is appended to it at once; ``resume`` reuses the
    journal's results for identical tasks and runs only the others (without ``resume`` the journal is started afresh,
    a non-empty one first kept as ``<journal>.<time>.bak``). ``result_fields``: what a journal's result must hold.
    """
    done_before = run_journal.read_journal(journal, result_fields) if journal and resume else {}
    results: list[Any] = [run_journal.find(done_before, task) for task in tasks]
    pending = [i for i, result in enumerate(results) if result is None]
    if journal:
        run_journal.start(journal, resume)
        if len(pending) < len(tasks):
            print(f"  resuming: {len(tasks) - len(pending)} of {len(tasks)} runs read back from {journal}", flush=True)
    started = time.perf_counter()
    done = len(tasks) - len(pending)

    def finish(i: int, result: Any) -> None:
        nonlocal done
        results[i], done = result, done + 1
        if journal:
            run_journal.append(journal, tasks[i], result)
        print(f"  [{done}/{len(tasks)}, {time.perf_counter() - started:6.0f} s] {describe(result)}", flush=True)

    if not pending:
        return results
    if jobs <= 1:
        initializer(*initargs)
        for i in pending:
            finish(i, fn(tasks[i]))
        return results
    own_pool = pool is None
    pool = worker_pool(jobs, initializer, initargs) if own_pool else pool
    try:
        futures = {pool.submit(fn, tasks[i]): i for i in pending}
        for future in as_completed(futures):
            finish(futures[future], future.result())
    finally:
        if own_pool:
            pool.shutdown()
    return results
