"""data/frames.py: any frame size to the model's square, and any frame rate to the model's."""

import numpy as np
import pytest

from lumiere_jax.data import frames as F


def _stripes(t, h, w):
    """A clip whose columns count across the width, so a crop shows which part it kept."""
    x = np.broadcast_to(np.linspace(0, 255, w).astype(np.uint8)[None, None, :, None], (t, h, w, 3))
    return np.ascontiguousarray(x)


def test_crop_keeps_the_centre_and_pad_keeps_everything():
    clip = _stripes(2, 72, 128)  # 16:9
    crop = F.fit_frames(clip, 36, "crop")
    assert crop.shape == (2, 36, 36, 3)
    # Short side 72 -> 36: the width becomes 64 and the centre 36 columns stay: values from about 25% to 75%.
    assert 50 < crop[0, 0, 0, 0] < 80 and 175 < crop[0, 0, -1, 0] < 205
    pad = F.fit_frames(clip, 32, "pad")
    assert pad.shape == (2, 32, 32, 3)
    # Long side 128 -> 32: 18 rows of picture, 7 black rows above and below; the full width is kept.
    assert pad[:, :7].max() == 0 and pad[:, -7:].max() == 0
    assert pad[0, 16, 0, 0] < 10 and pad[0, 16, -1, 0] > 245


def test_portrait_crop_and_error_mode():
    clip = _stripes(1, 90, 40)
    assert F.fit_frames(clip, 16, "crop").shape == (1, 16, 16, 3)
    with pytest.raises(ValueError, match="40x90 pixels, not square"):
        F.fit_frames(clip, 16, "error")
    assert F.fit_frames(_stripes(1, 40, 40), 16, "error").shape == (1, 16, 16, 3)
    with pytest.raises(ValueError, match="not one of"):
        F.fit_frames(clip, 16, "stretch")


def test_nearest_resizing_keeps_labels_binary():
    mask = np.zeros((1, 50, 30, 3), np.uint8)
    mask[:, 10:40, 5:20] = 255
    out = F.fit_frames(mask, 16, "crop", nearest=True)
    assert set(np.unique(out)) == {0, 255}


def test_resampling_picks_the_frame_shown_at_each_output_time():
    times = np.arange(60) / 30.0  # 2 s at 30 fps
    assert F.duration(times, 16) == pytest.approx(2.0) and F.duration([0.5], 8) == pytest.approx(0.125)
    assert F.resample_indices(times, 16, 16).tolist() == [int(np.floor(i / 16 * 30 + 1e-6)) for i in range(16)]
    assert F.resample_indices(times, 30).tolist() == list(range(60))  # same rate: every frame
    assert F.resample_indices(np.arange(8) / 8.0, 16).tolist() == [i // 2 for i in range(16)]  # slower: repeats
    # Variable frame rate: a burst of frames, then a gap; each output time takes the last frame shown.
    vfr = np.array([0.0, 0.01, 0.02, 0.5, 0.6])
    assert F.resample_indices(vfr, 10, 6).tolist() == [0, 2, 2, 2, 2, 3]
    with pytest.raises(ValueError, match="need 3.000 s of video; it has 2.000 s"):
        F.resample_indices(times, 16, 48)


def test_clip_starts():
    assert F.clip_starts(10.0, 80, 16, 2.0) == [0.0, 2.0, 4.0]
    assert F.clip_starts(10.0, 80, 16, 0.0) == [0.0]
    assert F.clip_starts(4.9, 80, 16, 1.0) == []
