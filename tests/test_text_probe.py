"""The text probe (lumiere_jax/eval/text_probe.py): swapped captions, shared noise, the CLI table."""

import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import smoke_config
from lumiere_jax import sampling
from lumiere_jax.eval import text_probe

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_swaps_change_exactly_one_attribute():
    assert text_probe.swapped("red", "circle", "left", "color") == ("green", "circle", "left")
    assert text_probe.swapped("white", "triangle", "up", "shape") == ("white", "circle", "up")
    assert text_probe.swapped("red", "square", "down", "motion") == ("red", "square", "up")
    with pytest.raises(ValueError, match="no opposite direction"):
        text_probe.swapped("red", "square", "still", "motion")
    clips, attrs = text_probe.probe_clips(8, 4, 16)
    assert clips.shape == (8, 4, 16, 16, 3) and clips.min() >= -1 and clips.max() <= 1
    assert [a[2] for a in attrs] == ["left", "right", "up", "down"] * 2


def test_gaps_are_zero_when_captions_cannot_matter_and_not_otherwise(trained_workdir, data_dir):
    config = smoke_config(data_dir)
    t2v, _ = sampling.load_text_to_video(config, trained_workdir)
    clips, attrs = text_probe.probe_clips(4, config.data.num_frames, config.data.resolution)
    kw = dict(times=(0.5, 0.9))
    out = text_probe.text_gaps(t2v.graphdef, t2v.params, t2v.encoder, t2v.schedule, clips, attrs, **kw)
    assert len(out["right"]) == len(out["motion_gap"]) == 2 and np.all(np.isfinite(out["right"]))
    # Every caption sees the same clips, noise and times: captions differ, so losses do ...
    assert any(abs(g) > 0 for a in text_probe.ATTRIBUTES for g in out[f"{a}_gap"])

    class SameFeatures:
        """Every caption encodes to the empty caption's features."""

        def encode(self, texts):
            return t2v.encoder.encode([""] * len(texts))

    # ... and with identical text features, every gap is exactly zero.
    same = text_probe.text_gaps(t2v.graphdef, t2v.params, SameFeatures(), t2v.schedule, clips, attrs, **kw)
    assert all(g == 0.0 for a in text_probe.ATTRIBUTES for g in same[f"{a}_gap"])
    np.testing.assert_allclose(same["right"], out["null"], rtol=1e-6)


def test_cli_prints_the_table(trained_workdir, data_dir, tmp_path):
    # The tool reads configs/t2v.py:size=smoke; the run's data lives under data_dir, which sampling never reads.
    result = subprocess.run([sys.executable, "-m", "tools.text_probe", f"--t2v={trained_workdir}",
                             "--size=smoke", "--num=4", f"--out={tmp_path}/p.json"],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "motion+" in result.stdout and (tmp_path / "p.json").exists()
