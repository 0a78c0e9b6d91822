"""The SSR's conditioning: the low-resolution clip, bilinearly upsampled and noised (noise-conditioning augmentation).

The SSR model is a STUNet with 3 extra input channels (model.cond_channels): next to the noisy high-res clip it
sees the low-res clip, bilinearly upsampled to the high resolution. That input is noised (noise-conditioning
augmentation, Imagen Video): c = alpha * up(x_lr) + sigma * eps at a level t_aug, drawn from U[0,
ssr.aug_level_max] per clip in training and fixed at ssr.sample_aug_level when sampling, and the model is told
t_aug (cond_level), so it learns how far to trust the low-res clip. In training x_lr is the clean high-res clip
box-downsampled (`make_conditioner`); in the cascade it is the base model's output (`condition_low_res`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections

from lumiere_jax import config_lib
from lumiere_jax.diffusion.schedule import CosineSchedule, broadcast_to, diffuse, schedule_from
from lumiere_jax.models.stunet import check_frames


def downsample(x: jax.Array, resolution: int) -> jax.Array:
    """Box (area) downsampling [B, T, H, W, C] -> [B, T, r, r, C]; H and W must be multiples of r."""
    b, t, h, w, c = x.shape
    if h % resolution or w % resolution:
        raise ValueError(f"A {h}x{w} clip cannot be box-downsampled to {resolution}x{resolution}: the high "
                         f"resolution must be a multiple of ssr.low_resolution.")
    fh, fw = h // resolution, w // resolution
    return x.reshape(b, t, resolution, fh, resolution, fw, c).mean(axis=(3, 5))


def upsample(x: jax.Array, resolution: int) -> jax.Array:
    """Bilinear upsampling [B, T, h, w, C] -> [B, T, R, R, C] (half-pixel centres, as jax.image.resize)."""
    return jax.image.resize(x, x.shape[:2] + (resolution, resolution, x.shape[-1]), method="bilinear")


def augment(x: jax.Array, level: jax.Array, rng: jax.Array, schedule: CosineSchedule) -> jax.Array:
    """Noise-conditioning augmentation: alpha(t) x + sigma(t) eps at t = level [B]; level 0 leaves x as is.

    The schedule's log-SNR is clipped, so t = 0 would still add noise of std ~5e-4: level 0 means clean.
    """
    alpha, sigma = schedule.alpha_sigma(level)
    noisy = diffuse(x, jax.random.normal(rng, x.shape, x.dtype), alpha, sigma)
    return jnp.where(broadcast_to(level > 0, x), noisy, x)


@functools.partial(jax.jit, static_argnames=("resolution", "schedule"))
def condition_low_res(low_res: jax.Array, level: jax.Array, rng: jax.Array, *, resolution: int,
                      schedule: CosineSchedule) -> jax.Array:
    """The model's conditioning input for a low-res clip [B, T, h, w, C]: upsampled, noised to level [B]."""
    return augment(upsample(low_res.astype(jnp.float32), resolution), level, rng, schedule)


def validate(config: ml_collections.ConfigDict) -> None:
    """Checks an SSR config's `ssr` keys against its model and data, naming the value to change."""
    if "ssr" not in config:
        raise ValueError("This config has no `ssr` section: SSR runs use configs/ssr.py.")
    s, high = config.ssr, config.data.resolution
    if s.low_resolution < 1 or high % s.low_resolution or s.low_resolution >= high:
        raise ValueError(f"ssr.low_resolution={s.low_resolution} must be smaller than data.resolution={high} and "
                         f"divide it (box downsampling), e.g. {high // 2}.")
    for key in ("aug_level_max", "sample_aug_level"):
        if not 0.0 <= s[key] <= 1.0:
            raise ValueError(f"ssr.{key}={s[key]} must be in [0, 1] (a diffusion time; 0 = clean).")
    if config.model.cond_channels != 3 or not config.model.cond_noise_level:
        raise ValueError(f"An SSR model needs model.cond_channels=3 (got {config.model.cond_channels}) and "
                         f"model.cond_noise_level=True (got {config.model.cond_noise_level}).")
    check_frames(s.window, config_lib.model_config(config))
    if not 0 <= s.overlap < s.window:
        raise ValueError(f"ssr.overlap={s.overlap} must be in [0, ssr.window={s.window}); the paper uses 2.")
    if s.window_batch < 0:
        raise ValueError(f"ssr.window_batch={s.window_batch} must be >= 0 (0: all windows in one call).")


def make_conditioner(config: ml_collections.ConfigDict):
    """The SSR training conditioner: clean high-res clip -> noisy upsampled low-res clip, level.

    (x [B, T, H, W, 3] in [-1, 1], rng) -> {"cond": [B, T, H, W, 3], "cond_level": [B]}; runs in the step.
    """
    validate(config)
    low, high = config.ssr.low_resolution, config.data.resolution
    max_level = float(config.ssr.aug_level_max)
    schedule = schedule_from(config)

    def condition(x: jax.Array, rng: jax.Array) -> dict[str, jax.Array]:
        k_level, k_eps = jax.random.split(rng)
        level = jax.random.uniform(k_level, (x.shape[0],), jnp.float32, 0.0, max_level)  # [B]
        cond = augment(upsample(downsample(x, low), high), level, k_eps, schedule)  # [B, T, H, W, 3]
        return {"cond": cond, "cond_level": level}

    return condition
