"""Two CPU processes under torchrun (gloo): training completes, and every rank ends with the same student,
projectors and memory banks."""

import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from cktf_hf.attachment import OBJECTIVE_ATTRIBUTE

WORKER = os.path.join(os.path.dirname(__file__), "ddp_worker.py")


@pytest.mark.parametrize("negatives, sampling", [
    ("in_batch", "per_sample"),  # the default's negatives in the fast tier, the banks' in the slow one
    pytest.param("memory_bank", "per_sample", marks=pytest.mark.slow),
    pytest.param("memory_bank", "shared", marks=pytest.mark.slow),
])
def test_two_process_torchrun_keeps_ranks_identical(tmp_path, negatives, sampling):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", WORKER,
         str(tmp_path), negatives, sampling],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    rank0, rank1 = (load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1))
    assert rank0.keys() == rank1.keys()
    objective_keys = [k for k in rank0 if k.startswith(OBJECTIVE_ATTRIBUTE + ".")]
    assert any("projectors" in k for k in objective_keys)
    if negatives == "memory_bank":
        assert any("memory" in k for k in objective_keys)
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
