"""Training on a folder of captioned video files, through the command line: t2v and the SSR, then sampling.

The videos are written by the test (smooth moving gradients at odd sizes and frame rates), with sidecar captions.
"""

import os
import subprocess
import sys

import imageio.v3 as iio
import pytest
from conftest import moving_colours

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import ssr_quality  # noqa: E402  (the SSR's comparison on held-out footage)

from lumiere_jax.data import videos  # noqa: E402


@pytest.fixture(scope="module")
def video_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("footage")
    for i, (height, width, fps, seconds) in enumerate([(36, 64, 12, 2.0), (48, 40, 30, 1.5), (46, 80, 24, 2.5)]):
        frames = moving_colours(int(fps * seconds), height, width, phase=i)
        iio.imwrite(folder / f"clip{i}.mp4", frames, fps=fps, codec="libx264", plugin="pyav")
        (folder / f"clip{i}.txt").write_text(f"waves of colour number {i}")
    return folder


def _cli(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lumiere_jax.main", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def _video_flags(folder, data_dir) -> list[str]:
    return ["--config.data.dataset=videos", f"--config.data.videos={folder}", f"--config.data.data_dir={data_dir}",
            "--config.data.test_fraction=0.3"]


def test_t2v_and_ssr_train_on_a_folder_of_videos_then_sample(video_folder, tmp_path):
    data_dir = tmp_path / "data"
    run = tmp_path / "t2v"
    proc = _cli("--config=configs/t2v.py:size=smoke", f"--workdir={run}", *_video_flags(video_folder, data_dir),
                "--config.total_steps=2", "--config.sample_every=2", "--config.sample.steps=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert os.path.isdir(run / "checkpoints" / "2")
    assert os.listdir(run / "samples")  # the periodic samples
    out = tmp_path / "sample.gif"
    proc = _cli("--config=configs/t2v.py:size=smoke", f"--workdir={run}", "--mode=sample", *_video_flags(
        video_folder, data_dir), "--prompt=waves of colour number 1", f"--out={out}", "--config.sample.steps=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert iio.imread(out, index=None).shape[:3] == (4, 16, 16)
    # The SSR learns to upsample the same footage (low-res input box-downsampled from each clip).
    proc = _cli("--config=configs/ssr.py:size=smoke", f"--workdir={tmp_path / 'ssr'}",
                *_video_flags(video_folder, data_dir), "--config.total_steps=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert os.path.isdir(tmp_path / "ssr" / "checkpoints" / "2")
    # Measured on footage it never saw (benchmarks/ssr_quality.py --held_out=source): the held-out files' clips,
    # against bilinear and bicubic upsampling.
    d = ssr_quality.evaluate(str(tmp_path / "ssr"), held_out="source", clips=2, frames=8, steps=2)
    names = sorted(os.listdir(video_folder))
    names = [n for n in names if n.endswith(".mp4")]
    held_out = {n for n, split in zip(names, videos.assign_splits(names, 0.3, 0)) if split == "test"}
    assert d["clips"] == 2 and d["frames"] == 8 and {os.path.basename(f) for f in d["files"]} <= held_out
    assert set(d["results"]) == {"bilinear", "bicubic", "ssr_multidiffusion", "ssr_independent"}
    for r in d["results"].values():
        assert 0 < r["psnr"] < 60 and -1 < r["ssim"] < 1
    assert d["results"]["ssr_multidiffusion"]["windows"] == 3  # 8 frames in windows of 4 overlapping by 2
    ssr_quality.write_gif(str(tmp_path / "ssr.gif"), d)
    assert iio.imread(tmp_path / "ssr.gif", index=None).shape[:3] == (8, 2 * 2 * (32 + 2), 2 * 4 * (32 + 2))


def test_a_folder_without_usable_clips_stops_before_compiling(tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "broken.mp4").write_bytes(b"not a video" * 50)
    (folder / "broken.txt").write_text("a caption")
    run = tmp_path / "run"
    proc = _cli("--config=configs/t2v.py:size=smoke", f"--workdir={run}",
                *_video_flags(folder, tmp_path / "data"), "--config.total_steps=2", timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no usable clip" in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not os.path.exists(run / "checkpoints" / "0")


@pytest.mark.parametrize("flags, message", [
    (["--config.data.dataset=videos"], "data.dataset='videos' reads data.videos"),
    (["--config.data.dataset=videos", "--config.data.videos=/no/such/folder"], "/no/such/folder does not exist"),
    (["--config.data.dataset=frames"], "data.dataset='frames' must be one of"),
])
def test_bad_video_source_keys_get_one_line(tmp_path, flags, message):
    proc = _cli("--config=configs/t2v.py:size=smoke", f"--workdir={tmp_path}", *flags, timeout=300)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], proc.stderr[-2000:]


def test_periodic_samples_take_held_out_captions_for_videos():
    from configs import t2v
    from lumiere_jax.data.sources import sample_prompts

    class Split:
        def __init__(self, captions):
            self._captions = captions

        def __len__(self):
            return len(self._captions)

        def captions(self):
            return list(self._captions)

    config = t2v.get_config("size=smoke")
    train = Split([f"train caption {i}" for i in range(6)])
    assert sample_prompts(config, {"train": train, "test": Split(["held out"])}) == list(config.sample.prompts)
    config.data.dataset = "videos"
    assert sample_prompts(config, {"train": train, "test": Split(["held out"])}) == ["held out"]
    assert sample_prompts(config, {"train": train, "test": Split([])}) == [f"train caption {i}" for i in range(4)]
