"""Style tuning (`--mode=style_tune`, StyleDrop-like): fine-tune the spatial layers on style images.

The tuned spatial weights are saved as a .safetensors file that `--style_weights` interpolates into a text-to-video
run at sampling time (applications/edit.py).
"""

from __future__ import annotations

import functools
import logging
import os
import re
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from lumiere_jax import config_lib, sampling, train
from lumiere_jax.applications import edit, inputs
from lumiere_jax.applications.inputs import InputError
from lumiere_jax.diffusion.schedule import CosineSchedule, schedule_from
from lumiere_jax.models.stunet import check_frames, is_temporal_path
from lumiere_jax.state import abstract_graphdef_and_state, init_state, make_optimizer

log = logging.getLogger("lumiere_jax")


def check_style_tune(config: ml_collections.ConfigDict, image: str | None, caption: str | None,
                     out: str | None) -> tuple[np.ndarray, list[str]]:
    """Checks --mode=style_tune's inputs; returns the style images [N, H, W, 3] in [-1, 1] and their captions."""
    if "style" not in config:
        raise InputError("--mode=style_tune reads config.style: use --config=configs/style_gen.py.")
    if config.model.cond_channels or not config.model.temporal:
        raise InputError("--mode=style_tune tunes a text-to-video run (configs/style_gen.py over a "
                         "configs/t2v.py run).")
    if not image:
        raise InputError("--mode=style_tune needs --style_image=style.png (the style reference, or a folder of "
                         "captioned images).")
    if not os.path.isdir(image) and (not caption or not caption.replace("|", "").strip()):
        raise InputError('--mode=style_tune needs --prompt naming the style, e.g. "a red circle in outline style".')
    if not out or not out.endswith(".safetensors"):
        raise InputError(f"--style_weights={out!r}: give the output file, ending in .safetensors.")
    if not 0.0 <= config.style.prior_fraction < 1.0:
        raise InputError(f"--config.style.prior_fraction={config.style.prior_fraction} must be in [0, 1): the share "
                         f"of each batch that is the base model's own images (0 turns prior preservation off).")
    frames = config.style.frames
    if frames < 1:
        raise InputError(f"--config.style.frames={frames} must be at least 1 (1: tune the T2I view on images; "
                         f"k > 1: the whole model on still clips of k frames).")
    if frames > 1:
        try:
            check_frames(frames, config_lib.model_config(style_config(config)))
        except ValueError as e:
            raise InputError(f"--config.style.frames={frames}: {e}") from None
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        raise InputError(f"--style_weights={out}: folder {folder} does not exist or is not writable.")
    return inputs.read_style_images(image, caption, config.data.resolution, mode=config.sample.resize)


def _style_layers(pattern: str, spatial: Sequence[str]) -> re.Pattern | None:
    """config.style.layers compiled, refused if it is not a regex or matches none of the `spatial` names."""
    if not pattern:
        return None
    try:
        layers = re.compile(pattern)
    except re.error as e:
        raise InputError(f"--config.style.layers={pattern!r} is not a regular expression ({e}).") from None
    if not any(layers.search(k) for k in spatial):
        tops = sorted({k.split("/")[0] + ("/" + k.split("/")[1] if k.count("/") > 1 else "") for k in spatial})
        raise InputError(f"--config.style.layers={pattern!r} matches none of the spatial weights, so nothing would "
                         f"train; names start with: {', '.join(tops[:12])} ...")
    return layers


def style_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The model a style tune trains, with the style optimizer.

    style.frames == 1: the T2I view of the T2V model (the same spatial layers, temporal path off, one frame),
    as Lumiere tunes its T2I weights. style.frames > 1: the whole STUNet on clips of that many frames, only
    the spatial layers trainable, so the style is learnt with the temporal layers it will be sampled with.
    """
    c = ml_collections.ConfigDict(config.to_dict())
    c.init_from = ""
    if config.style.frames > 1:
        c.task, c.trainable = "t2v", "spatial"
        c.data.num_frames = config.style.frames
    else:
        c.task, c.trainable = "t2i", "all"
        c.model.temporal = False
        c.data.num_frames = 1
    c.optim.learning_rate = config.style.learning_rate
    c.optim.warmup_steps = config.style.warmup_steps
    c.optim.decay_steps = 0
    c.optim.ema_decay = 0.98  # a short run: average over its last ~50 steps
    return c


def style_tune(config: ml_collections.ConfigDict, t2v_params: nnx.State, encoder: Any, image: np.ndarray,
               caption: str | Sequence[str], out: str, *, source: str = "",
               schedule: CosineSchedule | None = None) -> dict[str, np.ndarray]:
    """Fine-tunes the spatial layers on style images (StyleDrop-like); saves and returns their weights.

    The T2V model's spatial layers are exactly a T2I U-Net (inflation), so they train as one on the image,
    with random shifts and flips, captioned `caption`: one caption, or several separated by "|" (phrasings
    of the same image, e.g. with the motion words that video prompts will carry; each view draws one).
    `image` may also be several images [N, H, W, 3] with a caption per image (StyleDrop's second round: the
    reference plus generated images in its style with other content, tools/style_feedback.py); each view
    draws an image uniformly.
    With config.style.frames == 1 temporal layers are not part of the program at all; with frames > 1 the
    image is a still clip of that many frames through the whole STUNet, temporal layers frozen
    (`style_config`), and the prior images are the T2V model's own clips.

    Prior preservation (DreamBooth's remedy for one-image fine-tunes): with `config.style.prior_fraction`
    > 0, that share of every batch is images the base model itself drew for `config.style.prior_prompts`
    (prompts without the style words), so the tune learns what the style words add instead of redrawing the
    reference image's content for every prompt.

    `schedule` is the base run's noise schedule (`TextToVideo.schedule`); None takes the one `config` names.
    """
    s = config.style
    t2i = style_config(config)
    frames = t2i.data.num_frames
    graphdef, abstract = abstract_graphdef_and_state(t2i)
    # Host copies: the train step donates its state, which must not take the caller's arrays with it. The
    # T2I view (frames == 1) has only the spatial weights and takes just those.
    base = {k: np.asarray(v) for k, v in edit.flat_weights(t2v_params)[0]}
    layers = _style_layers(s.layers, [k for k in base if not is_temporal_path(k.split("/"))])
    flat, treedef = edit.flat_weights(abstract.params)
    params = jax.tree.map(lambda x: x, abstract.params)
    nnx.replace_by_pure_dict(params, jax.tree_util.tree_unflatten(treedef, [jnp.asarray(base[k]) for k, _ in flat]))
    schedule = schedule or schedule_from(t2i)
    null_text, null_mask = (jnp.asarray(a) for a in encoder.encode([""]))
    images = image[None] if image.ndim == 3 else image  # [N, H, W, 3]
    per_image = [caption] * len(images) if isinstance(caption, str) else list(caption)
    if len(per_image) != len(images):
        raise InputError(f"{len(images)} style images with {len(per_image)} captions: give one caption per image.")
    num_prior = int(round(s.batch_size * s.prior_fraction)) if s.prior_prompts else 0
    if num_prior >= s.batch_size:
        raise InputError(f"config.style.prior_fraction={s.prior_fraction} leaves no room for the style image in a "
                         f"batch of {s.batch_size}: use a fraction below 1.")
    if num_prior:
        prior_text, prior_mask = encoder.encode(list(s.prior_prompts))
        t0 = time.time()
        options = sampling.SamplerOptions(steps=s.prior_steps, guidance=config.sample.guidance, sampler="ddim",
                                          thresholding=config.sample.thresholding,
                                          guidance_rescale=config.sample.guidance_rescale)
        prior = np.asarray(sampling.generate(
            graphdef, params, sampling.Prompts(jnp.asarray(prior_text), jnp.asarray(prior_mask), null_text,
                                               null_mask),
            jax.random.key(config.seed), shape=(frames,) + images.shape[1:], schedule=schedule,
            options=options))  # [P, frames, H, W, 3]
        log.info("Prior preservation: %d base-model images for %d prompts in %.1fs; %d of %d images per step.",
                 len(prior), len(s.prior_prompts), time.time() - t0, num_prior, s.batch_size)
    tx = make_optimizer(t2i)
    if s.layers:  # only the spatial weights whose name matches train (e.g. the full-resolution levels)
        tx = optax.multi_transform({"train": tx, "freeze": optax.set_to_zero()}, functools.partial(
            jax.tree_util.tree_map_with_path,
            lambda path, _: "train" if layers.search("/".join(str(getattr(k, "key", k)) for k in path)) else "freeze"))
    state = init_state(params, tx)
    step_fn = train.jit_train_step(graphdef, tx, schedule, t2i, donate_argnums=(0,))
    phrasings = [[c.strip() for c in words.split("|") if c.strip()] for words in per_image]
    if not all(phrasings):
        raise InputError(f"Style captions {per_image}: every image needs a caption naming the style.")
    first = np.cumsum([0] + [len(p) for p in phrasings])  # image i's phrasings: rows first[i]:first[i + 1]
    style_text, style_mask = encoder.encode([c for p in phrasings for c in p])
    rng = np.random.default_rng(config.seed)
    res = images.shape[1]
    stills = np.broadcast_to(images[:, None], (len(images), frames) + images.shape[1:])  # still clips
    shift = int(round(s.max_shift * res))
    t0 = time.time()
    for step in range(1, s.steps + 1):
        picks = rng.integers(len(s.prior_prompts), size=num_prior) if num_prior else np.zeros(0, int)
        shown = rng.integers(len(images), size=s.batch_size - num_prior)
        phrasing = first[shown] + rng.integers(first[shown + 1] - first[shown])
        sources = [stills[i] for i in shown] + [prior[i] for i in picks]  # [frames, H, W, 3] each
        views = []
        for src in sources:  # one shift and flip per clip
            view = np.roll(src, tuple(rng.integers(-shift, shift + 1, 2)), axis=(1, 2))
            views.append(view[:, :, ::-1] if rng.random() < 0.5 else view)
        text = np.concatenate([style_text[phrasing]] + ([prior_text[picks]] if num_prior else []))
        mask = np.concatenate([style_mask[phrasing]] + ([prior_mask[picks]] if num_prior else []))
        batch = {"video": jnp.asarray(np.stack(views)), "text": jnp.asarray(text),
                 "text_mask": jnp.asarray(mask)}  # video [B, frames, H, W, 3]
        state, metrics = step_fn(state, batch, null_text, null_mask)
        if step % s.log_every == 0 or step == s.steps:
            rate = step / max(time.time() - t0, 1e-9)
            log.info("style step %d/%d  loss %.4f  %.2f steps/s  ETA %ds", step, s.steps, float(metrics["loss"]),
                     rate, int((s.steps - step) / rate))
    weights = edit.spatial_weights(state.ema)
    edit.save_style_weights(out, weights, {"caption": " || ".join(per_image), "images": str(len(images)),
                                      "steps": str(s.steps), "source": source,
                                      "frames": str(frames),
                                      "prior_fraction": str(s.prior_fraction if num_prior else 0.0),
                                      "format": "lumiere_jax spatial weights"})
    return weights
