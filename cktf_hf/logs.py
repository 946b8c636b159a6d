"""cktf_hf's loggers follow transformers' logging verbosity.

Every module logs through ``transformers.utils.logging.get_logger(__name__)``, which returns a plain
``logging.getLogger("cktf_hf....")``: outside transformers' own ``transformers`` logger, so
``transformers.logging.set_verbosity_info()``, ``TRANSFORMERS_VERBOSITY=info`` and the Trainer's ``--log_level`` would
not reach it, and its INFO records (the layer-pairing table, ...) would never be shown. :func:`follow_transformers`
makes the ``cktf_hf`` logger take its level from transformers' logger and print to stderr as ``[cktf_hf] message``.
"""

from __future__ import annotations

import logging

from transformers.utils import logging as hf_logging

LIBRARY_LOGGER = "cktf_hf"


def follow_transformers() -> logging.Logger:
    """Give the ``cktf_hf`` logger transformers' library logger as its parent (so its effective level is
    transformers' verbosity, read at each call) and a stderr handler of its own; idempotent."""
    library = logging.getLogger(LIBRARY_LOGGER)
    library.parent = hf_logging.get_logger("transformers")  # configures transformers' handler and default level
    if not any(getattr(handler, "_cktf_hf", False) for handler in library.handlers):
        handler = logging.StreamHandler()  # sys.stderr, looked up when the handler is made
        handler.setFormatter(logging.Formatter(f"[{LIBRARY_LOGGER}] %(message)s"))
        handler._cktf_hf = True
        library.addHandler(handler)
    library.propagate = False  # as transformers' own logger: its records are printed once, by the handler above
    return library
