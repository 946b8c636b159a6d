"""Test-wide settings: never touch the network, keep caches in a temporary HF_HOME, few threads."""

import atexit
import os
import shutil
import tempfile

# Must be set before huggingface_hub / transformers are imported anywhere in the test session.
os.environ["HF_HUB_OFFLINE"] = "1"
if "HF_HOME" not in os.environ:
    os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="cktf_hf_home_")
    atexit.register(shutil.rmtree, os.environ["HF_HOME"], ignore_errors=True)
os.environ.pop("HF_TOKEN", None)
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["TRANSFORMERS_VERBOSITY"] = "error"

import torch  # noqa: E402

torch.set_num_threads(2)

from fake_hub import fake_hub  # noqa: E402,F401
