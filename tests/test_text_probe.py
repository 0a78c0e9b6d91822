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


def test_motion_read_out_finds_the_trajectory_an_oracle_predicts():
    """tools/motion_micro.py's read-out: a denoiser whose x0 is the fixed4 clip of the prompted direction."""
    import jax.numpy as jnp

    from lumiere_jax.diffusion.schedule import CosineSchedule
    from tools import motion_micro

    schedule = CosineSchedule()
    clips = jnp.asarray(np.stack([motion_micro._clip("fixed4", _Fixed(m))[0]
                                  for m in range(len(motion_micro.DIRECTIONS))]))  # [4, T, H, W, 3]

    def oracle(z, t, k):
        alpha, sigma = (a.reshape(-1, 1, 1, 1, 1) for a in schedule.alpha_sigma(t))
        return (alpha * z - clips[k]) / sigma  # the v whose x0 is the clip: x0 = alpha z - sigma v

    out = motion_micro.read_out(oracle, schedule, motion_micro.DIRECTIONS.index, "oracle")[0.98]
    (lx0, lx1, _, _), (rx0, rx1, _, _) = out["left"], out["right"]
    (_, _, uy0, uy1), (_, _, dy0, dy1) = out["up"], out["down"]
    assert lx0 - lx1 > 10 and rx1 - rx0 > 10 and uy0 - uy1 > 10 and dy1 - dy0 > 10


def test_varied_micro_captions_describe_their_clips():
    """motion_micro --phrasing=varied: each clip's caption index names that clip's colour, shape and direction."""
    from lumiere_jax.data import shapes
    from lumiere_jax.eval.shapes_checker import analyze_clip
    from tools import motion_micro

    captions = motion_micro._captions("directions", varied=True)
    n = motion_micro.CANONICAL
    assert len(captions) == n + n * 4 * motion_micro.VARIANTS + 1 and captions[-1] == ""
    assert captions[:n] == motion_micro._captions("directions")[:n]  # the read-out's canonical prompts stay
    rng, phrasings = np.random.default_rng(5), set()
    for _ in range(12):
        clip, k = motion_micro._clip("directions", rng, varied=True)
        found = analyze_clip(np.round((clip + 1.0) * 127.5).astype(np.uint8))
        caption = captions[k]
        phrasings.add(caption)
        assert k >= n and found["color"] in caption and found["shape"] in caption, (caption, found)
        assert any(word in caption for word in shapes._DIRECTION_WORDS[found["motion"]]), (
            caption, found["motion"])
        # Size and speed words, where the caption has them, are the clip's own (the index's last digits).
        for key, words in (("size", shapes._SIZE_WORDS), ("speed", shapes._SPEED_WORDS)):
            named = [value for value, synonyms in words.items()
                     if any(f" {w} " in f" {caption} " for w in synonyms)]
            assert named in ([], [found[key]]), (caption, key, found[key])
    assert len(phrasings) > 6  # not one sentence per attribute triple


def test_micro_probe_swaps_only_the_direction_phrase():
    """motion_micro's varied-phrasing probe: the opposite caption keeps every word but the direction phrase."""
    import re

    from lumiere_jax.data import shapes
    from tools import motion_micro

    captions = motion_micro._captions("directions", varied=True)
    for k, caption in enumerate(captions[:-1]):
        rest = k if k < motion_micro.CANONICAL else (k - motion_micro.CANONICAL) // motion_micro.VARIANTS // 4
        direction = motion_micro.DIRECTIONS[rest % 4]
        other = motion_micro.DIRECTIONS[rest % 4 ^ 1]
        swapped = motion_micro.opposite_caption(caption, direction)

        def phrases(text, d):
            return {w for w in shapes._DIRECTION_WORDS[d] if re.search(rf"\b{w}\b", text)}
        assert phrases(swapped, other) and not phrases(swapped, direction), (caption, swapped)
        assert motion_micro.opposite_caption(swapped, other) == caption
        assert len(swapped.split()) == len(caption.split())
    for d in motion_micro.DIRECTIONS:
        caption = captions[motion_micro._varied_readout_index(d)]
        assert caption.startswith(("a red circle", "a small red circle", "a little red circle")), caption
        assert any(re.search(rf"\b{w}\b", caption) for w in shapes._DIRECTION_WORDS[d]), caption


class _Fixed:
    """An rng stand-in whose integers() always draw direction m (colour and shape are fixed in fixed4)."""

    def __init__(self, m: int):
        self.m = m

    def integers(self, n):
        return self.m if n == 4 else 0
