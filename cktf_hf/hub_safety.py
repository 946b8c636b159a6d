"""Hub safety: tokens never leave in a pickled config, and the repo id is checked before anything is trained."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Optional

from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id


def check_repo_id(hub_model_id: Optional[str], output_dir: Optional[str], push_to_hub: bool) -> None:
    """Refuse an invalid ``hub_model_id`` (or, with ``push_to_hub`` and no id, an ``output_dir`` name that is not a
    valid repo name: transformers names the repo after it) before training starts instead of after it ends."""
    if hub_model_id is not None:
        repo, what, fix = hub_model_id, f"hub_model_id {hub_model_id!r}", "Pass 'name' or 'namespace/name'"
    elif push_to_hub and output_dir:
        repo = Path(output_dir).absolute().name
        what, fix = f"{repo!r} (the name of output_dir, used as the repo name)", "Pass hub_model_id"
    else:
        return
    try:
        validate_repo_id(repo)
    except HFValidationError:
        raise ValueError(
            f"{what} is not a valid Hub repo id. {fix}, using letters, digits, '-', '_' and '.', at most 96 "
            "characters, not starting or ending with '-' or '.'."
        ) from None


class TokensNeverPickled:
    """Mixin for a ``TrainingArguments`` subclass: pickling drops every ``*_token`` field (``hub_token``).

    transformers writes ``torch.save(self.args)`` into ``training_args.bin`` of the output folder and of every
    checkpoint it pushes (``Trainer._save``, ``Trainer._push_from_checkpoint``); with this mixin none of those files
    holds the token. ``to_dict``/``to_json_string`` already replace tokens with ``<HUB_TOKEN>``. In-process copies
    (``copy.copy``, ``copy.deepcopy``) keep the token; a process that receives the arguments by pickling reads it
    from ``HF_TOKEN`` or ``hf auth login`` instead.
    """

    def __getstate__(self) -> dict[str, Any]:
        return {key: None if key.endswith("_token") else value for key, value in vars(self).items()}

    def __copy__(self) -> "TokensNeverPickled":
        clone = object.__new__(type(self))
        clone.__dict__.update(vars(self))
        return clone

    def __deepcopy__(self, memo: dict[int, Any]) -> "TokensNeverPickled":
        clone = object.__new__(type(self))
        memo[id(self)] = clone
        clone.__dict__.update(copy.deepcopy(vars(self), memo))
        return clone
