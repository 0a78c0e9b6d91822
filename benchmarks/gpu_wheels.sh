#!/usr/bin/env bash
# Fetches, where pip reaches a package index, the wheels that benchmarks/gpu.sh needs on a GPU machine that
# has jax, torch and CUDA but no network: ml_collections (the configs), and the PyTorch peers (diffusers,
# imagen-pytorch) with the dependencies of theirs that such an image usually lacks. They land in .whl/
# (git-ignored), which travels with the working tree and which gpu.sh installs into a temporary folder.
#
#   bash benchmarks/gpu_wheels.sh                  # for the GPU machine's Python 3.12 on x86-64 Linux
#   PY_VERSION=3.11 bash benchmarks/gpu_wheels.sh  # another Python
#
# The versions are the ones benchmarks/requirements-peers.txt was tested with. The data, checkpoint and
# video packages are not needed: the check never builds the data pipeline (gpu_check.py puts placeholders
# in their place when they are missing).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="${DEST:-$ROOT/.whl}"
PY_VERSION="${PY_VERSION:-3.12}"
PACKAGES=(
  ml-collections==1.1.0
  diffusers==0.42.1 importlib-metadata==10.2.0
  imagen-pytorch==2.1.0 ema-pytorch==0.8.3 kornia==0.9.0 kornia-rs==0.2.0 beartype==0.23.1 pytorch-warmup==0.2.0
  pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
  datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19
)
mkdir -p "$DEST"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PY_VERSION" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$DEST" "${PACKAGES[@]}"
ls -1 "$DEST"
du -sh "$DEST"
