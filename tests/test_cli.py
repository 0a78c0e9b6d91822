"""The command line as a user runs it: sample and eval from a trained run, and one-line errors for bad input."""

import json
import os
import subprocess
import sys

import numpy as np

from lumiere_jax import video_io

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(*args, data_dir=None):
    cmd = [sys.executable, "-m", "lumiere_jax.main", "--config=configs/t2v.py:size=smoke", *args]
    if data_dir:
        cmd.append(f"--config.data.data_dir={data_dir}")
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_sample_writes_mp4_and_gif(trained_workdir, tmp_path):
    for ext in ("mp4", "gif"):
        out = str(tmp_path / f"clip.{ext}")
        proc = run_cli(f"--workdir={trained_workdir}", "--mode=sample", "--prompt=a red circle moving left",
                       f"--out={out}", "--config.sample.steps=3", "--config.sample.guidance=2", "--seed=1")
        assert proc.returncode == 0, proc.stderr[-2000:]
        frames = video_io.read_video(out)
        assert frames.shape == (4, 16, 16, 3)


def test_eval_writes_metrics_json(trained_workdir):
    proc = run_cli(f"--workdir={trained_workdir}", "--mode=eval", "--config.eval.steps=2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(os.path.join(trained_workdir, "eval.json")) as f:
        result = json.load(f)
    assert result["step"] == 4 and result["num_clips"] == 4
    assert set(result["accuracy"]) == {"color", "shape", "motion", "consistent", "all"}
    assert all(0.0 <= v <= 1.0 for v in result["accuracy"].values())
    assert '"accuracy"' in proc.stdout
    assert os.path.exists(os.path.join(trained_workdir, "eval", "grid_0000004.gif"))


def test_story_mode_writes_a_clip_longer_than_the_training_length(trained_workdir, tmp_path):
    out = str(tmp_path / "story.gif")
    proc = run_cli(f"--workdir={trained_workdir}", "--mode=sample", "--prompt=a red circle moving left",
                   "--prompt_at=6:a blue square moving up", "--frames=10", f"--out={out}", "--config.sample.steps=2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    clip = video_io.read_video(out)
    assert clip.shape == (10, 16, 16, 3)
    # The same story as a JSON list of spans in --prompt samples the same clip.
    out_json = str(tmp_path / "story_json.gif")
    story = json.dumps([[0, "a red circle moving left"], {"frame": 6, "prompt": "a blue square moving up"}])
    proc = run_cli(f"--workdir={trained_workdir}", "--mode=sample", f"--prompt={story}", "--frames=10",
                   f"--out={out_json}", "--config.sample.steps=2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    np.testing.assert_array_equal(video_io.read_video(out_json), clip)
