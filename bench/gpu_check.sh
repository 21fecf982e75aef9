#!/usr/bin/env bash
# The GPU check (issues 12 and 23): one command for a machine with CUDA, within 8 minutes,
# that cannot pass by accident: every step is judged by what it measured, not by an exit
# status that also says 0 when nothing ran.
#
#   0. setup: CUDA must be there (else one line and exit 2, at once); wheels from .whl/;
#      the packages the steps import must import;
#   1. the CUDA tests: every test file marking tests pytest.mark.cuda, run directly, and a
#      skipped test fails (bench/gpu_tests.py);
#   2. every training path's steps under torch.cuda.set_sync_debug_mode("error")
#      (bench/gpu_sync_check.py);
#   3. throughput (bench/gpu_bench.py): the bare ResNet-18/50 bf16 step at 224 px (the
#      ceiling), tuner's engine epoch at 32 and 224 px, resident and streamed; fails below
#      70% of the ceiling at 224 px, or streamed more than 15% slower than resident;
#   4. a `tuner search --gpus 0 --per-gpu 2` mini search, judged by its study: the exact
#      budget finished, no FAIL or RUNNING trial, every trial on CUDA, two workers, each
#      worker's peak GPU memory after all its trials within 5% of that after its first
#      (bench/gpu_search_check.py mini, bench/gpu_study_check.py);
#   5. a trial that runs out of GPU memory, then one that fits, in the same worker (oom);
#   6. with two GPUs or more: CUDA_VISIBLE_DEVICES=1 tuner search --gpus 0 runs on
#      physical GPU 1 (masked).
# then prints a results block for bench/RESULTS.md, every step passed or FAILED with its
# numbers. A step that fails is reported and the next one still runs; the exit status is 0
# only when all passed.
#
# Where the GPU machine has no network (this project's device machines), fetch the missing
# Python packages here first with `bash bench/gpu_wheels.sh` and carry .whl along.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
PY=${PYTHON:-python3}

# Each command's limit in seconds, its kill grace included: they add up to 470 of the 480 s
# (8 minutes), the rest for bash; tests/test_gpu_check.py sums them. A slow machine without
# a GPU (the tests') may give the probe longer with GPU_CHECK_PROBE_SECONDS.
LIMIT_PROBE=${GPU_CHECK_PROBE_SECONDS:-15}
LIMIT_NVIDIA_SMI=5
LIMIT_WHEELS=30
LIMIT_TESTS=50
LIMIT_SYNC=40
LIMIT_BENCH=120
LIMIT_MINI=85
LIMIT_OOM=70
LIMIT_MASKED=55
GRACE=3 # seconds between a step's TERM and its KILL
budget=$((LIMIT_PROBE + LIMIT_NVIDIA_SMI + LIMIT_WHEELS + LIMIT_TESTS + LIMIT_SYNC + LIMIT_BENCH
  + LIMIT_MINI + LIMIT_OOM + LIMIT_MASKED))

# Stdout and stderr silenced: a machine without CUDA gets this one line, no traceback.
probe='
import sys
try:
    import torch
except Exception as exc:
    sys.exit(f"torch does not import with {sys.executable} ({type(exc).__name__}: {exc})")
if not torch.cuda.is_available():
    sys.exit("no CUDA device (torch.cuda.is_available() is False); run it on a GPU machine")
print(f"torch {torch.__version__}")
'
if ! torch_line=$(timeout -k "$GRACE" $((LIMIT_PROBE - GRACE)) "$PY" -c "$probe" 2>/tmp/gpu_check_probe.err); then
  reason=$(tail -n 1 /tmp/gpu_check_probe.err)
  echo "gpu_check: ${reason:-$PY did not answer within $LIMIT_PROBE s}" | head -c 400 >&2
  echo >&2
  exit 2
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
started=$SECONDS
logs=$(mktemp -d /tmp/gpu-check.XXXXXX)
gpus=$(timeout "$LIMIT_NVIDIA_SMI" nvidia-smi --query-gpu=name,memory.total,driver_version \
  --format=csv,noheader)
gpu_count=$(grep -c . <<<"$gpus")
echo "$gpus"
rows=()
failed=()

# step NAME LIMIT COMMAND...: run it under its limit; its row holds its last line of output.
step() {
  local name=$1 limit=$2 log="$logs/${1// /-}.log" t0=$SECONDS
  shift 2
  echo
  echo "== $name (at most $limit s)"
  timeout -k "$GRACE" $((limit - GRACE)) "$@" 2>&1 | tee "$log"
  local status=${PIPESTATUS[0]} result=passed
  if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
    result="FAILED (stopped at its $limit s limit)"
  elif [ "$status" -ne 0 ]; then
    result="FAILED (exit $status)"
  fi
  [ "$result" = passed ] || failed+=("$name")
  local last
  last=$(grep -v '^\s*$' "$log" | tail -n 1 | sed -E 's/^(passed|FAILED): //; s/\|/\\|/g')
  rows+=("| $name | $result | $((SECONDS - t0)) | ${last:0:400} |")
}

wheels() {
  if [ -d .whl ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/tuner-site .whl/*.whl || return 1
  fi
  "$PY" -c 'import optuna, optuna_dashboard, sqlalchemy, alembic, plotly, colorlog, pytest
print("passed: optuna", optuna.__version__, "and the rest import")' ||
    { echo "FAILED: a package is missing: fetch wheels with bash bench/gpu_wheels.sh, carry .whl"; return 1; }
}
export PYTHONPATH="$PYTHONPATH:/tmp/tuner-site"
export -f wheels
export PY
step "packages" "$LIMIT_WHEELS" bash -c wheels
step "CUDA tests" "$LIMIT_TESTS" "$PY" bench/gpu_tests.py
step "sync debug mode" "$LIMIT_SYNC" "$PY" bench/gpu_sync_check.py
step "throughput" "$LIMIT_BENCH" "$PY" bench/gpu_bench.py
step "mini search" "$LIMIT_MINI" "$PY" bench/gpu_search_check.py mini --timeout $((LIMIT_MINI - 25))
step "out of memory" "$LIMIT_OOM" "$PY" bench/gpu_search_check.py oom --timeout $((LIMIT_OOM - 30))
if [ "$gpu_count" -gt 1 ]; then
  step "masked --gpus" "$LIMIT_MASKED" "$PY" bench/gpu_search_check.py masked \
    --timeout $((LIMIT_MASKED - 25))
else
  rows+=("| masked --gpus | skipped | 0 | nvidia-smi lists $gpu_count GPU: needs two |")
fi

echo
echo "## GPU check, $(date -u +%F)"
echo
echo "$(head -n 1 <<<"$gpus") ($gpu_count GPU), $torch_line, \`bash bench/gpu_check.sh\`" \
  "in $((SECONDS - started)) s (its limits add up to $budget s)"
echo
echo "| step | result | seconds | numbers |"
echo "| --- | --- | --- | --- |"
printf '%s\n' "${rows[@]}"
echo
sed -n '/^| what/,$p' "$logs/throughput.log" 2>/dev/null | grep -v -E '^(passed|FAILED):'
if [ ${#failed[@]} -gt 0 ]; then
  echo "* FAILED: ${failed[*]}"
  exit 1
fi
echo "* all steps passed"
