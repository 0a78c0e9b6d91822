#!/usr/bin/env bash
# GPU check, unattended, in at most 8 minutes on one H100 or H200:
#   devices     jax sees the GPU; package versions; a bf16 matmul
#   train_step  configs/t2v.py size=small in bf16, model.attention=xla and cudnn: step time, FLOP utilization
#               against the card's dense bf16 peak (goal: >= 50%)
#   sampler     clips/s of the teacher at its 50 steps and at 8 DDIM steps (an 8-step student's cost)
#   peers       our train step against diffusers' and imagen-pytorch's video U-Nets on the same GPU
# Each stage is one process under its own time limit and writes gpu_<stage>.json as soon as it measures a
# figure; gpu_summary.json and gpu_log.txt close the run.
#
#   bash benchmarks/gpu.sh                 # on the GPU machine: results under $OUT, else benchmarks/results/gpu_<card>/
#   bash benchmarks/gpu.sh --smoke         # dry run on the CPU at size=smoke (about a minute)
#   bash benchmarks/gpu.sh --stages=devices,train_step --total=300
#
# Needs python3 with jax, flax, optax, numpy and ml_collections (the peers also torch, diffusers and
# imagen-pytorch); nothing is installed from the network. Wheels in .whl/ (benchmarks/gpu_wheels.sh fetches
# them where pip works) are installed into a temporary folder first. PYTHON=... picks the interpreter.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 2
PY="${PYTHON:-python3}"
SMOKE=0
STAGES="devices,train_step,sampler,peers"
TOTAL=""
OUTDIR=""
for arg in "$@"; do
  case "$arg" in
    --smoke) SMOKE=1 ;;
    --stages=*) STAGES="${arg#*=}" ;;
    --total=*) TOTAL="${arg#*=}" ;;
    --out=*) OUTDIR="${arg#*=}" ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "gpu.sh: unknown argument $arg (try --help)" >&2; exit 2 ;;
  esac
done

# Seconds per stage, and for the whole run (the stages' limits are cut to what is left of it).
if (( SMOKE )); then
  declare -A BUDGET=([devices]=60 [train_step]=180 [sampler]=180 [peers]=240)
  TOTAL="${TOTAL:-600}"
  export JAX_PLATFORMS=cpu
  # Hide the modules a bare CUDA image lacks, so the dry run imports what the GPU run will.
  export GPU_CHECK_HIDE="${GPU_CHECK_HIDE-bare}"
  SMOKE_FLAG="--smoke"
  DEFAULT_OUT="benchmarks/results/gpu_smoke_cpu"
else
  declare -A BUDGET=([devices]=40 [train_step]=215 [sampler]=110 [peers]=80)
  TOTAL="${TOTAL:-450}"
  SMOKE_FLAG=""
  # One process at a time uses the GPU: let XLA's allocator have nearly all of it (the default is 75%).
  export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.95}"
  card="$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n1 | tr -cs 'A-Za-z0-9' '_' \
          | sed 's/^_*//; s/_*$//' | tr 'A-Z' 'a-z')"
  DEFAULT_OUT="benchmarks/results/gpu_${card:-unknown}"
fi
OUTDIR="${OUTDIR:-${OUT:-$DEFAULT_OUT}}"
mkdir -p "$OUTDIR" || exit 2
rm -f "$OUTDIR"/gpu_*.json
LOG="$OUTDIR/gpu_log.txt"
: > "$LOG"
exec > >(tee -a "$LOG") 2>&1
TEE=$!
START=$(date +%s)
DEADLINE=$(( START + TOTAL ))
echo "gpu.sh: stages $STAGES, at most ${TOTAL} s, results in $OUTDIR$( ((SMOKE)) && echo ' (CPU smoke dry run)')"

export PYTHONUNBUFFERED=1
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TF_CPP_MIN_LOG_LEVEL=2
WHEELS="${GPU_CHECK_WHEELS:-$ROOT/.whl}"
if compgen -G "$WHEELS/*.whl" > /dev/null; then
  SITE="$(mktemp -d)/site"
  if timeout 120 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" \
      "$WHEELS"/*.whl; then
    export PYTHONPATH="$SITE:$PYTHONPATH"
    echo "gpu.sh: installed $(ls "$WHEELS"/*.whl | wc -l) wheels from ${WHEELS#"$ROOT"/} into a temporary folder"
  else
    echo "gpu.sh: installing the wheels in ${WHEELS#"$ROOT"/} failed; going on with what is installed"
  fi
fi
"$PY" -c 'import sys; print("gpu.sh: python", sys.version.split()[0])' || { echo "gpu.sh: no $PY"; exit 2; }

STATUS=""
FAILED=0
NO_GPU=0
run_stage() {
  local name="$1" left budget t0 rc
  left=$(( DEADLINE - $(date +%s) ))
  budget=${BUDGET[$name]}
  (( budget > left )) && budget=$left
  if (( NO_GPU )) && [[ "$name" != devices ]]; then
    echo "== $name: skipped (jax sees no GPU)"; STATUS+="$name=skipped_no_gpu:0,"; return
  fi
  if (( budget < 20 )); then
    echo "== $name: skipped (${left} s left of ${TOTAL})"; STATUS+="$name=skipped_out_of_time:0,"; FAILED=1; return
  fi
  echo "== $name (limit ${budget} s)"
  t0=$(date +%s)
  timeout -k 10 "$budget" "$PY" benchmarks/gpu_check.py --stage="$name" --out="$OUTDIR" --budget_s="$budget" \
    $SMOKE_FLAG
  rc=$?
  echo "== $name: exit $rc after $(( $(date +%s) - t0 )) s"
  STATUS+="$name=$rc:$(( $(date +%s) - t0 )),"
  if [[ "$name" == devices && $rc == 3 ]]; then NO_GPU=1; FAILED=1; return; fi
  (( rc != 0 )) && FAILED=1
}

IFS=',' read -r -a LIST <<< "$STAGES"
for s in "${LIST[@]}"; do
  case "$s" in
    devices|train_step|sampler|peers) run_stage "$s" ;;
    *) echo "gpu.sh: unknown stage $s"; FAILED=1 ;;
  esac
done

echo "== summary ($(( $(date +%s) - START )) s in all)"
timeout 15 "$PY" benchmarks/gpu_check.py --stage=summary --out="$OUTDIR" --status="${STATUS%,}" $SMOKE_FLAG \
  || echo "gpu.sh: the summary failed; stage exit codes: ${STATUS%,}"
exec >&- 2>&-
wait "$TEE" 2>/dev/null
exit $FAILED
