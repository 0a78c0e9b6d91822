"""Text-to-video sampling with a trained STUNet: encode prompts, run the jitted sampler, return clips."""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import Any, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from lumiere_jax import config_lib, distill, runs
from lumiere_jax.data.pipeline import NULL_CAPTION
from lumiere_jax.diffusion import multidiffusion, samplers
from lumiere_jax.diffusion.schedule import CosineSchedule
from lumiere_jax.text.encoders import load_text_encoder


@dataclasses.dataclass(frozen=True)
class SamplerOptions:
    """How a clip is denoised: DDIM or ancestral steps, classifier-free guidance, and keeping each step's clean-video
    prediction in [-1, 1] (`samplers.threshold`). Static under jit: one compile per distinct value."""

    steps: int = 50
    guidance: float = 3.0
    sampler: str = "ddim"
    thresholding: str = "static"
    guidance_rescale: float = 0.0  # samplers.rescale_guided


@dataclasses.dataclass(frozen=True)
class Windows:
    """How `generate` runs a clip longer than the model's training length `window` (static under jit).

    On overlapping windows reconciled at every step by temporal MultiDiffusion (`overlap` frames shared by
    neighbours; `weights`: each window's per-frame weight in the average, multidiffusion.WEIGHTS; `shift`: move
    the grid at every step; `batch`: windows per model call, None for all at once and k for a scan over groups of
    k, so memory stays flat as the clip grows; `frame_text`: text is [B, T, L, D], a prompt per frame that each
    window takes for its own frames), or with `whole_clip` the model on all frames at once (the STUNet is
    convolutional in time and its temporal attention takes sinusoidal frame positions, so it runs past its
    training length). `noise`: the initial noise, "independent" per frame or "repeat"
    (multidiffusion.repeated_noise: every window of `window` frames starts from the first one's frames, shuffled).
    """

    window: int
    overlap: int = 2
    weights: str = "uniform"
    shift: bool = False
    noise: str = "independent"
    batch: int | None = None
    whole_clip: bool = False
    frame_text: bool = False


@flax.struct.dataclass
class Prompts:
    """Encoded prompts and the empty prompt of classifier-free guidance.

    text [B, L, D] (mask [B, L]): a prompt per clip; [B, T, L, D]: a prompt per frame (prompts that change over
    time; a model trained on stories, data.story_fraction, follows them); on fixed windows [N, B, L, D], a prompt
    per window; on shifted windows [T, B, L, D], a prompt per frame of which each window takes its centre's.
    null_text [1, L, D], null_mask [1, L]: the empty prompt.
    """

    text: jax.Array
    mask: jax.Array
    null_text: jax.Array
    null_mask: jax.Array


@flax.struct.dataclass
class Condition:
    """The extra inputs of a conditional STUNet (SSR: the low-res clip and its noise level; masked video: [C, M]):
    cond [B, T, H, W, Cc], level [B]. They follow the windows and the guidance batch."""

    cond: jax.Array | None = None
    level: jax.Array | None = None


@flax.struct.dataclass
class Start:
    """Start from a clip x [B, T, H, W, C] noised to time t < 1 instead of from pure noise (SDEdit)."""

    x: jax.Array
    t: float | jax.Array


@flax.struct.dataclass
class LateWeights:
    """Other weights of the same model for the steps at times t <= `start` (stylized generation lets the base
    weights lay out the clip at high noise and the style weights paint the rest). One model runs per step."""

    params: nnx.State
    start: float | jax.Array


@functools.partial(jax.jit, static_argnames=("graphdef", "shape", "schedule", "options", "windows"))
def generate(graphdef: nnx.GraphDef, params: nnx.State, prompts: Prompts, rng: jax.Array, *,
             shape: tuple[int, ...], schedule: CosineSchedule, options: SamplerOptions = SamplerOptions(),
             windows: Windows | None = None, condition: Condition | None = None, start: Start | None = None,
             late: LateWeights | None = None) -> jax.Array:
    """Samples clips [B, T, H, W, C] in [-1, 1], T = shape[0]; the whole loop is one XLA program.

    windows: how a clip longer than the training length runs (None: the model on the clip as it is). The other
    groups are described at their classes. A distilled student (distill.takes_guidance) is told options.guidance
    and gives the guided prediction itself: one model call per step, no empty-caption half.
    """
    num_frames = shape[0]
    text, text_mask = prompts.text, prompts.mask
    cond = None if condition is None else condition.cond
    cond_level = None if condition is None else condition.level
    long_clip = windows is not None and windows.window < num_frames
    windowed = long_clip and not windows.whole_clip
    frame_text = windows is not None and windows.frame_text
    per_frame = text.ndim == 4 and (frame_text or not windowed)  # [B, T, L, D]: a prompt per frame
    if frame_text and text.ndim != 4:
        raise ValueError(f"Windows(frame_text=True) takes text [B, T, L, D], a prompt per frame; got {text.shape}.")
    if per_frame and text.shape[1] != num_frames:
        raise ValueError(f"Per-frame text {text.shape} must be [B, T, L, D] with T = {num_frames} frames.")
    batch = text.shape[0] if per_frame else text.shape[-3]
    guidance = float(options.guidance)

    def denoiser(model: nnx.Module) -> samplers.Denoiser:
        scale = guidance
        if distill.takes_guidance(model):  # a distilled student: the guided prediction in one call per step
            model, scale = distill.with_guidance_input(model, guidance), 1.0

        def conditioned(z, t, text, text_mask):
            # Rows of z are the batch, doubled by guidance: repeat the conditioning to match.
            reps = z.shape[0] // (cond if cond is not None else cond_level).shape[0]
            c = None if cond is None else jnp.concatenate([cond] * reps)
            lv = None if cond_level is None else jnp.concatenate([cond_level] * reps)
            return model(z, t, text, text_mask, cond=c, cond_level=lv)

        if not windowed:
            model_fn = model if cond is None and cond_level is None else conditioned
            return samplers.classifier_free_guidance(model_fn, text, text_mask, prompts.null_text, prompts.null_mask,
                                                     scale, options.guidance_rescale)
        # The conditioning is cut into windows with the clip (and repeated for guidance) by MultiDiffusion.
        frame_inputs = {} if cond is None else {"cond": cond}
        batch_inputs = {} if cond_level is None else {"cond_level": cond_level}
        return multidiffusion.multidiffusion_text(model, text, text_mask, prompts.null_text, prompts.null_mask,
                                                  scale, num_frames=num_frames, window=windows.window,
                                                  overlap=windows.overlap, weights=windows.weights,
                                                  window_batch=windows.batch, frame_inputs=frame_inputs,
                                                  batch_inputs=batch_inputs, shift=windows.shift,
                                                  frame_text=frame_text, guidance_rescale=options.guidance_rescale)

    denoise = denoiser(nnx.merge(graphdef, params))
    if late is not None:
        early, late_denoise = denoise, denoiser(nnx.merge(graphdef, late.params))

        def denoise(z: jax.Array, t: jax.Array) -> jax.Array:  # every row of t is the step's time
            return jax.lax.cond(t[0] > late.start, early, late_denoise, z, t)
    if windows is not None and windows.noise not in multidiffusion.NOISES:
        raise ValueError(f"Windows(noise={windows.noise!r}) is not one of {multidiffusion.NOISES}.")
    k_noise, k_sampler = jax.random.split(rng)
    t_start = 1.0 if start is None else start.t
    if start is None and long_clip and windows.noise == "repeat":
        z = multidiffusion.repeated_noise(k_noise, (batch,) + shape, windows.window)
    elif start is None:
        z = jax.random.normal(k_noise, (batch,) + shape, jnp.float32)
    else:
        z = samplers.noise_to(start.x.astype(jnp.float32), k_noise, schedule, t_start)
    return samplers.sample(denoise, z, k_sampler, schedule, num_steps=options.steps, sampler=options.sampler,
                           t_start=t_start, thresholding=options.thresholding)


@dataclasses.dataclass(frozen=True)
class LongVideo:
    """How `TextToVideo.long_video` samples a clip longer than the training length: config.sample's long-video keys.

    method (long_video_method): "whole" runs the model on all frames at once (several prompts: each frame its
    span's); "windows" on windows of the training length reconciled by temporal MultiDiffusion at every step;
    "auto" the whole clip for one prompt, and for several when the model was trained on stories, windows otherwise.
    With one prompt, the whole clip beats any window layout (fewer jumps, more of the prompted motion, half the
    time); a model trained on one caption per clip follows a story better on windows (docs/long_video.md).
    The window options: overlap (None: half the window, `long_video_overlap`), weights (multidiffusion.WEIGHTS;
    "triangle" trusts a window most in its middle), shift (move the grid by a pseudo-random offset at every step,
    so no frame pair is a border at every step; each window then takes its centre frame's prompt), noise ("repeat":
    every window starts from the first window's noise frames, shuffled; "independent"), window_batch (windows per
    model call; 0: all at once, k: k at a time, memory flat in the clip's length), frame_text (with several prompts
    on windows, each window reads its own frames' prompts; None: when the model was trained on stories).
    The paper's MultiDiffusion (overlap 2, a plain average) is for the SSR, whose windows the low-res clip pins; the
    base model's windows agree far better with these defaults (benchmarks/ssr_seams.py, benchmarks/ssr_story.py).
    """

    method: str = "auto"
    overlap: int | None = None
    weights: str = "triangle"
    shift: bool = True
    noise: str = "repeat"
    window_batch: int = 0
    frame_text: bool | None = None

    @classmethod
    def from_config(cls, sample: ml_collections.ConfigDict) -> "LongVideo":
        """The options of config.sample (overlap -1: half the window)."""
        return cls(method=sample.long_video, overlap=None if sample.overlap < 0 else sample.overlap,
                   weights=sample.window_weights, shift=bool(sample.shift_windows), noise=sample.window_noise,
                   window_batch=sample.window_batch)


LONG_VIDEO_METHODS = config_lib.LONG_VIDEO_METHODS


def long_video_method(method: str, num_spans: int, num_frames: int, frame_multiple: int,
                      story_trained: bool = False, window: int | None = None) -> str:
    """"whole" or "windows": how a clip of num_frames with num_spans prompts is sampled under `method`.

    A clip no longer than the training length (`window`) is one window: the whole clip, whatever `method`.
    auto: the whole clip when the U-Net can halve num_frames (a multiple of frame_multiple, 2 ** its temporal
    downsamples) and there is one prompt, or several and the model was trained on stories (story_trained);
    windows otherwise. "whole" with several prompts gives each frame its span's prompt. Raises ValueError when
    "whole" cannot run.
    """
    if method not in LONG_VIDEO_METHODS:
        raise ValueError(f"sample.long_video={method!r} is not one of {LONG_VIDEO_METHODS}.")
    if window is not None and num_frames <= window:
        return "whole"
    fits = num_frames % frame_multiple == 0
    if method == "whole" and not fits:
        lower = max(frame_multiple, num_frames // frame_multiple * frame_multiple)
        raise ValueError(f"--frames={num_frames}: this U-Net halves the clip's frames, so the whole clip must be a "
                         f"multiple of {frame_multiple} frames (e.g. {lower} or {lower + frame_multiple}); or "
                         f"--config.sample.long_video=windows.")
    if method == "windows" or not fits or (num_spans > 1 and method == "auto" and not story_trained):
        return "windows"
    return "whole"


def windows_read_frame_prompts(method: str, num_spans: int, story_trained: bool,
                               frame_text: bool | None = None) -> bool:
    """Whether the windows of a long clip sampled by `method` ("whole" or "windows") read each frame's prompt
    (generate's frame_text): for several prompts on windows, when asked (frame_text) or, by default (None), when
    the model was trained on stories, whose per-frame captions it learnt from."""
    asked = story_trained if frame_text is None else frame_text
    return bool(asked) and method == "windows" and num_spans > 1


def long_video_overlap(window: int) -> int:
    """The default overlap of the base model's long-video windows: half the window."""
    return window // 2


def prompts_per_window(spans: Sequence[tuple[int, str]], num_frames: int, window: int,
                       overlap: int) -> list[str]:
    """The prompt of each MultiDiffusion window: the span (start_frame, prompt) that holds its centre frame."""
    per_frame = prompts_per_frame(spans, num_frames)
    return [per_frame[start + window // 2] for start in multidiffusion.window_starts(num_frames, window, overlap)]


def story_spans(prompt: str, prompt_at: Sequence[str], num_frames: int) -> list[tuple[int, str]]:
    """The (start_frame, prompt) spans of a clip from --prompt and --prompt_at, or from a JSON list in --prompt.

    `prompt` either is one prompt, held from frame 0 until the first FRAME:TEXT of `prompt_at`, or is a JSON
    list: of prompts, one per equal time span (`["a red circle moving left", "a red circle moving up"]` on 32
    frames starts the second at frame 16), or of explicit spans (`[[0, "..."], [16, "..."]]`, or objects
    `{"frame": 16, "prompt": "..."}`) whose frames start at 0 and increase.
    """
    if not prompt.lstrip().startswith("["):
        return [(0, prompt)] + [_parse_prompt_at(value, num_frames) for value in prompt_at]
    if prompt_at:
        raise ValueError("--prompt is a JSON list of the story's prompts, so it cannot take --prompt_at too: put "
                         "every span in the list, e.g. [[0, \"a red circle moving left\"], [16, \"...\"]].")
    try:
        items = json.loads(prompt)
    except json.JSONDecodeError as e:
        raise ValueError(f"--prompt={prompt!r} starts with '[' but is not valid JSON ({e.msg} at character "
                         f"{e.pos}): write a list of prompts, e.g. '[\"a red circle moving left\", \"a red circle "
                         f"moving up\"]'.") from None
    if not isinstance(items, list) or not items:
        raise ValueError(f"--prompt={prompt!r}: a JSON story is a non-empty list of prompts or of [frame, prompt] "
                         f"spans.")
    if all(isinstance(item, str) for item in items):
        if len(items) > num_frames:
            raise ValueError(f"--prompt lists {len(items)} prompts for a clip of {num_frames} frames: give at most "
                             f"{num_frames} (one span each), or more --frames.")
        spans = [(i * num_frames // len(items), text) for i, text in enumerate(items)]
    else:
        spans = [_json_span(item) for item in items]
    for i, (start, text) in enumerate(spans):
        if not text.strip():
            raise ValueError(f"--prompt's story span {i} (from frame {start}) has an empty prompt.")
    starts = [start for start, _ in spans]
    if starts[0] != 0 or any(b <= a for a, b in zip(starts, starts[1:])) or starts[-1] >= num_frames:
        raise ValueError(f"--prompt's story spans start at frames {starts}: they must start at 0 and increase "
                         f"within the clip's {num_frames} frames (0..{num_frames - 1}).")
    return [(start, text.strip()) for start, text in spans]


def _json_span(item: Any) -> tuple[int, str]:
    """One explicit span of a JSON story: [frame, prompt] or {"frame": frame, "prompt": prompt}."""
    if isinstance(item, dict) and set(item) == {"frame", "prompt"}:
        item = [item["frame"], item["prompt"]]
    if (not isinstance(item, list) or len(item) != 2 or isinstance(item[0], bool) or not isinstance(item[0], int)
            or not isinstance(item[1], str)):
        raise ValueError(f"--prompt's story entry {json.dumps(item)} is not a span: write [frame, \"prompt\"] or "
                         f"{{\"frame\": 16, \"prompt\": \"...\"}} for every entry, or a list of prompts only.")
    return item[0], item[1]


def _parse_prompt_at(value: str, num_frames: int) -> tuple[int, str]:
    """FRAME:TEXT, a prompt from FRAME on (frames 1..num_frames - 1; frame 0 is --prompt's)."""
    frame, sep, text = value.partition(":")
    if not sep or not frame.strip().isdigit() or not text.strip():
        raise ValueError(f"--prompt_at={value!r}: write FRAME:TEXT, e.g. --prompt_at='32:a red circle moving up'.")
    if not 0 < int(frame) < num_frames:
        raise ValueError(f"--prompt_at starts at frame {int(frame)}, outside the clip's frames 1..{num_frames - 1}.")
    return int(frame), text.strip()


def prompts_per_frame(spans: Sequence[tuple[int, str]], num_frames: int) -> list[str]:
    """The prompt of each frame: that of the span (start_frame, prompt) holding it (shifted windows use it)."""
    spans = sorted(spans)
    if not spans or spans[0][0] != 0:
        raise ValueError(f"Prompt spans {spans} must start at frame 0: give --prompt (from frame 0) and "
                         f"--prompt_at=FRAME:TEXT for later spans.")
    for start, _ in spans:
        if not 0 <= start < num_frames:
            raise ValueError(f"A prompt span starts at frame {start}, outside the clip's {num_frames} frames.")
    return [[p for s, p in spans if s <= frame][-1] for frame in range(num_frames)]


class TextToVideo:
    """Holds a model's weights and text encoder; `__call__(prompts)` returns uint8-ready clips in [-1, 1]."""

    def __init__(self, graphdef: nnx.GraphDef, params: nnx.State, encoder: Any, schedule: CosineSchedule, *,
                 num_frames: int, resolution: int, channels: int = 3, thresholding: str = "static",
                 guidance_rescale: float = 0.0):
        if thresholding not in samplers.THRESHOLDING:
            raise ValueError(f"sample.thresholding={thresholding!r} is not one of {samplers.THRESHOLDING}.")
        self.graphdef, self.params, self.encoder, self.schedule = graphdef, params, encoder, schedule
        self.thresholding, self.guidance_rescale = thresholding, float(guidance_rescale)
        self.shape = (num_frames, resolution, resolution, channels)
        # Weights for the low-noise steps (None: params at every step); see `LateWeights`.
        self.late: LateWeights | None = None
        # Clip lengths the model takes at once are multiples of this (2 ** its temporal downsamples).
        cfg = getattr(nnx.merge(graphdef, params), "cfg", None)
        self.frame_multiple = cfg.frame_multiple if cfg is not None else 1
        # Trained on clips whose caption changes mid-clip (data.story_fraction): stories then run on the whole
        # clip with a prompt per frame under sample.long_video="auto" (long_video_method).
        self.story_trained = False
        # What a distilled run learned (distill.Distilled): requests for other step counts or guidance weights are
        # refused before they compile. None: any.
        self.distilled: distill.Distilled | None = None
        null_text, null_mask = encoder.encode([NULL_CAPTION])
        self.null_text, self.null_mask = jnp.asarray(null_text), jnp.asarray(null_mask)

    def prompts(self, text: np.ndarray | jax.Array, mask: np.ndarray | jax.Array) -> Prompts:
        """Encoded prompts with this model's empty prompt, as `generate` takes them."""
        return Prompts(jnp.asarray(text), jnp.asarray(mask), self.null_text, self.null_mask)

    def options(self, steps: int, guidance: float, sampler: str) -> SamplerOptions:
        if self.distilled is not None:
            distill.check_request(self.distilled, steps, guidance, self.guidance_rescale)
        return SamplerOptions(steps=int(steps), guidance=float(guidance), sampler=sampler,
                              thresholding=self.thresholding, guidance_rescale=self.guidance_rescale)

    def __call__(self, prompts: Sequence[str], *, seed: int = 0, steps: int = 50, guidance: float = 3.0,
                 sampler: str = "ddim", batch_size: int | None = None) -> np.ndarray:
        """Clips [N, T, H, W, C] in [-1, 1]; runs in batches of `batch_size` (one compile per batch size)."""
        if not prompts:
            raise ValueError("No prompts given: pass at least one --prompt.")
        text, mask = self.encoder.encode(list(prompts))
        batch_size = batch_size or len(prompts)
        out = []
        for i, start in enumerate(range(0, len(prompts), batch_size)):
            t, m = text[start:start + batch_size], mask[start:start + batch_size]
            n = t.shape[0]
            if n < batch_size:  # pad the last batch so it reuses the compiled program
                t = np.concatenate([t, np.repeat(t[-1:], batch_size - n, 0)])
                m = np.concatenate([m, np.repeat(m[-1:], batch_size - n, 0)])
            rng = jax.random.fold_in(jax.random.key(seed), i)
            clips = generate(self.graphdef, self.params, self.prompts(t, m), rng, shape=self.shape,
                             schedule=self.schedule, options=self.options(steps, guidance, sampler), late=self.late)
            out.append(np.asarray(clips)[:n])
        return np.concatenate(out)

    def _encode_per_frame(self, spans: Sequence[tuple[int, str]], num_frames: int) -> tuple[np.ndarray, np.ndarray]:
        """Each frame's prompt encoded, [T, L, D] and [T, L] (each distinct prompt encoded once)."""
        per_frame = prompts_per_frame(spans, num_frames)
        unique = sorted(set(per_frame), key=per_frame.index)
        text, mask = self.encoder.encode(unique)  # [P, L, D], [P, L]
        index = np.asarray([unique.index(p) for p in per_frame])
        return text[index], mask[index]

    def long_video_text(self, spans: Sequence[tuple[int, str]], num_frames: int, *, whole: bool, frame_text: bool,
                        shift: bool, overlap: int, batch: int = 1) -> tuple[jax.Array, jax.Array]:
        """The prompts of `spans` for `batch` clips of num_frames, in the layout `generate` takes for that layout:
        one prompt on the whole clip [B, L, D]; a prompt per frame [B, T, L, D] on the whole clip or on windows that
        read each frame's (frame_text); per frame [T, B, L, D] for shifted windows (their centre frame's); per
        window [N, B, L, D] on the fixed grid. Masks match without the last axis."""
        if whole and len(spans) == 1:  # [L, D]
            text, mask = (a[0] for a in self.encoder.encode(prompts_per_frame(spans, num_frames)[:1]))
        elif whole or frame_text or shift:  # [T, L, D]
            text, mask = self._encode_per_frame(spans, num_frames)
        else:  # [N, L, D]
            text, mask = self.encoder.encode(prompts_per_window(spans, num_frames, self.shape[0], overlap))
        axis = 0 if whole or frame_text else 1  # where the clips go: first, or after the frames / windows

        def stack(a: np.ndarray) -> jax.Array:
            a = jnp.expand_dims(jnp.asarray(a), axis)
            return jnp.broadcast_to(a, a.shape[:axis] + (batch,) + a.shape[axis + 1:])

        return stack(text), stack(mask)

    def long_video(self, spans: Sequence[tuple[int, str]], num_frames: int, *, seed: int = 0, steps: int = 50,
                   guidance: float = 3.0, sampler: str = "ddim", layout: LongVideo = LongVideo()) -> np.ndarray:
        """One clip [T, H, W, C] in [-1, 1] longer than the training length, a prompt per time span.

        spans: (start_frame, prompt) pairs; layout: how the clip runs (LongVideo: the whole clip or windows).
        """
        window = self.shape[0]
        if num_frames < window:
            raise ValueError(f"--frames={num_frames} is shorter than the model's {window}-frame window: use "
                             f"--frames >= {window}.")
        whole = long_video_method(layout.method, len(spans), num_frames, self.frame_multiple, self.story_trained,
                                  window) == "whole"
        overlap = long_video_overlap(window) if layout.overlap is None else layout.overlap
        frame_text = windows_read_frame_prompts("whole" if whole else "windows", len(spans), self.story_trained,
                                                layout.frame_text)
        text, mask = self.long_video_text(spans, num_frames, whole=whole, frame_text=frame_text,
                                          shift=bool(layout.shift), overlap=overlap)
        windows = Windows(window=window, overlap=overlap, weights=layout.weights, shift=bool(layout.shift),
                          noise=layout.noise, batch=layout.window_batch or None, whole_clip=whole,
                          frame_text=frame_text)
        clip = generate(self.graphdef, self.params, self.prompts(text, mask), jax.random.key(seed),
                        shape=(num_frames,) + self.shape[1:], schedule=self.schedule,
                        options=self.options(steps, guidance, sampler), windows=windows, late=self.late)
        return np.asarray(clip)[0]

    @classmethod
    def from_run(cls, run: runs.Run, encoder: Any = None) -> "TextToVideo":
        """The sampler of a loaded run (runs.load), with its text encoder (loaded from its config if not given)."""
        config = run.config
        if encoder is None:
            encoder = load_text_encoder(config.text_encoder, config.text_encoder_path, config.text_max_length)
        t2v = cls(run.graphdef, run.params, encoder, run.schedule, num_frames=config.data.num_frames,
                  resolution=config.data.resolution, channels=config.model.out_channels,
                  thresholding=config.sample.thresholding, guidance_rescale=config.sample.guidance_rescale)
        t2v.story_trained = run.story_trained
        t2v.distilled = distill.distilled_for(run.workdir)
        return t2v


def load_text_to_video(config: ml_collections.ConfigDict | None, workdir: str,
                       step: int | None = None) -> tuple[TextToVideo, int]:
    """The sampler of a run's checkpoint (newest by default): its EMA weights on one device, and the step."""
    run = runs.load(workdir, config, step=step)
    return TextToVideo.from_run(run), run.step
