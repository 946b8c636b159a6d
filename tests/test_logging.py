"""cktf_hf's loggers follow transformers' verbosity (so the layer-pairing table logged at INFO can be seen)."""

import os
import subprocess
import sys

CODE = """
import cktf_hf
from transformers.utils import logging
from cktf_hf.demo import datasets  # a module of the demo package: the same logger tree
log = logging.get_logger("cktf_hf.trainer")
log.info("hidden at the default verbosity")
logging.get_logger(datasets.__name__).warning("a warning is shown")
logging.set_verbosity_info()
log.info("shown at info")
"""


def test_cktf_hf_loggers_follow_transformers_verbosity():
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "warning"}  # transformers' default (the suite sets "error")
    result = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    assert "[cktf_hf] shown at info" in result.stderr and "[cktf_hf] a warning is shown" in result.stderr
    assert "hidden at the default verbosity" not in result.stderr
