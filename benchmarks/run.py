#!/usr/bin/env python
"""Run a benchmark protocol: ``python benchmarks/run.py benchmarks/protocols/<name>.yaml [options]``.

The protocol file (students, teachers, methods, budget, grid, seeds, targets) names its benchmark (``compression``:
``benchmarks/accuracy.py``; ``transfer``: ``benchmarks/transfer.py``); the options after it are that benchmark's
(``--report_only`` writes the report from the committed run journal, training nothing; ``--resume`` runs only the
missing runs; ``--jobs``, ``--threads``, ``--device``). A protocol may also be named without its folder and suffix.
"""

from __future__ import annotations

import sys
from typing import Any

from harness.protocol import load_protocol


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0].startswith("-"):
        raise SystemExit(__doc__.split("\n\n")[0] + "\n(the protocols are under benchmarks/protocols/)")
    protocol = load_protocol(argv[0])
    if protocol["benchmark"] == "compression":
        import accuracy as benchmark
    else:
        import transfer as benchmark
    return benchmark.main(["--protocol", protocol["path"], *argv[1:]])


if __name__ == "__main__":
    main()
