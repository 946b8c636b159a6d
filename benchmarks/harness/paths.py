"""Where the repository and the committed results are, and paths written relative to the repository."""

from __future__ import annotations

import os

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BENCHMARKS_DIR = os.path.join(REPO_ROOT, "benchmarks")
RESULTS_DIR = os.path.join(BENCHMARKS_DIR, "results")
PROTOCOLS_DIR = os.path.join(BENCHMARKS_DIR, "protocols")
CACHE_DIR = os.path.join(BENCHMARKS_DIR, "cache")


def repo_relative(path: str) -> str:
    """``path`` relative to the repository root when it lies inside it (results stay valid in another clone), else
    absolute."""
    path = os.path.abspath(path)
    inside = os.path.commonpath([path, REPO_ROOT]) == REPO_ROOT
    return os.path.relpath(path, REPO_ROOT) if inside else path


def portable_path(value: str) -> str:
    """An absolute path inside the repository made relative to it; anything else (a Hub id, a path outside) as is."""
    return repo_relative(value) if os.path.isabs(value) else value


def absolute(path: str) -> str:
    """A repository-relative path made absolute (an absolute one as is)."""
    return path if os.path.isabs(path) else os.path.join(REPO_ROOT, path)
