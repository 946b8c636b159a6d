#!/bin/sh
# The real-size speed table (benchmarks/speed.py --scale real) on one GPU: ViT-B/16 → ViT-S/16 and DeiT-Ti, ResNet-50 →
# DeiT-Ti at 224 px, random weights from configs (no download), bf16 autocast, batch 256, one round of every method.
# One command, prepared to run once where a device is lent; it stops itself after 6 minutes (timeout 360 s), leaving
# room for a rerun in a 15-minute device budget. Writes benchmarks/results/speed_gpu.{json,md}, after every scenario
# (a run cut short keeps the scenarios it finished). Extra arguments go to speed.py.
#   sh benchmarks/speed_gpu.sh                 # PYTHON=/path/to/python to choose the interpreter
#   sh benchmarks/speed_gpu.sh --device cpu --tiny --output /tmp/speed   # dry run on a CPU: tiny models, ~5 min on 2 cores
set -e
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec timeout 360 "${PYTHON:-python}" benchmarks/speed.py --scale real --device cuda --bf16 --batch_size 256 --rounds 1 \
    --threads 8 --name speed_gpu "$@"
