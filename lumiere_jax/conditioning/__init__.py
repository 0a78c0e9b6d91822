"""What each task (config.task) adds to the text-to-video model's input: the conditioning it sees.

A conditioner maps the clean training clip to the extra model inputs, on device inside the jitted train step:
`(x [B, T, H, W, C], rng) -> {"cond": [B, T, H, W, model.cond_channels], "cond_level": [B]}` (either key
optional), plus "x0" [B, T, H, W, C] where the model learns to generate something other than x itself (a residual
SSR: the detail over its upsampled input). Text-to-video and text-to-image have none; the masked-video tasks use
`masked` (the 7-channel model of image-to-video, inpainting and cinemagraphs); super-resolution uses `low_res`. The samplers build the same inputs
from the user's files (`masked.i2v_condition`, ...) or the base model's clip (`low_res.condition_low_res`).
"""

from __future__ import annotations

from typing import Callable

import jax
import ml_collections

from lumiere_jax import config_lib
from lumiere_jax.conditioning import low_res, masked

Conditioner = Callable[[jax.Array, jax.Array], dict[str, jax.Array]]


def conditioner(config: ml_collections.ConfigDict) -> Conditioner | None:
    """The task's conditioner, or None for an unconditional text-to-video/image model."""
    task = config.task
    if task in config_lib.UNCONDITIONAL:
        return None
    if task in config_lib.SSR:
        return low_res.make_conditioner(config)
    if task in config_lib.MASKED:
        return masked.make_conditioner(config)
    raise ValueError(f"task={task!r} is not one of {config_lib.TASKS}.")
