"""Text-to-video sampling with a trained STUNet: encode prompts, run the jitted sampler, return clips."""

from __future__ import annotations

import functools
import json
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lumiere_jax.data.pipeline import NULL_CAPTION
from lumiere_jax.diffusion import multidiffusion, samplers
from lumiere_jax.diffusion.schedule import CosineSchedule


@functools.partial(jax.jit, static_argnames=("graphdef", "shape", "schedule", "steps", "guidance", "sampler",
                                             "window", "overlap", "window_weights", "window_batch",
                                             "thresholding", "window_shift", "window_noise", "whole_clip",
                                             "frame_text"))
def generate(graphdef: nnx.GraphDef, params: nnx.State, text: jax.Array, text_mask: jax.Array,
             null_text: jax.Array, null_mask: jax.Array, rng: jax.Array, *, shape: tuple[int, ...],
             schedule: CosineSchedule, steps: int, guidance: float, sampler: str, window: int | None = None,
             overlap: int = 2, cond: jax.Array | None = None, cond_level: jax.Array | None = None,
             x_init: jax.Array | None = None, t_start: float | jax.Array = 1.0,
             window_batch: int | None = None, thresholding: str = "static",
             window_weights: str = "uniform", window_shift: bool = False,
             window_noise: str = "independent", late_params: nnx.State | None = None,
             late_from: float | jax.Array = 1.0, whole_clip: bool = False, frame_text: bool = False) -> jax.Array:
    """Samples clips [B, T, H, W, C] in [-1, 1]; the whole loop is one XLA program.

    text is [B, L, D], or [B, T, L, D] for a prompt per frame (prompts that change over time) in one model
    call (`models/stunet.py`; a model trained on stories, data.story_fraction, follows them). With `window`
    shorter than the clip (T = shape[0]) the model runs on overlapping windows reconciled by temporal
    MultiDiffusion, and text may be [N, B, L, D]: one prompt per window; or, with frame_text, [B, T, L, D]: a
    prompt per frame that every window takes for its own frames (multidiffusion_text).
    cond [B, T, H, W, Cc] / cond_level [B]: the conditioning inputs of a conditional STUNet (SSR, masked
    video); they follow the windows and the guidance batch. x_init [B, T, H, W, C] with t_start < 1
    starts from x_init noised to t_start instead of from pure noise (SDEdit). window_batch: windows per
    model call (None: all at once; k: a scan over groups of k, so memory stays flat as the clip grows).
    window_weights: each window's per-frame weight in the reconciliation (multidiffusion.WEIGHTS).
    window_shift: move the window grid at every step (multidiffusion, shift=True); text may then be
    [T, B, L, D], one prompt per frame, instead of one per window.
    window_noise: the initial noise of a windowed clip: "independent" per frame, or "repeat"
    (multidiffusion.repeated_noise: every window starts from the first window's noise frames, shuffled).
    whole_clip: run the model on all T frames at once even when T > window (text [B, L, D] or [B, T, L, D]); the
    STUNet is convolutional in time and its temporal attention takes sinusoidal frame positions, so it runs past
    its training length. `window` (the training length) then only sets the period of repeated noise.
    thresholding: how each step's clean-video prediction is kept in [-1, 1] (`samplers.threshold`).
    late_params: other weights of the same model for the steps at times t <= late_from (the others use
    params); stylized generation lets the base weights lay out the clip at high noise and the style weights
    paint the rest (applications.apply_style). One of the two models runs per step (lax.cond).
    """
    num_frames = shape[0]
    long_clip = window is not None and window < num_frames
    windowed = long_clip and not whole_clip
    per_frame = text.ndim == 4 and (frame_text or not windowed)  # [B, T, L, D]: a prompt per frame
    if frame_text and text.ndim != 4:
        raise ValueError(f"frame_text=True takes text [B, T, L, D], a prompt per frame; got {text.shape}.")
    if per_frame and text.shape[1] != num_frames:
        raise ValueError(f"Per-frame text {text.shape} must be [B, T, L, D] with T = {num_frames} frames.")
    batch = text.shape[0] if per_frame else text.shape[-3]

    def denoiser(model: nnx.Module) -> samplers.Denoiser:
        def conditioned(z, t, text, text_mask):
            # Rows of z are the batch, doubled by guidance: repeat the conditioning to match.
            reps = z.shape[0] // (cond if cond is not None else cond_level).shape[0]
            c = None if cond is None else jnp.concatenate([cond] * reps)
            lv = None if cond_level is None else jnp.concatenate([cond_level] * reps)
            return model(z, t, text, text_mask, cond=c, cond_level=lv)

        if not windowed:
            model_fn = model if cond is None and cond_level is None else conditioned
            return samplers.classifier_free_guidance(model_fn, text, text_mask, null_text, null_mask, guidance)
        # The conditioning is cut into windows with the clip (and repeated for guidance) by MultiDiffusion.
        frame_inputs = {} if cond is None else {"cond": cond}
        batch_inputs = {} if cond_level is None else {"cond_level": cond_level}
        return multidiffusion.multidiffusion_text(model, text, text_mask, null_text, null_mask, guidance,
                                                  num_frames=num_frames, window=window, overlap=overlap,
                                                  weights=window_weights, window_batch=window_batch,
                                                  frame_inputs=frame_inputs, batch_inputs=batch_inputs,
                                                  shift=window_shift, frame_text=frame_text)

    denoise = denoiser(nnx.merge(graphdef, params))
    if late_params is not None:
        early, late = denoise, denoiser(nnx.merge(graphdef, late_params))

        def denoise(z: jax.Array, t: jax.Array) -> jax.Array:  # every row of t is the step's time
            return jax.lax.cond(t[0] > late_from, early, late, z, t)
    if window_noise not in multidiffusion.NOISES:
        raise ValueError(f"window_noise={window_noise!r} is not one of {multidiffusion.NOISES}.")
    k_noise, k_sampler = jax.random.split(rng)
    if x_init is None and long_clip and window_noise == "repeat":
        z = multidiffusion.repeated_noise(k_noise, (batch,) + shape, window)
    elif x_init is None:
        z = jax.random.normal(k_noise, (batch,) + shape, jnp.float32)
    else:
        z = samplers.noise_to(x_init.astype(jnp.float32), k_noise, schedule, t_start)
    return samplers.sample(denoise, z, k_sampler, schedule, num_steps=steps, sampler=sampler, t_start=t_start,
                           thresholding=thresholding)


# Long videos from the base model: the paper's MultiDiffusion (overlap 2, a plain average) is for the SSR, whose
# windows the low-res clip pins; the base model's windows agree far better with half-window overlaps and a
# triangle ramp, and its object jumps less still when the window grid moves at every step and every window
# starts from the same (shuffled) noise frames (measured in benchmarks/ssr_seams.py and ssr_story.py, docs/ssr.md).
LONG_VIDEO_WEIGHTS = "triangle"
LONG_VIDEO_SHIFT = True
LONG_VIDEO_NOISE = "repeat"
# With one prompt, the model run on the whole long clip at once (Lumiere's own way, past its training length)
# beats any window layout: fewer jumps, more of the prompted motion, half the time (docs/ssr.md). Prompts that
# change over time go to the whole clip too (a prompt per frame) when the model was trained on stories
# (data.story_fraction > 0); a model trained on one caption per clip follows them better on windows.
LONG_VIDEO_METHODS = ("auto", "whole", "windows")
LONG_VIDEO_METHOD = "auto"


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
        raise ValueError(f"--long_video={method!r} is not one of {LONG_VIDEO_METHODS}.")
    if window is not None and num_frames <= window:
        return "whole"
    fits = num_frames % frame_multiple == 0
    if method == "whole" and not fits:
        lower = max(frame_multiple, num_frames // frame_multiple * frame_multiple)
        raise ValueError(f"--frames={num_frames}: this U-Net halves the clip's frames, so the whole clip must be a "
                         f"multiple of {frame_multiple} frames (e.g. {lower} or {lower + frame_multiple}); or "
                         f"--long_video=windows.")
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
                 num_frames: int, resolution: int, channels: int = 3, thresholding: str = "static"):
        if thresholding not in samplers.THRESHOLDING:
            raise ValueError(f"sample.thresholding={thresholding!r} is not one of {samplers.THRESHOLDING}.")
        self.graphdef, self.params, self.encoder, self.schedule = graphdef, params, encoder, schedule
        self.thresholding = thresholding
        self.shape = (num_frames, resolution, resolution, channels)
        # Weights for the low-noise steps t <= late_from (None: params at every step); see `generate`.
        self.late_params: nnx.State | None = None
        self.late_from = 1.0
        # Clip lengths the model takes at once are multiples of this (2 ** its temporal downsamples).
        cfg = getattr(nnx.merge(graphdef, params), "cfg", None)
        self.frame_multiple = cfg.frame_multiple if cfg is not None else 1
        # Trained on clips whose caption changes mid-clip (data.story_fraction): stories then run on the whole
        # clip with a prompt per frame under --long_video=auto (long_video_method).
        self.story_trained = False
        null_text, null_mask = encoder.encode([NULL_CAPTION])
        self.null_text, self.null_mask = jnp.asarray(null_text), jnp.asarray(null_mask)

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
            clips = generate(self.graphdef, self.params, jnp.asarray(t), jnp.asarray(m), self.null_text,
                             self.null_mask, rng, shape=self.shape, schedule=self.schedule, steps=steps,
                             guidance=float(guidance), sampler=sampler, thresholding=self.thresholding,
                             late_params=self.late_params, late_from=self.late_from)
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
                   guidance: float = 3.0, sampler: str = "ddim", overlap: int | None = None,
                   window_weights: str = LONG_VIDEO_WEIGHTS, shift: bool = LONG_VIDEO_SHIFT,
                   noise: str = LONG_VIDEO_NOISE, method: str = LONG_VIDEO_METHOD,
                   window_batch: int | None = None, frame_text: bool | None = None) -> np.ndarray:
        """One clip [T, H, W, C] in [-1, 1] longer than the training length, a prompt per time span.

        spans: (start_frame, prompt) pairs. method (long_video_method): "whole" runs the model on all frames at
        once (several prompts: each frame its span's); "windows" on windows of its training length, reconciled
        by temporal MultiDiffusion at every step, so neighbouring windows (and prompts) blend without seams;
        "auto" (default) the whole clip for one prompt, and for several when the model was trained on stories
        (story_trained), windows otherwise. The window options below apply to windows only.
        overlap defaults to half the window (long_video_overlap) with triangle weights: on the tiny motion
        model that halves the object jumps of the paper's overlap 2 with a plain average (docs/ssr.md).
        shift (default) moves the window grid at every step, so no frame pair is a border at every step;
        each window then takes the prompt of its centre frame at that step. noise="repeat" (default) starts every
        window from the first window's noise frames, shuffled (multidiffusion.repeated_noise; docs/ssr.md);
        "independent" draws every frame's noise on its own. window_batch: windows per model call (None: all at
        once; k: k at a time, so memory stays flat as the clip grows).
        frame_text: with several prompts on windows, every window takes its own frames' prompts (a window across a
        change of prompt sees it where it happens) instead of one prompt per window (its centre frame's). None
        (default): when the model was trained on stories, as those are the captions it learnt from.
        """
        window = self.shape[0]
        if num_frames < window:
            raise ValueError(f"--frames={num_frames} is shorter than the model's {window}-frame window: use "
                             f"--frames >= {window}.")
        whole = long_video_method(method, len(spans), num_frames, self.frame_multiple, self.story_trained,
                                  window) == "whole"
        overlap = long_video_overlap(window) if overlap is None else overlap
        frame_text = windows_read_frame_prompts("whole" if whole else "windows", len(spans), self.story_trained,
                                                frame_text)
        text, mask = self.long_video_text(spans, num_frames, whole=whole, frame_text=frame_text, shift=bool(shift),
                                          overlap=overlap)
        clip = generate(self.graphdef, self.params, text, mask,
                        self.null_text, self.null_mask, jax.random.key(seed),
                        shape=(num_frames,) + self.shape[1:], schedule=self.schedule, steps=steps,
                        guidance=float(guidance), sampler=sampler, window=window, overlap=overlap,
                        window_weights=window_weights, window_shift=bool(shift), window_noise=noise,
                        window_batch=window_batch or None, whole_clip=whole, frame_text=frame_text,
                        thresholding=self.thresholding,
                        late_params=self.late_params, late_from=self.late_from)
        return np.asarray(clip)[0]


def load_text_to_video(config: Any, workdir: str, step: int | None = None) -> tuple[TextToVideo, int]:
    """The sampler of a run's checkpoint (newest by default): its EMA weights on one device, and the step."""
    from lumiere_jax import checkpointing
    from lumiere_jax.state import abstract_graphdef_and_state, schedule_from, trained_on_stories
    from lumiere_jax.text.encoders import load_text_encoder

    graphdef, abstract = abstract_graphdef_and_state(config, workdir)
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    state, _ = checkpointing.Checkpointer(workdir, read_only=True).restore(
        checkpointing.with_shardings(abstract, sharding), step)
    encoder = load_text_encoder(config.text_encoder, config.text_encoder_path, config.text_max_length)
    t2v = TextToVideo(graphdef, state.ema, encoder, schedule_from(config, workdir), num_frames=config.data.num_frames,
                      resolution=config.data.resolution, channels=config.model.out_channels,
                      thresholding=config.sample.thresholding)
    t2v.story_trained = trained_on_stories(workdir)
    return t2v, int(state.step)
