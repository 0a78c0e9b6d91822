"""A process of a two-process run killed mid-training (SIGKILL): the other exits within the peer timeout with one
line naming the lost process, and restarting both resumes from the newest checkpoint both finished. Also the
watchdog itself (lumiere_jax/peers.py) on a fake key-value store, in milliseconds."""

import json
import os
import time

import pytest

from conftest import smoke_config
from lumiere_jax import config_lib, peers
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
    """Launches both processes; once step 3 is logged, SIGKILLs `victim`. Returns the survivor's exit code, the
    seconds it took to exit, and its output."""
    procs = launch(workdir, data_dir, total, logs, "first", FLAGS)
    deadline = time.time() + 300
    while time.time() < deadline and all(p.poll() is None for p in procs) and max(logged_steps(workdir),
                                                                                   default=0) < 3:
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
    # 1. Train towards step 10 (a checkpoint every 2 steps); once step 3 is logged, SIGKILL process 1.
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


def test_a_killed_coordinator_ends_the_other(tmp_path, data_dir):
    """Process 0 hosts jax's coordination service: when it dies, the runtime ends the others at once from C++,
    with its own message; the watchdog's line comes only if it notices first."""
    code, waited, out = start_and_kill(str(tmp_path / "run"), data_dir, tmp_path, 1000, victim=0)
    assert code != 0
    assert "leader task was preempted/died" in out or "error: lost the coordinator (process 0 of 2)" in out, \
        out[-3000:]
    assert waited < TIMEOUT_S + 20, waited


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
    assert peers.runtime_heartbeat_timeout(10) == 20  # jax's own heartbeat gives up only after ours
    config.distributed.peer_timeout_s = 0.5
    with pytest.raises(ValueError, match=r"distributed.peer_timeout_s=0.5 must be at least 1 second"):
        config_lib.validate(config)
