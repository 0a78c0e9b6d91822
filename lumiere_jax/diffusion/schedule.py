"""Continuous-time noise schedule and v-parameterization (Imagen Video, Kingma et al. VDM).

Notation: z_t = alpha_t * x + sigma_t * eps with alpha_t^2 + sigma_t^2 = 1 and
log-SNR lambda_t = log(alpha_t^2 / sigma_t^2), t in [0, 1] (0 = clean).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class CosineSchedule:
    """Cosine log-SNR schedule, lambda(t) = -2 log tan(a t + b) + 2 log(shift), clipped to [min, max].

    `shift` < 1 adds noise at every t, which high resolutions need (Hoogeboom et al., simple diffusion).
    """

    logsnr_min: float = -15.0
    logsnr_max: float = 15.0
    shift: float = 1.0

    def logsnr(self, t: jax.Array) -> jax.Array:
        b = math.atan(math.exp(-0.5 * self.logsnr_max))
        a = math.atan(math.exp(-0.5 * self.logsnr_min)) - b
        return -2.0 * jnp.log(jnp.tan(a * t + b)) + 2.0 * math.log(self.shift)

    def alpha_sigma(self, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        """alpha_t, sigma_t from the log-SNR: alpha^2 = sigmoid(lambda), sigma^2 = sigmoid(-lambda)."""
        logsnr = self.logsnr(t)
        return jnp.sqrt(jax.nn.sigmoid(logsnr)), jnp.sqrt(jax.nn.sigmoid(-logsnr))


# The diffusion config keys that define the noise schedule a model learned (the rest only choose training times).
SCHEDULE_KEYS = ("logsnr_min", "logsnr_max", "shift")


def schedule_from(config: Mapping[str, Any]) -> CosineSchedule:
    """The schedule of a config's `diffusion` section (a trained run's own: runs.schedule_of)."""
    diffusion = config["diffusion"]
    return CosineSchedule(logsnr_min=float(diffusion["logsnr_min"]), logsnr_max=float(diffusion["logsnr_max"]),
                          shift=float(diffusion["shift"]))


def broadcast_to(values: jax.Array, x: jax.Array) -> jax.Array:
    """[B] -> [B, 1, 1, ...] so it multiplies a [B, T, H, W, C] tensor per example."""
    return values.reshape(values.shape + (1,) * (x.ndim - values.ndim))


def diffuse(x: jax.Array, eps: jax.Array, alpha: jax.Array, sigma: jax.Array) -> jax.Array:
    """Forward process: z_t = alpha_t x + sigma_t eps."""
    return broadcast_to(alpha, x) * x + broadcast_to(sigma, x) * eps


def v_target(x: jax.Array, eps: jax.Array, alpha: jax.Array, sigma: jax.Array) -> jax.Array:
    """v = alpha_t eps - sigma_t x (Salimans & Ho): stays well scaled at every noise level."""
    return broadcast_to(alpha, x) * eps - broadcast_to(sigma, x) * x


def predict_x_eps(z: jax.Array, v: jax.Array, alpha: jax.Array, sigma: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Inverts the v-parameterization: x = alpha z - sigma v, eps = sigma z + alpha v."""
    a, s = broadcast_to(alpha, z), broadcast_to(sigma, z)
    return a * z - s * v, s * z + a * v
