"""Hub id or local folder: telling them apart (answered here only), what a published file may say about a local
path, and which folders an output_dir must stay apart from."""

from __future__ import annotations

import os
import re
from typing import Optional

from huggingface_hub import try_to_load_from_cache
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

__all__ = ["check_output_dir_apart", "check_teacher_location", "in_hub_cache", "is_hub_id", "looks_like_local_path", "public_name"]

# What huggingface_hub accepts as a repo id: "name" or "namespace/name" of letters, digits, "-", "_" and ".".
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def looks_like_local_path(name: str) -> bool:
    """Whether ``name`` means a local path rather than a Hub repo id: it exists, starts with ``/``, ``./``,
    ``../`` or ``~``, is not shaped like a repo id, or its parent folder exists locally (``examples/teachers/x``)."""
    if os.path.exists(name) or os.path.isabs(name) or name.startswith(("./", "../", "~", "." + os.sep)):
        return True
    if not _REPO_ID.fullmatch(name):
        return os.sep in name or "/" in name
    parent = os.path.dirname(name)
    return bool(parent) and os.path.isdir(parent)


def is_hub_id(name: str) -> bool:
    """Whether ``name`` names a Hub repo: no local path (see :func:`looks_like_local_path`) and a valid repo id
    (``fashion_mnist`` and ``namespace/name`` are; ``MNIST (subset)`` or ``a/b/c`` are not)."""
    if not name or looks_like_local_path(name):
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def in_hub_cache(repo_id: str) -> bool:
    """Whether ``repo_id``'s ``config.json`` is in the local Hub cache: a model object so named came from the Hub
    (one built from a config is named after nothing, or after its class)."""
    return is_hub_id(repo_id) and isinstance(try_to_load_from_cache(repo_id, "config.json"), str)


def public_name(name: str) -> str:
    """What a published file may call ``name``: the Hub id itself, or only a local folder's own name."""
    return name if is_hub_id(name) else os.path.basename(os.path.normpath(name))


def check_teacher_location(name: str) -> None:
    """Fail with "folder not found" when ``name`` is a local path that does not exist (instead of the Hub's
    "Repo id must be in the form ..." for a string that was never meant as a repo id)."""
    if looks_like_local_path(name) and not os.path.exists(os.path.expanduser(name)):
        raise FileNotFoundError(
            f"Teacher folder not found: {name!r} (resolved to {os.path.abspath(os.path.expanduser(name))!r}). Check "
            "the path, or pass a Hugging Face Hub repo id such as 'namespace/name'."
        )


def check_output_dir_apart(output_dir: str, folder: Optional[str], what: str) -> None:
    """Refuse an ``output_dir`` that is, or contains, the local ``folder`` a run reads (``what``: the teacher's
    folder, a data folder): the student, its checkpoints and results would overwrite it, and a Hub push would upload
    it. A Hub id or a missing path is no folder and passes."""
    if not folder or not os.path.isdir(os.path.expanduser(folder)):
        return
    out, inside = (os.path.realpath(os.path.expanduser(path)) for path in (output_dir, folder))
    if os.path.commonpath([out, inside]) == out:
        relation = "is" if out == inside else "contains"
        raise ValueError(
            f"output_dir {output_dir!r} {relation} {what} {folder!r}: the student, its checkpoints and results would "
            "be written over it, and a Hub push would upload it. Choose an output_dir outside it."
        )
