#!/bin/sh
# The speed table (benchmarks/speed.py) on one GPU: bf16 autocast, batch 256, one round of every configuration.
# One short command, prepared to run once where a device is lent; it stops itself after 9 minutes (timeout 540 s),
# leaving room in a 10-minute slot. Writes benchmarks/results/speed_gpu.{json,md}.
#   sh benchmarks/speed_gpu.sh                 # PYTHON=/path/to/python to choose the interpreter
set -e
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec timeout 540 "${PYTHON:-python}" benchmarks/speed.py --device cuda --bf16 --batch_size 256 --rounds 1 --threads 8 \
    --accuracy_steps 200 --name speed_gpu "$@"
