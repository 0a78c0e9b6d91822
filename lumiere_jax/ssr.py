"""Spatial super-resolution (SPEC section 2): its conditioning, the windowed SSR sampler, the base -> SSR cascade.

The SSR model is a STUNet with 3 extra input channels (model.cond_channels): next to the noisy high-res
clip it sees the low-res clip, bilinearly upsampled to the high resolution. That input is noised
(noise-conditioning augmentation, Imagen Video): c = alpha * up(x_lr) + sigma * eps at a level t_aug,
drawn from U[0, ssr.aug_level_max] per clip in training and fixed at ssr.sample_aug_level when sampling,
and the model is told t_aug (cond_level), so it learns how far to trust the low-res clip. In training
x_lr is the clean high-res clip box-downsampled; in the cascade it is the base model's output.

Clips longer than the SSR's training length are upsampled on overlapping windows of ssr.window frames
reconciled at every denoising step by temporal MultiDiffusion, inside sampling.generate's one jitted
loop; ssr.window_batch > 0 runs the windows that many at a time, so memory stays flat as clips grow.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from lumiere_jax import config_lib, sampling
from lumiere_jax.data.pipeline import NULL_CAPTION
from lumiere_jax.diffusion.schedule import CosineSchedule, broadcast_to, diffuse


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
    from lumiere_jax.models.stunet import check_frames
    from lumiere_jax.state import model_config

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
    check_frames(s.window, model_config(config))
    if not 0 <= s.overlap < s.window:
        raise ValueError(f"ssr.overlap={s.overlap} must be in [0, ssr.window={s.window}); the paper uses 2.")
    if s.window_batch < 0:
        raise ValueError(f"ssr.window_batch={s.window_batch} must be >= 0 (0: all windows in one call).")


def make_conditioner(config: ml_collections.ConfigDict):
    """The SSR training conditioner (tasks.py): clean high-res clip -> noisy upsampled low-res clip, level.

    (x [B, T, H, W, 3] in [-1, 1], rng) -> {"cond": [B, T, H, W, 3], "cond_level": [B]}; runs in the step.
    """
    from lumiere_jax.state import schedule_from

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


class SuperResolution:
    """Holds an SSR model's weights and text encoder; `__call__(low_res, prompts)` returns high-res clips."""

    def __init__(self, graphdef: nnx.GraphDef, params: nnx.State, encoder: Any,
                 config: ml_collections.ConfigDict):
        from lumiere_jax.state import schedule_from

        validate(config)
        self.graphdef, self.params, self.encoder, self.config = graphdef, params, encoder, config
        self.schedule = schedule_from(config)
        self.low_resolution, self.resolution = config.ssr.low_resolution, config.data.resolution
        self.window, self.overlap = config.ssr.window, config.ssr.overlap
        self.window_batch = config.ssr.window_batch or None
        null_text, null_mask = encoder.encode([NULL_CAPTION])
        self.null_text, self.null_mask = jnp.asarray(null_text), jnp.asarray(null_mask)

    @classmethod
    def from_workdir(cls, workdir: str, config: ml_collections.ConfigDict | None = None, encoder: Any = None,
                     encoder_config: ml_collections.ConfigDict | None = None) -> tuple["SuperResolution", int]:
        """Restores an SSR run's newest EMA weights; returns (sampler, checkpoint step).

        `encoder` (a loaded text encoder, made for `encoder_config`) is reused when the SSR run was trained
        with the same text encoder settings, instead of loading a second copy.
        """
        from lumiere_jax.text.encoders import load_text_encoder

        config = config or load_run_config(workdir)
        graphdef, params, step = restore_ema(config, workdir, flag="--ssr_workdir")
        keys = ("text_encoder", "text_encoder_path", "text_max_length")
        if encoder is None or encoder_config is None or any(config[k] != encoder_config[k] for k in keys):
            encoder = load_text_encoder(config.text_encoder, config.text_encoder_path, config.text_max_length)
        return cls(graphdef, params, encoder, config), step

    def __call__(self, low_res: np.ndarray | jax.Array, prompts: Sequence[str] | None = None, *,
                 spans: Sequence[tuple[int, str]] | None = None, seed: int = 0, steps: int | None = None,
                 guidance: float | None = None, sampler: str | None = None) -> np.ndarray:
        """Upsamples clips [B, T, h, w, 3] in [-1, 1] to [B, T, H, W, 3].

        One prompt per clip (`prompts`), or for a single clip prompt spans (start_frame, prompt) as in
        story mode: each MultiDiffusion window gets the prompt at its centre. T may exceed ssr.window.
        """
        low_res = jnp.asarray(low_res, jnp.float32)
        if low_res.ndim != 5 or low_res.shape[2:] != (self.low_resolution, self.low_resolution, 3):
            raise ValueError(f"Low-res clips have shape {tuple(low_res.shape)}; this SSR model takes [B, T, "
                             f"{self.low_resolution}, {self.low_resolution}, 3].")
        b, num_frames = low_res.shape[:2]
        if num_frames < self.window:
            raise ValueError(f"The clip has {num_frames} frames, fewer than the SSR window ssr.window="
                             f"{self.window}: give at least {self.window} frames.")
        windowed = num_frames > self.window
        if (prompts is None) == (spans is None):
            raise ValueError("Give either prompts (one per clip) or spans (story mode, one clip).")
        if spans is not None:
            if b != 1:
                raise ValueError(f"Prompt spans describe one clip; got a batch of {b}.")
            window_prompts = sampling.prompts_per_window(spans, num_frames, self.window if windowed else num_frames,
                                                         self.overlap)
            text, mask = self.encoder.encode(window_prompts)  # [N, L, D]
            text, mask = text[:, None], mask[:, None]  # [N, 1, L, D]
            if not windowed:
                text, mask = text[0], mask[0]
        else:
            if len(prompts) != b:
                raise ValueError(f"{len(prompts)} prompts for {b} clips: give one prompt per clip.")
            text, mask = self.encoder.encode(list(prompts))  # [B, L, D]
        c = self.config.sample
        k_aug, k_sample = jax.random.split(jax.random.key(seed))
        level = jnp.full((b,), self.config.ssr.sample_aug_level, jnp.float32)
        cond = condition_low_res(low_res, level, k_aug, resolution=self.resolution, schedule=self.schedule)
        clips = sampling.generate(
            self.graphdef, self.params, jnp.asarray(text), jnp.asarray(mask), self.null_text, self.null_mask,
            k_sample, shape=(num_frames, self.resolution, self.resolution, 3), schedule=self.schedule,
            steps=c.steps if steps is None else steps, guidance=float(c.guidance if guidance is None else guidance),
            sampler=sampler or c.sampler, window=self.window if windowed else None, overlap=self.overlap,
            cond=cond, cond_level=level, window_batch=self.window_batch, thresholding=c.thresholding)
        return np.asarray(clips)


class Cascade:
    """Base text-to-video sampler followed by the SSR: prompts in, high-res clips out."""

    def __init__(self, base: sampling.TextToVideo, ssr: SuperResolution):
        if base.shape[1] != ssr.low_resolution:
            raise ValueError(f"The base model makes {base.shape[1]} px clips but the SSR model upsamples "
                             f"{ssr.low_resolution} px clips.")
        self.base, self.ssr = base, ssr

    def __call__(self, spans: Sequence[tuple[int, str]], num_frames: int | None = None, *, seed: int = 0,
                 base_steps: int = 50, guidance: float = 3.0, ssr_steps: int | None = None, sampler: str = "ddim",
                 overlap: int | None = None, window_weights: str = sampling.LONG_VIDEO_WEIGHTS,
                 shift: bool = sampling.LONG_VIDEO_SHIFT,
                 noise: str = sampling.LONG_VIDEO_NOISE,
                 method: str = sampling.LONG_VIDEO_METHOD,
                 window_batch: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(low-res clip [T, h, w, 3], high-res clip [T, H, W, 3]) in [-1, 1] for prompt spans (story mode).

        A long base clip is sampled as TextToVideo.long_video does (method, window options, window_batch: windows
        per model call); the SSR always runs on its windows (its own window_batch, `SuperResolution.window_batch`).
        """
        num_frames = num_frames or self.base.shape[0]
        if num_frames == self.base.shape[0] and len(spans) == 1:
            low = self.base([spans[0][1]], seed=seed, steps=base_steps, guidance=guidance, sampler=sampler)[0]
        else:
            low = self.base.long_video(spans, num_frames, seed=seed, steps=base_steps, guidance=guidance,
                                       sampler=sampler, overlap=overlap, window_weights=window_weights,
                                       shift=shift, noise=noise, method=method, window_batch=window_batch)
        high = self.ssr(low[None], spans=spans, seed=seed, steps=ssr_steps, sampler=sampler)[0]
        return low, high


def restore_ema(config: ml_collections.ConfigDict, workdir: str,
                flag: str = "--workdir") -> tuple[nnx.GraphDef, nnx.State, int]:
    """(graphdef, EMA weights, step) of a run's newest checkpoint, on the first device."""
    from lumiere_jax import checkpointing
    from lumiere_jax.state import abstract_graphdef_and_state

    ckpt = checkpointing.Checkpointer(workdir, read_only=True)
    if ckpt.latest_step() is None:
        raise ValueError(f"{flag}={workdir} has no checkpoint: train it first with --mode=train.")
    graphdef, abstract = abstract_graphdef_and_state(config, workdir)
    state, _ = ckpt.restore(checkpointing.with_shardings(
        abstract, jax.sharding.SingleDeviceSharding(jax.devices()[0])))
    return graphdef, state.ema, int(state.step)


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
    """The config an SSR run was trained with (its config.json); one-line errors for anything else."""
    if not workdir:
        raise ValueError("--ssr_workdir is empty: give the workdir of a run trained with configs/ssr.py.")
    if not os.path.isdir(workdir):
        raise ValueError(f"--ssr_workdir={workdir} does not exist: train an SSR model there first with "
                         f"--config=configs/ssr.py --mode=train --workdir={workdir}.")
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise ValueError(f"--ssr_workdir={workdir} holds no trained run (no config.json): train an SSR model "
                         f"there first with --config=configs/ssr.py --mode=train.")
    with open(path) as f:
        config = config_lib.with_defaults(json.load(f))
    if config.get("task") != "ssr" or "ssr" not in config:
        raise ValueError(f"--ssr_workdir={workdir} is a task={config.get('task')!r} run, not a super-resolution "
                         f"run: give a workdir trained with --config=configs/ssr.py.")
    return config


def check_cascade(base_config: ml_collections.ConfigDict, ssr_workdir: str,
                  num_frames: int) -> ml_collections.ConfigDict:
    """Checks that the SSR run in ssr_workdir can upsample the base model's clips; returns its config.

    Runs before anything is restored or compiled.
    """
    from lumiere_jax import checkpointing

    config = load_run_config(ssr_workdir)
    validate(config)
    low, base_res = config.ssr.low_resolution, base_config.data.resolution
    if low != base_res:
        raise ValueError(f"--ssr_workdir={ssr_workdir} upsamples {low}x{low} clips but the base model makes "
                         f"{base_res}x{base_res} clips: use an SSR run trained with ssr.low_resolution={base_res} "
                         f"(or a base model at {low} px).")
    if num_frames < config.ssr.window:
        raise ValueError(f"--frames={num_frames} is shorter than the SSR window ssr.window={config.ssr.window} "
                         f"of --ssr_workdir={ssr_workdir}: use --frames >= {config.ssr.window}.")
    if checkpointing.Checkpointer(ssr_workdir, read_only=True).latest_step() is None:
        raise ValueError(f"--ssr_workdir={ssr_workdir} has no checkpoint: train it first with "
                         f"--config=configs/ssr.py --mode=train --workdir={ssr_workdir}.")
    return config
