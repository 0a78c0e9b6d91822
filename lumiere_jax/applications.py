"""The applications of SPEC section 3 behind `--mode=sample` flags, and the style fine-tune behind `--mode=style_tune`.

  --image                  image-to-video (conditional model): the image is frame 1
  --video --mask           inpainting (conditional model): white mask pixels are filled
  --image --mask           cinemagraph (conditional model): only the white region moves
  --video [--strength]     SDEdit video-to-video editing (plain T2V model)
  --style_weights/_alpha   stylized generation: spatial weights interpolated towards a style fine-tune,
  [--style_start]          used for the steps at diffusion times t <= style_start (the base weights run the rest)

`plan` reads and checks every input (files, sizes, frame counts, binary masks, which model the run holds)
before anything is loaded or compiled; errors are `InputError`s, one line that names the value and the fix.
Known pixels are pasted back into the output (`conditioning.paste_back`), so they equal the input exactly.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import re
import time
from typing import Any, Sequence

import imageio.v3 as iio
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx
from scipy import ndimage

from lumiere_jax import conditioning, tasks, video_io
from lumiere_jax.diffusion.schedule import CosineSchedule
from lumiere_jax.models.stunet import is_temporal_path

log = logging.getLogger("lumiere_jax")

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".gif")
VIDEO_EXTENSIONS = (".mp4", ".gif", ".png")
# Mask pixels darker than LOW are 0 (keep), brighter than HIGH are 1 (fill/animate); a mask with more than
# MAX_GREY of its pixels in between is refused as not binary (video compression blurs a few edge pixels).
MASK_LOW, MASK_HIGH, MAX_GREY = 64, 191, 0.05


class InputError(ValueError):
    """A bad application input (file, size, length, mask, flag combination); reported as one line."""


# The diffusion time below which style weights apply by default: the base weights lay out the clip (motion,
# colour, shape) over the noisier half of the steps. On the tiny motion model this keeps the prompted motion
# with the style of a tune of all spatial weights, which loses the motion when it runs at every step
# (docs/applications.md).
STYLE_START = 0.5
# The default style weight a: the style grows convexly in a on the tiny motion model (stripe amplitude 0.57 at
# a = 0.7, 0.94 at 0.8, 3.50 at 1, 0.33 without style; docs/applications.md), so anything less hides most of it.
STYLE_ALPHA = 1.0
# a > 1 extrapolates past the tune, W = W_orig + a * (W_style - W_orig), as LoRA scales above 1 do: on the tiny
# motion model the stripes grow about linearly past a = 1 (8.2 at 1.2, 14.4 at 1.4; the style image: 17) with
# the prompted colour and motion kept up to 1.4; beyond it the motion goes (docs/applications.md).
STYLE_ALPHA_MAX = 2.0


@dataclasses.dataclass
class Request:
    """A checked application request: what to run and its inputs, in model space."""

    kind: str  # "t2v" (plain sampling), "i2v", "inpaint", "cinemagraph" or "sdedit"
    cond: np.ndarray | None = None  # [T, H, W, 4]: masked video C and mask M (1 = known)
    video: np.ndarray | None = None  # [T, H, W, 3] in [-1, 1]: the SDEdit source
    strength: float = 0.0  # SDEdit start time t0 in [0, 1]
    style_weights: str | None = None
    style_alpha: float = STYLE_ALPHA
    style_start: float = STYLE_START  # the style weights run the steps at diffusion times t <= style_start


def is_conditional(config: ml_collections.ConfigDict) -> bool:
    """Whether the config is the 7-channel masked-video model of configs/conditional.py."""
    return config.task in tasks.MASKED and config.model.cond_channels == conditioning.COND_CHANNELS


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
    from PIL import Image
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
         mask: str | None = None, strength: float | None = None, style_weights: str | None = None,
         style_alpha: float | None = None, style_start: float | None = None, frames: int | None = None,
         prompt_spans: int = 1) -> Request:
    """Checks the flags against each other and the model, reads the inputs; raises InputError."""
    num_frames, res = config.data.num_frames, config.data.resolution
    conditional = is_conditional(config)
    style_alpha, style_start = _check_style(style_weights, style_alpha, style_start, conditional)
    style = dict(style_weights=style_weights, style_alpha=style_alpha, style_start=style_start)
    if image and video:
        raise InputError("Give --image (image-to-video, cinemagraph) or --video (inpainting, SDEdit), not both.")
    if mask and not (image or video):
        raise InputError("--mask needs --video (inpainting) or --image (cinemagraph).")
    if strength is not None and not (video and not mask):
        raise InputError("--strength is for SDEdit: --video without --mask, on a text-to-video run.")
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
        if strength is None:
            strength = config.sdedit.strength if "sdedit" in config else 0.6
        if not 0.0 <= strength <= 1.0:
            raise InputError(f"--strength={strength} must be in [0, 1]: 0 keeps the video, 1 ignores it.")
        return Request(kind, video=read_clip(video, num_frames, res), strength=float(strength), **style)
    if not conditional:
        raise InputError(f"{'--image' if image else '--video --mask'} ({kind}) needs the conditional model: use "
                         f"--config=configs/conditional.py with a workdir trained by it.")
    if kind == "i2v":
        return Request(kind, cond=conditioning.i2v_condition(read_image(image, res), num_frames))
    if kind == "cinemagraph":
        still = read_image(image, res)
        region = read_mask(mask, _read_frames(image, "--image").shape[1], res, frames=(1,))[0]
        return Request(kind, cond=conditioning.cinemagraph_condition(still, region, num_frames))
    clip = read_clip(video, num_frames, res)
    source_frames, size = _read_frames(video, "--video").shape[:2]
    hole = read_mask(mask, size, res, frames=sorted({1, num_frames, source_frames}))
    return Request(kind, cond=conditioning.inpaint_condition(clip, hole[:num_frames]))


def _check_style(path: str | None, alpha: float | None, start: float | None,
                 conditional: bool) -> tuple[float, float]:
    for flag, value in (("--style_alpha", alpha), ("--style_start", start)):
        if value is not None and not path:
            raise InputError(f"{flag} needs --style_weights (from --mode=style_tune).")
    alpha = STYLE_ALPHA if alpha is None else alpha
    start = STYLE_START if start is None else start
    if not path:
        return alpha, start
    if not 0.0 <= alpha <= STYLE_ALPHA_MAX:
        raise InputError(f"--style_alpha={alpha} must be in [0, {STYLE_ALPHA_MAX}]: 0 is the base model, 1 the "
                         f"tuned style weights, above 1 extrapolates past them (the paper uses 0.5 to 1).")
    if not 0.0 < start <= 1.0:
        raise InputError(f"--style_start={start} must be in (0, 1]: the diffusion time from which the style "
                         f"weights apply (1: every step; default {STYLE_START}: the base weights lay out the "
                         f"clip over the noisier steps).")
    if conditional:
        raise InputError("--style_weights apply to a text-to-video run (configs/t2v.py), not the conditional "
                         "model.")
    if not os.path.isfile(path):
        raise InputError(f"--style_weights={path} does not exist: make it with --mode=style_tune "
                         f"(configs/style_gen.py).")
    return alpha, start


# Sampling.

def run(request: Request, t2v: Any, prompt: str, **kwargs: Any) -> np.ndarray:
    """One clip [T, H, W, 3] in [-1, 1] for a non-plain request; kwargs: seed, steps, guidance, sampler."""
    if request.kind == "sdedit":
        return sdedit(t2v, [prompt], request.video[None], request.strength, **kwargs)[0]
    raw = conditional_sample(t2v, [prompt], request.cond[None], **kwargs)[0]
    return conditioning.paste_back(raw, request.cond)


def conditional_sample(t2v: Any, prompts: Sequence[str], cond: np.ndarray, *, seed: int = 0, steps: int = 50,
                       guidance: float = 3.0, sampler: str = "ddim") -> np.ndarray:
    """Clips [N, T, H, W, 3] from the conditional model for cond [N, T, H, W, 4], before paste-back."""
    from lumiere_jax import sampling
    text, mask = t2v.encoder.encode(list(prompts))
    return np.asarray(sampling.generate(
        t2v.graphdef, t2v.params, jnp.asarray(text), jnp.asarray(mask), t2v.null_text, t2v.null_mask,
        jax.random.key(seed), shape=t2v.shape, schedule=t2v.schedule, steps=steps, guidance=float(guidance),
        sampler=sampler, cond=jnp.asarray(cond, jnp.float32), thresholding=t2v.thresholding))


def sdedit(t2v: Any, prompts: Sequence[str], videos: np.ndarray, strength: float, *, seed: int = 0,
           steps: int = 50, guidance: float = 3.0, sampler: str = "ddim") -> np.ndarray:
    """SDEdit: videos [N, T, H, W, 3] noised to t0 = strength and denoised with the prompts.

    The sampler takes the fraction `strength` of `steps` (at least one), as the full run would over [t0, 0].
    """
    from lumiere_jax import sampling
    text, mask = t2v.encoder.encode(list(prompts))
    return np.asarray(sampling.generate(
        t2v.graphdef, t2v.params, jnp.asarray(text), jnp.asarray(mask), t2v.null_text, t2v.null_mask,
        jax.random.key(seed), shape=t2v.shape, schedule=t2v.schedule, steps=max(1, round(steps * strength)),
        guidance=float(guidance), sampler=sampler, x_init=jnp.asarray(videos, jnp.float32),
        t_start=float(strength), thresholding=t2v.thresholding, late_params=t2v.late_params,
        late_from=t2v.late_from))


# Stylized generation: spatial weights only.

def _flat(params: nnx.State) -> tuple[list[tuple[str, Any]], Any]:
    """("a/b/c", leaf) pairs of a params State in tree order, and the pure dict's treedef."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(params.to_pure_dict())
    return [("/".join(str(getattr(p, "key", p)) for p in path), v) for path, v in flat], treedef


def spatial_weights(params: nnx.State) -> dict[str, np.ndarray]:
    """The spatial (T2I) layers' weights by name: what a style fine-tune changes and saves."""
    return {k: np.asarray(v) for k, v in _flat(params)[0] if not is_temporal_path(k.split("/"))}


def interpolate_spatial(base: nnx.State, style: dict[str, np.ndarray], alpha: float) -> nnx.State:
    """W = alpha * W_style + (1 - alpha) * W_base for every spatial weight; temporal weights stay as they are.

    alpha in [0, 1] interpolates; alpha > 1 extrapolates along the same line, W_base + alpha * (W_style - W_base).

    Fails, naming the weight, if the style file lacks a spatial weight, has a temporal or unknown one, or a
    shape differs (a style tuned from another model size).
    """
    flat, treedef = _flat(base)
    names = {k for k, _ in flat}
    spatial = {k for k in names if not is_temporal_path(k.split("/"))}
    missing = sorted(spatial - set(style))
    foreign = sorted(set(style) - spatial)
    misfit = [f"{k}: {style[k].shape} vs {v.shape}" for k, v in flat if k in spatial and k in style
              and tuple(style[k].shape) != tuple(v.shape)]
    if missing or foreign or misfit:
        raise InputError(f"--style_weights do not fit this model: missing {missing[:3]}, not spatial weights of "
                         f"this model {foreign[:3]}, shapes {misfit[:3]}; tune the style from this run "
                         f"(--mode=style_tune).")
    values = [v if k not in spatial else (alpha * jnp.asarray(style[k], v.dtype) + (1.0 - alpha) * v)
              for k, v in flat]
    out = jax.tree.map(lambda x: x, base)
    nnx.replace_by_pure_dict(out, jax.tree_util.tree_unflatten(treedef, values))
    return out


def save_style_weights(path: str, weights: dict[str, np.ndarray], metadata: dict[str, str]) -> None:
    from safetensors.numpy import save_file
    save_file({k: np.ascontiguousarray(v) for k, v in weights.items()}, path, metadata=metadata)


def load_style_weights(path: str) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file
    try:
        return load_file(path)
    except Exception as e:  # safetensors raises its own error types for damaged files
        raise InputError(f"--style_weights={path} cannot be read ({type(e).__name__}): is it a .safetensors file "
                         f"written by --mode=style_tune?") from None


def apply_style(t2v: Any, request: Request) -> None:
    """Sets the sampler's spatial weights to the request's interpolated style weights (no-op without them).

    At style_start = 1 they replace the weights at every step; below, the base weights run the steps at
    times t > style_start and the styled ones the rest (TextToVideo.late_params).
    """
    if not request.style_weights:
        return
    styled = interpolate_spatial(t2v.params, load_style_weights(request.style_weights), request.style_alpha)
    if request.style_start >= 1.0:
        t2v.params, t2v.late_params = styled, None
    else:
        t2v.late_params, t2v.late_from = styled, float(request.style_start)
    log.info("Style weights %s at alpha=%.2f (spatial layers only) from t=%.2f.", request.style_weights,
             request.style_alpha, request.style_start)


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


def check_style_tune(config: ml_collections.ConfigDict, image: str | None, caption: str | None,
                     out: str | None) -> tuple[np.ndarray, list[str]]:
    """Checks --mode=style_tune's inputs; returns the style images [N, H, W, 3] in [-1, 1] and their captions."""
    if "style" not in config:
        raise InputError("--mode=style_tune reads config.style: use --config=configs/style_gen.py.")
    if config.model.cond_channels or not config.model.temporal:
        raise InputError("--mode=style_tune tunes a text-to-video run (configs/style_gen.py over a "
                         "configs/t2v.py run).")
    if not image:
        raise InputError("--mode=style_tune needs --style_image=style.png (the style reference, or a folder of "
                         "captioned images).")
    if not os.path.isdir(image) and (not caption or not caption.replace("|", "").strip()):
        raise InputError('--mode=style_tune needs --prompt naming the style, e.g. "a red circle in outline style".')
    if not out or not out.endswith(".safetensors"):
        raise InputError(f"--style_weights={out!r}: give the output file, ending in .safetensors.")
    if not 0.0 <= config.style.prior_fraction < 1.0:
        raise InputError(f"--config.style.prior_fraction={config.style.prior_fraction} must be in [0, 1): the share "
                         f"of each batch that is the base model's own images (0 turns prior preservation off).")
    frames = config.style.frames
    if frames < 1:
        raise InputError(f"--config.style.frames={frames} must be at least 1 (1: tune the T2I view on images; "
                         f"k > 1: the whole model on still clips of k frames).")
    if frames > 1:
        from lumiere_jax.models.stunet import check_frames
        from lumiere_jax.state import model_config
        try:
            check_frames(frames, model_config(style_config(config)))
        except ValueError as e:
            raise InputError(f"--config.style.frames={frames}: {e}") from None
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        raise InputError(f"--style_weights={out}: folder {folder} does not exist or is not writable.")
    return read_style_images(image, caption, config.data.resolution)


def _style_layers(pattern: str, spatial: Sequence[str]) -> re.Pattern | None:
    """config.style.layers compiled, refused if it is not a regex or matches none of the `spatial` names."""
    if not pattern:
        return None
    try:
        layers = re.compile(pattern)
    except re.error as e:
        raise InputError(f"--config.style.layers={pattern!r} is not a regular expression ({e}).") from None
    if not any(layers.search(k) for k in spatial):
        tops = sorted({k.split("/")[0] + ("/" + k.split("/")[1] if k.count("/") > 1 else "") for k in spatial})
        raise InputError(f"--config.style.layers={pattern!r} matches none of the spatial weights, so nothing would "
                         f"train; names start with: {', '.join(tops[:12])} ...")
    return layers


def style_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The model a style tune trains, with the style optimizer.

    style.frames == 1: the T2I view of the T2V model (the same spatial layers, temporal path off, one frame),
    as Lumiere tunes its T2I weights. style.frames > 1: the whole STUNet on clips of that many frames, only
    the spatial layers trainable, so the style is learnt with the temporal layers it will be sampled with.
    """
    c = ml_collections.ConfigDict(config.to_dict())
    c.init_from = ""
    if config.style.frames > 1:
        c.task, c.trainable = "t2v", "spatial"
        c.data.num_frames = config.style.frames
    else:
        c.task, c.trainable = "t2i", "all"
        c.model.temporal = False
        c.data.num_frames = 1
    c.optim.learning_rate = config.style.learning_rate
    c.optim.warmup_steps = config.style.warmup_steps
    c.optim.decay_steps = 0
    c.optim.ema_decay = 0.98  # a short run: average over its last ~50 steps
    return c


def style_tune(config: ml_collections.ConfigDict, t2v_params: nnx.State, encoder: Any, image: np.ndarray,
               caption: str | Sequence[str], out: str, *, source: str = "",
               schedule: CosineSchedule | None = None) -> dict[str, np.ndarray]:
    """Fine-tunes the spatial layers on style images (StyleDrop-like); saves and returns their weights.

    The T2V model's spatial layers are exactly a T2I U-Net (inflation), so they train as one on the image,
    with random shifts and flips, captioned `caption`: one caption, or several separated by "|" (phrasings
    of the same image, e.g. with the motion words that video prompts will carry; each view draws one).
    `image` may also be several images [N, H, W, 3] with a caption per image (StyleDrop's second round: the
    reference plus generated images in its style with other content, tools/style_feedback.py); each view
    draws an image uniformly.
    With config.style.frames == 1 temporal layers are not part of the program at all; with frames > 1 the
    image is a still clip of that many frames through the whole STUNet, temporal layers frozen
    (`style_config`), and the prior images are the T2V model's own clips.

    Prior preservation (DreamBooth's remedy for one-image fine-tunes): with `config.style.prior_fraction`
    > 0, that share of every batch is images the base model itself drew for `config.style.prior_prompts`
    (prompts without the style words), so the tune learns what the style words add instead of redrawing the
    reference image's content for every prompt.

    `schedule` is the base run's noise schedule (`TextToVideo.schedule`); None takes the one `config` names.
    """
    from lumiere_jax import sampling, train
    from lumiere_jax.state import abstract_graphdef_and_state, init_state, make_optimizer, schedule_from

    s = config.style
    t2i = style_config(config)
    frames = t2i.data.num_frames
    graphdef, abstract = abstract_graphdef_and_state(t2i)
    # Host copies: the train step donates its state, which must not take the caller's arrays with it. The
    # T2I view (frames == 1) has only the spatial weights and takes just those.
    base = {k: np.asarray(v) for k, v in _flat(t2v_params)[0]}
    layers = _style_layers(s.layers, [k for k in base if not is_temporal_path(k.split("/"))])
    flat, treedef = _flat(abstract.params)
    params = jax.tree.map(lambda x: x, abstract.params)
    nnx.replace_by_pure_dict(params, jax.tree_util.tree_unflatten(treedef, [jnp.asarray(base[k]) for k, _ in flat]))
    schedule = schedule or schedule_from(t2i)
    null_text, null_mask = (jnp.asarray(a) for a in encoder.encode([""]))
    images = image[None] if image.ndim == 3 else image  # [N, H, W, 3]
    per_image = [caption] * len(images) if isinstance(caption, str) else list(caption)
    if len(per_image) != len(images):
        raise InputError(f"{len(images)} style images with {len(per_image)} captions: give one caption per image.")
    num_prior = int(round(s.batch_size * s.prior_fraction)) if s.prior_prompts else 0
    if num_prior >= s.batch_size:
        raise InputError(f"config.style.prior_fraction={s.prior_fraction} leaves no room for the style image in a "
                         f"batch of {s.batch_size}: use a fraction below 1.")
    if num_prior:
        prior_text, prior_mask = encoder.encode(list(s.prior_prompts))
        t0 = time.time()
        prior = np.asarray(sampling.generate(
            graphdef, params, jnp.asarray(prior_text), jnp.asarray(prior_mask), null_text, null_mask,
            jax.random.key(config.seed), shape=(frames,) + images.shape[1:], schedule=schedule, steps=s.prior_steps,
            guidance=config.sample.guidance, sampler="ddim",
            thresholding=config.sample.thresholding))  # [P, frames, H, W, 3]
        log.info("Prior preservation: %d base-model images for %d prompts in %.1fs; %d of %d images per step.",
                 len(prior), len(s.prior_prompts), time.time() - t0, num_prior, s.batch_size)
    tx = make_optimizer(t2i)
    if s.layers:  # only the spatial weights whose name matches train (e.g. the full-resolution levels)
        tx = optax.multi_transform({"train": tx, "freeze": optax.set_to_zero()}, functools.partial(
            jax.tree_util.tree_map_with_path,
            lambda path, _: "train" if layers.search("/".join(str(getattr(k, "key", k)) for k in path)) else "freeze"))
    state = init_state(params, tx)
    step_fn = train.jit_train_step(graphdef, tx, schedule, t2i, donate_argnums=(0,))
    phrasings = [[c.strip() for c in words.split("|") if c.strip()] for words in per_image]
    if not all(phrasings):
        raise InputError(f"Style captions {per_image}: every image needs a caption naming the style.")
    first = np.cumsum([0] + [len(p) for p in phrasings])  # image i's phrasings: rows first[i]:first[i + 1]
    style_text, style_mask = encoder.encode([c for p in phrasings for c in p])
    rng = np.random.default_rng(config.seed)
    res = images.shape[1]
    stills = np.broadcast_to(images[:, None], (len(images), frames) + images.shape[1:])  # still clips
    shift = int(round(s.max_shift * res))
    t0 = time.time()
    for step in range(1, s.steps + 1):
        picks = rng.integers(len(s.prior_prompts), size=num_prior) if num_prior else np.zeros(0, int)
        shown = rng.integers(len(images), size=s.batch_size - num_prior)
        phrasing = first[shown] + rng.integers(first[shown + 1] - first[shown])
        sources = [stills[i] for i in shown] + [prior[i] for i in picks]  # [frames, H, W, 3] each
        views = []
        for src in sources:  # one shift and flip per clip
            view = np.roll(src, tuple(rng.integers(-shift, shift + 1, 2)), axis=(1, 2))
            views.append(view[:, :, ::-1] if rng.random() < 0.5 else view)
        text = np.concatenate([style_text[phrasing]] + ([prior_text[picks]] if num_prior else []))
        mask = np.concatenate([style_mask[phrasing]] + ([prior_mask[picks]] if num_prior else []))
        batch = {"video": jnp.asarray(np.stack(views)), "text": jnp.asarray(text),
                 "text_mask": jnp.asarray(mask)}  # video [B, frames, H, W, 3]
        state, metrics = step_fn(state, batch, null_text, null_mask)
        if step % s.log_every == 0 or step == s.steps:
            rate = step / max(time.time() - t0, 1e-9)
            log.info("style step %d/%d  loss %.4f  %.2f steps/s  ETA %ds", step, s.steps, float(metrics["loss"]),
                     rate, int((s.steps - step) / rate))
    weights = spatial_weights(state.ema)
    save_style_weights(out, weights, {"caption": " || ".join(per_image), "images": str(len(images)),
                                      "steps": str(s.steps), "source": source,
                                      "frames": str(frames),
                                      "prior_fraction": str(s.prior_fraction if num_prior else 0.0),
                                      "format": "lumiere_jax spatial weights"})
    return weights


# The measurable style of the shapes world.

def select_feedback(candidates: list[dict], keep: int, min_style: float) -> list[int]:
    """A feedback round's kept samples (tools/style_feedback.py), by index: the checker found the prompted colour
    and shape, style >= min_style, one per colour and shape, round-robin over the shapes with the most styled
    first, at most `keep`.

    Each candidate is {"color", "shape", "found_color", "found_shape", "style"}.
    """
    good = [i for i, c in enumerate(candidates) if c["found_color"] == c["color"]
            and c["found_shape"] == c["shape"] and c["style"] >= min_style]
    queues: dict[str, list[int]] = {}
    for i in sorted(good, key=lambda i: -candidates[i]["style"]):
        queues.setdefault(candidates[i]["shape"], []).append(i)
    kept, seen = [], set()
    while len(kept) < keep and any(queues.values()):
        for shape in sorted(queues, key=lambda s: -candidates[queues[s][0]]["style"] if queues[s] else 0.0):
            while queues[shape]:
                i = queues[shape].pop(0)
                content = (candidates[i]["color"], candidates[i]["shape"])
                if content not in seen:
                    seen.add(content)
                    kept.append(i)
                    break
            if len(kept) == keep:
                break
    return kept


def fill_fraction(clip: np.ndarray, threshold: float = 60.0) -> float:
    """Mean over frames of (object pixels) / (object pixels with holes filled), for a uint8 clip [T, H, W, 3].

    Filled shapes (the training data) score ~1; shapes drawn as outlines (the style) score well below.
    Frames without an object are skipped; NaN when no frame has one.
    """
    clip = np.asarray(clip, np.float32)
    background = np.median(clip.reshape(-1, 3), axis=0)
    scores = []
    for frame in clip:
        fg = np.linalg.norm(frame - background, axis=-1) > threshold  # [H, W]
        filled = ndimage.binary_fill_holes(fg)
        if filled.sum() >= 4:
            scores.append(fg.sum() / filled.sum())
    return float(np.mean(scores)) if scores else float("nan")


def stripe_amplitude(clip: np.ndarray) -> float:
    """Amplitude (grey levels) of the striped-background style's frequency in a uint8 clip [T, H, W, 3].

    Each frame's row profile (median brightness over each row, so an object does not count) is projected on
    the stripes' frequency, a phase-free measure: shifted stripes score the same. The style image scores
    ~17, the plain background of the training data ~0.
    """
    from lumiere_jax.data import shapes

    clip = np.asarray(clip, np.float32)
    rows = np.median(clip.mean(-1), axis=2)  # [T, H]
    height = rows.shape[1]
    wave = np.exp(-2j * np.pi * shapes.STRIPES_PER_FRAME * np.arange(height) / height)
    return float(np.mean(2 * np.abs((rows - rows.mean(1, keepdims=True)) @ wave) / height))
