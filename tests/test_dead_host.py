"""A process of a two-process run killed mid-training (SIGKILL): the other exits within the peer timeout with one
line naming the lost process, and restarting both resumes from the newest checkpoint both finished. Also the
watchdog itself (lumiere_jax/peers.py) on a fake key-value store, in milliseconds."""

import io
import json
import os
import time

import jax
import pytest

from conftest import smoke_config
from lumiere_jax import config_lib, peers, supervise
from test_multiprocess import launch, read, wait_all

TIMEOUT_S = 20  # --config.distributed.peer_timeout_s: short, so the test is quick; long enough for a loaded CI machine
# The smoke model with one level and no spatial attention: the test is about processes, and each launch's compile
# of the train step is most of its time (process 1 never reads jax's persistent compilation cache).
FLAGS = (f"--config.distributed.peer_timeout_s={TIMEOUT_S}", "--config.model.channel_mult=(1,)",
         "--config.model.attention_levels=()")


def logged_steps(workdir: str) -> list[int]:
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    return [json.loads(line)["step"] for line in open(path) if line.strip().endswith("}")]


def checkpoint_steps(workdir: str) -> list[int]:
    folder = os.path.join(workdir, "checkpoints")
    return sorted(int(d) for d in os.listdir(folder) if d.isdigit()) if os.path.isdir(folder) else []


def start_and_kill(workdir: str, data_dir: str, logs, total: int, victim: int) -> tuple[int, float, str]:
    """Launches both processes; once step 3 is logged and a checkpoint is finished, SIGKILLs `victim`. Returns the survivor's exit code, the
    seconds it took to exit, and its output."""
    procs = launch(workdir, data_dir, total, logs, "first", FLAGS)
    deadline = time.time() + 300
    while time.time() < deadline and all(p.poll() is None for p in procs) and (
            max(logged_steps(workdir), default=0) < 3 or not checkpoint_steps(workdir)):
        time.sleep(0.2)
    survivor = procs[1 - victim]
    try:
        assert all(p.poll() is None for p in procs), [read(logs / f"first_{i}.log")[-2000:] for i in range(2)]
        procs[victim].kill()
        killed_at = time.time()
        code = survivor.wait(TIMEOUT_S + 30)
        return code, time.time() - killed_at, read(logs / f"first_{1 - victim}.log")
    finally:
        for p in procs:
            p.kill()


def test_a_killed_process_ends_the_other_and_a_restart_resumes(tmp_path, data_dir):
    workdir, total = str(tmp_path / "run"), 10
    # 1. Train towards step 10 (a checkpoint every 2 steps); once step 3 is logged and a checkpoint finished,
    #    SIGKILL process 1.
    code, waited, out = start_and_kill(workdir, data_dir, tmp_path, total, victim=1)
    assert code == peers.LOST_PEER_EXIT, out[-3000:]
    assert out.strip().splitlines()[-1].startswith(
        f"error: lost process 1 of 2: no heartbeat for {TIMEOUT_S} s"), out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    assert waited < TIMEOUT_S + 20, waited
    reached = max(logged_steps(workdir))
    assert reached < total

    # 2. Restart both: orbax commits a step only once every process wrote it, so both resume from the same
    #    finished step (a save the kill interrupted is a tmp folder, removed), at most the step reached.
    finished = checkpoint_steps(workdir)
    procs = launch(workdir, data_dir, total, tmp_path, "second", FLAGS)
    codes = wait_all(procs, timeout=300)
    outs = [read(tmp_path / f"second_{i}.log") for i in range(2)]
    assert codes == [0, 0], [o[-2000:] for o in outs]
    resumed = [int(o.split("Resumed from checkpoint at step ")[1].split()[0]) for o in outs]
    assert resumed[0] == resumed[1] == finished[-1] <= reached, (resumed, finished, reached)
    assert json.load(open(os.path.join(workdir, "train_done.json")))["step"] == total
    assert not [d for d in os.listdir(os.path.join(workdir, "checkpoints")) if "tmp" in d]


def test_a_killed_coordinator_ends_the_other_with_one_line(tmp_path, data_dir):
    """Process 0 hosts jax's coordination service: when it dies, the runtime ends the others at once from C++; the
    parent each process runs under (lumiere_jax/supervise.py) turns that into one line naming the coordinator."""
    workdir = str(tmp_path / "run")
    code, waited, out = start_and_kill(workdir, data_dir, tmp_path, 1000, victim=0)
    lines = out.strip().splitlines()
    assert code == peers.LOST_PEER_EXIT, out[-3000:]
    assert lines[-1].startswith("error: lost the coordinator (process 0 of 2 at localhost:"), out[-3000:]
    step = max(checkpoint_steps(workdir), default=None)
    if step is not None:
        assert f"each resumes from step {step}," in lines[-1], (lines[-1], checkpoint_steps(workdir))
    # None of the runtime's crash report (its fatal log, C++ stack, Python's thread dump) comes through.
    for noise in ("leader task", "Check failure stack trace", "Fatal Python error", "Traceback", "Thread 0x"):
        assert noise not in out, (noise, out[-3000:])
    assert sum(line.startswith("error:") for line in lines) == 1, out[-3000:]
    assert waited < TIMEOUT_S + 20, waited


# What a survivor printed when its coordinator was SIGKILLed (jaxlib 0.10.2, abridged): the filter's input.
RUNTIME_CRASH = """\
W1207 08:46:07.765038    5333 preemption_sync_manager.cc:147] Failed to retrieve preemption notice from coordination service: UNAVAILABLE: Socket closed
Additional GRPC error information from remote target coordination_service while calling /xla.coordination.CoordinationService/GetKeyValue:
:UNKNOWN:Error received from peer  {grpc_status:14, grpc_message:"Socket closed"}. This is only expected if one of the tasks is unhealthy.
E1207 08:46:07.765125    5333 coordination_service_agent.cc:289] Polled an error from coordination service (this can be an error from this or another task).
F1207 08:46:07.765133    5333 client.h:80] Terminating process because the JAX distributed service detected fatal errors. absl::Status: UNAVAILABLE: Failed to send RPC to coordination service. Either the leader task was preempted/died/restarted unexpectedly or this task is experiencing network issues.
*** Check failure stack trace: ***
    @     0x7f2571e40634  absl::lts_20260107::log_internal::LogMessage::SendToLog()
Fatal Python error: Aborted

Thread 0x00007f24dd9556c0 (most recent call first):
  File "/usr/lib/python3.11/threading.py", line 331 in wait
"""
BEFORE = "08:46:03 step 3/1000  loss 0.7748\n"
ARGV = ["main.py", "--workdir=/nowhere", "--distributed", "--coordinator_address=host0:1234", "--num_processes=4"]


def filtered(text: str, returncode: int, reported: bool = False) -> tuple[str, int]:
    out = io.StringIO()
    stderr = supervise.StderrFilter(out)
    for line in text.splitlines(keepends=True):
        stderr.feed(line)
    code = stderr.finish(returncode, ARGV, reported)
    return out.getvalue(), code


def test_supervisor_replaces_the_runtime_crash_with_one_line():
    out, code = filtered(BEFORE + RUNTIME_CRASH, -6)
    assert code == peers.LOST_PEER_EXIT
    assert out.splitlines() == [BEFORE.strip(), supervise.lost_coordinator_line(ARGV)]
    assert out.splitlines()[1].startswith("error: lost the coordinator (process 0 of 4 at host0:1234): ")
    # Not the coordinator: a fatal log about something else, or no fatal log at all, passes on unchanged.
    other = RUNTIME_CRASH.replace("the leader task was preempted/died/restarted", "the heap ran out")
    assert filtered(BEFORE + other, -6) == (BEFORE + other, 128 + 6)
    # Held lines that the run outlives (a warning the runtime recovers from) come out in order, before the next.
    warning = RUNTIME_CRASH.splitlines(keepends=True)[:3]
    text = BEFORE + "".join(warning) + "08:46:09 step 4/1000\n"
    assert filtered(text, 0) == (text, 0)
    # The watchdog already said which process was lost: the runtime's lines after its line are dropped.
    line = "error: lost process 1 of 2: no heartbeat for 20 s\n"
    assert filtered(BEFORE + line + "".join(warning), peers.LOST_PEER_EXIT, reported=True) == (
        BEFORE + line, peers.LOST_PEER_EXIT)


def test_runtime_failures_wait_for_the_watchdog():
    # jax.jit raised this ValueError on process 0 when process 1 was killed during a checkpoint's barrier.
    assert peers.runtime_failure(ValueError("UNKNOWN: Gloo AllGather failed: [external/gloo/gloo/transport/tcp/"
                                            "pair.cc:547] Connection closed by peer [127.0.0.1]:44941"))
    assert peers.runtime_failure(jax.errors.JaxRuntimeError("INTERNAL: anything"))
    assert not peers.runtime_failure(ValueError("--config.total_steps=0 must be positive: give at least 1."))


def test_supervisor_reads_distributed_and_the_newest_checkpoint(tmp_path):
    assert supervise.distributed(["m", "--distributed"]) and supervise.distributed(["m", "--distributed=true"])
    assert not supervise.distributed(["m", "--distributed", "--nodistributed"])
    assert not supervise.distributed(["m", "--distributed=false"]) and not supervise.distributed(["m"])
    for step in ("2", "4", "6.orbax-checkpoint-tmp-1"):
        os.makedirs(tmp_path / "checkpoints" / step)
    assert supervise.newest_checkpoint(str(tmp_path)) == 4
    assert supervise.newest_checkpoint(str(tmp_path / "missing")) is None
    line = supervise.lost_coordinator_line(["m", f"--workdir={tmp_path}"])
    assert line.startswith("error: lost the coordinator (process 0): ") and "resumes from step 4," in line


class FakeStore:
    """The coordination service's key-value store, in memory; `down` makes every call fail."""

    def __init__(self):
        self.values, self.down = {}, False

    def key_value_set(self, key, value, allow_overwrite=False):
        if self.down:
            raise RuntimeError("UNAVAILABLE: failed to connect")
        self.values[key] = value

    def key_value_dir_get(self, key):
        if self.down:
            raise RuntimeError("UNAVAILABLE: failed to connect")
        return [(k, v) for k, v in self.values.items() if k.startswith(key)]


def watchdogs(store, count=3, timeout=1.0):
    reports = []
    dogs = [peers.Watchdog(store, i, count, timeout, interval_s=0.05,
                           on_lost=lambda line, i=i: reports.append((i, line))) for i in range(count)]
    for d in dogs:
        d.start()
    return dogs, reports


def wait_for(condition, seconds=5.0) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline and not condition():
        time.sleep(0.05)
    return condition()


def test_watchdog_names_the_process_that_stopped():
    store = FakeStore()
    dogs, reports = watchdogs(store)
    time.sleep(1.5)
    assert reports == []  # all beating: nobody lost after more than the timeout
    dogs[2].stop(finished=False)  # its heartbeats stop, as if killed
    assert wait_for(lambda: len(reports) == 2), reports
    assert sorted(i for i, _ in reports) == [0, 1]
    assert all(line.startswith("lost process 2 of 3: no heartbeat for 1 s") for _, line in reports), reports
    for d in dogs:
        d.stop(finished=False)


def test_watchdog_lets_a_finished_process_go():
    store = FakeStore()
    dogs, reports = watchdogs(store, count=2)
    time.sleep(0.2)
    dogs[1].stop(finished=True)
    time.sleep(2.0)
    assert reports == []
    dogs[0].stop(finished=True)


def test_watchdog_reports_an_unreachable_coordinator():
    store = FakeStore()
    dogs, reports = watchdogs(store, count=2)
    time.sleep(0.2)
    store.down = True
    assert wait_for(lambda: len(reports) == 2), reports
    assert [line.split(":")[0] for _, line in reports] == ["lost the coordinator (process 0 of 2)"] * 2, reports
    for d in dogs:
        d.stop(finished=False)


def test_peer_timeout_is_a_validated_config_key(data_dir):
    config = smoke_config(data_dir)
    assert peers.peer_timeout(config) == 60.0
    assert peers.runtime_heartbeat_timeout(10) == 40  # jax's own heartbeat gives up only after ours
    config.distributed.peer_timeout_s = 0.5
    with pytest.raises(ValueError, match=r"distributed.peer_timeout_s=0.5 must be at least 1 second"):
        config_lib.validate(config)
