#!/usr/bin/env bash
# Fetch, on this (networked) machine, the wheels tuner needs that a GPU machine's image lacks
# (it has torch, torchvision, numpy, pillow, pyyaml, safetensors, scikit-learn, tqdm, pytest),
# into .whl/ for bench/gpu_check.sh to install there offline. Versions are this venv's.
# Usage: bash bench/gpu_wheels.sh   (then carry .whl with the device run)
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf .whl && mkdir .whl
version() { python3 -c "import importlib.metadata as m; print(m.version('$1'))"; }
for name in optuna optuna-dashboard bottle alembic Mako colorlog sqlalchemy; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl "$name==$(version "$name")"
done
du -sh .whl
