"""Preemption and crash safety of the trainer, run through the command line as a cluster would run it.

SIGTERM/SIGINT: the run checkpoints the step it is on, exits 0, and the same command resumes there.
SIGKILL at random moments (during startup, mid-step, mid-save, right after a save, after a SIGTERM whose grace
period ran out mid-save): every restart resumes from the newest *complete* checkpoint, never from one of the
`<step>.orbax-checkpoint-tmp` folders a killed save leaves behind, and the run still reaches total_steps.

`pytest -s` prints the kill table; it is also written as crash_summary.json in the test's tmp dir.
LUMIERE_CRASH_KILLS (default 6, to keep CI short; the issue-8 measurement used 20) sets how many SIGKILLs the crash test delivers.
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
NUM_KILLS = int(os.environ.get("LUMIERE_CRASH_KILLS", "6"))


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


def _wait_for(predicate, proc, log_path, timeout, what, exit_ok=False):
    """Polls predicate() until true; fails (and kills the group) on timeout, or if proc exits first.

    With exit_ok, an exit instead returns None.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if proc.poll() is not None:
            if exit_ok:
                return None
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

# When in a life to kill. `startup`: a random delay after launch (restore, compile: nothing is written yet).
# `steps`: a random delay after the life's first step (mid-step or mid-save). `save`: within 0.3 s of a new tmp
# save folder appearing (mid-write). `saved`: as soon as a new complete checkpoint appears (just after the
# rename, while orbax deletes the oldest one). `term_kill`: SIGTERM, then SIGKILL as soon as the preemption save
# starts (a grace period that ran out mid-save); that save's step may be one no later save repeats.
KILL_MODES = ("steps", "save", "term_kill", "startup", "saved")
KILL_TOTAL_STEPS = 10_000  # lives that get killed must not finish first; the LR schedule never reads it
CHECKPOINT_EVERY = 2
FINAL_TOTAL_STEPS = 40


def _tmp_step(name):
    return int(name.split(".")[0])


def _kill_one_life(i, mode, rng, workdir, data_dir, tmp_path):
    """Runs one life of the trainer and SIGKILLs it at a moment chosen by mode; returns the life's record.

    The record's `killed` is False only when a `term_kill` life finished its preemption save before the kill.
    """
    ckpt_dir = os.path.join(workdir, "checkpoints")
    expected = _newest_complete(ckpt_dir)
    tmp_before = _tmp_dirs(ckpt_dir)

    def new_tmp_since(snapshot):
        return lambda: any(snapshot.get(n) != v for n, v in _tmp_dirs(ckpt_dir).items())

    log_path = str(tmp_path / f"life_{i:02d}.log")
    proc = _start(workdir, data_dir, log_path, total_steps=KILL_TOTAL_STEPS, checkpoint_every=CHECKPOINT_EVERY,
                  log_every=1)
    t0 = time.monotonic()
    try:
        if mode == "startup":
            until = t0 + rng.uniform(1.0, 12.0)
            _wait_for(lambda: time.monotonic() > until, proc, log_path, 20, "the startup kill")
        else:
            # A resumed trainer drops metrics rows past its checkpoint, so rows past it are this life's.
            _wait_for(lambda: _resumed_step(log_path) is not None
                      and any(r["step"] > expected for r in _metrics(workdir)), proc, log_path,
                      FIRST_STEP_TIMEOUT, "the first step of this life")
        if mode == "steps":
            until = time.monotonic() + rng.uniform(0.0, 5.0)
            _wait_for(lambda: time.monotonic() > until, proc, log_path, 10, "a mid-run kill")
        elif mode == "save":
            _wait_for(new_tmp_since(tmp_before), proc, log_path, 60, "a checkpoint save to start")
            time.sleep(rng.uniform(0.0, 0.3))
        elif mode == "saved":
            _wait_for(lambda: any(s > expected for s in _complete_steps(ckpt_dir)), proc, log_path, 60,
                      "a new complete checkpoint")
            time.sleep(rng.uniform(0.0, 0.05))
        elif mode == "term_kill":
            at_term = _tmp_dirs(ckpt_dir)
            _signal_group(proc, signal.SIGTERM)
            _wait_for(new_tmp_since(at_term), proc, log_path, 60, "the preemption save to start", exit_ok=True)
            time.sleep(rng.uniform(0.0, 0.2))
        tmp_at_kill = sorted(_tmp_dirs(ckpt_dir))
        killed = proc.poll() is None
        if killed:
            _signal_group(proc, signal.SIGKILL)
        rc = _reap(proc, timeout=120)
    finally:
        if proc.poll() is None:
            _signal_group(proc, signal.SIGKILL)
            proc.wait(timeout=30)
    if killed:
        assert rc == -signal.SIGKILL, f"life {i}: exit code {rc}:\n{_tail(log_path)}"
    else:  # only the SIGTERM of term_kill may end a life before the kill, and then cleanly
        assert mode == "term_kill" and rc == 0, f"life {i} ({mode}) exited with {rc} before its kill:\n" \
                                                f"{_tail(log_path)}"
    rows = _metrics(workdir)
    after = _newest_complete(ckpt_dir)
    last_logged = rows[-1]["step"] if rows else 0
    return {"life": i + 1, "mode": mode, "killed": killed, "seconds_alive": round(time.monotonic() - t0, 1),
            "expected_resume": expected, "resumed": _resumed_step(log_path),
            "new_rows": [r for r in rows if r["step"] > expected],
            "new_steps": [r["step"] for r in rows if r["step"] > expected], "last_logged": last_logged,
            "complete_after": after, "steps_lost": last_logged - after,
            "tmp_before": sorted(tmp_before), "tmp_at_kill": tmp_at_kill, "tmp_after": sorted(_tmp_dirs(ckpt_dir)),
            "log": log_path}


def _check_losses_repeat(rows):
    """A step redone after a resume gives the loss it gave the first time: the restored state was exact."""
    first = {}
    for r in rows:
        if r["step"] in first:
            np.testing.assert_allclose(r["loss"], first[r["step"]], rtol=1e-5,
                                       err_msg=f"step {r['step']} redone after a resume gave another loss")
        else:
            first[r["step"]] = r["loss"]


def _print_table(lives, final):
    print(f"{'life':>4} {'mode':>9} {'alive_s':>7} {'resumed':>7} {'last_logged':>11} {'complete':>8} "
          f"{'next_resumed':>12} {'lost':>4}  tmp folders at kill -> after")
    for k in lives:
        resumed = "-" if k["resumed"] is None else k["resumed"]
        mode = k["mode"] if k["killed"] else k["mode"] + "*"
        print(f"{k['life']:>4} {mode:>9} {k['seconds_alive']:>7} {resumed!s:>7} {k['last_logged']:>11} "
              f"{k['complete_after']:>8} {k['next_resumed']!s:>12} {k['steps_lost']:>4}  "
              f"{','.join(k['tmp_at_kill']) or '-'} -> {','.join(k['tmp_after']) or '-'}")
    print(f"final run: resumed from {final['resumed']}, finished at {final['total']}; tmp folders before it "
          f"{final['tmp_before'] or 'none'}, after it {final['tmp_after'] or 'none'}")
    if any(not k["killed"] for k in lives):
        print("* the SIGTERM'd life finished its preemption save before the SIGKILL: a clean stop, not a kill")


def test_sigkill_at_random_moments_resumes_from_the_last_complete_checkpoint(data_dir, tmp_path):
    workdir = str(tmp_path / "run")
    ckpt_dir = os.path.join(workdir, "checkpoints")
    rng = random.Random(20240601)
    modes = [KILL_MODES[i % len(KILL_MODES)] for i in range(NUM_KILLS)]
    rng.shuffle(modes)
    if modes[0] == "startup":  # the first life should get somewhere
        modes.append(modes.pop(0))
    start = time.monotonic()

    lives = []
    while sum(k["killed"] for k in lives) < NUM_KILLS:
        assert len(lives) < NUM_KILLS + 5, "too many SIGTERM'd lives ended before their kill"
        mode = modes[len(lives)] if len(lives) < len(modes) else "steps"
        life = _kill_one_life(len(lives), mode, rng, workdir, data_dir, tmp_path)
        lives.append(life)
        # Resumed from the newest complete checkpoint as the folder stood at launch: never a tmp folder.
        if life["resumed"] is not None:
            assert life["resumed"] == life["expected_resume"], life
        else:
            assert mode == "startup", life  # only a startup kill can land before the restore is logged
        # The life's steps continue from where it resumed: no gap, no repeat.
        first = life["expected_resume"] + 1
        assert life["new_steps"] == list(range(first, first + len(life["new_steps"]))), life
        assert life["complete_after"] <= life["last_logged"], life

    # The final life: the same command, run to the end.
    expected = _newest_complete(ckpt_dir)
    total = max(FINAL_TOTAL_STEPS, expected + 6)
    final = {"total": total, "tmp_before": sorted(_tmp_dirs(ckpt_dir))}
    log_path = str(tmp_path / "final.log")
    proc = _start(workdir, data_dir, log_path, total_steps=total, checkpoint_every=CHECKPOINT_EVERY, log_every=1)
    try:
        rc = _reap(proc, timeout=FIRST_STEP_TIMEOUT + 180)
    finally:
        if proc.poll() is None:
            _signal_group(proc, signal.SIGKILL)
            proc.wait(timeout=30)
    assert rc == 0, _tail(log_path)
    final["resumed"] = _resumed_step(log_path)
    final["tmp_after"] = sorted(_tmp_dirs(ckpt_dir))
    assert final["resumed"] == expected, _tail(log_path)
    with open(os.path.join(workdir, "train_done.json")) as f:
        assert json.load(f)["step"] == total
    rows = _metrics(workdir)
    final_rows = [r for r in rows if r["step"] > expected]
    assert [r["step"] for r in final_rows] == list(range(expected + 1, total + 1))
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"]) for r in final_rows), final_rows
    assert _newest_complete(ckpt_dir) == total
    # The trainer drops rows of lost steps; the lives' own records keep them to compare with the redo.
    _check_losses_repeat([r for k in lives for r in k["new_rows"]] + final_rows)

    # Every kill was survived: the next life that logged its restore (one killed before restoring wrote
    # nothing, so the newest complete step stands) or the final run resumed from the kill's newest complete step.
    for j, k in enumerate(lives):
        k["next_resumed"] = ([x["resumed"] for x in lives[j + 1:] if x["resumed"] is not None]
                             + [final["resumed"]])[0]
    kills = [k for k in lives if k["killed"]]
    survived = sum(k["next_resumed"] == k["complete_after"] for k in kills)
    lost = [k["steps_lost"] for k in kills]
    # Restarts that found a tmp folder newer than the newest complete checkpoint, and still resumed right.
    beside_orphans = [k for k in lives[1:] if k["resumed"] is not None
                      and any(_tmp_step(n) > k["expected_resume"] for n in k["tmp_before"])]
    summary = {"kills": len(kills), "kills_survived": survived,
               "kills_during_a_save": sum(bool(k["tmp_at_kill"]) for k in kills),
               "kills_leaving_tmp_folders": sum(bool(k["tmp_after"]) for k in kills),
               "restarts_beside_newer_tmp_folders": len(beside_orphans),
               "clean_sigterm_stops": len(lives) - len(kills),
               "mean_steps_lost": float(np.mean(lost)), "max_steps_lost": int(max(lost)),
               "steps_lost_per_kill": lost, "final": final,
               "seconds": round(time.monotonic() - start, 1), "lives": lives}
    with open(tmp_path / "crash_summary.json", "w") as f:
        json.dump(summary, f, indent=2)
    print(f"\nSIGKILL crash test: {survived}/{len(kills)} kills survived, {summary['kills_during_a_save']} during a "
          f"checkpoint save, {len(beside_orphans)} restarts beside a newer tmp folder; steps lost mean "
          f"{summary['mean_steps_lost']:.2f}, max {summary['max_steps_lost']}; {summary['seconds']:.0f} s.\n"
          f"Summary: {tmp_path / 'crash_summary.json'}")
    _print_table(lives, final)

    assert len(kills) >= NUM_KILLS and survived == len(kills), summary
    assert summary["kills_during_a_save"], "no kill landed during a checkpoint save: the test missed its point"
    # 3. Orphaned tmp folders never get picked (every resume above equals the newest complete step) and a
    # restart beside them works. orbax does not sweep them at startup (cleanup_tmp_directories is off); a save
    # of the same step replaces its folder, so any left after the run are of steps the final run never saved.
    assert beside_orphans, "no restart found a tmp folder newer than its checkpoint: the orphan case went untested"
    saved_by_final = {s for s in range(expected + 1, total + 1) if s % CHECKPOINT_EVERY == 0 or s == total}
    assert not [n for n in final["tmp_after"] if _tmp_step(n) in saved_by_final], final
    if final["tmp_after"]:
        print(f"orbax left orphaned tmp folders that no later save replaced: {final['tmp_after']}")
