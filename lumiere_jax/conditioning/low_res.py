"""The SSR's conditioning: the low-resolution clip, upsampled and noised (noise-conditioning augmentation).

The SSR model is a STUNet with 3 extra input channels (model.cond_channels): next to the noisy high-res clip it
sees the low-res clip, upsampled to the high resolution (ssr.upsample: bilinear or bicubic). That input is noised
(noise-conditioning augmentation, Imagen Video): c = alpha * up(x_lr) + sigma * eps at a level t_aug, drawn from
U[0, ssr.aug_level_max] per clip in training and fixed at ssr.sample_aug_level when sampling, and the model is told
t_aug (cond_level), so it learns how far to trust the low-res clip. In training x_lr is the clean high-res clip
box-downsampled (`make_conditioner`); in the cascade it is the base model's output (`condition_low_res`).

With ssr.residual_scale > 0 the model does not generate the high-res clip x itself but the detail that the
upsampling misses, r = (x - up(x_lr)) / residual_scale (`to_residual`; x_lr clean, not augmented), and the sampler
adds up(x_lr) back (`from_residual`). A model that has learnt nothing then returns the upsampled clip, not noise,
and the network's whole capacity goes to the detail: on real footage the tiny SSR that generated the clip itself
fell far below bicubic upsampling in PSNR, the residual one near it (docs/long_video.md). The scale brings r
(std ~0.07 on real footage at 32 -> 64 px) toward the diffusion's usual data range, so the [-1, 1] thresholding
of the predicted r clips only the rarest edges.
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


UPSAMPLING = ("bilinear", "bicubic")


def upsample(x: jax.Array, resolution: int, method: str = "bilinear") -> jax.Array:
    """Upsampling [B, T, h, w, C] -> [B, T, R, R, C] (half-pixel centres, as jax.image.resize); bicubic is
    clipped to [-1, 1], where its overshoot at edges would leave the clips' range."""
    if method not in UPSAMPLING:
        raise ValueError(f"ssr.upsample={method!r} is not one of {UPSAMPLING}.")
    up = jax.image.resize(x, x.shape[:2] + (resolution, resolution, x.shape[-1]), method=method)
    return jnp.clip(up, -1.0, 1.0) if method == "bicubic" else up


def to_residual(x: jax.Array, upsampled: jax.Array, scale: float) -> jax.Array:
    """What a residual SSR generates for the high-res clip x: (x - up(x_lr)) / scale; scale 0: x itself."""
    return (x - upsampled) / scale if scale else x


def from_residual(generated: jax.Array, upsampled: jax.Array, scale: float) -> jax.Array:
    """The high-res clip a residual SSR's output stands for, in [-1, 1]; scale 0: the output itself."""
    return jnp.clip(upsampled + scale * generated, -1.0, 1.0) if scale else generated


def augment(x: jax.Array, level: jax.Array, rng: jax.Array, schedule: CosineSchedule) -> jax.Array:
    """Noise-conditioning augmentation: alpha(t) x + sigma(t) eps at t = level [B]; level 0 leaves x as is.

    The schedule's log-SNR is clipped, so t = 0 would still add noise of std ~5e-4: level 0 means clean.
    """
    alpha, sigma = schedule.alpha_sigma(level)
    noisy = diffuse(x, jax.random.normal(rng, x.shape, x.dtype), alpha, sigma)
    return jnp.where(broadcast_to(level > 0, x), noisy, x)


@functools.partial(jax.jit, static_argnames=("resolution", "schedule", "method"))
def condition_low_res(low_res: jax.Array, level: jax.Array, rng: jax.Array, *, resolution: int,
                      schedule: CosineSchedule, method: str = "bilinear") -> tuple[jax.Array, jax.Array]:
    """(the model's conditioning input: up(low_res) noised to level [B], the clean up(low_res)) for a low-res clip
    [B, T, h, w, C]; the second is what a residual SSR's output is added to."""
    upsampled = upsample(low_res.astype(jnp.float32), resolution, method)
    return augment(upsampled, level, rng, schedule), upsampled


def validate(config: ml_collections.ConfigDict) -> None:
    """Checks an SSR config's `ssr` keys against its model and data, naming the value to change."""
    if "ssr" not in config:
        raise ValueError("This config has no `ssr` section: SSR runs use configs/ssr.py.")
    s, high = config.ssr, config.data.resolution
    if s.low_resolution < 1 or high % s.low_resolution or s.low_resolution >= high:
        raise ValueError(f"ssr.low_resolution={s.low_resolution} must be smaller than data.resolution={high} and "
                         f"divide it (box downsampling), e.g. {high // 2}.")
    if s.upsample not in UPSAMPLING:
        raise ValueError(f"ssr.upsample={s.upsample!r} is not one of {UPSAMPLING}.")
    if not s.residual_scale >= 0.0:
        raise ValueError(f"ssr.residual_scale={s.residual_scale} must be >= 0 (0: the model generates the clip "
                         f"itself; e.g. 0.5: the detail over the upsampled clip, scaled by 1 / 0.5).")
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
    """The SSR training conditioner: clean high-res clip -> noisy upsampled low-res clip, level (and, for a residual
    SSR, the residual the model learns to generate instead of the clip).

    (x [B, T, H, W, 3] in [-1, 1], rng) -> {"cond": [B, T, H, W, 3], "cond_level": [B]} plus, with
    ssr.residual_scale > 0, "x0": `to_residual(x, ...)` [B, T, H, W, 3]; runs in the step.
    """
    validate(config)
    low, high = config.ssr.low_resolution, config.data.resolution
    max_level = float(config.ssr.aug_level_max)
    method, scale = config.ssr.upsample, float(config.ssr.residual_scale)
    schedule = schedule_from(config)

    def condition(x: jax.Array, rng: jax.Array) -> dict[str, jax.Array]:
        k_level, k_eps = jax.random.split(rng)
        level = jax.random.uniform(k_level, (x.shape[0],), jnp.float32, 0.0, max_level)  # [B]
        upsampled = upsample(downsample(x, low), high, method)  # [B, T, H, W, 3]
        out = {"cond": augment(upsampled, level, k_eps, schedule), "cond_level": level}
        return {**out, "x0": to_residual(x, upsampled, scale)} if scale else out

    return condition
