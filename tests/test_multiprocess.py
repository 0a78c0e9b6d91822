"""A real two-process run on one machine: CPU collectives over loopback, orbax across processes, resume,
and a preemption that reaches one host only (SIGTERM) making both save the same step and exit 0."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

ROOT = os.path.join(os.path.dirname(__file__), "..")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def launch(workdir: str, data_dir: str, total_steps: int, log_dir: str, tag: str,
           extra: tuple[str, ...] = ()) -> list[subprocess.Popen]:
    """Starts the two processes of a smoke run (flags in `extra` added); their output goes to <tag>_<pid>.log."""
    port = free_port()
    procs = []
    for pid in range(2):
        log = open(os.path.join(log_dir, f"{tag}_{pid}.log"), "w")
        # One CPU device each; the conftest's XLA flags (a fast compile for tiny programs) kept.
        flags = [f for f in os.environ.get("XLA_FLAGS", "").split()
                 if not f.startswith("--xla_force_host_platform_device_count")]
        env = dict(os.environ, JAX_PLATFORMS="cpu",
                   XLA_FLAGS=" ".join(flags + ["--xla_force_host_platform_device_count=1"]))
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "lumiere_jax.main", "--config=configs/t2v.py:size=smoke", f"--workdir={workdir}",
             f"--config.data.data_dir={data_dir}", f"--config.total_steps={total_steps}",
             "--config.checkpoint_every=2", "--distributed", f"--coordinator_address=localhost:{port}",
             "--num_processes=2", f"--process_id={pid}", *extra],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
    return procs


def wait_all(procs, timeout: float) -> list[int]:
    deadline = time.time() + timeout
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(max(1.0, deadline - time.time())))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
    return codes


def read(path: str) -> str:
    with open(path) as f:
        return f.read()


def test_two_processes_train_checkpoint_resume_and_preempt(tmp_path, data_dir, trained_workdir):
    del trained_workdir  # built the smoke dataset in data_dir already
    workdir, logs = str(tmp_path / "run"), tmp_path
    # 1. Train 4 steps on a 2-process mesh (one CPU device each: data axis 2, one example per host).
    codes = wait_all(launch(workdir, data_dir, 4, logs, "first"), timeout=900)
    assert codes == [0, 0], [read(logs / f"first_{i}.log")[-2000:] for i in range(2)]
    assert sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit()) == [2, 4]
    assert json.load(open(os.path.join(workdir, "train_done.json")))["step"] == 4
    first0 = read(logs / "first_0.log")
    assert "over 2 devices in 2 processes" in first0, first0[-2000:]

    # 2. Resume towards step 1000; once step 5 is logged, SIGTERM reaches process 1 only.
    procs = launch(workdir, data_dir, 1000, logs, "second")
    metrics = os.path.join(workdir, "metrics.jsonl")
    deadline = time.time() + 900
    while time.time() < deadline and all(p.poll() is None for p in procs):
        if os.path.exists(metrics) and any(json.loads(l)["step"] >= 5 for l in open(metrics) if l.strip()):
            break
        time.sleep(0.5)
    procs[1].send_signal(signal.SIGTERM)
    codes = wait_all(procs, timeout=600)
    out = [read(logs / f"second_{i}.log") for i in range(2)]
    assert codes == [0, 0], [o[-2000:] for o in out]
    assert "Resumed from checkpoint at step 4" in out[0]
    stopped = [int(o.split("at step ")[-1].split(";")[0]) for o in out if "Stopped by" in o]
    assert len(stopped) == 2 and stopped[0] == stopped[1] >= 5, out
    steps = sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())
    assert steps[-1] == stopped[0], steps
