#!/usr/bin/env bash
# Fetch, on this (networked) machine, the wheels tuner and its CUDA tests need that a GPU
# machine's image lacks, into .whl/ for bench/gpu_check.sh to install there offline (the
# project's device machines reach no network). Versions are this environment's.
# Usage: bash bench/gpu_wheels.sh   (then carry .whl with the device run)
#
# IMAGE_HAS: what the check imports that the image already holds (its package list:
# /work/.library/device/KINDS.md); FETCH: the rest, with everything they need. plotly is
# imported by tuner.results (reports, figures), which tests/conftest.py loads.
# tests/test_gpu_check.py checks that tuner's dependencies, and the needs of every wheel
# fetched, are in one list or the other.
set -euo pipefail
IMAGE_HAS=(torch torchvision numpy pandas matplotlib pillow pyyaml safetensors scikit-learn
  scipy tqdm pytest packaging narwhals markupsafe typing-extensions)
FETCH=(optuna optuna-dashboard bottle alembic mako colorlog sqlalchemy plotly)
# psycopg (postgresql:// storages) is tuner's only dependency the check never imports.
NOT_NEEDED=(psycopg)
if [ "${1:-}" = --list ]; then  # for the test: the three lists, one per line
  echo "${IMAGE_HAS[*]}"; echo "${FETCH[*]}"; echo "${NOT_NEEDED[*]}"
  exit 0
fi
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf .whl && mkdir .whl
version() { python3 -c "import importlib.metadata as m; print(m.version('$1'))"; }
for name in "${FETCH[@]}"; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl "$name==$(version "$name")"
done
ls .whl
du -sh .whl
