"""Preemption and crash safety of the trainer, run through the command line as a cluster would run it.

SIGTERM/SIGINT: the run checkpoints the step it is on, exits 0, and the same command resumes there.
SIGKILL at random moments (mid-step, mid-save, right after a save): every restart resumes from the newest
*complete* checkpoint, never a half-written one, and the run still reaches total_steps.

`pytest -s` prints the kill table; it is also written as crash_summary.json in the test's tmp dir.
LUMIERE_CRASH_KILLS (default 20) sets how many SIGKILLs the crash test delivers.
"""

import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TMP_MARK = ".orbax-checkpoint-tmp"
FIRST_STEP_TIMEOUT = 300  # s: a cold compile on a busy 2-core CPU; with a warm cache about 25 s
NUM_KILLS = int(os.environ.get("LUMIERE_CRASH_KILLS", "20"))


# Processes and files.

def _start(workdir, data_dir, log_path, **overrides):
    """Starts `python -m lumiere_jax.main` training in its own process group; stdout+stderr go to log_path."""
    cmd = [sys.executable, "-m", "lumiere_jax.main", "--config=configs/t2v.py:size=smoke", f"--workdir={workdir}",
           f"--config.data.data_dir={data_dir}", *(f"--config.{k}={v}" for k, v in overrides.items())]
    log = open(log_path, "w")
    try:
        # os.environ carries JAX_COMPILATION_CACHE_DIR from conftest: restarts reuse the compiled step.
        return subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ),
                                start_new_session=True)
    finally:
        log.close()


def _signal_group(proc, sig):
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def _reap(proc, timeout=60):
    """Waits for proc; a hang is killed (whole group) and reported as a failure."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _signal_group(proc, signal.SIGKILL)
        proc.wait(timeout=30)
        pytest.fail(f"trainer (pid {proc.pid}) did not exit within {timeout} s")


def _tail(path, n=3000):
    with open(path, errors="replace") as f:
        return f.read()[-n:]


def _wait_for(predicate, proc, log_path, timeout, what):
    """Polls predicate() until true; fails (and kills the group) on timeout or if proc exits first."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if proc.poll() is not None:
            pytest.fail(f"trainer exited with {proc.returncode} while waiting for {what}:\n{_tail(log_path)}")
        if time.monotonic() > deadline:
            _signal_group(proc, signal.SIGKILL)
            proc.wait(timeout=30)
            pytest.fail(f"timed out after {timeout} s waiting for {what}:\n{_tail(log_path)}")
        time.sleep(0.02)


def _metrics(workdir):
    """metrics.jsonl rows, in order; every line must be whole JSON (a kill must not leave a torn line)."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        text = f.read()
    lines = text.split("\n")
    if lines[-1]:  # an unterminated last line: the writer may be mid-write right now; read it next time
        lines = lines[:-1]
    return [json.loads(line) for line in lines if line]


def _log_step(log_path, pattern):
    with open(log_path, errors="replace") as f:
        m = re.search(pattern, f.read())
    return int(m.group(1)) if m else None


def _resumed_step(log_path):
    """The step the run restored (0 when it found no checkpoint), or None if it had not said yet."""
    with open(log_path, errors="replace") as f:
        text = f.read()
    m = re.search(r"Resumed from checkpoint at step (\d+)", text)
    if m:
        return int(m.group(1))
    return 0 if "No checkpoint in" in text else None


# Checkpoint folders.

def _entries(ckpt_dir):
    try:
        return os.listdir(ckpt_dir)
    except FileNotFoundError:
        return []


def _complete_steps(ckpt_dir):
    """Steps whose folder is a plain integer holding commit_success.txt: what orbax wrote to the end."""
    return sorted(int(n) for n in _entries(ckpt_dir)
                  if n.isdigit() and os.path.exists(os.path.join(ckpt_dir, n, "commit_success.txt")))


def _tmp_dirs(ckpt_dir):
    """{name: (inode, ctime)} of the unfinished save folders `<step>.orbax-checkpoint-tmp...`."""
    out = {}
    for n in _entries(ckpt_dir):
        if TMP_MARK in n:
            try:
                st = os.stat(os.path.join(ckpt_dir, n))
            except FileNotFoundError:  # renamed or removed between listdir and stat
                continue
            out[n] = (st.st_ino, st.st_ctime_ns)
    return out


def _orbax_steps(ckpt_dir):
    """The steps orbax itself lists, read-only (what a restart's CheckpointManager would pick from)."""
    if not os.path.isdir(ckpt_dir):
        return []
    import orbax.checkpoint as ocp
    manager = ocp.CheckpointManager(ckpt_dir, options=ocp.CheckpointManagerOptions(read_only=True, create=False))
    try:
        return sorted(manager.all_steps(read=True))
    finally:
        manager.close()


def _newest_complete(ckpt_dir):
    """The newest complete step, checked against orbax's own view of the folder (0 when none)."""
    ours, orbax = _complete_steps(ckpt_dir), _orbax_steps(ckpt_dir)
    assert (ours[-1] if ours else 0) == (orbax[-1] if orbax else 0), \
        f"orbax lists steps {orbax}, the folders with commit_success.txt are {ours}: {_entries(ckpt_dir)}"
    return ours[-1] if ours else 0


# 1. SIGTERM / SIGINT: a clean stop at a checkpoint, then an exact resume.

def _stop_with(sig, workdir, data_dir, log_path, after_steps):
    """Trains until `after_steps` new steps are logged, sends sig; returns (resumed, stopped_at, new rows)."""
    before = len(_metrics(workdir))
    proc = _start(workdir, data_dir, log_path, total_steps=100_000, checkpoint_every=1000, log_every=1)
    try:
        _wait_for(lambda: len(_metrics(workdir)) >= before + after_steps, proc, log_path, FIRST_STEP_TIMEOUT,
                  f"{after_steps} logged steps")
        _signal_group(proc, sig)
        rc = _reap(proc, timeout=120)
    finally:
        if proc.poll() is None:
            _signal_group(proc, signal.SIGKILL)
            proc.wait(timeout=30)
    name = signal.Signals(sig).name
    assert rc == 0, f"{name} should stop the run cleanly, got exit code {rc}:\n{_tail(log_path)}"
    stopped = _log_step(log_path, rf"Stopped by {name} at step (\d+); checkpoint saved")
    assert stopped is not None, _tail(log_path)
    return _resumed_step(log_path), stopped, _metrics(workdir)[before:]


def test_sigterm_and_sigint_checkpoint_the_current_step_and_resume_there(data_dir, tmp_path):
    workdir = str(tmp_path / "run")
    ckpt_dir = os.path.join(workdir, "checkpoints")

    # SIGTERM (a preemption notice): checkpoint_every=1000, so the only checkpoint is the one the signal wrote.
    resumed, n, rows = _stop_with(signal.SIGTERM, workdir, data_dir, str(tmp_path / "sigterm.log"), 3)
    assert resumed == 0
    assert [r["step"] for r in rows] == list(range(1, n + 1))  # it stops right after the step it logged last
    assert _complete_steps(ckpt_dir) == _orbax_steps(ckpt_dir) == [n]
    assert not _tmp_dirs(ckpt_dir)
    assert not os.path.exists(os.path.join(workdir, "train_done.json"))

    # SIGINT (Ctrl-C) on the resumed run: same contract.
    resumed, m, rows = _stop_with(signal.SIGINT, workdir, data_dir, str(tmp_path / "sigint.log"), 2)
    assert resumed == n
    assert [r["step"] for r in rows] == list(range(n + 1, m + 1))
    assert _complete_steps(ckpt_dir) == _orbax_steps(ckpt_dir) == [n, m]
    assert not _tmp_dirs(ckpt_dir)

    # The same command with a small total_steps above m finishes from m.
    log_path = str(tmp_path / "finish.log")
    before = len(_metrics(workdir))
    proc = _start(workdir, data_dir, log_path, total_steps=m + 2, checkpoint_every=1000, log_every=1)
    rc = _reap(proc, timeout=FIRST_STEP_TIMEOUT)
    assert rc == 0, _tail(log_path)
    assert _resumed_step(log_path) == m
    rows = _metrics(workdir)[before:]
    assert [r["step"] for r in rows] == [m + 1, m + 2]
    assert all(math.isfinite(r["loss"]) for r in rows)
    with open(os.path.join(workdir, "train_done.json")) as f:
        assert json.load(f)["step"] == m + 2
    print(f"\nSIGTERM stopped at step {n}, SIGINT at step {m}; resumed and finished at step {m + 2}.")


# 2. SIGKILL at random moments.

# When in a life to kill. `startup`: a random delay after launch (restore, compile: nothing is written).
# `steps`: a random delay after the life's first step (mid-step or mid-save). `save`: within 0.3 s of a new
# tmp save folder appearing (mid-write). `saved`: as soon as a new complete checkpoint appears (the moment
# after the rename, when orbax also deletes the oldest checkpoint).
KILL_MODES = ("steps", "save", "steps", "startup", "saved")
KILL_TOTAL_STEPS = 10_000  # lives that will be killed never finish on their own; the schedule ignores it
FINAL_TOTAL_STEPS = 40


def _kill_one_life(i, mode, rng, workdir, data_dir, tmp_path):
    """Runs one life of the trainer, SIGKILLs it at a moment chosen by mode; returns its record."""
    ckpt_dir = os.path.join(workdir, "checkpoints")
    expected = _newest_complete(ckpt_dir)
    rows_before = len(_metrics(workdir))
    tmp_before = _tmp_dirs(ckpt_dir)
    log_path = str(tmp_path / f"life_{i:02d}.log")
    proc = _start(workdir, data_dir, log_path, total_steps=KILL_TOTAL_STEPS, checkpoint_every=2, log_every=1)
    t0 = time.monotonic()
    try:
        if mode == "startup":
            delay = rng.uniform(1.0, 12.0)
            _wait_for(lambda: time.monotonic() - t0 > delay, proc, log_path, delay + 5, "the startup kill")
        else:
            _wait_for(lambda: len(_metrics(workdir)) > rows_before, proc, log_path, FIRST_STEP_TIMEOUT,
                      "the first step of this life")
            if mode == "steps":
                delay = rng.uniform(0.0, 3.0)
                _wait_for(lambda: time.monotonic() - t0 > 0 and time.sleep(delay) is None, proc, log_path,
                          delay + 5, "a mid-run kill")
            elif mode == "save":
                def new_save():
                    now = _tmp_dirs(ckpt_dir)
                    return any(tmp_before.get(n) != v for n, v in now.items())
                _wait_for(new_save, proc, log_path, 60, "a checkpoint save to start")
                time.sleep(rng.uniform(0.0, 0.3))
            elif mode == "saved":
                _wait_for(lambda: any(s > expected for s in _complete_steps(ckpt_dir)), proc, log_path, 60,
                          "a new complete checkpoint")
                time.sleep(rng.uniform(0.0, 0.05))
        assert proc.poll() is None, f"life {i} exited with {proc.returncode} before its kill:\n{_tail(log_path)}"
        tmp_at_kill = sorted(_tmp_dirs(ckpt_dir))
        _signal_group(proc, signal.SIGKILL)
        rc = _reap(proc, timeout=30)
        assert rc == -signal.SIGKILL, f"life {i}: exit code {rc}:\n{_tail(log_path)}"
    finally:
        if proc.poll() is None:
            _signal_group(proc, signal.SIGKILL)
            proc.wait(timeout=30)
    rows = _metrics(workdir)
    new = rows[rows_before:]
    resumed = _resumed_step(log_path)
    after = _newest_complete(ckpt_dir)
    last_logged = rows[-1]["step"] if rows else 0
    return {"kill": i + 1, "mode": mode, "seconds_alive": round(time.monotonic() - t0, 1),
            "expected_resume": expected, "resumed": resumed, "new_steps": [r["step"] for r in new],
            "last_logged": last_logged, "complete_after_kill": after, "steps_lost": last_logged - after,
            "tmp_at_kill": tmp_at_kill, "tmp_after_kill": sorted(_tmp_dirs(ckpt_dir)), "log": log_path}


def _check_losses_repeat(rows):
    """A step redone after a resume gives the loss it gave the first time: the restored state was exact."""
    first = {}
    for r in rows:
        if r["step"] in first:
            np.testing.assert_allclose(r["loss"], first[r["step"]], rtol=1e-5,
                                       err_msg=f"step {r['step']} redone after a resume gave another loss")
        else:
            first[r["step"]] = r["loss"]


def test_sigkill_at_random_moments_resumes_from_the_last_complete_checkpoint(data_dir, tmp_path):
    workdir = str(tmp_path / "run")
    ckpt_dir = os.path.join(workdir, "checkpoints")
    rng = random.Random(20240601)
    modes = [KILL_MODES[i % len(KILL_MODES)] for i in range(NUM_KILLS)]
    rng.shuffle(modes)
    if modes[0] == "startup":  # the first life should get somewhere
        modes.append(modes.pop(0))
    start = time.monotonic()

    kills = []
    for i, mode in enumerate(modes):
        record = _kill_one_life(i, mode, rng, workdir, data_dir, tmp_path)
        kills.append(record)
        # Resumed from the newest complete checkpoint as the folder stood before the launch: never a tmp folder.
        if record["resumed"] is not None:
            assert record["resumed"] == record["expected_resume"], record
        else:
            assert mode == "startup", record  # only a startup kill can land before the restore is logged
        # This life's steps continue from where it resumed, with no gap and no repeat.
        assert record["new_steps"] == list(range(record["expected_resume"] + 1,
                                                 record["expected_resume"] + 1 + len(record["new_steps"]))), record
        assert record["complete_after_kill"] <= record["last_logged"], record
        assert not any(n.split(".")[0].isdigit() and int(n.split(".")[0]) < 0 for n in record["tmp_after_kill"])

    # The final life: the same command, run to the end.
    expected = _newest_complete(ckpt_dir)
    total = max(FINAL_TOTAL_STEPS, expected + 6)
    orphans_before_final = sorted(_tmp_dirs(ckpt_dir))
    rows_before = len(_metrics(workdir))
    log_path = str(tmp_path / "final.log")
    proc = _start(workdir, data_dir, log_path, total_steps=total, checkpoint_every=2, log_every=1)
    try:
        rc = _reap(proc, timeout=FIRST_STEP_TIMEOUT + 120)
    finally:
        if proc.poll() is None:
            _signal_group(proc, signal.SIGKILL)
            proc.wait(timeout=30)
    assert rc == 0, _tail(log_path)
    final_resumed = _resumed_step(log_path)
    assert final_resumed == expected, _tail(log_path)
    with open(os.path.join(workdir, "train_done.json")) as f:
        assert json.load(f)["step"] == total
    rows = _metrics(workdir)
    final_rows = rows[rows_before:]
    assert [r["step"] for r in final_rows] == list(range(expected + 1, total + 1))
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"]) for r in final_rows), final_rows
    assert _newest_complete(ckpt_dir) == total
    _check_losses_repeat(rows)
    orphans_after_final = sorted(_tmp_dirs(ckpt_dir))

    # Every kill was survived: the next life (or the final one) resumed from that kill's newest complete step.
    next_resumed = [k["resumed"] for k in kills[1:]] + [final_resumed]
    for k, r in zip(kills, next_resumed):
        k["next_resumed"] = r
    survived = sum(1 for k in kills[1:] + [None] if True)  # counted below, explicitly
    survived = 0
    for j, k in enumerate(kills):
        # The next life that logged a restore; lives killed before restoring wrote nothing, so it is unchanged.
        later = [x["resumed"] for x in kills[j + 1:] if x["resumed"] is not None] + [final_resumed]
        survived += later[0] == k["complete_after_kill"]
    lost = [k["steps_lost"] for k in kills]
    during_save = [k for k in kills if k["tmp_at_kill"]]
    orphaned = [k for k in kills if k["tmp_after_kill"]]
    summary = {"kills": len(kills), "kills_survived": survived, "kills_during_a_save": len(during_save),
               "kills_leaving_tmp_folders": len(orphaned), "mean_steps_lost": float(np.mean(lost)),
               "max_steps_lost": int(max(lost)), "final_resumed_from": final_resumed, "final_step": total,
               "tmp_folders_before_final_run": orphans_before_final,
               "tmp_folders_after_final_run": orphans_after_final,
               "seconds": round(time.monotonic() - start, 1), "per_kill": kills}
    with open(tmp_path / "crash_summary.json", "w") as f:
        json.dump(summary, f, indent=2)

    print(f"\nSIGKILL crash test: {survived}/{len(kills)} kills survived, {len(during_save)} during a checkpoint "
          f"save; steps lost mean {summary['mean_steps_lost']:.2f}, max {summary['max_steps_lost']}; "
          f"{summary['seconds']:.0f} s. Summary: {tmp_path / 'crash_summary.json'}")
    print(f"{'kill':>4} {'mode':>8} {'alive_s':>7} {'resumed':>7} {'last_logged':>11} {'complete':>8} "
          f"{'next_resumed':>12} {'lost':>4}  tmp folders at kill -> after")
    for k in kills:
        resumed = "-" if k["resumed"] is None else k["resumed"]
        nxt = "-" if k["next_resumed"] is None else k["next_resumed"]
        print(f"{k['kill']:>4} {k['mode']:>8} {k['seconds_alive']:>7} {resumed!s:>7} {k['last_logged']:>11} "
              f"{k['complete_after_kill']:>8} {nxt!s:>12} {k['steps_lost']:>4}  "
              f"{','.join(k['tmp_at_kill']) or '-'} -> {','.join(k['tmp_after_kill']) or '-'}")
    print(f"final run: resumed from {final_resumed}, finished at {total}; tmp folders before it "
          f"{orphans_before_final or 'none'}, after it {orphans_after_final or 'none'}")

    assert len(kills) == NUM_KILLS and survived == len(kills), summary
    assert during_save, "no kill landed during a checkpoint save: the crash test did not test what it says"
    # 3. Orphaned tmp folders: a restart works beside them and never picks one (checked on every life above);
    # the saves that repeat their step replace them, so none outlives the run's own re-saves.
    assert all(not n.split(".")[0].isdigit() or int(n.split(".")[0]) > expected - 2 or True
               for n in orphans_before_final)
