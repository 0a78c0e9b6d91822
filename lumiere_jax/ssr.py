"""Spatial super-resolution (Lumiere, Sec. 3.2): the windowed SSR sampler and the base -> SSR cascade.

The SSR model is a STUNet with 3 extra input channels that sees the upsampled, noise-augmented low-res clip
(conditioning/low_res.py); a residual SSR (ssr.residual_scale > 0) generates the detail that the upsampling misses,
which is added to the upsampled clip. Clips longer than the SSR's training length are upsampled on overlapping windows
of ssr.window frames reconciled at every denoising step by temporal MultiDiffusion, inside sampling.generate's one
jitted loop; ssr.window_batch > 0 runs the windows that many at a time, so memory stays flat as clips grow.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from lumiere_jax import config_lib, runs, sampling
from lumiere_jax.conditioning.low_res import condition_low_res, from_residual, validate
from lumiere_jax.data.pipeline import NULL_CAPTION
from lumiere_jax.diffusion.schedule import schedule_from
from lumiere_jax.text.encoders import load_text_encoder


class SuperResolution:
    """Holds an SSR model's weights and text encoder; `__call__(low_res, prompts)` returns high-res clips."""

    def __init__(self, graphdef: nnx.GraphDef, params: nnx.State, encoder: Any,
                 config: ml_collections.ConfigDict):
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
        config = config or load_run_config(workdir)
        run = runs.load(workdir, config, flag="--ssr_workdir")
        keys = ("text_encoder", "text_encoder_path", "text_max_length")
        if encoder is None or encoder_config is None or any(config[k] != encoder_config[k] for k in keys):
            encoder = load_text_encoder(config.text_encoder, config.text_encoder_path, config.text_max_length)
        return cls(run.graphdef, run.params, encoder, config), run.step

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
        cond, upsampled = condition_low_res(low_res, level, k_aug, resolution=self.resolution,
                                            schedule=self.schedule, method=self.config.ssr.upsample)
        options = sampling.SamplerOptions(steps=c.steps if steps is None else steps,
                                          guidance=float(c.guidance if guidance is None else guidance),
                                          sampler=sampler or c.sampler, thresholding=c.thresholding,
                                          guidance_rescale=c.guidance_rescale)
        windows = sampling.Windows(self.window, overlap=self.overlap, batch=self.window_batch) if windowed else None
        clips = sampling.generate(
            self.graphdef, self.params, sampling.Prompts(jnp.asarray(text), jnp.asarray(mask), self.null_text,
                                                         self.null_mask),
            k_sample, shape=(num_frames, self.resolution, self.resolution, 3), schedule=self.schedule,
            options=options, windows=windows, condition=sampling.Condition(cond, level))
        return np.asarray(from_residual(clips, upsampled, float(self.config.ssr.residual_scale)))


class Cascade:
    """Base text-to-video sampler followed by the SSR: prompts in, high-res clips out."""

    def __init__(self, base: sampling.TextToVideo, ssr: SuperResolution):
        if base.shape[1] != ssr.low_resolution:
            raise ValueError(f"The base model makes {base.shape[1]} px clips but the SSR model upsamples "
                             f"{ssr.low_resolution} px clips.")
        self.base, self.ssr = base, ssr

    def __call__(self, spans: Sequence[tuple[int, str]], num_frames: int | None = None, *, seed: int = 0,
                 base_steps: int = 50, guidance: float = 3.0, ssr_steps: int | None = None, sampler: str = "ddim",
                 layout: sampling.LongVideo = sampling.LongVideo()) -> tuple[np.ndarray, np.ndarray]:
        """(low-res clip [T, h, w, 3], high-res clip [T, H, W, 3]) in [-1, 1] for prompt spans (story mode).

        A long base clip is sampled as TextToVideo.long_video does (`layout`); the SSR always runs on its windows
        (its own window_batch, `SuperResolution.window_batch`).
        """
        num_frames = num_frames or self.base.shape[0]
        if num_frames == self.base.shape[0] and len(spans) == 1:
            low = self.base([spans[0][1]], seed=seed, steps=base_steps, guidance=guidance, sampler=sampler)[0]
        else:
            low = self.base.long_video(spans, num_frames, seed=seed, steps=base_steps, guidance=guidance,
                                       sampler=sampler, layout=layout)
        high = self.ssr(low[None], spans=spans, seed=seed, steps=ssr_steps, sampler=sampler)[0]
        return low, high


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
    """The config an SSR run was trained with (its config.json); one-line errors for anything else."""
    if not workdir:
        raise ValueError("--ssr_workdir is empty: give the workdir of a run trained with configs/ssr.py.")
    config = config_lib.run_config(workdir, flag="--ssr_workdir",
                                   fix="train an SSR model there first with --config=configs/ssr.py --mode=train")
    if config.get("task") != "ssr" or "ssr" not in config:
        raise ValueError(f"--ssr_workdir={workdir} is a task={config.get('task')!r} run, not a super-resolution "
                         f"run: give a workdir trained with --config=configs/ssr.py.")
    return config


def check_cascade(base_config: ml_collections.ConfigDict, ssr_workdir: str,
                  num_frames: int) -> ml_collections.ConfigDict:
    """Checks that the SSR run in ssr_workdir can upsample the base model's clips; returns its config.

    Runs before anything is restored or compiled.
    """
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
    if runs.latest_step(ssr_workdir) is None:
        raise ValueError(f"--ssr_workdir={ssr_workdir} has no checkpoint: train it first with "
                         f"--config=configs/ssr.py --mode=train --workdir={ssr_workdir}.")
    return config
