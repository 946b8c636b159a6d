"""Keep Hub tokens out of every pickled copy of the training arguments (``training_args.bin``, checkpoint pushes)."""

from __future__ import annotations

import copy
from typing import Any


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
