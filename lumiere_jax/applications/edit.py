"""The application samplers: the conditional model on masked video (image-to-video, inpainting, cinemagraphs),
SDEdit on a text-to-video run, and stylized generation's spatial weights (interpolation, files, `apply_style`).
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import safetensors.numpy
from flax import nnx

from lumiere_jax import sampling
from lumiere_jax.applications.inputs import InputError, Request, style_weights_unreadable
from lumiere_jax.conditioning import masked
from lumiere_jax.models.stunet import is_temporal_path

log = logging.getLogger("lumiere_jax")


def run(request: Request, t2v: Any, prompt: str, **kwargs: Any) -> np.ndarray:
    """One clip [T, H, W, 3] in [-1, 1] for a non-plain request; kwargs: seed, steps, guidance, sampler.

    Known pixels are pasted back into the output (`masked.paste_back`), so they equal the input exactly.
    """
    if request.kind == "sdedit":
        return sdedit(t2v, [prompt], request.video[None], request.strength, **kwargs)[0]
    raw = conditional_sample(t2v, [prompt], request.cond[None], **kwargs)[0]
    return masked.paste_back(raw, request.cond)


def conditional_sample(t2v: Any, prompts: Sequence[str], cond: np.ndarray, *, seed: int = 0, steps: int = 50,
                       guidance: float = 3.0, sampler: str = "ddim") -> np.ndarray:
    """Clips [N, T, H, W, 3] from the conditional model for cond [N, T, H, W, 4], before paste-back."""
    text, mask = t2v.encoder.encode(list(prompts))
    return np.asarray(sampling.generate(
        t2v.graphdef, t2v.params, t2v.prompts(text, mask), jax.random.key(seed), shape=t2v.shape,
        schedule=t2v.schedule, options=t2v.options(steps, guidance, sampler),
        condition=sampling.Condition(cond=jnp.asarray(cond, jnp.float32))))


def sdedit(t2v: Any, prompts: Sequence[str], videos: np.ndarray, strength: float, *, seed: int = 0,
           steps: int = 50, guidance: float = 3.0, sampler: str = "ddim") -> np.ndarray:
    """SDEdit: videos [N, T, H, W, 3] noised to t0 = strength and denoised with the prompts.

    The sampler takes the fraction `strength` of `steps` (at least one), as the full run would over [t0, 0].
    """
    text, mask = t2v.encoder.encode(list(prompts))
    return np.asarray(sampling.generate(
        t2v.graphdef, t2v.params, t2v.prompts(text, mask), jax.random.key(seed), shape=t2v.shape,
        schedule=t2v.schedule, options=t2v.options(max(1, round(steps * strength)), guidance, sampler),
        start=sampling.Start(jnp.asarray(videos, jnp.float32), float(strength)), late=t2v.late))


# Stylized generation: spatial weights only.

def flat_weights(params: nnx.State) -> tuple[list[tuple[str, Any]], Any]:
    """("a/b/c", leaf) pairs of a params State in tree order, and the pure dict's treedef."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(params.to_pure_dict())
    return [("/".join(str(getattr(p, "key", p)) for p in path), v) for path, v in flat], treedef


def spatial_weights(params: nnx.State) -> dict[str, np.ndarray]:
    """The spatial (T2I) layers' weights by name: what a style fine-tune changes and saves."""
    return {k: np.asarray(v) for k, v in flat_weights(params)[0] if not is_temporal_path(k.split("/"))}


def interpolate_spatial(base: nnx.State, style: dict[str, np.ndarray], alpha: float) -> nnx.State:
    """W = alpha * W_style + (1 - alpha) * W_base for every spatial weight; temporal weights stay as they are.

    alpha in [0, 1] interpolates; alpha > 1 extrapolates along the same line, W_base + alpha * (W_style - W_base).

    Fails, naming the weight, if the style file lacks a spatial weight, has a temporal or unknown one, or a
    shape differs (a style tuned from another model size).
    """
    flat, treedef = flat_weights(base)
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
    safetensors.numpy.save_file({k: np.ascontiguousarray(v) for k, v in weights.items()}, path, metadata=metadata)


def load_style_weights(path: str) -> dict[str, np.ndarray]:
    try:
        return safetensors.numpy.load_file(path)
    except Exception as e:  # safetensors raises its own error types for damaged files
        raise style_weights_unreadable(path, e) from None


def apply_style(t2v: Any, request: Request) -> None:
    """Sets the sampler's spatial weights to the request's interpolated style weights (no-op without them).

    At style_start = 1 they replace the weights at every step; below, the base weights run the steps at
    times t > style_start and the styled ones the rest (TextToVideo.late).
    """
    if not request.style_weights:
        return
    styled = interpolate_spatial(t2v.params, load_style_weights(request.style_weights), request.style_alpha)
    if request.style_start >= 1.0:
        t2v.params, t2v.late = styled, None
    else:
        t2v.late = sampling.LateWeights(styled, float(request.style_start))
    log.info("Style weights %s at alpha=%.2f (spatial layers only) from t=%.2f.", request.style_weights,
             request.style_alpha, request.style_start)
