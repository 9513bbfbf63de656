#!/usr/bin/env bash
# The GPU checks in one command (about 5-8 minutes on one recent GPU); every figure is measured side by side
# in one run and printed as ratios, and written as JSON under OUT (default: gpu_check/):
#   1. DeiT-Small at 35% of params removed and DeiT-Tiny at 30% (round_to 64): dense vs pruned inference at
#      batch 1, 64, 256 in bf16 and fp16, eager and torch.compile'd, with efficiency = speedup / MACs reduction;
#   2. DeiT-Small training step per stage (forward + backward + AdamW, bf16-mixed): dense vs ADMM vs the
#      fine-tune (pruned student + dense teacher, KD), and a graph-ranking pass;
#   3. DeiT-Small: a budget=latency plan measured on this GPU vs a budget=flops plan of the same predicted
#      latency (prediction error, which is faster);
#   4. the default pipeline end to end on the GPU (bf16-mixed), to show the training stages run there;
#   5. the tests whose CUDA cases only a GPU runs (head scores broadcast as a CPU tensor).
# Usage: bash scripts/gpu_check.sh [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-gpu_check}"
mkdir -p "$out"
python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'gpu_check.sh: no CUDA device here')"
python -c "import torch; print('GPU:', torch.cuda.get_device_name(), '| torch', torch.__version__)"

common=(--devices cuda --dtypes bf16,fp16 --modes eager,compiled --batch-sizes 1,64,256 --repeats 5 --warmup 3
        --round-to 64)
python scripts/benchmark.py --model deit_small_patch16_224 --sparsity 0.35 "${common[@]}" \
    --train-batch-size 64 --train-precision bf16-mixed --latency-plan --latency-batch-size 64 --json "$out/deit_small.json"
python scripts/benchmark.py --model deit_tiny_patch16_224 --sparsity 0.30 "${common[@]}" \
    --skip-train --skip-ranking --json "$out/deit_tiny.json"
WANDB_MODE=offline python run.py trainer=gpu logger=csv hydra.run.dir="$out/default_run"
python -c "import json; s = json.load(open('$out/default_run/summary.json')); print('default run on GPU:', \
s['pretrained']['val_top1'], '->', s['pruned']['val_top1'], 'val top-1 at', round(s['param_reduction'], 3), 'removed')"
python -m pytest -q tests/test_module.py -k "cpu_tensor"
