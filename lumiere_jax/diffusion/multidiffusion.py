"""Temporal MultiDiffusion (Bar-Tal et al. 2023): runs a fixed-length video model on overlapping windows.

At every denoising step each window of the clip is denoised and the full clip's prediction is the
least-squares reconciliation of the window predictions, argmin_J sum_i ||F_i(J) - Phi(J_i)||^2, which
for temporal crops is the per-frame weighted average of the windows that cover the frame. The samplers'
updates are linear in the v prediction, so reconciling v is the same as reconciling the next state.

Batch layout: the wrapped denoiser sees all N windows of all B examples in one call, window-major, so
row n * B + b is window n of example b. Per-window conditioning follows the same layout:
`split_windows` for arrays with a frame axis, `text.reshape(N * B, ...)` for text [N, B, L, D].
With `window_batch=k` the windows go through the model k at a time inside a lax.scan instead (same
layout within a call), so the model's memory stays flat however long the clip is.

Shifted windows (`shift=True`, beyond the paper): the window grid moves by a pseudo-random offset at every
denoising step (`step_offset`, a function of t, so sampling stays deterministic), so no frame pair is a
window border at every step and the disagreements that fixed borders accumulate are averaged away. The
layout has one window more than the fixed one (`shifted_window_starts`); per-window conditioning then
comes per frame, [T, B, ...], and each window takes the entry of its centre frame.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lumiere_jax.diffusion.samplers import Denoiser, classifier_free_guidance

WEIGHTS = ("uniform", "triangle")


def window_starts(num_frames: int, window: int, overlap: int) -> list[int]:
    """First frames of `window`-frame windows that cover the clip, neighbours sharing at least `overlap` frames.

    Windows step by window - overlap; if they do not tile the clip exactly, the last one is moved back to
    end at the last frame, so every window has full length (the model always sees its training length).
    """
    if window < 1 or num_frames < 1:
        raise ValueError(f"window={window} and num_frames={num_frames} must both be at least 1.")
    if window > num_frames:
        raise ValueError(f"window={window} is longer than the clip (num_frames={num_frames}): use "
                         f"window <= num_frames (window == num_frames runs the model on the whole clip).")
    if not 0 <= overlap < window:
        raise ValueError(f"overlap={overlap} must satisfy 0 <= overlap < window={window}: the paper uses "
                         f"overlap=2.")
    starts = list(range(0, num_frames - window + 1, window - overlap))
    if starts[-1] + window < num_frames:
        starts.append(num_frames - window)
    return starts


def window_weights(window: int, weights: str | np.ndarray) -> np.ndarray:
    """Per-frame weights [window] or [N, window] of a window's prediction in the reconciliation.

    "uniform" is the paper's plain average; "triangle" is a linear ramp, highest in the middle, so a frame
    trusts the window in which it has the most temporal context. Both stay > 0 so no frame is dropped.
    """
    if isinstance(weights, str):
        if weights == "uniform":
            return np.ones(window, np.float32)
        if weights == "triangle":
            ramp = np.arange(window)
            return np.minimum(ramp + 1, window - ramp).astype(np.float32)
        raise ValueError(f"weights={weights!r} is not one of {WEIGHTS} (or an array [window]).")
    weights = np.asarray(weights, np.float32)
    if weights.shape[-1] != window or weights.ndim > 2 or np.any(weights < 0):
        raise ValueError(f"weights of shape {weights.shape} must be non-negative with shape [window={window}] "
                         f"or [num_windows, {window}].")
    return weights


def num_shifted_windows(num_frames: int, window: int, overlap: int) -> int:
    """Windows of the shifted layout: enough to cover the clip from any offset (one more than the fixed)."""
    window_starts(num_frames, window, overlap)  # validates
    return -(-(num_frames - window) // (window - overlap)) + 2


def shifted_window_starts(num_frames: int, window: int, overlap: int,
                          offset: int | jax.Array) -> tuple[jax.Array, jax.Array]:
    """(starts [M] int32, keep [M] float32) of the window grid moved `offset` frames (0 <= offset < stride).

    Window j starts at offset + (j - 1) * stride, clipped into the clip, stride = window - overlap; the first
    and last windows are pinned to the clip's ends and a window that repeats its predecessor's start gets
    keep 0 (it would count twice in the average). Neighbours share at least `overlap` frames; offset 0 gives
    window_starts' windows when they tile the clip exactly. M is static, the starts may be traced.
    """
    m, stride = num_shifted_windows(num_frames, window, overlap), window - overlap
    starts = jnp.clip(offset + (jnp.arange(m) - 1) * stride, 0, num_frames - window).astype(jnp.int32)
    keep = jnp.concatenate([jnp.ones((1,), jnp.float32), (starts[1:] != starts[:-1]).astype(jnp.float32)])
    return starts, keep


def step_offset(t: jax.Array, stride: int) -> jax.Array:
    """The shifted grid's offset at diffusion time t (a scalar): uniform in [0, stride), a fixed function of t.

    Derived from t's bits rather than a step counter, so any sampler's loop (DDIM, ancestral, SDEdit's
    shorter one) gets a different layout at each of its steps and the same layout for the same t.
    """
    bits = jax.lax.bitcast_convert_type(jnp.asarray(t, jnp.float32), jnp.int32)
    return jax.random.randint(jax.random.fold_in(jax.random.key(0x5EED), bits), (), 0, stride)


NOISES = ("independent", "repeat")  # initial noise of a long clip (repeated_noise)


def repeated_noise(key: jax.Array, shape: tuple[int, ...], window: int) -> jax.Array:
    """Initial noise [B, T, ...] whose every later block of `window` frames is the first window's, shuffled.

    As FreeNoise (Qiu et al. 2023) does for long videos: all windows start from the same frames of noise, in
    another order, so they tend to agree on where the object is, while the order keeps them from repeating
    one clip. A last block shorter than the window takes the first frames of its shuffle.
    """
    b, num_frames = shape[:2]
    first = jax.random.normal(jax.random.fold_in(key, 0), (b, window) + tuple(shape[2:]), jnp.float32)
    blocks = [first]
    for i in range(1, -(-num_frames // window)):
        blocks.append(first[:, jax.random.permutation(jax.random.fold_in(key, i), window)])
    return jnp.concatenate(blocks, axis=1)[:, :num_frames]


def split_windows(x: jax.Array, starts: Sequence[int], window: int) -> jax.Array:
    """Cuts [B, T, ...] into windows stacked window-major on the batch axis: [N * B, window, ...]."""
    return jnp.concatenate([x[:, s:s + window] for s in starts])


def reconcile(predictions: jax.Array, starts: Sequence[int], num_frames: int,
              weights: str | np.ndarray = "uniform") -> jax.Array:
    """The MultiDiffusion rule: predictions [N, B, window, ...] -> per-frame weighted average [B, T, ...].

    `weights` is a name from WEIGHTS or an array [window] (shared) or [N, window] (per window).
    """
    n, b, window = predictions.shape[:3]
    w = window_weights(window, weights)
    if len(starts) != n or w.ndim == 2 and w.shape[0] != n:
        raise ValueError(f"predictions for {n} windows, weights {w.shape} and starts={list(starts)} disagree "
                         f"on the number of windows.")
    w = np.broadcast_to(w, (n, window))  # [N, window], static
    frames = np.asarray(starts)[:, None] + np.arange(window)  # [N, window]
    norm = np.zeros(num_frames, np.float32)  # [T] sum of weights per frame
    in_clip = frames.min() >= 0 and frames.max() < num_frames
    if in_clip:
        np.add.at(norm, frames.ravel(), w.ravel())
    if not in_clip or np.any(norm <= 0):
        raise ValueError(f"Windows at starts={list(starts)} of length {window} must cover each of "
                         f"num_frames={num_frames} frames with positive weight; use window_starts().")
    trailing = (1,) * (predictions.ndim - 3)
    weighted = predictions * jnp.asarray(w, predictions.dtype).reshape(n, 1, window, *trailing)
    weighted = jnp.moveaxis(weighted, 0, 1).reshape(b, n * window, *predictions.shape[3:])  # [B, N * window, ...]
    total = jnp.zeros((b, num_frames) + predictions.shape[3:], predictions.dtype).at[:, frames.ravel()].add(weighted)
    return total / jnp.asarray(norm, predictions.dtype).reshape(1, num_frames, *trailing)  # [B, T, ...]


def multidiffusion(denoise_window: Callable[..., jax.Array], *, num_frames: int, window: int, overlap: int = 2,
                   weights: str | np.ndarray = "uniform", window_batch: int | None = None,
                   frame_inputs: dict[str, jax.Array] | None = None,
                   window_inputs: dict[str, jax.Array] | None = None, shift: bool = False,
                   centre_inputs: dict[str, jax.Array] | None = None) -> Denoiser:
    """Turns a denoiser of `window`-frame clips into one of `num_frames`-frame clips.

    denoise_window gets windows stacked on the batch axis, z [rows, window, H, W, C] and t [rows], rows
    window-major (module docstring), and returns v of the same shape. With inputs it is called as
    denoise_window(z, t, inputs), where inputs holds, for the same rows, the windows of each `frame_inputs`
    array [B, T, ...] (e.g. SSR's upsampled low-res clip) and the rows of each `window_inputs` array
    [N * B, ...] (e.g. one prompt per window).

    window_batch: windows per model call. None: all N windows in one call (fastest; the model's
    activation memory grows with N). k: a lax.scan over ceil(N / k) calls of k windows each that
    accumulates the weighted sum, so activation memory is that of k windows whatever the clip length.

    shift: move the window grid at every step (module docstring); weights must then be a name or one
    [window] array, and per-window inputs come as `centre_inputs` [T, B, ...] (row j of window n is
    a[centre frame of n, j]) instead of `window_inputs`.
    """
    starts = window_starts(num_frames, window, overlap)
    n = len(starts)
    frame_inputs, window_inputs = dict(frame_inputs or {}), dict(window_inputs or {})
    centre_inputs = dict(centre_inputs or {})
    with_inputs = bool(frame_inputs or window_inputs or centre_inputs)
    if window_batch is not None and window_batch < 1:
        raise ValueError(f"window_batch={window_batch} must be at least 1 (or None: all windows in one call).")
    for name, a in centre_inputs.items():
        if a.shape[0] != num_frames:
            raise ValueError(f"centre_inputs[{name!r}] has {a.shape[0]} entries; expected one per frame "
                             f"(num_frames={num_frames}), shape [T, B, ...].")

    def call(z: jax.Array, t: jax.Array, inputs: dict[str, jax.Array]) -> jax.Array:
        return denoise_window(z, t, inputs) if with_inputs else denoise_window(z, t)

    if shift:
        if window_inputs:
            raise ValueError("With shift=True windows move every step: give per-window inputs as centre_inputs "
                             "[T, B, ...] (each window takes its centre frame's entry), not window_inputs.")
        return _shifted(call, num_frames, window, overlap, weights, window_batch, frame_inputs, centre_inputs)
    if centre_inputs:
        raise ValueError("centre_inputs are for shift=True; with fixed windows pass window_inputs [N * B, ...].")
    for name, a in window_inputs.items():
        if a.shape[0] % n:
            raise ValueError(f"window_inputs[{name!r}] has {a.shape[0]} rows; expected N * B with N={n} windows.")
    w = np.broadcast_to(window_weights(window, weights), (n, window))  # [N, window], static
    norm = np.zeros(num_frames, np.float32)
    np.add.at(norm, (np.asarray(starts)[:, None] + np.arange(window)).ravel(), w.ravel())
    if np.any(norm <= 0):
        raise ValueError(f"Windows at starts={list(starts)} of length {window} must cover each of "
                         f"num_frames={num_frames} frames with positive weight.")

    def denoise(z: jax.Array, t: jax.Array) -> jax.Array:
        if z.shape[1] != num_frames:
            raise ValueError(f"z has {z.shape[1]} frames but this MultiDiffusion denoiser was built for "
                             f"num_frames={num_frames}.")
        b = z.shape[0]
        if window_batch is None or window_batch >= n:
            inputs = {k: split_windows(a, starts, window) for k, a in frame_inputs.items()}
            v = call(split_windows(z, starts, window), jnp.tile(t, n), {**inputs, **window_inputs})
            return reconcile(v.reshape((n, b) + v.shape[1:]), starts, num_frames, weights)
        return _chunked(call, z, t, jnp.asarray(starts, jnp.int32), jnp.asarray(w), window_batch, frame_inputs,
                        window_inputs, {})

    return denoise


def _shifted(call: Callable[..., jax.Array], num_frames: int, window: int, overlap: int,
             weights: str | np.ndarray, window_batch: int | None, frame_inputs: dict[str, jax.Array],
             centre_inputs: dict[str, jax.Array]) -> Denoiser:
    """multidiffusion with the window grid moved by step_offset(t) at every step."""
    w = window_weights(window, weights)
    if w.ndim != 1:
        raise ValueError(f"With shift=True the weights must be one [window={window}] profile for every "
                         f"window, not per-window weights {w.shape}.")
    m, stride = num_shifted_windows(num_frames, window, overlap), window - overlap

    def denoise(z: jax.Array, t: jax.Array) -> jax.Array:
        if z.shape[1] != num_frames:
            raise ValueError(f"z has {z.shape[1]} frames but this MultiDiffusion denoiser was built for "
                             f"num_frames={num_frames}.")
        starts, keep = shifted_window_starts(num_frames, window, overlap, step_offset(t[0], stride))
        k = m if window_batch is None else min(window_batch, m)
        return _chunked(call, z, t, starts, keep[:, None] * jnp.asarray(w), k, frame_inputs, {}, centre_inputs)

    return denoise


def _chunked(call: Callable[..., jax.Array], z: jax.Array, t: jax.Array, starts: jax.Array, w: jax.Array, k: int,
             frame_inputs: dict[str, jax.Array], window_inputs: dict[str, jax.Array],
             centre_inputs: dict[str, jax.Array]) -> jax.Array:
    """multidiffusion's rule computed k windows at a time inside a lax.scan (same result, flat memory).

    starts [N] and weights w [N, window] may be traced (the shifted layout); every frame must be covered with
    positive weight (the callers ensure it). window_inputs are rows [N * B, ...] per window, centre_inputs
    [T, B, ...] per frame (a window takes its centre frame's).
    """
    n, b, num_frames = starts.shape[0], z.shape[0], z.shape[1]
    window = w.shape[1]
    norm = jnp.zeros(num_frames, jnp.float32).at[(starts[:, None] + jnp.arange(window)).ravel()].add(w.ravel())
    chunks = -(-n // k)
    pad = chunks * k - n  # padding windows repeat the last one at weight 0
    s = jnp.concatenate([starts, jnp.broadcast_to(starts[-1:], (pad,))]).reshape(chunks, k)
    w = jnp.concatenate([w, jnp.zeros((pad, window), w.dtype)]).reshape(chunks, k, window)

    def rows(a: jax.Array) -> jax.Array:  # [N * B, ...] -> [chunks, k * B, ...]
        a = a.reshape((n, b) + a.shape[1:])
        a = jnp.concatenate([a, jnp.broadcast_to(a[-1:], (pad,) + a.shape[1:])])
        return a.reshape((chunks, k * b) + a.shape[2:])

    def body(total: jax.Array, xs: tuple) -> tuple[jax.Array, None]:
        s_k, w_k, rows_k = xs  # [k], [k, window], {name: [k * B, ...]}

        def cut(a: jax.Array) -> jax.Array:  # [B, T, ...] -> [k * B, window, ...], window-major
            windows = jax.vmap(lambda s0: jax.lax.dynamic_slice_in_dim(a, s0, window, axis=1))(s_k)
            return windows.reshape((k * b,) + windows.shape[2:])

        centre = {name: a[s_k + window // 2].reshape((k * b,) + a.shape[2:]) for name, a in centre_inputs.items()}
        inputs = {**{name: cut(a) for name, a in frame_inputs.items()}, **rows_k, **centre}
        v = call(cut(z), jnp.tile(t, k), inputs)  # [k * B, window, ...]
        v = v.reshape((k, b) + v.shape[1:]) * w_k.reshape((k, 1, window) + (1,) * (v.ndim - 2)).astype(v.dtype)
        frames = (s_k[:, None] + jnp.arange(window)).ravel()  # [k * window]
        v = jnp.moveaxis(v, 0, 1).reshape((b, k * window) + v.shape[3:])  # [B, k * window, ...]
        return total.at[:, frames].add(v), None

    xs = (s, w, {name: rows(a) for name, a in window_inputs.items()})
    total, _ = jax.lax.scan(body, jnp.zeros(z.shape, z.dtype), xs)
    return total / norm.astype(z.dtype).reshape((1, num_frames) + (1,) * (z.ndim - 2))  # [B, T, ...]


def first_window_weights(num_frames: int, window: int, overlap: int) -> np.ndarray:
    """Weights [N, window] that take each frame only from the first window covering it (no reconciliation)."""
    starts = window_starts(num_frames, window, overlap)
    frames = np.asarray(starts)[:, None] + np.arange(window)  # [N, window]
    first = np.argmax(np.asarray(starts)[:, None] + window > np.arange(num_frames), axis=0)  # [T] owning window
    return (first[frames] == np.arange(len(starts))[:, None]).astype(np.float32)  # [N, window], 0 or 1


def independent_windows(denoise_window: Denoiser, *, num_frames: int, window: int,
                        overlap: int = 0) -> Denoiser:
    """The no-reconciliation baseline for seams: each frame comes only from the first window that covers it."""
    return multidiffusion(denoise_window, num_frames=num_frames, window=window, overlap=overlap,
                          weights=first_window_weights(num_frames, window, overlap))


def multidiffusion_text(model_fn: Callable[..., jax.Array], text: jax.Array, text_mask: jax.Array,
                        null_text: jax.Array, null_mask: jax.Array, guidance: float, *, num_frames: int,
                        window: int, overlap: int = 2, weights: str | np.ndarray = "uniform",
                        window_batch: int | None = None, frame_inputs: dict[str, jax.Array] | None = None,
                        batch_inputs: dict[str, jax.Array] | None = None, shift: bool = False,
                        frame_text: bool = False, guidance_rescale: float = 0.0) -> Denoiser:
    """Classifier-free-guided MultiDiffusion with one prompt per window ("story mode") or one for all.

    model_fn(z, t, text, text_mask, **inputs) -> v as in samplers.classifier_free_guidance. text is
    [N, B, L, D] (window n uses text[n]; N = len(window_starts(...))) or [B, L, D] (the same prompt in
    every window); text_mask is [N, B, L] or [B, L] to match. Extra model inputs follow the windows:
    frame_inputs [B, T, ...] are cut like the clip, batch_inputs [B, ...] repeat per window; both are
    repeated for the guidance half. Without window_batch, guidance and all windows are one model call of
    2 * N * B rows; with it, calls of 2 * window_batch * B rows.

    shift: windows move every step (multidiffusion), so text is per frame, [T, B, L, D] / [T, B, L] (a window
    uses its centre frame's), or [B, L, D] / [B, L].

    frame_text: text is [B, T, L, D] / [B, T, L], a prompt per frame, and every window is cut its own frames'
    prompts like the clip (fixed or shifted grid), so a window that straddles a change of prompt sees the
    change where it happens: what a model trained on stories (data.story_fraction) takes.
    """
    guided = _guided(model_fn, null_text, null_mask, guidance, guidance_rescale)
    inputs = _repeated_batch_inputs(batch_inputs, num_frames, window, overlap, shift)
    if frame_text:
        if text.ndim != 4 or text.shape[1] != num_frames or text_mask.shape != text.shape[:3]:
            raise ValueError(f"frame_text: text {text.shape} / text_mask {text_mask.shape} must be [B, "
                             f"T={num_frames}, L, D] / [B, T, L], a prompt per frame.")
        frame_inputs = {**(frame_inputs or {}), "text": text, "text_mask": text_mask}  # cut like the clip
        return multidiffusion(guided, num_frames=num_frames, window=window, overlap=overlap, weights=weights,
                              window_batch=window_batch, frame_inputs=frame_inputs, shift=shift, **inputs)
    # One text per frame (shifted windows take their centre frame's) or per window of the fixed grid.
    n = num_frames if shift else len(window_starts(num_frames, window, overlap))
    if text.ndim == 3:
        text = jnp.broadcast_to(text, (n,) + text.shape)
        text_mask = jnp.broadcast_to(text_mask, (n,) + text_mask.shape)
    if text.ndim != 4 or text.shape[0] != n or text_mask.shape != text.shape[:3]:
        per = ("one per frame: shifted windows take their centre frame's" if shift else
               f"one per window of window_starts({num_frames}, {window}, {overlap})")
        raise ValueError(f"text {text.shape} / text_mask {text_mask.shape} must be [{'T' if shift else 'N'}={n}, B, L, "
                         f"D] / [{'T' if shift else 'N'}, B, L] ({per}) or [B, L, D] / [B, L].")
    if shift:
        inputs["centre_inputs"].update(text=text, text_mask=text_mask)
    else:  # [N * B, L, D], window-major like the z rows
        inputs["window_inputs"].update(text=text.reshape((-1,) + text.shape[2:]),
                                       text_mask=text_mask.reshape((-1,) + text_mask.shape[2:]))
    return multidiffusion(guided, num_frames=num_frames, window=window, overlap=overlap, weights=weights,
                          window_batch=window_batch, frame_inputs=frame_inputs, shift=shift, **inputs)


def _repeated_batch_inputs(batch_inputs: dict[str, jax.Array] | None, num_frames: int, window: int, overlap: int,
                           shift: bool) -> dict[str, dict[str, jax.Array]]:
    """Inputs [B, ...] given to every window: multidiffusion's centre_inputs [T, B, ...] when the grid shifts,
    else its window_inputs [N * B, ...]."""
    if shift:
        return {"centre_inputs": {k: jnp.broadcast_to(a, (num_frames,) + a.shape) for k, a in
                                  (batch_inputs or {}).items()}}
    n = len(window_starts(num_frames, window, overlap))
    return {"window_inputs": {k: jnp.tile(a, (n,) + (1,) * (a.ndim - 1)) for k, a in (batch_inputs or {}).items()}}


def _guided(model_fn: Callable[..., jax.Array], null_text: jax.Array, null_mask: jax.Array,
            guidance: float, guidance_rescale: float = 0.0) -> Callable[..., jax.Array]:
    """A window denoiser (z, t, inputs) that guides model_fn with the rows' own text from inputs (each window
    rescaled on its own under `guidance_rescale`, samplers.rescale_guided)."""
    def guided(z: jax.Array, t: jax.Array, inputs: dict[str, jax.Array]) -> jax.Array:
        inputs = dict(inputs)
        rows_text, rows_mask = inputs.pop("text"), inputs.pop("text_mask")

        def with_inputs(zz: jax.Array, tt: jax.Array, tx: jax.Array, m: jax.Array) -> jax.Array:
            reps = zz.shape[0] // z.shape[0]  # 2 when guidance doubles the rows
            return model_fn(zz, tt, tx, m, **{k: jnp.concatenate([a] * reps) for k, a in inputs.items()})

        return classifier_free_guidance(with_inputs, rows_text, rows_mask, null_text, null_mask, guidance,
                                        guidance_rescale)(z, t)

    return guided


def seam_ratio(video: jax.Array | np.ndarray, starts: Sequence[int], window: int) -> float:
    """Mean |frame difference| across window borders over that inside windows: ~1 means seamless.

    Borders are the frame pairs (f - 1, f) where a window starts or ends inside the clip.
    """
    video = np.asarray(video, np.float64)  # [B, T, H, W, C]
    num_frames = video.shape[1]
    diffs = np.abs(np.diff(video, axis=1)).mean(axis=tuple(i for i in range(video.ndim) if i != 1))  # [T - 1]
    borders = {s for s in starts if s > 0} | {s + window for s in starts if s + window < num_frames}
    is_border = np.isin(np.arange(1, num_frames), sorted(borders))
    if not is_border.any() or is_border.all():
        raise ValueError(f"starts={list(starts)} with window={window} over {num_frames} frames leave no "
                         f"{'border' if not is_border.any() else 'inside'} frame pairs to compare.")
    return float(diffs[is_border].mean() / max(diffs[~is_border].mean(), 1e-12))
