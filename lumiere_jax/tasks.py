"""What each task (config.task) adds to the text-to-video training step: the conditioning the model sees.

A conditioner maps the clean training clip to the extra model inputs, on device inside the jitted step:
`(x [B, T, H, W, C], rng) -> {"cond": [B, T, H, W, model.cond_channels], "cond_level": [B]}` (either key
optional). Text-to-video and text-to-image have none.
"""

from __future__ import annotations

from typing import Callable

import jax
import ml_collections

Conditioner = Callable[[jax.Array, jax.Array], dict[str, jax.Array]]

UNCONDITIONAL = ("t2v", "t2i")
SSR = ("ssr",)
# The 7-channel model of SPEC section 3: noisy video + masked conditioning video + mask.
MASKED = ("conditional", "i2v", "inpaint", "cinemagraph")


def conditioner(config: ml_collections.ConfigDict) -> Conditioner | None:
    """The task's conditioner, or None for an unconditional text-to-video/image model."""
    task = config.task
    if task in UNCONDITIONAL:
        return None
    if task in SSR:
        from lumiere_jax import ssr
        return ssr.make_conditioner(config)
    if task in MASKED:
        from lumiere_jax import conditioning
        return conditioning.make_conditioner(config)
    raise ValueError(f"task={task!r} is not one of {UNCONDITIONAL + SSR + MASKED}.")
