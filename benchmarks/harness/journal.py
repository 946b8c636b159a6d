"""The run journal (``<name>.runs.jsonl``): one ``{"task": {...}, "result": ...}`` line per finished run, appended as
each run ends, so an interrupted benchmark loses no finished run and ``--resume`` / ``--report_only`` read them back.

A task is keyed by its content (paths inside the repository relative to it, numbers by value), so a journal written in
one clone serves another. A task also names its teacher's weights (``teacher_weights``,
:func:`cktf_hf.cache.model_digest`), so a teacher retrained in the same folder runs everything again instead of reusing
the old teacher's runs, and the knobs its method sets (``objective``,
:meth:`cktf_hf.objectives.ObjectiveSettings.changed_knobs`), so a preset redefined since runs again (a changed knob
default is not seen: the knobs a preset leaves at their defaults are not named). A line written before tasks named
either matches a task by the fields it has. Reading is strict:
a line cut short by a crash is tolerated only as the last line (it is the run that was being written); any other
unreadable or malformed line, and two lines that give the same task different results, stop the benchmark with the
file and line numbers instead of silently changing a reported row.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Iterable, Optional, Union

from .paths import portable_path

PATH_FIELDS = ("teacher", "teacher_cache_dir", "save_dir", "path")
WEIGHTS_FIELD, OBJECTIVE_FIELD = "teacher_weights", "objective"
# Fields added to tasks over time, oldest first: a line written before one of them existed matches on those it has.
LATER_FIELDS = (WEIGHTS_FIELD, OBJECTIVE_FIELD)
# The fields a result must hold: names, or names mapped to their type(s).
Fields = Union[Iterable[str], dict[str, Any]]


class JournalError(SystemExit):
    """A run journal that cannot be trusted (a clear message, no traceback, when it ends the script)."""


def portable_task(task: dict[str, Any]) -> dict[str, Any]:
    """``task`` with its absolute paths inside the repository made relative to it, so that a journal written in one
    clone matches the same tasks in another."""
    return {key: portable_path(value) if key in PATH_FIELDS and isinstance(value, str) else value
            for key, value in task.items()}


def task_key(task: dict[str, Any]) -> str:
    """The identity of a task in a journal: its portable paths, and numbers by value (``--epochs 5`` parses to 5.0,
    the preset's default is 5: the same run)."""
    return json.dumps(numbers_by_value(portable_task(task)), sort_keys=True)


def find(done: dict[str, Any], task: dict[str, Any]) -> Any:
    """The result of ``task`` in a journal read by :func:`read_journal`, or None; a line written before tasks had
    some of :data:`LATER_FIELDS` matches on the fields it has."""
    for count in range(len(LATER_FIELDS), -1, -1):
        dropped = LATER_FIELDS[count:]
        result = done.get(task_key({key: value for key, value in task.items() if key not in dropped}))
        if result is not None:
            return result
    return None


def numbers_by_value(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: numbers_by_value(item) for key, item in value.items()}
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def read_journal(path: Optional[str], result_fields: Fields = ()) -> dict[str, Any]:
    """The results in a run journal, by task key (empty when there is no journal).

    Refused, naming the line: an unreadable line other than a cut last one, an entry that is not ``{"task": {...},
    "result": ...}``, a result missing one of ``result_fields``, and a task written twice with different results.
    """
    if not path or not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    lines = text.split("\n")
    finished: dict[str, Any] = {}
    first_line: dict[str, int] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as error:
            if number == len(lines):  # the last line, without its newline: a run cut short while it was written
                continue
            raise JournalError(f"{path}, line {number}: not readable as JSON ({error.msg}); only the last line may be "
                               "cut short (by a crash while it was written). Repair or remove that line.") from None
        if not (isinstance(entry, dict) and isinstance(entry.get("task"), dict) and "result" in entry):
            raise JournalError(f"{path}, line {number}: not a run journal entry ({{\"task\": {{...}}, \"result\": "
                               "...}); is this file a run journal?")
        wrong = _wrong_fields(entry["result"], result_fields)
        if wrong:
            raise JournalError(f"{path}, line {number}: the run's result lacks {', '.join(wrong)} (or has a value of "
                               "the wrong type); it was not written by this benchmark. Remove that line (--resume "
                               "then runs it again).")
        key = task_key(entry["task"])
        if key in finished and finished[key] != entry["result"]:
            raise JournalError(f"{path}, lines {first_line[key]} and {number}: the same task with two different "
                               "results; keep the one you trust and remove the other.")
        finished.setdefault(key, entry["result"])
        first_line.setdefault(key, number)
    return finished


def _wrong_fields(result: Any, fields: Fields) -> list[str]:
    """The ``fields`` that ``result`` lacks, or holds with a type other than the one ``fields`` maps them to."""
    kinds = fields if isinstance(fields, dict) else dict.fromkeys(fields, object)
    if not isinstance(result, dict):
        return list(kinds)
    return [field for field, kind in kinds.items()
            if field not in result or not isinstance(result[field], kind) or isinstance(result[field], bool)]


def read_back(tasks: list[dict[str, Any]], path: str, result_fields: Fields = ()
              ) -> list[Optional[dict[str, Any]]]:
    """Each task's result from the run journal, None where it has not run."""
    done = read_journal(path, result_fields)
    return [find(done, task) for task in tasks]


def pending_tasks(tasks: list[dict[str, Any]], path: Optional[str], resume: bool,
                  result_fields: Fields = ()) -> list[dict[str, Any]]:
    """The tasks that ``run_tasks(..., journal=path, resume=resume)`` would run (not read back from the journal)."""
    done = read_journal(path, result_fields) if resume else {}
    return [task for task in tasks if find(done, task) is None]


def start(path: str, resume: bool) -> None:
    """Make the journal ready for appending: without ``resume`` a new one (a non-empty old one is kept as
    ``<path>.<time>.bak``, never thrown away); with it, a last line cut short by a crash is removed first."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if not resume:
        if os.path.isfile(path) and os.path.getsize(path):
            kept = f"{path}.{time.strftime('%Y%m%d-%H%M%S')}.bak"
            os.replace(path, kept)
            print(f"  without --resume the journal starts afresh; the previous one is kept as {kept}", flush=True)
        open(path, "w").close()
        return
    if os.path.isfile(path) and os.path.getsize(path):
        with open(path, "rb+") as f:
            data = f.read()
            if not data.endswith(b"\n"):
                f.truncate(data.rfind(b"\n") + 1)
                print(f"  {path}: removed its last line, cut short by a crash (that run runs again)", flush=True)


def append(path: str, task: dict[str, Any], result: Any) -> None:
    """Append one finished run."""
    with open(path, "a") as f:
        f.write(json.dumps({"task": portable_task(task), "result": result}) + "\n")


def rows_outside(path: str, settings: dict[str, Any], methods: list[str], students: list[str]) -> list[str]:
    """``"method / student"`` of the runs in the journal made with ``settings`` (the fields every task of one
    invocation shares) whose method or student is not among ``methods`` × ``students``: rows a report of those alone
    leaves out."""
    wanted = numbers_by_value(portable_task(settings))
    rows = set()
    for key in read_journal(path):
        task = json.loads(key)
        task.setdefault(WEIGHTS_FIELD, wanted.get(WEIGHTS_FIELD))  # a line from before tasks named them
        if (all(task.get(field) == value for field, value in wanted.items()) and task.keys() >= wanted.keys()
                and (task.get("method") not in methods or task.get("student") not in students)):
            rows.add(f"{task.get('method')} / {task.get('student')}")
    return sorted(rows)
