"""Masked-video conditioning of the 7-channel model (Lumiere, Sec. 4): training masks and application inputs.

The conditional STUNet sees the noisy video (3 channels) plus cond = [C, M] (4 channels): C is the video
with its unknown pixels zeroed, M the binary mask, 1 where a pixel is known. One model serves three
applications, which differ only in their mask:

  kind          M (1 = known)
  i2v           1 on frame 1, 0 after it                   (image-to-video)
  inpaint       0 inside a space-time hole, 1 outside      (video inpainting)
  cinemagraph   1 on frame 1; after it, 0 inside a region  (animate only the region)
  none          0 everywhere                               (plain text-to-video; keeps that skill)

In fine-tuning C = x * M for the clean clip x, with masks drawn per example from a mixture of the kinds
(`make_conditioner`). At sampling time the inputs come from the user (`i2v_condition`,
`inpaint_condition`, `cinemagraph_condition`), and `paste_back` copies the known pixels into the output,
so the known region is exactly the input.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

KINDS = ("i2v", "inpaint", "cinemagraph", "none")
COND_CHANNELS = 4  # C (3) + M (1)


def default_config() -> ml_collections.ConfigDict:
    """`config.conditioning`: the training mask mixture; configs/conditional.py adds it to the T2V config."""
    c = ml_collections.ConfigDict()
    # Probability of each mask kind per training example (normalized; the task picks one kind when it is
    # "i2v", "inpaint" or "cinemagraph" instead of "conditional").
    c.p_i2v = 0.3
    c.p_inpaint = 0.35
    c.p_cinemagraph = 0.25
    c.p_none = 0.1
    # Side of a random hole/region box, as a fraction of the frame side.
    c.hole_min = 0.25
    c.hole_max = 0.6
    return c


def kind_probabilities(config: ml_collections.ConfigDict) -> np.ndarray:
    """[len(KINDS)] probabilities of the mask kinds for config.task, validated."""
    c = config.conditioning
    if config.task in KINDS:
        p = np.array([k == config.task for k in KINDS], np.float32)
    else:
        p = np.array([c.p_i2v, c.p_inpaint, c.p_cinemagraph, c.p_none], np.float32)
    if (p < 0).any() or p.sum() <= 0:
        raise ValueError(f"conditioning.p_* = {p.tolist()} must be non-negative with a positive sum.")
    if not 0 < c.hole_min <= c.hole_max <= 1:
        raise ValueError(f"conditioning.hole_min={c.hole_min}, hole_max={c.hole_max}: need "
                         f"0 < hole_min <= hole_max <= 1.")
    return p / p.sum()


def _box(rng: jax.Array, b: int, h: int, w: int, lo: float, hi: float) -> jax.Array:
    """Random axis-aligned boxes, bool [B, H, W]: sides uniform in [lo, hi] of the frame, anywhere inside it."""
    k_size, k_pos = jax.random.split(rng)
    size = jax.random.uniform(k_size, (b, 2), minval=lo, maxval=hi) * jnp.array([h, w])  # [B, 2] pixels
    start = jax.random.uniform(k_pos, (b, 2)) * (jnp.array([h, w]) - size)  # [B, 2]
    ys = jnp.arange(h)[None, :] + 0.5  # [1, H]
    xs = jnp.arange(w)[None, :] + 0.5  # [1, W]
    in_y = (ys >= start[:, :1]) & (ys < start[:, :1] + size[:, :1])  # [B, H]
    in_x = (xs >= start[:, 1:]) & (xs < start[:, 1:] + size[:, 1:])  # [B, W]
    return in_y[:, :, None] & in_x[:, None, :]


def sample_masks(rng: jax.Array, shape: tuple[int, int, int, int], probs: jax.Array | np.ndarray,
                 hole_min: float = 0.25, hole_max: float = 0.6) -> tuple[jax.Array, jax.Array]:
    """Draws one mask per example from the kind mixture: (M float32 [B, T, H, W, 1] in {0, 1}, kind int32 [B]).

    Inpainting holes cover a random span of frames half of the time and the whole clip otherwise.
    """
    b, t, h, w = shape
    k_kind, k_hole, k_span, k_whole, k_region = jax.random.split(rng, 5)
    kind = jax.random.choice(k_kind, len(KINDS), (b,), p=jnp.asarray(probs))  # [B]
    frame = jnp.arange(t)[None, :]  # [1, T]
    first = jnp.broadcast_to(frame == 0, (b, t))[:, :, None, None]  # [B, T, 1, 1]

    i2v = jnp.broadcast_to(first, (b, t, h, w))
    ends = jnp.sort(jax.random.randint(k_span, (b, 2), 0, t), axis=-1)  # first and last frame of the hole
    whole = jax.random.bernoulli(k_whole, 0.5, (b,))[:, None]
    in_span = whole | ((frame >= ends[:, :1]) & (frame <= ends[:, 1:]))  # [B, T]
    inpaint = ~(in_span[:, :, None, None] & _box(k_hole, b, h, w, hole_min, hole_max)[:, None])
    cinemagraph = first | ~_box(k_region, b, h, w, hole_min, hole_max)[:, None]
    none = jnp.zeros((b, t, h, w), bool)
    masks = jnp.stack([i2v, inpaint, cinemagraph, none])  # [K, B, T, H, W], in KINDS order
    m = jnp.take_along_axis(masks, kind[None, :, None, None, None], axis=0)[0]  # [B, T, H, W]
    return m[..., None].astype(jnp.float32), kind


def condition_from(x: jax.Array, m: jax.Array) -> jax.Array:
    """cond [..., T, H, W, 4] = [x * M, M] for a clip x [..., 3] in [-1, 1] and mask M [..., 1]."""
    return jnp.concatenate([x * m, m], axis=-1)


def make_conditioner(config: ml_collections.ConfigDict) -> Callable[[jax.Array, jax.Array], dict[str, jax.Array]]:
    """The train step's conditioner: (clean clip x [B, T, H, W, 3], rng) -> {"cond": [B, T, H, W, 4]}."""
    if config.model.cond_channels != COND_CHANNELS:
        raise ValueError(f"task={config.task!r} feeds a masked video and mask ({COND_CHANNELS} channels), but "
                         f"model.cond_channels={config.model.cond_channels}: use configs/conditional.py.")
    if "conditioning" not in config:
        raise ValueError(f"task={config.task!r} needs config.conditioning (the mask mixture): use "
                         f"configs/conditional.py.")
    probs = kind_probabilities(config)
    lo, hi = config.conditioning.hole_min, config.conditioning.hole_max

    def condition(x: jax.Array, rng: jax.Array) -> dict[str, jax.Array]:
        m, _ = sample_masks(rng, x.shape[:4], probs, lo, hi)
        return {"cond": condition_from(x, m.astype(x.dtype))}

    return condition


# Application inputs (host side, numpy): clips in [-1, 1], masks bool, 1 = known / 1 = fill as named.

def i2v_condition(image: np.ndarray, num_frames: int) -> np.ndarray:
    """Image-to-video: image [H, W, 3] known on frame 1 only -> cond [T, H, W, 4]."""
    m = np.zeros((num_frames,) + image.shape[:2] + (1,), np.float32)
    m[0] = 1.0
    video = np.broadcast_to(image, (num_frames,) + image.shape).astype(np.float32)
    return np.concatenate([video * m, m], axis=-1)


def inpaint_condition(video: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """Inpainting: video [T, H, W, 3] and hole [T, H, W] or [H, W] (True = fill) -> cond [T, H, W, 4]."""
    hole = np.broadcast_to(hole, video.shape[:3])
    m = (~hole.astype(bool)).astype(np.float32)[..., None]
    return np.concatenate([video.astype(np.float32) * m, m], axis=-1)


def cinemagraph_condition(image: np.ndarray, region: np.ndarray, num_frames: int) -> np.ndarray:
    """Cinemagraph: still image [H, W, 3], region [H, W] (True = animate) -> cond [T, H, W, 4].

    Frame 1 is the whole image; later frames know the image outside the region.
    """
    m = np.broadcast_to(~region.astype(bool), (num_frames,) + region.shape).copy()
    m[0] = True
    m = m.astype(np.float32)[..., None]
    video = np.broadcast_to(image, (num_frames,) + image.shape).astype(np.float32)
    return np.concatenate([video * m, m], axis=-1)


def paste_back(clip: np.ndarray, cond: np.ndarray) -> np.ndarray:
    """Replaces the known pixels (M = 1) of a generated clip [..., T, H, W, 3] by the input's."""
    c, m = cond[..., :3], cond[..., 3:]
    return np.where(m > 0.5, c, clip).astype(np.float32)
