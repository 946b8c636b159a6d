"""Run by tests/test_distributed.py under `torchrun --nproc_per_node 2`: distil a few steps, dump each rank's state."""

import os
import sys

import torch
import torch.distributed as dist
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(__file__))
import tiny  # noqa: E402

from cktf_hf import ContrastiveDistillationConfig, ContrastiveDistillationTrainer  # noqa: E402

output_dir, negatives = sys.argv[1], sys.argv[2]
sampling = sys.argv[3] if len(sys.argv) > 3 else "per_sample"
args = ContrastiveDistillationConfig(
    output_dir=output_dir, per_device_train_batch_size=16, max_steps=4, nce_k=32, negatives=negatives,
    negative_sampling=sampling,
    learning_rate=3e-3, logging_steps=2, save_strategy="no", report_to="none", disable_tqdm=True, use_cpu=True,
)
trainer = ContrastiveDistillationTrainer(model=tiny.vit(32, 2, seed=1), args=args, teacher_model=tiny.vit(64, 4),
                                         train_dataset=tiny.digits("train", 256))
trainer.train()
assert dist.get_world_size() == 2
assert isinstance(trainer.model_wrapped, torch.nn.parallel.DistributedDataParallel)
assert not isinstance(trainer.teacher, torch.nn.parallel.DistributedDataParallel)
state = {k: v.detach().contiguous() for k, v in trainer.model.state_dict().items()}
save_file(state, os.path.join(output_dir, f"rank{dist.get_rank()}.safetensors"))
