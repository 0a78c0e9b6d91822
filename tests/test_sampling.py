"""Which prompt each MultiDiffusion window gets in story mode."""

import pytest

from lumiere_jax.sampling import prompts_per_window


def test_each_window_takes_the_prompt_of_its_centre_frame():
    # 16 frames, window 4, overlap 2: windows start at 0, 2, ..., 12 with centres 2, 4, ..., 14.
    spans = [(0, "left"), (8, "up")]
    assert prompts_per_window(spans, 16, 4, 2) == ["left", "left", "left", "up", "up", "up", "up"]
    assert prompts_per_window([(0, "only")], 8, 8, 2) == ["only"]


def test_spans_must_start_at_zero_and_lie_inside_the_clip():
    with pytest.raises(ValueError, match="must start at frame 0"):
        prompts_per_window([(3, "late")], 16, 4, 2)
    with pytest.raises(ValueError, match="outside the clip's 16 frames"):
        prompts_per_window([(0, "a"), (20, "b")], 16, 4, 2)
