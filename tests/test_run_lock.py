"""One trainer per workdir: a second `--mode=train` on a workdir a live trainer holds is refused in one line naming
the holder; a lock left by a killed or vanished trainer does not block the next run; sampling stays allowed.

Stale-lock detection: on this host the holder's pid is probed (dead, or reused: another start time); a holder
on another host is judged by its heartbeat, tested here with lock files written by hand.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lumiere_jax import checkpointing, run_lock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOST = socket.gethostname()


def _write_lock(workdir, *, host=HOST, pid=None, start_time=None, heartbeat_age=0.0, every=30.0):
    """A lock file as a trainer would write it; start_time None: the pid's own (when it runs here)."""
    pid = os.getpid() if pid is None else pid
    now = time.time()
    lock = {"host": host, "pid": pid, "start_time": start_time or run_lock.process_start_time(pid),
            "since": now - heartbeat_age - 60, "heartbeat": now - heartbeat_age, "heartbeat_every": every,
            "token": "by-hand"}
    path = os.path.join(workdir, run_lock.LOCK_NAME)
    with open(path, "w") as f:
        json.dump(lock, f)
    return path


def _dead_pid():
    """The pid of a process that has exited (and was reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# The lock itself, in process.

def test_a_live_holder_is_named_and_the_lock_is_released_on_exit_and_on_exceptions(tmp_path):
    workdir = str(tmp_path)
    with run_lock.RunLock(workdir) as lock:
        with open(lock.path) as f:
            held = json.load(f)
        assert (held["host"], held["pid"]) == (HOST, os.getpid())
        assert held["start_time"] == run_lock.process_start_time(os.getpid())
        with pytest.raises(run_lock.RunLockedError) as e:
            run_lock.RunLock(workdir).acquire()
    message = str(e.value)
    since = time.strftime("%Y-%m-%d %H:%M", time.localtime(held["since"]))
    assert "\n" not in message and f"host {HOST}, pid {os.getpid()}, since {since}" in message, message
    assert not os.path.exists(lock.path)  # released

    with pytest.raises(ZeroDivisionError):
        with run_lock.RunLock(workdir):
            1 / 0
    assert not os.path.exists(lock.path)


def test_the_heartbeat_is_refreshed_from_a_daemon_thread(tmp_path):
    with run_lock.RunLock(str(tmp_path), heartbeat_every=0.05) as lock:
        first = run_lock.read_holder(lock.path)
        time.sleep(0.5)
        later = run_lock.read_holder(lock.path)
        assert later.token == first.token and later.since == first.since
        assert later.heartbeat > first.heartbeat


@pytest.mark.parametrize("case", ["dead pid", "reused pid", "other host, old heartbeat", "torn lock file"])
def test_a_stale_lock_does_not_block(tmp_path, case, caplog):
    workdir = str(tmp_path)
    if case == "dead pid":
        path = _write_lock(workdir, pid=_dead_pid(), start_time="12345")
    elif case == "reused pid":  # a live pid, but not the process that took the lock: it started at another time
        path = _write_lock(workdir, pid=os.getpid(), start_time="1")
    elif case == "other host, old heartbeat":  # cannot be probed: 5 missed heartbeats
        path = _write_lock(workdir, host="tpu-vm-7", pid=os.getpid(), heartbeat_age=150, every=30)
    else:  # created, then killed before its content was written
        path = os.path.join(workdir, run_lock.LOCK_NAME)
        open(path, "w").close()
        os.utime(path, (time.time() - 60, time.time() - 60))
    with run_lock.RunLock(workdir):
        assert run_lock.read_holder(path).pid == os.getpid()
    assert "Replacing the stale lock" in caplog.text
    assert sorted(os.listdir(workdir)) == []  # released; nothing left of the stale lock


@pytest.mark.parametrize("case", ["live pid", "other host, fresh heartbeat"])
def test_a_live_lock_blocks(tmp_path, case):
    workdir = str(tmp_path)
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        if case == "live pid":
            _write_lock(workdir, pid=sleeper.pid, heartbeat_age=3600)  # same host: the pid decides, not the heartbeat
            holder = f"host {HOST}, pid {sleeper.pid}"
        else:
            _write_lock(workdir, host="tpu-vm-7", pid=_dead_pid(), heartbeat_age=20, every=30)
            holder = "host tpu-vm-7, pid"
        with pytest.raises(run_lock.RunLockedError, match=re.escape(holder)):
            run_lock.RunLock(workdir).acquire()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_sigkilled_holder_does_not_block(tmp_path):
    workdir = str(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from lumiere_jax import run_lock; "
                               "run_lock.RunLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(60)",
                               workdir], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(run_lock.RunLockedError, match=f"pid {holder.pid}"):
            run_lock.RunLock(workdir).acquire()
    finally:
        holder.kill()
        holder.wait()
    with run_lock.RunLock(workdir) as lock:
        assert run_lock.read_holder(lock.path).pid == os.getpid()


def test_a_reader_takes_the_new_newest_checkpoint_when_a_trainer_deletes_the_one_it_listed(tmp_path):
    """Sampling beside a trainer: the trainer's max_to_keep may delete the step a reader listed before it reads."""
    workdir = str(tmp_path)

    def state(step):
        return {"w": jnp.full((8,), float(step))}

    trainer = checkpointing.Checkpointer(workdir, max_to_keep=2, async_save=False)
    for step in (1, 2):
        trainer.save(step, state(step), {})
    reader = checkpointing.Checkpointer(workdir, read_only=True)
    assert reader.latest_step() == 2
    for step in (3, 4):
        trainer.save(step, state(step), {})  # deletes 1 and 2
    assert reader.latest_step() == 2  # the reader's list is from before
    restored, _ = reader.restore(jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state(0)))
    np.testing.assert_array_equal(restored["w"], state(4)["w"])
    trainer.close()
    reader.close()


# Through the command line: a live trainer, a second one, sampling beside it, SIGTERM, a stale lock.

def _cli(workdir, data_dir, *args, **overrides):
    return [sys.executable, "-m", "lumiere_jax.main", "--config=configs/t2v.py:size=smoke", f"--workdir={workdir}",
            f"--config.data.data_dir={data_dir}", *args, *(f"--config.{k}={v}" for k, v in overrides.items())]


def _run(cmd, log_path, timeout=600):
    with open(log_path, "w") as log:
        rc = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ),
                            timeout=timeout).returncode
    with open(log_path, errors="replace") as f:
        return rc, f.read()


def _tail(path):
    with open(path, errors="replace") as f:
        return f.read()[-3000:]


def test_second_trainer_refused_sigterm_releases_sampling_beside_a_holder_stale_lock_replaced(data_dir, tmp_path):
    workdir = str(tmp_path / "run")
    lock_path = os.path.join(workdir, run_lock.LOCK_NAME)
    first_log = str(tmp_path / "first.log")
    with open(first_log, "w") as log:
        first = subprocess.Popen(_cli(workdir, data_dir, total_steps=100_000, checkpoint_every=2, log_every=1),
                                 cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ),
                                 start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not os.path.exists(os.path.join(workdir, "checkpoints", "2", "commit_success.txt")):
            assert first.poll() is None, _tail(first_log)
            assert time.monotonic() < deadline, _tail(first_log)
            time.sleep(0.1)
        holder = run_lock.read_holder(lock_path)
        assert (holder.host, holder.pid) == (HOST, first.pid)

        # A second trainer: one line naming the holder, before it builds or writes anything.
        rc, out = _run(_cli(workdir, data_dir), tmp_path / "second.log")
        errors = [line for line in out.splitlines() if line.startswith("error:")]
        assert rc == 2 and len(errors) == 1 and "Traceback" not in out, out[-3000:]
        since = time.strftime("%Y-%m-%d %H:%M", time.localtime(holder.since))
        assert errors[0].startswith(f"error: Another trainer is training in {workdir}: host {HOST}, pid "
                                    f"{first.pid}, since {since}"), errors[0]

        # SIGTERM: the trainer checkpoints, exits 0 and releases the lock.
        os.killpg(first.pid, signal.SIGTERM)
        assert first.wait(timeout=120) == 0, _tail(first_log)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
    stopped = int(re.search(r"Stopped by SIGTERM at step (\d+)", _tail(first_log)).group(1))
    assert not os.path.exists(lock_path)

    # Sampling beside a live holder (another live process of this host, with a fresh heartbeat) is allowed and
    # reads the newest complete checkpoint; the lock stays as it was.
    sleeper = subprocess.Popen(["sleep", "120"])
    try:
        _write_lock(workdir, pid=sleeper.pid)
        with open(lock_path) as f:
            held = f.read()
        clip = str(tmp_path / "clip.gif")
        rc, out = _run(_cli(workdir, data_dir, "--mode=sample", "--prompt=a red circle moving left",
                            f"--out={clip}"), tmp_path / "sample.log")
        assert rc == 0 and os.path.getsize(clip) > 0, out[-3000:]
        assert f"checkpoint step {stopped})" in out, out[-3000:]
        with open(lock_path) as f:
            assert f.read() == held
    finally:
        sleeper.kill()
        sleeper.wait()

    # A lock whose holder is gone (the SIGTERM'd trainer's pid, dead) is replaced; the run resumes, releases it.
    _write_lock(workdir, pid=first.pid, start_time=holder.start_time)
    rc, out = _run(_cli(workdir, data_dir, total_steps=stopped + 1, checkpoint_every=2, log_every=1),
                   tmp_path / "stale.log")
    assert rc == 0, out[-3000:]
    assert "Replacing the stale lock" in out and f"Resumed from checkpoint at step {stopped}" in out, out[-3000:]
    assert not os.path.exists(lock_path)
