"""Which caption words does a trained model use? Diffusion loss with the right vs. a swapped word.

For real clips of the shapes world, the v-prediction loss is computed with the clip's own caption and with
the same caption where one attribute word is swapped (colour -> next colour, shape -> next shape, motion ->
the opposite direction), on the same noise and times. A model that uses the word has a lower loss with the
right caption; a gap of ~0 at every noise level means the word is ignored, which no amount of guidance can
fix at sampling time. Cheaper than sampling and checking: forward passes only.

  python -m tools.text_probe --config=configs/t2v.py --t2v=runs/t2v_tiny
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lumiere_jax.data import shapes
from lumiere_jax.diffusion import schedule as sched

ATTRIBUTES = ("color", "shape", "motion")
_OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}


def swapped(color: str, shape: str, motion: str, attribute: str) -> tuple[str, str, str]:
    """The same attributes with `attribute` replaced by another value of its vocabulary."""
    if attribute == "color":
        color = shapes.COLORS[(shapes.COLORS.index(color) + 1) % len(shapes.COLORS)]
    elif attribute == "shape":
        shape = shapes.SHAPES[(shapes.SHAPES.index(shape) + 1) % len(shapes.SHAPES)]
    elif attribute == "motion":
        if motion not in _OPPOSITE:
            raise ValueError(f"motion {motion!r} has no opposite direction; probe moving clips.")
        motion = _OPPOSITE[motion]
    else:
        raise ValueError(f"Unknown attribute {attribute!r}; expected one of {ATTRIBUTES}.")
    return color, shape, motion


def probe_clips(num: int, num_frames: int, resolution: int, seed: int = 0) -> tuple[np.ndarray, list[tuple]]:
    """`num` one-object moving clips in [-1, 1] [N, T, H, W, 3] (directions cycled) and their attributes."""
    rng = np.random.default_rng(seed)
    clips, attrs = [], []
    for i in range(num):
        color, shape = shapes.COLORS[rng.integers(len(shapes.COLORS))], shapes.SHAPES[rng.integers(3)]
        motion = ("left", "right", "up", "down")[i % 4]
        spec = shapes.spec_from_attributes(color, shape, motion, shapes.SIZES[rng.integers(2)],
                                           shapes.SPEEDS[rng.integers(2)], rng=rng)
        clips.append(shapes.render_clip(spec, num_frames, resolution))
        attrs.append((color, shape, motion))
    return np.stack(clips).astype(np.float32) / 127.5 - 1.0, attrs


def text_gaps(graphdef: nnx.GraphDef, params: nnx.State, encoder: Any, schedule: sched.CosineSchedule,
              clips: np.ndarray, attrs: Sequence[tuple[str, str, str]], *,
              attributes: Sequence[str] = ATTRIBUTES, times: Sequence[float] = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98),
              seed: int = 0) -> dict[str, Any]:
    """Loss with the right caption, with each swapped one, and with the empty caption, per time t.

    Returns {"t": [...], "logsnr": [...], "right": [...], "null": [...], "<attribute>": [...] (swapped loss),
    "<attribute>_gap": [...] (swapped - right)}.
    """
    model = nnx.merge(graphdef, params)
    apply = jax.jit(lambda z, t, text, mask: model(z, t, text, mask))
    x = jnp.asarray(clips)
    captions = {"right": [shapes.prompt_for(*a) for a in attrs], "null": [""] * len(attrs)}
    for attribute in attributes:
        captions[attribute] = [shapes.prompt_for(*swapped(*a, attribute)) for a in attrs]
    encoded = {k: tuple(map(jnp.asarray, encoder.encode(v))) for k, v in captions.items()}
    out: dict[str, Any] = {"t": list(times), "logsnr": [], **{k: [] for k in captions}}
    for i, tv in enumerate(times):
        eps = jax.random.normal(jax.random.fold_in(jax.random.key(seed), i), x.shape)
        t = jnp.full((x.shape[0],), tv, jnp.float32)
        alpha, sigma = schedule.alpha_sigma(t)
        z, v = sched.diffuse(x, eps, alpha, sigma), sched.v_target(x, eps, alpha, sigma)
        out["logsnr"].append(float(schedule.logsnr(t[0])))
        for name, (text, mask) in encoded.items():
            out[name].append(float(jnp.mean(jnp.square(apply(z, t, text, mask) - v))))
    for attribute in attributes:
        out[f"{attribute}_gap"] = [s - r for s, r in zip(out[attribute], out["right"])]
    return out
