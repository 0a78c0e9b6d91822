"""A full disk, for real: small tmpfs mounts filled by the writes themselves (root, or CAP_SYS_ADMIN, to mount).

A checkpoint save that hits ENOSPC stops the run with one line naming the folder and the space a checkpoint
needs, whether it surfaces in the save itself, at the next save (async saves) or at close; earlier checkpoints
stay readable and, once space is freed, the same command resumes from the newest complete one. Sample, eval
and run-file writes say so in one line and leave no half-written file.
"""

import contextlib
import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from etils import epath

from lumiere_jax import checkpointing, evaluate, paths, video_io
from tests.conftest import smoke_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TMP_MARK = ".orbax-checkpoint-tmp"
# The smoke config's first checkpoint (step 2) takes 1.8 MiB and a later one 3.4 MiB: a 3 MiB disk holds the
# run's first checkpoint and its small files, never a second checkpoint beside it.
RUN_DISK = "3m"


@pytest.fixture
def tmpfs(tmp_path):
    """mount(name, size) -> a fresh tmpfs of that size under tmp_path; unmounted at teardown."""
    mounted = []

    def mount(name: str, size: str) -> str:
        where = tmp_path / name
        where.mkdir()
        try:
            r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                               capture_output=True, text=True)
        except FileNotFoundError:
            pytest.skip("no mount command here: the disk-full tests mount a small tmpfs")
        if r.returncode:
            pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or r.returncode}): the disk-full tests "
                        f"need root or CAP_SYS_ADMIN")
        mounted.append(str(where))
        return str(where)

    yield mount
    for where in reversed(mounted):
        if subprocess.run(["umount", where], capture_output=True).returncode:
            subprocess.run(["umount", "-l", where], capture_output=True)


def _resize(where: str, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", where], check=True)


def _fill(where: str) -> None:
    """Fills the filesystem of `where` to the last byte."""
    with open(os.path.join(where, "filler"), "wb", buffering=0) as f:
        with contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 4096)
        with contextlib.suppress(OSError):
            while True:
                f.write(b"\0")


def _leftovers(folder: str) -> list[str]:
    return [n for n in os.listdir(folder) if ".tmp" in n]


# Run files, samples and eval.

def test_file_writes_on_a_full_disk_fail_in_one_line_and_leave_nothing_half_written(tmpfs):
    disk = tmpfs("disk", "256k")
    config_path = epath.Path(disk) / "config.json"
    paths.write_atomic(config_path, '{"old": true}')
    paths.append_line(epath.Path(disk) / "metrics.jsonl", '{"step": 1}')

    with pytest.raises(paths.DiskFullError) as e:  # bigger than the disk
        paths.write_atomic(config_path, "x" * 400_000)
    message = str(e.value)
    assert "\n" not in message and str(config_path) in message and "it needs 390.6 KiB" in message, message
    assert config_path.read_text() == '{"old": true}'

    clip = np.random.default_rng(0).integers(0, 256, (32, 128, 128, 3), np.uint8)  # noise: GIF 0.8 MB, MP4 0.3
    for name in ("clip.gif", "clip.mp4"):
        with pytest.raises(paths.DiskFullError, match=re.escape(os.path.join(disk, name))):
            video_io.write_video(os.path.join(disk, name), clip, 8)
        assert not os.path.exists(os.path.join(disk, name))

    _fill(disk)
    with pytest.raises(paths.DiskFullError, match="metrics.jsonl"):
        paths.append_line(epath.Path(disk) / "metrics.jsonl", json.dumps({"step": 2, "loss": 0.5} | {
            f"k{i}": i for i in range(2000)}))
    assert (epath.Path(disk) / "metrics.jsonl").read_text() == '{"step": 1}\n'  # no torn line
    assert _leftovers(disk) == []


def test_eval_on_a_full_disk_fails_in_one_line_and_writes_no_json(tmpfs, data_dir):
    workdir = tmpfs("run", "64k")
    config = smoke_config(data_dir)
    t, r = config.data.num_frames, config.data.resolution

    def sampler(prompts, **kwargs):  # stands in for the model: the writes are under test
        return np.zeros((len(prompts), t, r, r, 3), np.float32)

    _fill(workdir)
    with pytest.raises(paths.DiskFullError) as e:
        evaluate.run_eval(sampler, config, workdir, 4)
    assert "eval_0000004.json" in str(e.value) and "\n" not in str(e.value), e.value
    assert not os.path.exists(os.path.join(workdir, "eval.json"))
    assert _leftovers(workdir) == [] and _leftovers(os.path.join(workdir, "eval")) == []


# Checkpoints, in process: where an async save's error surfaces.

def _state(n: int, seed: int) -> dict:
    return {"w": jnp.asarray(np.random.default_rng(seed).standard_normal(n).astype(np.float32))}


def test_checkpoint_disk_full_surfaces_at_the_save_the_next_save_or_close(tmpfs):
    workdir = tmpfs("run", "1m")
    small, big = 20_000, 400_000  # 80 KB fits; 1.6 MB does not
    ckpt = checkpointing.Checkpointer(workdir, max_to_keep=5, async_save=True)
    ckpt.save(1, _state(small, 1), {"n": small})
    ckpt.save(2, _state(big, 2), {"n": big})  # runs out of space in the background
    with pytest.raises(paths.DiskFullError) as e:
        ckpt.save(3, _state(small, 3), {"n": small})  # the next save reports the failed one
    message = str(e.value)
    assert "\n" not in message, message
    assert message.startswith(f"Disk full saving checkpoint step 2 in {ckpt.directory}: a checkpoint of this run "
                              f"takes about 1.5 MiB and "), message
    assert "Checkpoints up to step 1 are intact" in message and "resume from step 1" in message, message
    assert not [n for n in os.listdir(ckpt.directory) if TMP_MARK in n]  # the partial save was removed

    ckpt.save(4, _state(small, 4), {"n": small})  # space is back: saving goes on
    ckpt.save(5, _state(big, 5), {"n": big})
    with pytest.raises(paths.DiskFullError, match="saving checkpoint step 5 .* up to step 4 are intact"):
        ckpt.close()  # the last save's error surfaces at close

    reader = checkpointing.Checkpointer(workdir, read_only=True)
    assert reader.manager.all_steps() == [1, 4]
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), _state(small, 0))
    for step in (1, 4):
        state, meta = reader.restore(abstract, step)
        np.testing.assert_array_equal(state["w"], _state(small, step)["w"])
        assert meta == {"n": small}
    reader.close()

    sync = checkpointing.Checkpointer(workdir, max_to_keep=5, async_save=False)
    with pytest.raises(paths.DiskFullError, match="saving checkpoint step 6 .* up to step 4 are intact"):
        sync.save(6, _state(big, 6), {"n": big})  # a synchronous save fails in the call
    sync.close()


# Checkpoints, through the command line: the run stops in one line and resumes once space is freed.

def _train(workdir, data_dir, log_path, **overrides):
    cmd = [sys.executable, "-m", "lumiere_jax.main", "--config=configs/t2v.py:size=smoke", f"--workdir={workdir}",
           f"--config.data.data_dir={data_dir}", *(f"--config.{k}={v}" for k, v in overrides.items())]
    with open(log_path, "w") as log:
        # os.environ carries JAX_COMPILATION_CACHE_DIR from conftest: the rerun reuses the compiled step.
        rc = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ),
                            timeout=600).returncode
    with open(log_path, errors="replace") as f:
        return rc, f.read()


def test_train_on_a_full_disk_stops_in_one_line_and_resumes_once_space_is_freed(tmpfs, data_dir, tmp_path):
    workdir = tmpfs("run", RUN_DISK)
    ckpt_dir = os.path.join(workdir, "checkpoints")
    # Saves at 2, 4 and 6; step 4's async save runs out of space and step 6's save reports it. log_every: no
    # metrics row is written on the way (its append would report the full disk first).
    rc, out = _train(workdir, data_dir, tmp_path / "full.log", total_steps=7, log_every=100)
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert rc == 2 and len(errors) == 1, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    assert re.fullmatch(rf"error: Disk full saving checkpoint step 4 in {re.escape(ckpt_dir)}: a checkpoint of "
                        rf"this run takes about [\d.]+ MiB and [\d.]+ [KM]iB is free there\. Checkpoints up to step 2 "
                        rf"are intact and the partial save was removed; free at least [\d.]+ [KM]iB there \(or use "
                        rf"a --workdir on a larger disk\) and re-run the same command to resume from step "
                        rf"2\.", errors[0]), errors[0]
    # The first checkpoint, complete. (The failed save's folder was removed; a write still in flight may have
    # recreated part of it, which the next start clears.)
    assert [n for n in os.listdir(ckpt_dir) if TMP_MARK not in n] == ["2"], os.listdir(ckpt_dir)
    assert os.path.exists(os.path.join(ckpt_dir, "2", "commit_success.txt"))

    _resize(workdir, "32m")  # space freed
    rc, out = _train(workdir, data_dir, tmp_path / "resume.log", total_steps=4)
    assert rc == 0, out[-3000:]
    assert "Resumed from checkpoint at step 2" in out, out[-3000:]  # the newest complete one, readable
    with open(os.path.join(workdir, "train_done.json")) as f:
        assert json.load(f)["step"] == 4
    assert sorted(os.listdir(ckpt_dir)) == ["2", "4"]  # nothing partial left
