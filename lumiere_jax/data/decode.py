"""Decoding video files with PyAV (FFmpeg's libraries): RGB frames, their presentation times, and rotation.

    video = read_video("clip.mov", short_side=64)   # frames uint8 [T, H, W, 3], times [T] s, fps, rotation
    clip = video.frames[frames.resample_indices(video.times, fps=16, num_frames=80)]

`short_side` scales each frame in FFmpeg's scaler (area averaging, so it is antialiased) as it is converted to
RGB, so a 1080p source never exists as full-size arrays. Rotated sources (a phone's portrait video stored
landscape with a display-matrix rotation) come out upright. Any failure is a `DecodeError` whose `reason` is one
of REASONS, for the callers that count skipped files.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

import av
import numpy as np
from etils import epath

from lumiere_jax import paths

REASONS = ("missing", "empty_file", "undecodable", "no_video_stream", "no_frames")


class DecodeError(ValueError):
    """A file that gives no frames; `reason` is one of REASONS."""

    def __init__(self, path: str, reason: str, detail: str = ""):
        self.path, self.reason = path, reason
        super().__init__(f"{path}: {reason.replace('_', ' ')}" + (f" ({detail})" if detail else ""))


@dataclasses.dataclass
class Video:
    frames: np.ndarray  # uint8 [T, H, W, 3], upright
    times: np.ndarray  # float64 [T]: presentation time of each frame, seconds from the stream's start
    fps: float  # the stream's average rate (informative: resample by `times`)
    rotation: int  # degrees the stored frames were turned to come out upright (0, 90, 180, 270)
    size: tuple[int, int]  # (height, width) of the file's upright frames, before any scaling


def _scaled(width: int, height: int, short_side: int | None, long_side: int | None) -> tuple[int, int]:
    """The decoded (width, height): the short side about `short_side` (at least that, so a centre crop of that size
    fits) or the long side `long_side`, aspect kept, never upscaled."""
    if short_side and min(width, height) > short_side:
        scale = short_side / min(width, height)
        return max(short_side, round(width * scale)), max(short_side, round(height * scale))
    if long_side and max(width, height) > long_side:
        scale = long_side / max(width, height)
        return max(1, round(width * scale)), max(1, round(height * scale))
    return width, height


def read_video(path: str, *, short_side: int | None = None, long_side: int | None = None,
               max_frames: int | None = None) -> Video:
    """Decodes the first video stream of `path` (every frame, or the first `max_frames`) to upright RGB frames.

    short_side / long_side: scale so the frames' short (or long) side is this many pixels (never up), inside
    FFmpeg's scaler.
    """
    file = epath.Path(path)  # a local file, or an object in a bucket (gs://...), read through a file object
    if not file.is_file():
        raise DecodeError(path, "missing")
    if file.stat().length == 0:
        raise DecodeError(path, "empty_file")
    with contextlib.ExitStack() as stack:
        try:
            container = av.open(stack.enter_context(file.open("rb")) if paths.is_remote(path) else path)
        except (av.error.FFmpegError, OSError, UnicodeDecodeError, ValueError) as e:
            raise DecodeError(path, "undecodable", type(e).__name__) from None
        stack.enter_context(container)
        return _decode(path, container, short_side, long_side, max_frames)


def _decode(path: str, container: Any, short_side: int | None, long_side: int | None,
            max_frames: int | None) -> Video:
    """read_video's decoding of an opened container."""
    if not container.streams.video:
        raise DecodeError(path, "no_video_stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    frames, times, rotation, size = [], [], 0, (0, 0)
    try:
        for frame in container.decode(stream):
            rotation = int(getattr(frame, "rotation", 0) or 0) % 360
            size = (frame.height, frame.width)
            width, height = _scaled(frame.width, frame.height, short_side, long_side)
            rgb = frame.reformat(width=width, height=height, format="rgb24", interpolation="AREA")
            frames.append(rgb.to_ndarray())
            times.append(float(frame.time) if frame.time is not None else len(times) / _rate(stream))
            if max_frames and len(frames) >= max_frames:
                break
    except (av.error.FFmpegError, OSError, ValueError) as e:
        if not frames:  # a truncated file keeps the frames decoded before the damage
            raise DecodeError(path, "undecodable", type(e).__name__) from None
    if not frames:
        raise DecodeError(path, "no_frames")
    out = np.stack(frames)  # [T, H, W, 3]
    if rotation:
        # FFmpeg's display rotation is counter-clockwise; np.rot90 turns counter-clockwise for k > 0.
        out = np.ascontiguousarray(np.rot90(out, k=rotation // 90, axes=(1, 2)))
    order = np.argsort(np.asarray(times), kind="stable")  # presentation order (B-frames decode out of it)
    times = np.asarray(times, np.float64)[order]
    upright = size[::-1] if rotation in (90, 270) else size
    return Video(frames=out[order], times=times - times[0], fps=_rate(stream), rotation=rotation, size=upright)


def _rate(stream) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else 25.0
