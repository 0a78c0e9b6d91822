"""Application inputs: reading and checking the files of `--mode=sample` and planning the request.

  --image                  image-to-video (conditional model): the image is frame 1
  --video --mask           inpainting (conditional model): white mask pixels are filled
  --image --mask           cinemagraph (conditional model): only the white region moves
  --video                  SDEdit video-to-video editing (plain T2V model; config.sample.strength)
  --style_weights          stylized generation: spatial weights interpolated towards a style fine-tune
                           (config.sample.style_alpha), used for the steps at diffusion times t <= style_start

Inputs of any size, aspect and frame rate are made into the model's square clip (data/frames.py, the geometry of
the video source's preparation): config.sample.resize "crop" (the short side resized with antialiasing, the centre
square kept), "pad" (the long side resized, black borders) or "error" (square inputs only); videos (PyAV, upright)
are resampled by presentation time to config.data.fps and trimmed to the model's first data.num_frames frames. A
mask is fitted with the geometry of the input it masks, as labels (nearest), and a mask video picks the video's
frames. Each input logs one line saying what was done.

`plan` reads and checks every input (files, sizes, durations, binary masks, which model the run holds) before
anything is loaded or compiled; errors are `InputError`s, one line that names the value and the fix.
"""

from __future__ import annotations

import dataclasses
import logging
import os

import imageio.v3 as iio
import ml_collections
import numpy as np
import safetensors
from PIL import Image

from lumiere_jax import config_lib
from lumiere_jax.conditioning import masked
from lumiere_jax.data import decode
from lumiere_jax.data import frames as frames_lib

log = logging.getLogger("lumiere_jax")

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".gif")  # imageio; a GIF's frame durations give its frame times
VIDEO_EXTENSIONS = (".mp4", ".webm", ".mov", ".mkv", ".avi")  # PyAV: presentation times, upright frames
# Mask pixels darker than LOW are 0 (keep), brighter than HIGH are 1 (fill/animate); a mask with more than
# MAX_GREY of its pixels in between is refused as not binary (video compression blurs a few edge pixels).
MASK_LOW, MASK_HIGH, MAX_GREY = 64, 191, 0.05
# GIFs store frame durations in centiseconds: a GIF whose frames each last within one of the model's frame period
# is taken at the model's rate (an 8 fps GIF holds 120 ms frames, not 125 ms).
GIF_TICK = 0.01


class InputError(ValueError):
    """A bad application input (file, size, length, mask, flag combination); reported as one line."""


@dataclasses.dataclass
class Request:
    """A checked application request: what to run and its inputs, in model space."""

    kind: str  # "t2v" (plain sampling), "i2v", "inpaint", "cinemagraph" or "sdedit"
    cond: np.ndarray | None = None  # [T, H, W, 4]: masked video C and mask M (1 = known)
    video: np.ndarray | None = None  # [T, H, W, 3] in [-1, 1]: the SDEdit source
    strength: float = 0.0  # SDEdit start time t0 in [0, 1]
    style_weights: str | None = None
    style_alpha: float = 1.0  # W = a W_style + (1 - a) W for the spatial weights (config.sample.style_alpha)
    style_start: float = 0.5  # the style weights run the steps at diffusion times t <= style_start


def is_conditional(config: ml_collections.ConfigDict) -> bool:
    """Whether the config is the 7-channel masked-video model of configs/conditional.py."""
    return config.task in config_lib.MASKED and config.model.cond_channels == masked.COND_CHANNELS


# Reading inputs.

@dataclasses.dataclass
class _Source:
    """One input file decoded: its frames and what fitting and resampling them needs."""

    frames: np.ndarray  # uint8 [T, h, w, 3]; a video's may be scaled already (short side = the model's resolution)
    size: tuple[int, int]  # (height, width) of the file's frames, upright
    times: np.ndarray | None  # presentation times, seconds; None: no frame rate (images, GIFs without durations)
    rate: float | None  # the file's frame rate (frames per second), for the log

    @property
    def scaled(self) -> tuple[int, int] | None:
        """The (height, width) the decoder scaled the frames to, or None."""
        return None if self.frames.shape[1:3] == self.size else self.frames.shape[1:3]


def _read_frames(path: str, flag: str, *, short_side: int | None = None, max_frames: int | None = None) -> _Source:
    """An image, GIF or video file decoded to uint8 frames [T, H, W, 3] (grey and RGBA converted); one-line errors.

    Video files (VIDEO_EXTENSIONS) are decoded with PyAV: upright, with presentation times, scaled inside
    FFmpeg so the short side is `short_side` (area averaging; never up), the first `max_frames` frames only.
    """
    if not os.path.isfile(path):
        raise InputError(f"{flag}={path} does not exist: give an existing image (.png/.jpg) or video "
                         f"(.mp4/.gif) file.")
    ext = os.path.splitext(path)[1].lower()
    if ext not in IMAGE_EXTENSIONS + VIDEO_EXTENSIONS:
        raise InputError(f"{flag}={path}: unsupported file type {ext or '(none)'}; use .png, .jpg, .gif or a video "
                         f"({', '.join(VIDEO_EXTENSIONS)}).")
    if ext in VIDEO_EXTENSIONS:
        return _read_video_file(path, flag, ext, short_side, max_frames)
    try:
        frames = iio.imread(path, index=None)
    except Exception as e:  # imageio raises many types for damaged files
        raise InputError(f"{flag}={path} cannot be decoded ({type(e).__name__}): is it a valid "
                         f"{ext[1:].upper()} file?") from None
    frames = np.asarray(frames)
    if frames.ndim == 2 or (frames.ndim == 3 and ext in (".png", ".jpg", ".jpeg")):
        frames = frames[None]  # one image
    if frames.ndim == 3:
        frames = frames[..., None]  # grey frames
    if frames.ndim != 4 or frames.shape[0] == 0 or frames.shape[-1] not in (1, 2, 3, 4):
        raise InputError(f"{flag}={path} decodes to shape {frames.shape}; expected frames [T, H, W, RGB].")
    if frames.dtype == np.uint16:
        frames = (frames >> 8).astype(np.uint8)
    if frames.dtype != np.uint8:
        raise InputError(f"{flag}={path} holds {frames.dtype} pixels; save it as 8-bit.")
    if frames.shape[-1] in (1, 2):
        frames = np.repeat(frames[..., :1], 3, axis=-1)
    frames = frames[..., :3]
    times = _gif_times(path, len(frames)) if ext == ".gif" else None
    rate = None if times is None or len(times) < 2 else 1.0 / float(np.mean(np.diff(times)))
    return _Source(frames, frames.shape[1:3], times, rate)


def _read_video_file(path: str, flag: str, ext: str, short_side: int | None, max_frames: int | None) -> _Source:
    try:
        video = decode.read_video(path, short_side=short_side, max_frames=max_frames)
    except decode.DecodeError as e:
        raise InputError(f"{flag}={path} cannot be decoded ({e.reason.replace('_', ' ')}): is it a valid "
                         f"{ext[1:].upper()} video?") from None
    return _Source(video.frames, video.size, video.times, video.fps)


def _gif_times(path: str, count: int) -> np.ndarray | None:
    """A GIF's frame times (s) from its frame durations; None when it has none (or they do not match its frames)."""
    try:
        with Image.open(path) as gif:
            durations = []
            for i in range(getattr(gif, "n_frames", 1)):
                gif.seek(i)
                durations.append(float(gif.info.get("duration") or 0) / 1000)
    except Exception:  # the pixels decoded; without durations the GIF has no frame rate
        return None
    if len(durations) != count or min(durations) <= 0:
        return None
    return np.concatenate([[0.0], np.cumsum(durations[:-1])])


def _pixels(frames: np.ndarray) -> np.ndarray:
    return frames.astype(np.float32) / 127.5 - 1.0


def _fit(frames: np.ndarray, size: tuple[int, int], resolution: int, mode: str, flag: str, path: str, *,
         nearest: bool = False, via: tuple[int, int] | None = None) -> tuple[np.ndarray, str]:
    """Frames [T, h, w, C] of a file whose frames are `size` (h, w) -> [T, R, R, C], and what was done.

    via: the size a decoder already scaled the frames of the input they belong to (a mask's video): resized there
    first (nearest), so both land on the same pixels.
    """
    h, w = size
    if mode == "error" and h != w:
        raise InputError(f"{flag}={path} is {w}x{h} pixels; --config.sample.resize=error takes square inputs only: "
                         f"crop it to a square, or use --config.sample.resize=crop (centre square) or pad (black "
                         f"borders).")
    if via is not None and frames.shape[1:3] != via:
        method = Image.NEAREST if nearest else Image.LANCZOS
        frames = np.stack([np.asarray(Image.fromarray(f.squeeze(-1) if f.shape[-1] == 1 else f)
                                      .resize(via[::-1], method)).reshape(via + f.shape[-1:]) for f in frames])
    fitted = frames_lib.fit_frames(frames, resolution, mode, nearest=nearest)
    square = f"{resolution}x{resolution}"
    if (h, w) == (resolution, resolution):
        return fitted, f"already {square}"
    if h == w:
        return fitted, f"resized {w}x{h} -> {square}"
    how = "short side resized, centre square kept" if mode == "crop" else "long side resized, black borders"
    return fitted, f"resized {w}x{h} -> {square} ({how})"


def _rate(rate: float | None) -> str:
    return f"{rate:.4g} fps" if rate else "no frame rate"


@dataclasses.dataclass
class _Clip:
    """A video input made into the model's clip, and what its mask needs to follow it."""

    clip: np.ndarray  # [T, R, R, 3] in [-1, 1]
    size: tuple[int, int]  # (height, width) of the file's frames
    count: int  # frames the file holds
    indices: np.ndarray  # [T] the file's frames that make the clip
    scaled: tuple[int, int] | None  # the size the decoder scaled the frames to, or None


def _read_clip(path: str, num_frames: int, resolution: int, flag: str, mode: str, fps: float) -> _Clip:
    """read_clip, keeping what the video's mask needs: its size, frame count, the frames picked, the decoder's size."""
    source = _read_frames(path, flag, short_side=resolution)
    n = len(source.frames)
    times = source.times if source.times is not None else np.arange(n) / fps
    duration, needed = frames_lib.duration(times, fps), num_frames / fps
    rate = source.rate
    if source.times is not None and path.lower().endswith(".gif") and n > 1 \
            and np.abs(np.diff(times) - 1.0 / fps).max() <= GIF_TICK + 1e-9:
        times, duration, rate = np.arange(n) / fps, n / fps, fps  # a GIF at the model's rate, in centiseconds
    taken = f"no frame rate: taken as {fps:g} fps" if source.times is None else _rate(rate)
    try:
        indices = frames_lib.resample_indices(times, fps, num_frames)
    except ValueError:
        raise InputError(f"{flag}={path} has {n} frames but the model makes {num_frames}-frame clips at {fps:g} fps "
                         f"({needed:.2f} s): it lasts {duration:.2f} s ({taken}); give at least {needed:.2f} s "
                         f"of video (longer videos are trimmed).") from None
    clip, geometry = _fit(source.frames[indices], source.size, resolution, mode, flag, path)
    if duration > needed + 1e-6:
        length = f"trimmed to the first {num_frames} at {fps:g} fps ({needed:.2f} s of {duration:.2f} s)"
        length = f"has {n} frames: {length}"
    else:
        length = f"has {n} frames ({duration:.2f} s) -> {num_frames} at {fps:g} fps"
    h, w = source.size
    log.info("%s=%s (%dx%d, %s) %s; %s.", flag, path, w, h, taken, length, geometry)
    return _Clip(_pixels(clip), source.size, n, indices, source.scaled)


def read_image(path: str, resolution: int, flag: str = "--image", *, mode: str = "crop") -> np.ndarray:
    """One image [H, W, 3] in [-1, 1] at the model's resolution; mode: config.sample.resize."""
    source = _read_frames(path, flag)
    if source.frames.shape[0] != 1:
        raise InputError(f"{flag}={path} has {source.frames.shape[0]} frames; {flag} takes one image (a .png).")
    image, geometry = _fit(source.frames, source.size, resolution, mode, flag, path)
    log.info("%s=%s: %s.", flag, path, geometry)
    return _pixels(image[0])


def read_clip(path: str, num_frames: int, resolution: int, flag: str = "--video", *, mode: str = "crop",
              fps: float = 8.0) -> np.ndarray:
    """A clip [T, H, W, 3] in [-1, 1]: resampled to `fps` (config.data.fps) by the file's frame times and trimmed
    to the model's first T frames (shorter videos are refused), fitted by `mode` (config.sample.resize)."""
    return _read_clip(path, num_frames, resolution, flag, mode, float(fps)).clip


def read_mask(path: str, size: tuple[int, int], resolution: int, *, mode: str = "crop",
              indices: np.ndarray | None = None, count: int = 1, scaled: tuple[int, int] | None = None) -> np.ndarray:
    """A binary mask bool [T', H, W] (True = white = fill/animate): T' = 1 (every frame) or the clip's frames.

    size: (height, width) of the image or video it masks, which it must match; it is fitted like that input (mode,
    and `scaled`: the size that input's decoder scaled its frames to). A mask video has one frame per frame of the
    video (`count` frames, picked by `indices` as the video's were) or one per frame of the clip (len(indices)).
    """
    clip_frames = 1 if indices is None else len(indices)
    limit = max(count, clip_frames) + 1  # a mask video's frames decoded: enough to tell a longer one
    raw = _read_frames(path, "--mask", max_frames=limit).frames
    t, h, w, _ = raw.shape
    if (h, w) != tuple(size):
        raise InputError(f"--mask={path} is {w}x{h} pixels but the input it masks is {size[1]}x{size[0]}: they must "
                         f"be the same size.")
    if t not in (1, count, clip_frames):
        many = f"at least {t}" if t >= limit and path.lower().endswith(VIDEO_EXTENSIONS) else str(t)
        if clip_frames == 1:
            lengths = "."
        elif count in (1, clip_frames):
            lengths = f" or a mask video of {clip_frames} frames."
        else:
            lengths = f", a mask video of {clip_frames} frames (the clip's) or of {count} (the video's)."
        raise InputError(f"--mask={path} has {many} frames; give one mask image{lengths}")
    if t == count and indices is not None:  # frame for frame with the video: its frames are the video's picks
        raw, how = raw[indices], f"{t} frames, picked as the video's"
    else:
        how = "one frame" if t == 1 else f"{t} frames"
    grey = raw.astype(np.float32).mean(-1)  # [T', H, W]
    in_between = float(np.mean((grey > MASK_LOW) & (grey < MASK_HIGH)))
    if in_between > MAX_GREY:
        raise InputError(f"--mask={path} is not binary: {in_between:.0%} of its pixels are grey or coloured; "
                         f"paint it black (keep) and white (fill or animate).")
    binary = (grey >= 128)[..., None].astype(np.uint8) * 255  # threshold, then resize as labels
    fitted, geometry = _fit(binary, (h, w), resolution, mode, "--mask", path, nearest=True, via=scaled)
    mask = fitted[..., 0] >= 128
    if not binary.any():
        raise InputError(f"--mask={path} has no white pixels: nothing to fill or animate; paint the region "
                         f"white.")
    if not mask.any():
        where = ("lies outside the centre square that --config.sample.resize=crop keeps: move it inwards, or use "
                 "--config.sample.resize=pad" if mode == "crop" else
                 f"vanishes at the model's {resolution}x{resolution} pixels: make it larger")
        raise InputError(f"--mask={path}: its white region {where}.")
    log.info("--mask=%s: %s, %s, as labels; %.0f%% white.", path, how, geometry, 100 * mask.mean())
    return mask


# Planning: which application, with checked inputs.

def plan(config: ml_collections.ConfigDict, *, image: str | None = None, video: str | None = None,
         mask: str | None = None, style_weights: str | None = None, frames: int | None = None,
         prompt_spans: int = 1) -> Request:
    """Checks the input files against each other and the model, reads them; raises InputError.

    The options come from config.sample: strength (SDEdit), style_alpha and style_start (style weights), resize
    (inputs of any size); videos are resampled to config.data.fps.
    """
    num_frames, res = config.data.num_frames, config.data.resolution
    mode, fps = config.sample.resize, float(config.data.fps)
    conditional = is_conditional(config)
    _check_style(style_weights, conditional)
    style = dict(style_weights=style_weights, style_alpha=float(config.sample.style_alpha),
                 style_start=float(config.sample.style_start))
    if image and video:
        raise InputError("Give --image (image-to-video, cinemagraph) or --video (inpainting, SDEdit), not both.")
    if mask and not (image or video):
        raise InputError("--mask needs --video (inpainting) or --image (cinemagraph).")
    if not (image or video):
        return Request("t2v", **style)
    kind = ("cinemagraph" if mask else "i2v") if image else ("inpaint" if mask else "sdedit")
    if (frames and frames != num_frames) or prompt_spans > 1:
        raise InputError(f"--image/--video work on one clip of the model's {num_frames} frames: drop --frames "
                         f"and the later prompts of a story (--prompt_at, or a JSON list in --prompt).")
    if kind == "sdedit":
        if conditional:
            raise InputError("--video without --mask is SDEdit, which runs on a text-to-video run "
                             "(configs/t2v.py or configs/stylize.py); for inpainting give --mask.")
        strength = config.sample.strength
        if not 0.0 <= strength <= 1.0:
            raise InputError(f"--config.sample.strength={strength} must be in [0, 1]: 0 keeps the video, 1 ignores "
                             f"it.")
        return Request(kind, video=read_clip(video, num_frames, res, mode=mode, fps=fps), strength=float(strength),
                       **style)
    if not conditional:
        raise InputError(f"{'--image' if image else '--video --mask'} ({kind}) needs the conditional model: use "
                         f"--config=configs/conditional.py with a workdir trained by it.")
    if kind == "i2v":
        return Request(kind, cond=masked.i2v_condition(read_image(image, res, mode=mode), num_frames))
    if kind == "cinemagraph":
        still = read_image(image, res, mode=mode)
        size = _read_frames(image, "--image").size
        region = read_mask(mask, size, res, mode=mode)[0]
        return Request(kind, cond=masked.cinemagraph_condition(still, region, num_frames))
    clip = _read_clip(video, num_frames, res, "--video", mode, fps)
    hole = read_mask(mask, clip.size, res, mode=mode, indices=clip.indices, count=clip.count, scaled=clip.scaled)
    return Request(kind, cond=masked.inpaint_condition(clip.clip, hole))


def _check_style(path: str | None, conditional: bool) -> None:
    if not path:
        return
    if conditional:
        raise InputError("--style_weights apply to a text-to-video run (configs/t2v.py), not the conditional "
                         "model.")
    if not os.path.isfile(path):
        raise InputError(f"--style_weights={path} does not exist: make it with --mode=style_tune "
                         f"(configs/style_gen.py).")
    try:  # the header and the data's extent, read before any run is restored or anything compiles
        with safetensors.safe_open(path, framework="numpy"):
            pass
    except Exception as e:  # safetensors raises its own error types for damaged files
        raise style_weights_unreadable(path, e) from None


def style_weights_unreadable(path: str, error: Exception) -> InputError:
    """The one-line error for a --style_weights file that safetensors cannot read."""
    return InputError(f"--style_weights={path} cannot be read ({type(error).__name__}): is it a .safetensors file "
                      f"written by --mode=style_tune?")


def read_style_images(path: str, caption: str | None, resolution: int, *,
                      mode: str = "crop") -> tuple[np.ndarray, list[str]]:
    """The style tune's images [N, H, W, 3] in [-1, 1] and one caption per image.

    `path` is one image, captioned `caption`, or a folder of images (.png/.jpg, sorted by name), each
    captioned by the text file of the same name (`a.png` + `a.txt`, the usual layout of fine-tuning folders)
    or else by `caption`: the reference plus the images a feedback round kept (tools/style_feedback.py). Images
    of any size are fitted by `mode` (config.sample.resize).
    """
    folder = os.path.isdir(path)
    if folder:
        names = sorted(n for n in os.listdir(path) if os.path.splitext(n)[1].lower() in (".png", ".jpg", ".jpeg"))
        if not names:
            raise InputError(f"--style_image={path} is a folder without .png/.jpg images: put the style image(s) "
                             f"in it, each with an optional caption file of the same name (.txt).")
    else:
        names, path = [path], ""
    images, captions = [], []
    for name in names:
        file = os.path.join(path, name)
        text = os.path.splitext(file)[0] + ".txt"
        words = open(text).read().strip() if folder and os.path.isfile(text) else (caption or "")
        if not words.replace("|", "").strip():
            raise InputError(f"--style_image={file} has no caption: give --prompt naming the style, e.g. "
                             f'"a red circle in outline style", or write it to {text}.')
        images.append(read_image(file, resolution, "--style_image", mode=mode))
        captions.append(words.strip())
    return np.stack(images), captions
