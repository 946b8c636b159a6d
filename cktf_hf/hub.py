"""Publishing the student: push failures explained, with the student saved locally first."""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator

import httpx2
from huggingface_hub.errors import HfHubHTTPError
from transformers.utils import SAFE_WEIGHTS_NAME

if TYPE_CHECKING:
    from transformers import Trainer

PUSH_ERRORS = (HfHubHTTPError, OSError, httpx2.HTTPError)


class HubPushError(RuntimeError):
    """Uploading the student failed; it is saved locally."""


@contextmanager
def explain_push_failure(trainer: "Trainer") -> Iterator[None]:
    """Turn an upload failure inside the block into a :class:`HubPushError` that says what failed and how to retry,
    after making sure the student is saved in ``output_dir``."""
    try:
        yield
    except PUSH_ERRORS as error:
        output_dir = trainer.args.output_dir
        if not os.path.isfile(os.path.join(output_dir, SAFE_WEIGHTS_NAME)):
            trainer.save_model(_internal_call=True)
        repo = trainer.hub_model_id or trainer.args.hub_model_id or os.path.basename(output_dir.rstrip("/"))
        raise HubPushError(
            f"Pushing the student to the Hub repo {repo!r} failed: {describe_error(error)}. The student, its model "
            f"card and distillation_config.json are saved in {output_dir!r}. Retry with trainer.push_to_hub(), or "
            f"upload the folder later with `hf upload {repo} {output_dir}`."
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
