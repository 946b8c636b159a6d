"""The Hub: what never leaves the machine (tokens), repo ids checked early, push failures explained."""

from __future__ import annotations

import copy
import os
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Optional

import httpx2
from huggingface_hub import constants
from huggingface_hub.errors import HfHubHTTPError, HFValidationError
from huggingface_hub.utils import validate_repo_id
from transformers.utils import SAFE_WEIGHTS_NAME

if TYPE_CHECKING:
    from transformers import Trainer

HUB_ERRORS = (HfHubHTTPError, OSError, httpx2.HTTPError, HFValidationError)


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


class HubPushError(RuntimeError):
    """Uploading the student failed; it is saved locally."""


@contextmanager
def explain_push_failure(trainer: "Trainer", card_kwargs: Optional[dict[str, Any]] = None) -> Iterator[None]:
    """Turn an upload failure inside the block into a :class:`HubPushError` that says what failed and how to retry,
    after making sure the student and its model card (written with ``card_kwargs``) are in ``output_dir``."""
    try:
        yield
    except HUB_ERRORS as error:
        output_dir = trainer.args.output_dir
        if not os.path.isfile(os.path.join(output_dir, SAFE_WEIGHTS_NAME)):
            trainer.save_model(_internal_call=True)
        if not os.path.isfile(os.path.join(output_dir, "README.md")):  # the push failed before writing the card
            trainer.create_model_card(**(card_kwargs or {}))
        repo = trainer.hub_model_id or trainer.args.hub_model_id or os.path.basename(output_dir.rstrip("/"))
        raise HubPushError(
            f"Pushing the student to the Hub repo {repo!r} failed: {describe_error(error)}. The student, its model "
            f"card and distillation_config.json are saved in {output_dir!r}. Retry with trainer.push_to_hub(), or "
            f"upload the folder later with `hf upload {repo} {output_dir}`."
        ) from None


class HubRepoError(HubPushError):
    """Creating (or reaching) the Hub repo failed before training started."""


@contextmanager
def explain_repo_failure(args: Any, in_init: bool = True) -> Iterator[None]:
    """Turn a failure to create the Hub repo (``Trainer.init_hf_repo``) in ``Trainer.__init__`` (``in_init``, with
    ``push_to_hub``) into a one-line :class:`HubRepoError` naming the repo, the endpoint and the fixes. Elsewhere
    (``push_to_hub``) :func:`explain_push_failure` explains it, after saving the student."""
    try:
        yield
    except HUB_ERRORS as error:
        if not in_init:
            raise
        repo = args.hub_model_id or Path(args.output_dir).absolute().name
        raise HubRepoError(
            f"Creating the Hub repo {repo!r} at {constants.ENDPOINT} failed before training: {describe_error(error)}. "
            "Nothing was trained. Check the network, HF_ENDPOINT and your token (HF_TOKEN or `hf auth login`), or "
            "train without push_to_hub (--push_to_hub false) and upload later with `hf upload`."
        ) from None


def describe_error(error: Exception) -> str:
    """A one-line description of a Hub error: the HTTP status with a hint, or the exception's first line."""
    response = getattr(error, "response", None)
    if response is not None:
        status = getattr(response, "status_code", "?")
        hint = {401: " (unauthorized: check HF_TOKEN or `hf auth login`)",
                403: " (forbidden: the token may lack write access)"}.get(status, "")
        return f"HTTP {status}{hint} from {getattr(response, 'url', 'the Hub')}"
    return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else 'no connection'}"
