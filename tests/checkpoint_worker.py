"""Run by tests/test_reliability_checkpoints.py in a subprocess: distil with a checkpoint every 2 steps; the second
checkpoint's state write touches `<marker>` and then takes 3 s, so that the test can signal the process while it saves.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import tiny  # noqa: E402

from cktf_hf import ContrastiveDistillationConfig, ContrastiveDistillationTrainer, checkpointing  # noqa: E402

output_dir, marker = sys.argv[1], sys.argv[2]
real_save_file, calls = checkpointing.save_file, []


def slow_second_save(tensors, path):
    calls.append(path)
    if len(calls) == 2:
        open(marker, "w").close()
        time.sleep(3)
    real_save_file(tensors, path)


checkpointing.save_file = slow_second_save
args = ContrastiveDistillationConfig(
    output_dir=output_dir, per_device_train_batch_size=16, max_steps=40, save_strategy="steps", save_steps=2,
    save_total_limit=1, nce_k=16, report_to="none", disable_tqdm=True, use_cpu=True,
)
trainer = ContrastiveDistillationTrainer(model=tiny.vit(32, 2, seed=1), args=args, teacher_model=tiny.vit(64, 4),
                                         train_dataset=tiny.digits("train", 64))
trainer.train()
