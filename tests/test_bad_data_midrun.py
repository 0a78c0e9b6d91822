"""Prepared video data that goes bad: a shard deleted, truncated or overwritten, before a resume or while a run
trains, and a source folder that changes after it was prepared.

What array_record does on each damage (found by these tests): a deleted or truncated shard no longer opens (open()
fails; "should be at least 64KB"); bytes overwritten in a record fail that record's chunk checksum (riegeli hashes
every chunk) while the shard still opens; overwritten footer bytes stop the shard from opening. A shard deleted or
truncated while it is open still reads from the open file, or reads missing records as None. So the reader checks
each shard's size before reading from it and probes a failed record's shard: a shard gone, resized or unopenable
stops the run with one line naming it and the folder to delete; a damaged record in a shard that opens is skipped,
counted (log, metrics.jsonl, TensorBoard) and replaced by the next readable record, up to data.max_bad_records.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import shutil
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest

from conftest import moving_colours, smoke_config
from lumiere_jax import train
from lumiere_jax.data import pipeline, videos

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = "configs/t2v.py:size=smoke"


def _write_clip(folder, name: str, phase: float, caption: str) -> None:
    iio.imwrite(folder / f"{name}.mp4", moving_colours(24, 32, 40, phase), fps=8, codec="libx264", plugin="pyav")
    (folder / f"{name}.txt").write_text(caption)


def _config(folder, data_dir, **overrides):
    """The smoke config reading the video folder (a third of its videos held out)."""
    return smoke_config(str(data_dir), data__dataset="videos", data__videos=str(folder), data__test_fraction=0.3,
                        **overrides)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A folder of three 3 s clips (18 clips of 4 frames: 12 train, 6 test), prepared, and a run trained on it for
    2 steps (checkpoint 2). Tests copy both before damaging them."""
    base = tmp_path_factory.mktemp("bad_data")
    folder = base / "footage"
    folder.mkdir()
    for i in range(3):
        _write_clip(folder, f"clip{i}", i, f"waves of colour number {i}")
    run = str(base / "run")
    train.train_and_evaluate(_config(folder, base / "data", total_steps=2), run)
    return {"folder": folder, "data": base / "data", "run": run}


@pytest.fixture
def copy(prepared, tmp_path):
    """The prepared data and the trained run, copied: (folder, data_dir, run, train shard)."""
    data, run = tmp_path / "data", str(tmp_path / "run")
    shutil.copytree(prepared["data"], data)
    shutil.copytree(prepared["run"], run)
    shard, = glob.glob(str(data / "lumiere_video_clips" / "*" / "*" / "*-train.array_record-*"))
    return prepared["folder"], data, run, shard


def _record_bytes_middle(shard: str) -> int:
    """An offset inside the records (not the footer, which starts at 64 KiB here)."""
    with open(shard, "rb") as f:
        head = f.read(65536)
    return len(head.rstrip(b"\0")) // 2


def _overwrite(shard: str, offset: int, count: int = 64) -> None:
    with open(shard, "r+b") as f:
        f.seek(offset)
        f.write(b"\xab" * count)


def _damage(kind: str, shard: str) -> None:
    if kind == "deleted":
        os.remove(shard)
    elif kind == "truncated":
        with open(shard, "r+b") as f:
            f.truncate(os.path.getsize(shard) // 3)
    elif kind == "footer":
        _overwrite(shard, 65536 + 16)
    else:
        _overwrite(shard, _record_bytes_middle(shard))


def _checkpoints(run: str) -> list[int]:
    return sorted(int(d) for d in os.listdir(os.path.join(run, "checkpoints")) if d.isdigit())


# ------------------------------------------------------------------------------ the reader, damage after opening


@pytest.mark.parametrize("kind, message", [("deleted", "was deleted"), ("truncated", "changed size"),
                                           ("footer", None), ("record", None)])
def test_reader_after_opening(copy, kind, message):
    folder, data, _, shard = copy
    source = videos.load_videos(_config(folder, data).data)["train"]
    before = [source[i]["video"] for i in range(len(source))]  # every shard open
    _damage(kind, shard)
    if message:
        with pytest.raises(videos.DamagedDataError, match=message) as error:
            [source[i] for i in range(len(source))]
        assert shard in str(error.value) and "run the same command again" in str(error.value)
        assert "\n" not in str(error.value)
        return
    got = [source[i]["video"] for i in range(len(source))]
    if kind == "footer":  # read through the open file's index: the records are whole
        assert not source.bad_records and all(np.array_equal(a, b) for a, b in zip(got, before))
        return
    bad = source.bad_records
    assert len(bad) == 1  # the one record whose chunk checksum fails; the next readable one is read instead
    (index, why), = bad.items()
    assert "hash mismatch" in why and shard in why
    assert np.array_equal(got[index], before[(index + 1) % len(source)])
    assert all(np.array_equal(got[i], before[i]) for i in range(len(source)) if i != index)
    with pytest.raises(videos.DamagedDataError, match=r"more than data.max_bad_records=0"):
        pipeline.check_bad_records([source], 0)
    assert pipeline.check_bad_records([source], 1) == 1


# ------------------------------------------------------------------------------ before a resume: in-process runs


@pytest.mark.parametrize("kind, message", [("deleted", "was deleted"), ("truncated", "is unreadable"),
                                           ("footer", "is unreadable")])
def test_resume_on_a_damaged_shard_stops_naming_it(copy, kind, message):
    folder, data, run, shard = copy
    _damage(kind, shard)
    with pytest.raises(videos.DamagedDataError, match=message) as error:
        train.train_and_evaluate(_config(folder, data, total_steps=4), run)
    text = str(error.value)
    assert shard in text and os.path.dirname(os.path.dirname(shard)) in text and "\n" not in text
    assert _checkpoints(run) == [2]


class _DamageAtLogLines(logging.Handler):
    """Overwrites record bytes at `offsets[step]` when the train loop logs `step N/`: mid-run, at known steps, in
    the loop's own thread."""

    def __init__(self, shard: str, offsets: dict[int, int]):
        super().__init__()
        self.shard, self.offsets, self.done = shard, dict(offsets), []

    def emit(self, record: logging.LogRecord) -> None:
        for step, offset in self.offsets.items():
            if step not in self.done and record.getMessage().startswith(f"step {step}/"):
                _overwrite(self.shard, offset)
                self.done.append(step)


def test_records_overwritten_while_training_are_skipped_counted_then_stop_the_run(copy, caplog):
    folder, data, run, shard = copy
    middle = _record_bytes_middle(shard)
    damage = _DamageAtLogLines(shard, {4: middle, 8: middle // 2})  # two records, four steps apart
    logging.getLogger("lumiere_jax").addHandler(damage)
    try:
        with caplog.at_level(logging.INFO, logger="lumiere_jax"), pytest.raises(
                videos.DamagedDataError, match=r"2 damaged records .* more than data.max_bad_records=1") as error:
            train.train_and_evaluate(_config(folder, data, total_steps=40, checkpoint_every=100, data__prefetch=1,
                                             data__num_threads=1, data__max_bad_records=1), run)
    finally:
        logging.getLogger("lumiere_jax").removeHandler(damage)
    assert damage.done == [4, 8]
    assert shard in str(error.value) and "hash mismatch" in str(error.value) and "\n" not in str(error.value)
    rows = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))]
    counts = [r["bad_records"] for r in rows]
    assert counts[:2] == [0, 0] and 1 in counts and max(counts) == 1  # steps 3, 4 clean; then one skipped
    skipped = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Skipped damaged record")]
    assert len(skipped) == 2 and all(shard in m for m in skipped)
    assert any("damaged records skipped 1" in r.getMessage() for r in caplog.records)
    events = b"".join(open(f, "rb").read() for f in glob.glob(os.path.join(run, "tb", "events*")))
    assert b"train/bad_records" in events
    # The steps trained before the second damaged record was read are kept in a checkpoint.
    last = rows[-1]["step"]
    assert _checkpoints(run) == [2, last] and last >= 8


# ------------------------------------------------------------------------------ while a run trains: the CLI


def _start(folder, data, run, *flags):
    return subprocess.Popen([sys.executable, "-m", "lumiere_jax.main", f"--config={SMOKE}", f"--workdir={run}",
                             "--config.data.dataset=videos", f"--config.data.videos={folder}",
                             f"--config.data.data_dir={data}", "--config.data.test_fraction=0.3", *flags],
                            cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def _damage_after_log_line(proc, kind: str, shard: str, step: int) -> str:
    """Reads the run's stderr until it logs `step`, damages the shard, then waits for the run to end."""
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if f" step {step}/" in line:
            _damage(kind, shard)
            break
    else:
        pytest.fail("the run ended before its log line: " + "".join(seen)[-3000:])
    _, rest = proc.communicate(timeout=240)  # never hangs
    return "".join(seen) + rest


def test_shard_truncated_while_training_stops_with_one_line_and_keeps_the_steps(copy):
    folder, data, run, shard = copy
    proc = _start(folder, data, run, "--config.total_steps=3000", "--config.checkpoint_every=1000")
    stderr = _damage_after_log_line(proc, "truncated", shard, step=4)
    assert proc.returncode == 2, stderr[-3000:]
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and shard in errors[0] and "changed size since the run opened it" in errors[0], stderr
    assert "run the same command again" in errors[0]
    # The steps trained before the damage was read are kept: a checkpoint after step 4, besides the first one.
    assert _checkpoints(run)[0] == 2 and max(_checkpoints(run)) >= 4


# ------------------------------------------------------------------------------ a source that changes


def test_a_changed_folder_is_prepared_again_saying_what_changed(copy, caplog):
    folder, data, _, _ = copy
    changed = data.parent / "footage"
    shutil.copytree(folder, changed)
    config = _config(changed, data)
    first = videos.load_videos(config.data)["train"]
    _write_clip(changed, "clip3", 3, "waves of colour number 3")  # added
    (changed / "clip1.txt").write_text("a new caption")  # recaptioned
    os.remove(changed / "clip2.mp4")  # removed
    os.remove(changed / "clip2.txt")
    with caplog.at_level(logging.INFO, logger="lumiere_jax"):
        second = videos.load_videos(config.data)["train"]
    lines = [r.getMessage() for r in caplog.records if "preparing again" in r.getMessage()]
    assert lines == [f"data.videos={changed} changed since it was prepared (1 file added, 1 file removed, 1 file "
                     f"recaptioned): preparing again; the earlier preparation stays in "
                     f"{os.path.dirname(first.directory)} until you delete it."]
    assert second.config_name != first.config_name
    assert len(first) and first[0]["video"].shape == (4, 16, 16, 3)  # the earlier preparation is still whole
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="lumiere_jax"):
        videos.load_videos(config.data)  # unchanged since: reused, no line
    assert not [r for r in caplog.records if "preparing again" in r.getMessage()]
