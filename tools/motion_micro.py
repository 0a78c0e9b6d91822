r"""Can the STUNet learn to pick a trajectory from its caption? A controlled micro-experiment.

  python -m tools.motion_micro --world=fixed4 --steps=300 [--readout_every=500]  # 4 clips, one per direction
  python -m tools.motion_micro --world=fixed1 --steps=300          # 1 clip: can it make motion from noise at all?
  python -m tools.motion_micro --world=words --steps=300           # fixed4 captioned by unrelated phrases
  python -m tools.motion_micro --world=directions --steps=800 [--coords]
  python -m tools.motion_micro --world=fixed4 --shift=0.1           # or --t_min=0.9, --high_noise_fraction=0.5
  python -m tools.motion_micro --world=directions --t_min=0.9 --steps=1000 --phrasing=varied [--attention_levels=1,2]
        [--text_pooling=attention] [--text_norm=standardize]
  python -m tools.motion_micro --t2v=runs/t2v_tiny [--t2v_step=N]       # only the read-out, on a trained run

Trains the tiny STUNet (configs/t2v.py size=tiny, fresh weights, v-loss, AdamW 1e-3) on clips drawn on the fly:
`directions`: red or blue circles, squares, triangles moving left/right/up/down from random starts (24 captions);
`fixed4`: the one centred large fast red circle path per direction (4 clips, captions "a red circle moving
<dir>"); `fixed1`: only the leftward one; `words`: fixed4 with captions that are unrelated phrases, as
different from each other as captions get. `--coords` feeds (x, y, frame) coordinate channels as extra input
channels (CoordConv), the cheapest way to hand a conv net absolute position and frame index.

Where training spends its noise levels: `--t_min=0.9` trains only on t in [0.9, 1]; `--high_noise_fraction=0.5`
draws half of each batch there and the rest uniformly; `--shift=0.1` moves the whole schedule toward noise
(logSNR - 4.6). `--tokens=random` replaces the MiniLM caption features by one random unit-variance vector per
caption, the most distinct captions can be. `--phrasing=varied` captions the `directions` clips as the T2V data
does (shapes.caption: five templates, direction synonyms, optional size and speed words) instead of one canonical
sentence per (colour, shape, direction).

The read-out: the model's x0 prediction at high noise from pure noise, averaged over 32 draws, for
"a red circle moving <dir>", as the red centre of mass in frame 0 -> frame T-1. A model that uses the direction
word moves that centre the prompted way (in fixed4 the clips go from x 25 to 9 for "left"); a model that ignores
it predicts the direction-blind average, a static centred blob. Also the v-loss increase when the direction
word is swapped for its opposite (fresh clips of `directions`). With `--phrasing=varied` both are repeated on
varied captions, the probe swapping only the direction phrase ("moves leftward" -> "moves rightward").
`--text_pooling=attention` gives the fresh model an attention pool of the caption tokens (model.text_pooling);
`--text_norm=standardize` standardizes its caption features by the training captions' token statistics
(model.text_norm).
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags
from flax import nnx

_WORLD = flags.DEFINE_enum("world", "fixed4", ["directions", "fixed4", "fixed1", "words"], "Training clips.")
_STEPS = flags.DEFINE_integer("steps", 300, "Training steps (batch 8).")
_COORDS = flags.DEFINE_bool("coords", False, "Give the model (x, y, frame) coordinate input channels.")
_SHIFT = flags.DEFINE_float("shift", 1.0, "Noise schedule shift (diffusion.shift).")
_READOUT_EVERY = flags.DEFINE_integer("readout_every", 0, "Also print the read-out every this many steps (0: end only).")
_T_MIN = flags.DEFINE_float("t_min", 0.0, "Train on diffusion times drawn from [t_min, 1] only.")
_HIGH = flags.DEFINE_float("high_noise_fraction", 0.0, "This fraction of each batch draws t from [0.9, 1].")
_TOKENS = flags.DEFINE_enum("tokens", "minilm", ["minilm", "random"], "Caption features: MiniLM's, or one random "
                            "unit-variance vector per caption (as distinct as features get).")
_PHRASING = flags.DEFINE_enum("phrasing", "canonical", ["canonical", "varied"], "Training captions of the "
                              "directions world: one per (colour, shape, direction), or the T2V data's own "
                              "(shapes.caption: 5 templates, direction synonyms, optional size and speed words).")
_ATTN = flags.DEFINE_list("attention_levels", None, "U-Net levels with self- and cross-attention (default: the "
                          "tiny config's, level 2 only, 8x8); 1,2 adds the 16x16 level.")
_POOLING = flags.DEFINE_enum("text_pooling", "mean", ["mean", "attention"], "The fresh model's model.text_pooling: "
                              "the caption's mean token in the FiLM conditioning, or also an attention pool.")
_TEXT_NORM = flags.DEFINE_enum("text_norm", "none", ["none", "standardize"], "The fresh model's model.text_norm: "
                                "standardize its caption features by the training captions' token statistics.")
_T2V = flags.DEFINE_string("t2v", None, "Skip training: read out this trained configs/t2v.py run instead.")
_T2V_STEP = flags.DEFINE_integer("t2v_step", None, "With --t2v: the checkpoint step to read out (default: newest).")

COLORS, DIRECTIONS = ("red", "blue"), ("left", "right", "up", "down")
UNRELATED = ("an old wooden violin", "a snowy mountain at night", "a yellow bicycle", "a bowl of soup")
FRAMES, RES, BATCH = 8, 32, 8
CANONICAL = len(COLORS) * 3 * len(DIRECTIONS)  # one caption per (colour, shape, direction)
VARIANTS = 20  # varied phrasings drawn per (colour, shape, direction, size, speed)


def _captions(world: str, varied: bool = False) -> list[str]:
    """Caption k = (colour * 3 + shape) * 4 + direction; with `varied`, then VARIANTS phrasings (shapes.caption)
    per (colour, shape, direction, size, speed), the index _clip(..., varied=True) returns; last the null caption."""
    from lumiere_jax.data import shapes
    out = [shapes.prompt_for(c, s, m) for c in COLORS for s in shapes.SHAPES for m in DIRECTIONS]
    if world == "words":
        out = [UNRELATED[k % 4] for k in range(len(out))]
    if varied:
        rng = np.random.default_rng(3)
        for attributes in itertools.product(COLORS, shapes.SHAPES, DIRECTIONS, shapes.SIZES, shapes.SPEEDS):
            spec = shapes.spec_from_attributes(*attributes)
            out += [shapes.caption(spec, rng) for _ in range(VARIANTS)]
    return out + [""]


def _clip(world: str, rng: np.random.Generator, varied: bool = False) -> tuple[np.ndarray, int]:
    """A clip and its caption index: canonical, or with `varied`, one of the varied phrasings (see _captions)."""
    from lumiere_jax.data import shapes
    c, s, m = int(rng.integers(2)), int(rng.integers(3)), int(rng.integers(4))
    if world == "directions":
        size, speed = int(rng.integers(2)), int(rng.integers(2))
        spec = shapes.spec_from_attributes(COLORS[c], shapes.SHAPES[s], DIRECTIONS[m], shapes.SIZES[size],
                                           shapes.SPEEDS[speed], rng=rng)
        k = (c * 3 + s) * 4 + m
        if varied:
            k = CANONICAL + ((k * 2 + size) * 2 + speed) * VARIANTS + int(rng.integers(VARIANTS))
        return shapes.render_clip(spec, FRAMES, RES).astype(np.float32) / 127.5 - 1.0, k
    c, s, m = 0, 0, (0 if world == "fixed1" else m)
    spec = shapes.spec_from_attributes("red", "circle", DIRECTIONS[m], "large", "fast")
    return shapes.render_clip(spec, FRAMES, RES).astype(np.float32) / 127.5 - 1.0, (c * 3 + s) * 4 + m


def opposite_caption(caption: str, direction: str) -> str:
    """The caption with its direction phrase swapped for the opposite direction's parallel one ("leftward" ->
    "rightward", "toward the top" -> "toward the bottom"), every other word kept."""
    from lumiere_jax.data import shapes
    words = shapes._DIRECTION_WORDS  # parallel lists: the i-th phrase of each direction match
    other = DIRECTIONS[DIRECTIONS.index(direction) ^ 1]  # left <-> right, up <-> down
    for i in sorted(range(len(words[direction])), key=lambda i: -len(words[direction][i])):  # "leftward" first
        pattern = rf"\b{words[direction][i]}\b"
        if re.search(pattern, caption):
            return re.sub(pattern, words[other][i], caption, count=1)
    raise ValueError(f"No {direction} phrase in {caption!r}.")


def _varied_readout_index(direction: str) -> int:
    """A varied caption of a small, slow red circle going `direction` (its first phrasing slot)."""
    return CANONICAL + DIRECTIONS.index(direction) * 4 * VARIANTS


def _coords() -> jax.Array:
    gx, gy = np.meshgrid(np.linspace(-1, 1, RES), np.linspace(-1, 1, RES))
    grid = np.broadcast_arrays(gx[None], gy[None], np.linspace(-1, 1, FRAMES)[:, None, None])
    return jnp.asarray(np.stack(grid, -1), jnp.float32)[None]  # [1, T, H, W, 3]


def read_out(apply, schedule, caption_index, label: str) -> dict[float, dict[str, tuple[float, ...]]]:
    """Prints the high-noise x0 trajectories per direction prompt; `apply(z, t, k)` runs the model on captions k.

    Returns {t: {direction: (x in frame 0, x in frame T-1, y in frame 0, y in frame T-1)}} in pixels.
    """
    from lumiere_jax.diffusion import schedule as sched
    n = 32
    out = {}
    for tv in (0.98, 0.9):
        row, out[tv] = [], {}
        for m, direction in enumerate(DIRECTIONS):
            eps = jax.random.normal(jax.random.key(m), (n, FRAMES, RES, RES, 3))
            t = jnp.full((n,), tv)
            alpha, sigma = schedule.alpha_sigma(t)
            x0, _ = sched.predict_x_eps(eps, apply(eps, t, jnp.full((n,), caption_index(direction))), alpha, sigma)
            x0 = np.asarray(x0.mean(0))
            red = np.clip(x0[..., 0] - x0[..., 1:].mean(-1), 0, None)  # [T, H, W]
            weight = red.sum((1, 2)) + 1e-6
            cx = (red * np.arange(RES)[None, None, :]).sum((1, 2)) / weight
            cy = (red * np.arange(RES)[None, :, None]).sum((1, 2)) / weight
            row.append(f"{direction:>5}: x {cx[0]:4.1f}->{cx[-1]:4.1f} y {cy[0]:4.1f}->{cy[-1]:4.1f}")
            out[tv][direction] = (float(cx[0]), float(cx[-1]), float(cy[0]), float(cy[-1]))
        print(f"{label} x0 at t={tv}: " + " | ".join(row), flush=True)
    return out


def main(argv) -> None:
    del argv
    from configs import t2v as t2v_config
    from lumiere_jax import sampling
    from lumiere_jax.config_lib import model_config
    from lumiere_jax.diffusion import schedule as sched
    from lumiere_jax.runs import with_run_model
    from lumiere_jax.state import build_model, set_text_statistics
    from lumiere_jax.text.cache import token_statistics
    from lumiere_jax.text.encoders import load_text_encoder

    config = t2v_config.get_config("size=tiny")
    if _T2V.value:
        t2v, step = sampling.load_text_to_video(with_run_model(config, _T2V.value), _T2V.value, _T2V_STEP.value)
        model = nnx.merge(t2v.graphdef, t2v.params)
        prompts = [f"a red circle moving {d}" for d in DIRECTIONS]
        text, mask = map(jnp.asarray, t2v.encoder.encode(prompts))
        fwd = jax.jit(lambda z, t, k: model(z, t, text[k], mask[k]))
        read_out(fwd, t2v.schedule, DIRECTIONS.index, f"{_T2V.value} step {step}")
        return

    world, varied = _WORLD.value, _PHRASING.value == "varied"
    if varied and world != "directions":
        raise app.UsageError(f"--phrasing=varied applies to --world=directions, not --world={world}.")
    if varied and _TOKENS.value == "random":
        raise app.UsageError("--tokens=random gives no features to the varied probe's swapped captions: use "
                             "--phrasing=canonical with it.")
    if _ATTN.value:  # the fresh model's only; a --t2v run is read out as it was built
        config.model.attention_levels = tuple(int(v) for v in _ATTN.value)
    config.model.text_pooling = _POOLING.value
    config.model.text_norm = _TEXT_NORM.value
    cfg = model_config(config)
    if _COORDS.value:
        cfg = dataclasses.replace(cfg, cond_channels=3)
    graphdef, params = build_model(cfg, 0)
    schedule = sched.CosineSchedule(shift=_SHIFT.value)
    encoder = load_text_encoder("minilm", "", config.text_max_length)
    captions = _captions(world, varied)
    text, mask = map(jnp.asarray, encoder.encode(captions))
    if _TOKENS.value == "random":
        text = jax.random.normal(jax.random.key(7), text.shape) * mask[..., None]
    if _TEXT_NORM.value == "standardize":  # as the trainer does: statistics of the training captions' tokens
        params = set_text_statistics(graphdef, params, *token_statistics(np.asarray(text), np.asarray(mask)))
    coords = _coords()

    def apply_text(p, z, t, tokens, token_mask):
        cond = jnp.broadcast_to(coords, z.shape) if _COORDS.value else None
        return nnx.merge(graphdef, p)(z, t, tokens, token_mask, cond=cond)

    def apply(p, z, t, k):
        return apply_text(p, z, t, text[k], mask[k])

    tx = optax.chain(optax.clip_by_global_norm(1.0),
                     optax.adamw(optax.warmup_constant_schedule(0.0, 1e-3, 100), b1=0.9, b2=0.99, weight_decay=0.0))
    opt = tx.init(params)

    @jax.jit
    def train_step(p, opt, x, k, key):
        k_t, k_eps = jax.random.split(key)
        t = jax.random.uniform(k_t, (x.shape[0],), minval=_T_MIN.value)
        n_high = round(_HIGH.value * x.shape[0])
        t = t.at[:n_high].set(0.9 + 0.1 * t[:n_high])
        eps = jax.random.normal(k_eps, x.shape)
        alpha, sigma = schedule.alpha_sigma(t)
        z, v = sched.diffuse(x, eps, alpha, sigma), sched.v_target(x, eps, alpha, sigma)
        loss, grads = jax.value_and_grad(lambda q: jnp.mean(jnp.square(apply(q, z, t, k) - v)))(p)
        updates, opt = tx.update(grads, opt, p)
        return optax.apply_updates(p, updates), opt, loss

    apply_jit, apply_text_jit = jax.jit(apply), jax.jit(apply_text)
    rng, start = np.random.default_rng(0), time.time()
    label = f"{world}{' +coords' if _COORDS.value else ''}{' varied' if varied else ''}"
    label += f" attn{','.join(map(str, config.model.attention_levels))}" if _ATTN.value else ""
    label += " attention-pool" if _POOLING.value == "attention" else ""
    label += " standardized-text" if _TEXT_NORM.value == "standardize" else ""
    for i in range(_STEPS.value):
        clips, ks = zip(*(_clip(world, rng, varied) for _ in range(BATCH)))
        ks = [len(captions) - 1 if rng.random() < 0.1 else k for k in ks]  # 10% null captions, as training does
        params, opt, loss = train_step(params, opt, jnp.asarray(np.stack(clips)), jnp.asarray(ks), jax.random.key(i))
        if i % 100 == 0 or i == _STEPS.value - 1:
            print(f"{label} step {i} loss {float(loss):.4f} ({time.time() - start:.0f} s)", flush=True)
        if _READOUT_EVERY.value and (i + 1) % _READOUT_EVERY.value == 0 and i + 1 < _STEPS.value:
            read_out(lambda z, t, k: apply_jit(params, z, t, k), schedule, DIRECTIONS.index, f"{label} step {i + 1}")
            if varied:
                read_out(lambda z, t, k: apply_jit(params, z, t, k), schedule, _varied_readout_index,
                         f"{label} step {i + 1}, varied phrasing")

    def fwd(z, t, k):
        return apply_jit(params, z, t, k)
    for probe_varied in (False, True) if varied else (False,):
        # The same clips, captioned right and with the direction phrase swapped for the opposite one.
        probe = np.random.default_rng(1)
        clips, ks = zip(*(_clip("directions", probe, probe_varied) for _ in range(32)))
        x = jnp.asarray(np.stack(clips))
        if probe_varied:  # swap only the direction phrase; that parallel caption need not be a training one
            directions = [DIRECTIONS[(k - CANONICAL) // VARIANTS // 4 % 4] for k in ks]
            swapped_text, swapped_mask = map(jnp.asarray, encoder.encode(
                [opposite_caption(captions[k], d) for k, d in zip(ks, directions)]))
        else:  # the caption of the same colour and shape with the opposite direction (any --world, --tokens)
            opposite = jnp.asarray([k - k % 4 + (1, 0, 3, 2)[k % 4] for k in ks])
            swapped_text, swapped_mask = text[opposite], mask[opposite]
        ks = jnp.asarray(ks)
        how = ", varied phrasing" if probe_varied else ""
        for tv in (0.5, 0.8, 0.9, 0.95, 0.98):
            t = jnp.full((len(ks),), tv)
            eps = jax.random.normal(jax.random.key(int(tv * 100)), x.shape)
            alpha, sigma = schedule.alpha_sigma(t)
            z, v = sched.diffuse(x, eps, alpha, sigma), sched.v_target(x, eps, alpha, sigma)
            right = float(jnp.mean(jnp.square(fwd(z, t, ks) - v)))
            wrong = float(jnp.mean(jnp.square(apply_text_jit(params, z, t, swapped_text, swapped_mask) - v)))
            print(f"{label} t={tv}{how}: v-loss {right:.4f}, opposite direction word {wrong - right:+.4f}")
    read_out(fwd, schedule, DIRECTIONS.index, label)  # captions 0-3: red circle, each direction
    if varied:
        read_out(fwd, schedule, _varied_readout_index, f"{label}, varied phrasing")


if __name__ == "__main__":
    app.run(main)
