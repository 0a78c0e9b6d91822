"""Frames of any size, aspect and rate made into the model's clips: square resizing and frame-rate resampling.

Shared by the video source's preparation (data/videos.py) and the applications' inputs (applications/inputs.py),
so a clip read for training and a clip given to `--video` go through the same geometry.

    square = fit_frames(frames, 64, mode="crop")     # uint8 [T, H, W, 3] -> [T, 64, 64, 3]
    keep = resample_indices(timestamps, fps=16, num_frames=80)   # which decoded frames make an 80-frame clip
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image

RESIZE_MODES = ("crop", "pad", "error")


def fit_size(height: int, width: int, resolution: int, mode: str) -> tuple[int, int]:
    """The (height, width) a frame is resized to before cropping (crop) or padding (pad) to a square of
    `resolution`: its short side (crop) or its long side (pad) becomes `resolution`, the aspect is kept."""
    if mode not in ("crop", "pad"):
        raise ValueError(f"resize mode {mode!r} is not one of {RESIZE_MODES}.")
    scale = resolution / (min(height, width) if mode == "crop" else max(height, width))
    return max(resolution if mode == "crop" else 1, round(height * scale)), \
        max(resolution if mode == "crop" else 1, round(width * scale))


def fit_frames(frames: np.ndarray, resolution: int, mode: str = "crop", *, nearest: bool = False) -> np.ndarray:
    """uint8 frames [T, H, W, C] of any size -> [T, resolution, resolution, C].

    crop: the short side resized to `resolution` (antialiased: PIL's Lanczos when shrinking), then the centre
    square; pad: the long side resized, the rest filled with black, centred; error: only square frames, resized
    (a ValueError names the size otherwise). nearest=True resizes as labels (masks): no new values appear.
    """
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize mode {mode!r} is not one of {RESIZE_MODES}.")
    t, h, w, c = frames.shape
    if mode == "error" and h != w:
        raise ValueError(f"frames are {w}x{h} pixels, not square; crop them to a square, or resize with 'crop' or "
                         f"'pad'.")
    if (h, w) == (resolution, resolution):
        return frames
    if mode == "error":
        mode = "crop"  # square: both modes are a plain resize
    new_h, new_w = fit_size(h, w, resolution, mode)
    method = Image.NEAREST if nearest else (Image.LANCZOS if new_h < h else Image.BICUBIC)
    resized = np.stack([_resize(f, new_w, new_h, method) for f in frames])  # [T, new_h, new_w, C]
    if mode == "crop":
        top, left = (new_h - resolution) // 2, (new_w - resolution) // 2
        return resized[:, top:top + resolution, left:left + resolution]
    out = np.zeros((t, resolution, resolution, c), frames.dtype)
    top, left = (resolution - new_h) // 2, (resolution - new_w) // 2
    out[:, top:top + new_h, left:left + new_w] = resized
    return out


def _resize(frame: np.ndarray, width: int, height: int, method: int) -> np.ndarray:
    if frame.shape[-1] == 1:
        return np.asarray(Image.fromarray(frame[..., 0]).resize((width, height), method))[..., None]
    return np.asarray(Image.fromarray(frame).resize((width, height), method))


def duration(timestamps: Sequence[float], fps: float) -> float:
    """Seconds a video whose frames show at `timestamps` lasts: to its last frame's time plus one frame period (the
    median gap between frames; 1 / fps for a single frame)."""
    times = np.asarray(timestamps, np.float64)
    period = float(np.median(np.diff(times))) if len(times) > 1 else 1.0 / fps
    return float(times[-1] - times[0]) + period


def resample_indices(timestamps: Sequence[float], fps: float, num_frames: int | None = None,
                     start: float | None = None) -> np.ndarray:
    """Indices into decoded frames (presentation times `timestamps`, seconds, increasing) that sample the video
    at `fps` from time `start` (default: the first frame): for each output time, the last frame shown at or before
    it. Variable frame rates resample the same way. num_frames: how many (default: as many as the video holds).
    """
    times = np.asarray(timestamps, np.float64)
    if times.ndim != 1 or not len(times):
        raise ValueError("no frames to resample.")
    if fps <= 0:
        raise ValueError(f"fps={fps} must be positive.")
    start = times[0] if start is None else start
    end = times[0] + duration(times, fps)
    available = int(np.floor((end - start) * fps + 1e-6))
    count = available if num_frames is None else num_frames
    if count > available:
        raise ValueError(f"{count} frames at {fps:g} fps from {start:.3f} s need {count / fps:.3f} s of video; "
                         f"it has {end - start:.3f} s.")
    wanted = start + np.arange(count) / fps + 1e-6
    return np.clip(np.searchsorted(times, wanted, side="right") - 1, 0, len(times) - 1)


def clip_starts(duration: float, num_frames: int, fps: float, stride: float, start: float = 0.0) -> list[float]:
    """Start times (seconds) of the clips of `num_frames` frames at `fps` cut from a video of `duration` seconds,
    `stride` seconds apart (0: one clip, from the start); [] when the video is shorter than one clip."""
    length = num_frames / fps
    if duration + 1e-6 < length:
        return []
    if stride <= 0:
        return [start]
    count = int(np.floor((duration - length) / stride + 1e-6)) + 1
    return [start + i * stride for i in range(count)]
