#!/usr/bin/env bash
# The GPU check (issue 12): one command for a machine with CUDA, within 8 minutes.
#
#   1. the CUDA-only tests (pytest -m cuda);
#   2. bench/gpu_bench.py: the bare ResNet-18/50 bf16 channels_last step at 224 px (the
#      ceiling) and tuner's engine epoch at 32 and 224 px, resident and streamed;
#   3. a `tuner search --gpus 0 --per-gpu 2` mini search on a synthetic CIFAR-10;
# then prints a results block for bench/RESULTS.md. A step that fails is reported and the
# next one still runs; the exit status says whether all passed.
#
# Where the GPU machine has no network (this project's device machines), fetch the missing
# Python packages here first with `bash bench/gpu_wheels.sh` and carry .whl along.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
if [ -d .whl ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/tuner-site .whl/*.whl && export PYTHONPATH="$PYTHONPATH:/tmp/tuner-site"
fi
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'" || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
failed=()
started=$SECONDS

echo "== 1. CUDA tests"
timeout 150 "$PY" -m pytest -q -m cuda -p no:cacheprovider tests || failed+=("cuda tests")

echo "== 2. throughput"
timeout 260 "$PY" bench/gpu_bench.py | tee /tmp/gpu_bench.md || failed+=("gpu_bench")

echo "== 3. tuner search --gpus 0 --per-gpu 2 (synthetic CIFAR-10)"
work=$(mktemp -d)
"$PY" -c "from pathlib import Path; from tests.helpers import write_cifar10; write_cifar10(Path('$work/data'))"
search_started=$SECONDS
(cd "$work" && timeout 150 "$PY" -m tuner.cli search --gpus 0 --per-gpu 2 --trials 6 \
  --set data.source=cifar10 --set data.root="$work/data" --set data.val_source=test \
  --set model.weights=none --set train.epochs=2 > search.log 2>&1) || failed+=("mini search")
search_seconds=$((SECONDS - search_started))
tail -n 25 "$work/search.log"
grep -h "data " "$work"/tuner-logs/*/*.log 2>/dev/null | head -n 2

echo
echo "## GPU check, $(date +%F)"
echo
echo "$(nvidia-smi --query-gpu=name --format=csv,noheader), $("$PY" -c 'import torch; print("torch", torch.__version__)'), bash bench/gpu_check.sh in $((SECONDS - started)) s"
echo
cat /tmp/gpu_bench.md 2>/dev/null | sed -n '/^| what/,$p'
echo "* mini search (--gpus 0 --per-gpu 2, 6 trials of 2 epochs): ${search_seconds} s, $(grep -c 'finished' "$work/search.log" 2>/dev/null || echo 0) summary line(s)"
if [ ${#failed[@]} -gt 0 ]; then
  echo "* FAILED: ${failed[*]}"
  exit 1
fi
echo "* all steps passed"
