"""Reading and writing clips: MP4 (ffmpeg from imageio-ffmpeg), GIF and PNG; frames are uint8 [T, H, W, 3]."""

from __future__ import annotations

import os

import imageio
import imageio.v3 as iio
import numpy as np

from lumiere_jax import paths


def to_uint8(video: np.ndarray) -> np.ndarray:
    """Model space [-1, 1] -> uint8 [0, 255]."""
    return np.clip(np.round((np.asarray(video, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def upscale(video: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour upscaling of [..., H, W, C] so tiny clips are visible."""
    if factor <= 1:
        return video
    return np.repeat(np.repeat(video, factor, axis=-3), factor, axis=-2)


def grid(videos: np.ndarray, columns: int | None = None, pad: int = 2) -> np.ndarray:
    """Tiles clips [N, T, H, W, C] into one clip [T, rows*(H+pad), cols*(W+pad), C]."""
    n, t, h, w, c = videos.shape
    columns = columns or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / columns))
    out = np.zeros((t, rows * (h + pad), columns * (w + pad), c), videos.dtype)
    for i in range(n):
        r, col = divmod(i, columns)
        out[:, r * (h + pad):r * (h + pad) + h, col * (w + pad):col * (w + pad) + w] = videos[i]
    return out


def write_video(path: str, frames: np.ndarray, fps: int = 8) -> None:
    """Writes uint8 [T, H, W, 3] as MP4 (H.264) or GIF (looping), chosen by the file extension.

    The clip is encoded in memory and written whole (paths.write_atomic; a URL works too), so a reader or a
    crash never sees half a clip; a full disk raises paths.DiskFullError, one line naming path."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"write_video wants uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}.")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".gif":
        data = iio.imwrite("<bytes>", frames, extension=".gif", duration=int(1000 / fps), loop=0)
    elif ext == ".mp4":
        # H.264 in yuv420p (the ffmpeg plugin's default, which plays everywhere) wants even sizes.
        h, w = frames.shape[1:3]
        frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        data = iio.imwrite("<bytes>", frames, extension=".mp4", fps=fps, codec="libx264", macro_block_size=1)
    elif ext == ".png":
        data = iio.imwrite("<bytes>", frames[0], extension=".png")
    else:
        raise ValueError(f"Cannot write {path!r}: use an .mp4, .gif or .png file name.")
    paths.write_atomic(paths.resolve(path), data)


def read_video(path: str) -> np.ndarray:
    """Reads an MP4/GIF/PNG as uint8 [T, H, W, 3]; clear errors for missing or unreadable files."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Video file {path!r} does not exist: pass an existing .mp4, .gif or image file.")
    try:
        frames = iio.imread(path, index=None) if not path.lower().endswith(".mp4") else _read_mp4(path)
    except Exception as e:  # imageio raises many types for corrupt files
        raise ValueError(f"Cannot decode {path!r} ({type(e).__name__}: {e}); is it a valid video?") from None
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.shape[-1] == 4:
        frames = frames[..., :3]
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"{path!r} decodes to shape {frames.shape}; expected RGB frames [T, H, W, 3].")
    return frames.astype(np.uint8)


def _read_mp4(path: str) -> np.ndarray:
    with imageio.get_reader(path, format="FFMPEG") as reader:
        return np.stack([np.asarray(f) for f in reader])
