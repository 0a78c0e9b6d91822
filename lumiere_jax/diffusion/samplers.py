"""DDIM and ancestral samplers for a v-prediction model, with classifier-free guidance, as one jitted loop.

A sampler sees the model only through a `Denoiser`: (z_t [B, T, H, W, C], t [B]) -> v prediction.
Guidance, temporal MultiDiffusion and conditioning are all wrappers around a
denoiser, so every application shares this one loop.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from lumiere_jax.diffusion.schedule import CosineSchedule, broadcast_to, predict_x_eps

Denoiser = Callable[[jax.Array, jax.Array], jax.Array]
SAMPLERS = ("ddim", "ancestral")
THRESHOLDING = ("static", "dynamic", "pixel", "none")


def threshold(x: jax.Array, mode: str = "static", percentile: float = 0.995) -> jax.Array:
    """Keeps a predicted clean video [B, ...] in [-1, 1].

    "static" clips every value; under strong guidance that clips saturated channels one by one, which turns
    a colour's hue (an over-driven orange clips toward yellow). "dynamic" (Imagen): per sample, s = the
    `percentile` quantile of |x|, at least 1; x is clipped to [-s, s] and divided by s, so a sample pushed out
    of range is scaled back as a whole and its colours keep their direction. "pixel": each pixel's colour
    [..., C] divided by max(1, its largest |channel|), so an over-driven pixel keeps its hue while every pixel
    already in range, and so the rest of the clip, is left exactly as predicted. "none" leaves x as it is.
    """
    if mode == "static":
        return jnp.clip(x, -1.0, 1.0)
    if mode == "dynamic":
        flat = jnp.abs(x.reshape(x.shape[0], -1))
        s = jnp.maximum(jnp.quantile(flat, percentile, axis=1), 1.0).reshape((-1,) + (1,) * (x.ndim - 1))
        return jnp.clip(x, -s, s) / s
    if mode == "pixel":
        return x / jnp.maximum(jnp.max(jnp.abs(x), axis=-1, keepdims=True), 1.0)
    if mode == "none":
        return x
    raise ValueError(f"thresholding={mode!r} is not one of {THRESHOLDING}.")


def classifier_free_guidance(model_fn: Callable[..., jax.Array], text: jax.Array, text_mask: jax.Array,
                             null_text: jax.Array, null_mask: jax.Array, scale: float,
                             rescale: float = 0.0) -> Denoiser:
    """v = v_uncond + scale * (v_cond - v_uncond), both halves in one batched model call.

    model_fn(z, t, text, text_mask) -> v. `null_text` [1, L, D] is the encoding of the empty caption,
    the same one that replaced dropped captions in training. `rescale` > 0 pulls the guided prediction's
    per-sample standard deviation back toward the conditional one's (`rescale_guided`).
    """

    def denoise(z: jax.Array, t: jax.Array) -> jax.Array:
        if scale == 1.0:
            return model_fn(z, t, text, text_mask)
        b = z.shape[0]
        both_text = jnp.concatenate([text, jnp.broadcast_to(null_text, text.shape).astype(text.dtype)])
        both_mask = jnp.concatenate([text_mask, jnp.broadcast_to(null_mask, text_mask.shape)])
        v = model_fn(jnp.concatenate([z, z]), jnp.concatenate([t, t]), both_text, both_mask)
        v_cond, v_uncond = v[:b], v[b:]
        return rescale_guided(v_uncond + scale * (v_cond - v_uncond), v_cond, rescale)

    return denoise


def rescale_guided(guided: jax.Array, cond: jax.Array, rescale: float) -> jax.Array:
    """Guidance rescale (Lin et al. 2024, "Common diffusion noise schedules and sample steps are flawed"):
    the guided prediction [B, ...] scaled per sample to the conditional prediction's standard deviation,
    mixed in by `rescale` in [0, 1] (0: unchanged).

    At high noise a v prediction is about minus the clean clip, so a strong guidance scale drives that clip's
    contrast past [-1, 1], where clipping whitens saturated colours; rescaling keeps the guided direction (the
    prompted colour and motion) at the contrast the model predicts for the prompt. A prediction whose guidance
    changes nothing (scale 1, or equal halves) is returned unchanged.
    """
    if not rescale:
        return guided
    axes = tuple(range(1, guided.ndim))
    ratio = jnp.std(cond, axis=axes, keepdims=True) / jnp.maximum(jnp.std(guided, axis=axes, keepdims=True), 1e-8)
    return rescale * guided * ratio + (1.0 - rescale) * guided


def sample(denoise: Denoiser, z: jax.Array, rng: jax.Array, schedule: CosineSchedule, *, num_steps: int,
           sampler: str = "ddim", t_start: float | jax.Array = 1.0, thresholding: str = "static") -> jax.Array:
    """Integrates from z at time t_start down to t=0 in `num_steps` equal steps; returns the clean sample.

    z: [B, T, H, W, C]. t_start < 1 starts from a partially noised input (SDEdit). Each step's clean-video
    prediction is kept in range by `threshold(x, thresholding)`.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler={sampler!r} is not one of {SAMPLERS}.")
    if num_steps < 1:
        raise ValueError(f"num_steps={num_steps} must be at least 1.")
    b = z.shape[0]
    times = jnp.linspace(t_start, 0.0, num_steps + 1)

    def step(i: int, carry: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        z, rng = carry
        t, s = times[i], times[i + 1]
        alpha_t, sigma_t = schedule.alpha_sigma(jnp.full((b,), t))
        alpha_s, sigma_s = schedule.alpha_sigma(jnp.full((b,), s))
        # 1. Predict clean video and noise from the model's v.
        x_hat, eps_hat = predict_x_eps(z, denoise(z, jnp.full((b,), t)), alpha_t, sigma_t)
        x_hat = threshold(x_hat, thresholding)
        # 2. Move to time s.
        if sampler == "ddim":
            z_s = broadcast_to(alpha_s, z) * x_hat + broadcast_to(sigma_s, z) * eps_hat
        else:
            # Posterior q(z_s | z_t, x = x_hat) of the forward process.
            alpha_ts = alpha_t / alpha_s
            var_ts = sigma_t**2 - alpha_ts**2 * sigma_s**2
            mean = (broadcast_to(alpha_ts * sigma_s**2 / sigma_t**2, z) * z
                    + broadcast_to(alpha_s * var_ts / sigma_t**2, z) * x_hat)
            std = jnp.sqrt(jnp.maximum(var_ts * sigma_s**2 / sigma_t**2, 0.0))
            rng, key = jax.random.split(rng)
            z_s = mean + broadcast_to(std, z) * jax.random.normal(key, z.shape, z.dtype)
        # 3. The last step returns the clean prediction itself.
        return jnp.where(i == num_steps - 1, x_hat, z_s), rng

    z, _ = jax.lax.fori_loop(0, num_steps, step, (z, rng))
    return z


def noise_to(x: jax.Array, rng: jax.Array, schedule: CosineSchedule, t: float | jax.Array) -> jax.Array:
    """Forward-diffuses a clean video to time t (the start of SDEdit)."""
    alpha, sigma = schedule.alpha_sigma(jnp.full((x.shape[0],), t))
    return broadcast_to(alpha, x) * x + broadcast_to(sigma, x) * jax.random.normal(rng, x.shape, x.dtype)
