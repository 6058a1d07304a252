#!/usr/bin/env bash
# One-command check of the CUDA path on one GPU, in under 8 minutes (each step has a time limit):
#   1. the CUDA tests (pytest -k "cuda or gpu");
#   2. `ssl-bench bench --device cuda`: training step (ResNet-18 CIFAR stem at 32 px, ResNet-50 at
#      224 px, each default method, bf16), data pipeline, folder pipeline (CPU decode and nvJPEG
#      GPU decode vs ImageFolder + transforms), losses at recipe sizes -> results/bench/cuda-<gpu>.json;
#   3. a short real pre-train + evaluation of two methods in bf16 (the Fashion-MNIST demo recipe,
#      3 epochs) and its table -> results/bench/cuda-pretrain-<date>/.
# Needs only the README set-up (bash scripts/setup.sh, with a CUDA torch); installs nothing.
# Later steps run even if an earlier one failed; the exit status is 1 if any step failed.
# Usage: scripts/gpu-check.sh [--dry-run]   (--dry-run lists the steps and runs nothing)
set -euo pipefail
cd "$(dirname "$0")/.."

dry_run=0
case "${1:-}" in
    "") ;;
    --dry-run) dry_run=1 ;;
    -h | --help)
        sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "gpu-check: unknown argument '$1' (usage: scripts/gpu-check.sh [--dry-run])" >&2
        exit 2
        ;;
esac

python=.venv/bin/python
ssl_bench=.venv/bin/ssl-bench
out=results/bench
pretrain_dir=$out/cuda-pretrain-$(date +%Y%m%d-%H%M%S)
log=$out/cuda-check.log

# name | time limit (s) | command. The limits add up to 8 minutes.
steps=(
    "cuda tests|70|$python -m pytest -q -k 'cuda or gpu' tests"
    "bench|290|$ssl_bench bench --device cuda --backbones resnet18_cifar@32 resnet50@224 --batch-size 256 --repeats 3 --json $out/"
    "pretrain + evaluation, bf16|100|$ssl_bench run simclr vicreg --dataset fashion-mnist --epochs 3 --set device=cuda --set precision=bf16 --no-progress --results-dir $pretrain_dir"
    "pretrain table|20|$ssl_bench table $pretrain_dir"
)

if [ "$dry_run" = 1 ]; then
    echo "gpu-check --dry-run: would run, in order (log: $log):"
    for step in "${steps[@]}"; do
        IFS='|' read -r name limit command <<<"$step"
        echo "  [$name] (limit ${limit} s) $command"
    done
    exit 0
fi

if [ ! -x "$python" ]; then
    echo "gpu-check: $python not found; run 'bash scripts/setup.sh' first" >&2
    exit 1
fi
if ! "$python" -c 'import sys, torch
if not torch.cuda.is_available():
    sys.exit(f"gpu-check: torch {torch.__version__} sees no CUDA device")'; then
    exit 1
fi

mkdir -p "$out"
: >"$log"
failed=()
started=$SECONDS
for step in "${steps[@]}"; do
    IFS='|' read -r name limit command <<<"$step"
    echo "== [$name] (limit ${limit} s) $command" | tee -a "$log"
    step_start=$SECONDS
    # timeout: SIGINT first (ssl-bench cleans up as on Ctrl-C), SIGKILL 10 s later.
    set +e
    timeout --signal=INT --kill-after=10 "$limit" bash -c "$command" 2>&1 | tee -a "$log"
    code=${PIPESTATUS[0]}
    set -e
    if [ "$code" = 0 ]; then
        status=ok
    else
        status="FAILED (exit $code$([ "$code" = 124 ] && echo ', time limit'))"
        failed+=("$name")
    fi
    echo "== [$name] $status after $((SECONDS - step_start)) s" | tee -a "$log"
done

echo "gpu-check: $((SECONDS - started)) s in all; figures in $out/cuda-*.json, log in $log" | tee -a "$log"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "gpu-check: failed steps: ${failed[*]}" | tee -a "$log" >&2
    exit 1
fi
