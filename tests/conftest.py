"""Test-wide settings: never touch the network, keep caches in a temporary HF_HOME, few threads."""

import os
import tempfile

# Must be set before huggingface_hub / transformers are imported anywhere in the test session.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="cktf_hf_home_"))
os.environ.pop("HF_TOKEN", None)
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["TRANSFORMERS_VERBOSITY"] = "error"

import torch  # noqa: E402

torch.set_num_threads(2)

from fake_hub import fake_hub  # noqa: E402,F401
