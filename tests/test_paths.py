"""Run and data paths may be gs:// URLs: every file access of a run's records and of the data listing goes
through etils.epath. Here a bucket is simulated by redirecting gs://bucket/ to a local folder inside epath (so a
plain `open` or `os.path` call on a gs:// path would fail, as it would on a TPU VM)."""

import os

import ml_collections
import numpy as np
import pytest
from etils import epath
from etils.epath import testing as epath_testing

from configs import t2v
from lumiere_jax import config_lib, paths, train
from lumiere_jax.data import decode, videos

BUCKET = "gs://bucket/"


@pytest.fixture
def bucket(tmp_path):
    """gs://bucket/... -> tmp_path/bucket/... for every epath operation; yields the local folder."""
    root = tmp_path / "bucket"
    root.mkdir()

    def local(path):
        path = os.fspath(path)
        return os.path.join(root, path[len(BUCKET):]) if path.startswith(BUCKET) else path

    def one(fn, path, *args, **kwargs):
        return fn(local(path), *args, **kwargs)

    def two(fn, path, dst, *args, **kwargs):
        return fn(local(path), local(dst), *args, **kwargs)

    def walk(fn, top, **kwargs):
        for dirpath, dirnames, filenames in fn(local(top), **kwargs):
            yield BUCKET + os.path.relpath(dirpath, root) if str(top).startswith(BUCKET) else dirpath, \
                dirnames, filenames

    with epath_testing.mock_epath(open=one, exists=one, isdir=one, listdir=one, makedirs=one, mkdir=one,
                                  remove=one, rmtree=one, stat=one, glob=one, walk=walk, copy=two, rename=two,
                                  replace=two):
        yield root


def test_resolve_keeps_urls_and_makes_local_paths_absolute(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert os.fspath(paths.resolve("gs://b/runs/x")) == "gs://b/runs/x"
    assert os.fspath(paths.resolve("~/runs/x")) == str(tmp_path / "runs" / "x")
    monkeypatch.chdir(tmp_path)
    assert os.fspath(paths.resolve("runs/y")) == str(tmp_path / "runs" / "y")
    assert paths.is_remote("gs://b/x") and not paths.is_remote("/b/x")


def test_writes_in_a_bucket(bucket):
    run = paths.resolve(BUCKET + "runs/t2v")
    run.mkdir(parents=True, exist_ok=True)
    paths.write_atomic(run / "config.json", '{"task": "t2v"}')
    paths.append_line(run / "metrics.jsonl", '{"step": 1}')
    paths.append_line(run / "metrics.jsonl", '{"step": 2}')
    assert (bucket / "runs" / "t2v" / "config.json").read_text() == '{"task": "t2v"}'
    assert (bucket / "runs" / "t2v" / "metrics.jsonl").read_text() == '{"step": 1}\n{"step": 2}\n'
    train._truncate_metrics(run / "metrics.jsonl", 1)  # a resume from step 1 drops the later rows
    assert (bucket / "runs" / "t2v" / "metrics.jsonl").read_text() == '{"step": 1}\n'


def test_local_atomic_write_leaves_no_temporary_file(tmp_path):
    target = epath.Path(tmp_path / "a" / "config.json")
    paths.write_atomic(target, "one")
    paths.write_atomic(target, b"two")
    assert target.read_text() == "two" and os.listdir(tmp_path / "a") == ["config.json"]


def test_run_config_reads_a_run_in_a_bucket(bucket):
    config = t2v.get_config("smoke")
    (bucket / "run").mkdir()
    (bucket / "run" / "config.json").write_text(config.to_json_best_effort())
    assert config_lib.read_run_config(BUCKET + "run")["task"] == "t2v"
    assert config_lib.run_config(BUCKET + "run").model.channels == config.model.channels
    with pytest.raises(ValueError, match="does not exist"):
        config_lib.run_config(BUCKET + "elsewhere")


def test_a_video_folder_in_a_bucket_is_listed_captioned_and_decoded(bucket, tmp_path):
    import imageio.v3 as iio
    folder = bucket / "footage"
    (folder / "sub").mkdir(parents=True)
    frames = np.broadcast_to((np.arange(12) * 20)[:, None, None, None], (12, 24, 32, 3)).astype(np.uint8)
    iio.imwrite(folder / "a.mp4", frames, fps=12, codec="libx264", plugin="pyav")
    iio.imwrite(folder / "sub" / "b.mp4", frames, fps=12, codec="libx264", plugin="pyav")
    (folder / "a.txt").write_text("a fade")
    (folder / "captions.csv").write_text("path,caption\nsub/b.mp4,another fade\n")
    listing = videos.list_videos(BUCKET + "footage")
    assert [(e.name, e.caption) for e in listing.entries] == [("a.mp4", "a fade"), ("sub/b.mp4", "another fade")]
    assert all(e.path.startswith(BUCKET) and e.size > 0 for e in listing.entries)
    video = decode.read_video(BUCKET + "footage/a.mp4", short_side=16)
    assert video.frames.shape == (12, 16, 21, 3)
    assert abs(float(video.frames[5].mean()) - 100) < 8
    data = ml_collections.ConfigDict(t2v.get_config("smoke").data.to_dict())
    data.dataset, data.videos, data.data_dir, data.test_fraction = "videos", BUCKET + "footage", \
        str(tmp_path / "tfds"), 0.0
    assert paths.resolve(data.videos).exists()
    sources = videos.load_videos(data)
    assert len(sources["train"]) >= 2 and sources["train"][0]["video"].shape[1:] == (16, 16, 3)
