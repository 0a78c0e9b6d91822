"""Application inputs: reading and checking the files of `--mode=sample` and planning the request.

  --image                  image-to-video (conditional model): the image is frame 1
  --video --mask           inpainting (conditional model): white mask pixels are filled
  --image --mask           cinemagraph (conditional model): only the white region moves
  --video                  SDEdit video-to-video editing (plain T2V model; config.sample.strength)
  --style_weights          stylized generation: spatial weights interpolated towards a style fine-tune
                           (config.sample.style_alpha), used for the steps at diffusion times t <= style_start

`plan` reads and checks every input (files, sizes, frame counts, binary masks, which model the run holds)
before anything is loaded or compiled; errors are `InputError`s, one line that names the value and the fix.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Sequence

import imageio.v3 as iio
import ml_collections
import numpy as np
from PIL import Image

from lumiere_jax import config_lib, video_io
from lumiere_jax.conditioning import masked

log = logging.getLogger("lumiere_jax")

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".gif")
VIDEO_EXTENSIONS = (".mp4", ".gif", ".png")
# Mask pixels darker than LOW are 0 (keep), brighter than HIGH are 1 (fill/animate); a mask with more than
# MAX_GREY of its pixels in between is refused as not binary (video compression blurs a few edge pixels).
MASK_LOW, MASK_HIGH, MAX_GREY = 64, 191, 0.05


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

def _read_frames(path: str, flag: str) -> np.ndarray:
    """uint8 [T, H, W, 3] from a PNG/JPEG/GIF/MP4 (grey and RGBA are converted); one-line errors."""
    if not os.path.isfile(path):
        raise InputError(f"{flag}={path} does not exist: give an existing image (.png/.jpg) or video "
                         f"(.mp4/.gif) file.")
    ext = os.path.splitext(path)[1].lower()
    if ext not in IMAGE_EXTENSIONS + (".mp4",):
        raise InputError(f"{flag}={path}: unsupported file type {ext or '(none)'}; use .png, .jpg, .gif or .mp4.")
    try:
        frames = video_io._read_mp4(path) if ext == ".mp4" else iio.imread(path, index=None)
    except Exception as e:  # imageio/ffmpeg raise many types for damaged files
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
    return frames[..., :3]


def _fit_size(frames: np.ndarray, resolution: int, flag: str, path: str, nearest: bool = False) -> np.ndarray:
    """Square frames of any size are resized to the model's resolution; others are refused."""
    t, h, w, _ = frames.shape
    if h != w:
        raise InputError(f"{flag}={path} is {w}x{h} pixels; the model makes square {resolution}x{resolution} "
                         f"frames: crop it to a square (any square size is resized).")
    if h == resolution:
        return frames
    method = Image.NEAREST if nearest else Image.BILINEAR
    log.info("%s: resized %dx%d -> %dx%d.", flag, w, h, resolution, resolution)
    return np.stack([np.asarray(Image.fromarray(f).resize((resolution, resolution), method)) for f in frames])


def read_image(path: str, resolution: int, flag: str = "--image") -> np.ndarray:
    """One image [H, W, 3] in [-1, 1] at the model's resolution."""
    frames = _read_frames(path, flag)
    if frames.shape[0] != 1:
        raise InputError(f"{flag}={path} has {frames.shape[0]} frames; {flag} takes one image (a .png).")
    return _fit_size(frames, resolution, flag, path)[0].astype(np.float32) / 127.5 - 1.0


def read_clip(path: str, num_frames: int, resolution: int, flag: str = "--video") -> np.ndarray:
    """A clip [T, H, W, 3] in [-1, 1]: trimmed to the model's T frames; shorter clips are refused."""
    frames = _read_frames(path, flag)
    if frames.shape[0] < num_frames:
        raise InputError(f"{flag}={path} has {frames.shape[0]} frames but the model makes {num_frames}-frame "
                         f"clips: give at least {num_frames} frames (longer videos are trimmed).")
    if frames.shape[0] > num_frames:
        log.info("%s has %d frames: trimmed to the first %d.", flag, frames.shape[0], num_frames)
    return _fit_size(frames[:num_frames], resolution, flag, path).astype(np.float32) / 127.5 - 1.0


def read_mask(path: str, size: int, resolution: int, frames: Sequence[int]) -> np.ndarray:
    """A binary mask bool [T', H, W] (True = white = fill/animate), T' in `frames` (1 = every frame).

    size: the side of the image or video it belongs to, which it must match.
    """
    raw = _read_frames(path, "--mask")
    t, h, w, _ = raw.shape
    if (h, w) != (size, size):
        raise InputError(f"--mask={path} is {w}x{h} pixels but the input it masks is {size}x{size}: they must "
                         f"be the same size.")
    if t not in frames:
        raise InputError(f"--mask={path} has {t} frames; give one mask image"
                         + (f" or a mask video of {max(frames)} frames." if max(frames) > 1 else "."))
    grey = raw.astype(np.float32).mean(-1)  # [T', H, W]
    in_between = float(np.mean((grey > MASK_LOW) & (grey < MASK_HIGH)))
    if in_between > MAX_GREY:
        raise InputError(f"--mask={path} is not binary: {in_between:.0%} of its pixels are grey or coloured; "
                         f"paint it black (keep) and white (fill or animate).")
    binary = np.repeat((grey >= 128)[..., None], 3, -1).astype(np.uint8) * 255  # threshold, then resize
    mask = _fit_size(binary, resolution, "--mask", path, nearest=True)[..., 0] >= 128  # as labels
    if not mask.any():
        raise InputError(f"--mask={path} has no white pixels: nothing to fill or animate; paint the region "
                         f"white.")
    return mask


# Planning: which application, with checked inputs.

def plan(config: ml_collections.ConfigDict, *, image: str | None = None, video: str | None = None,
         mask: str | None = None, style_weights: str | None = None, frames: int | None = None,
         prompt_spans: int = 1) -> Request:
    """Checks the input files against each other and the model, reads them; raises InputError.

    The options come from config.sample: strength (SDEdit), style_alpha and style_start (style weights).
    """
    num_frames, res = config.data.num_frames, config.data.resolution
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
        return Request(kind, video=read_clip(video, num_frames, res), strength=float(strength), **style)
    if not conditional:
        raise InputError(f"{'--image' if image else '--video --mask'} ({kind}) needs the conditional model: use "
                         f"--config=configs/conditional.py with a workdir trained by it.")
    if kind == "i2v":
        return Request(kind, cond=masked.i2v_condition(read_image(image, res), num_frames))
    if kind == "cinemagraph":
        still = read_image(image, res)
        region = read_mask(mask, _read_frames(image, "--image").shape[1], res, frames=(1,))[0]
        return Request(kind, cond=masked.cinemagraph_condition(still, region, num_frames))
    clip = read_clip(video, num_frames, res)
    source_frames, size = _read_frames(video, "--video").shape[:2]
    hole = read_mask(mask, size, res, frames=sorted({1, num_frames, source_frames}))
    return Request(kind, cond=masked.inpaint_condition(clip, hole[:num_frames]))


def _check_style(path: str | None, conditional: bool) -> None:
    if not path:
        return
    if conditional:
        raise InputError("--style_weights apply to a text-to-video run (configs/t2v.py), not the conditional "
                         "model.")
    if not os.path.isfile(path):
        raise InputError(f"--style_weights={path} does not exist: make it with --mode=style_tune "
                         f"(configs/style_gen.py).")


def read_style_images(path: str, caption: str | None, resolution: int) -> tuple[np.ndarray, list[str]]:
    """The style tune's images [N, H, W, 3] in [-1, 1] and one caption per image.

    `path` is one image, captioned `caption`, or a folder of images (.png/.jpg, sorted by name), each
    captioned by the text file of the same name (`a.png` + `a.txt`, the usual layout of fine-tuning folders)
    or else by `caption`: the reference plus the images a feedback round kept (tools/style_feedback.py).
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
        images.append(read_image(file, resolution, "--style_image"))
        captions.append(words.strip())
    return np.stack(images), captions
