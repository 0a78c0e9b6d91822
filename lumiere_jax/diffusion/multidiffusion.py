"""Temporal MultiDiffusion (Bar-Tal et al. 2023): runs a fixed-length video model on overlapping windows.

At every denoising step each window of the clip is denoised and the full clip's prediction is the
least-squares reconciliation of the window predictions, argmin_J sum_i ||F_i(J) - Phi(J_i)||^2, which
for temporal crops is the per-frame weighted average of the windows that cover the frame. The samplers'
updates are linear in the v prediction, so reconciling v is the same as reconciling the next state.

Batch layout: the wrapped denoiser sees all N windows of all B examples in one call, window-major, so
row n * B + b is window n of example b. Per-window conditioning follows the same layout:
`split_windows` for arrays with a frame axis, `text.reshape(N * B, ...)` for text [N, B, L, D].
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


def multidiffusion(denoise_window: Denoiser, *, num_frames: int, window: int, overlap: int = 2,
                   weights: str | np.ndarray = "uniform") -> Denoiser:
    """Turns a denoiser of `window`-frame clips into one of `num_frames`-frame clips.

    denoise_window gets all windows in ONE call, z [N * B, window, H, W, C] and t [N * B], rows
    window-major (module docstring), and returns v of the same shape.
    """
    starts = window_starts(num_frames, window, overlap)
    n = len(starts)

    def denoise(z: jax.Array, t: jax.Array) -> jax.Array:
        if z.shape[1] != num_frames:
            raise ValueError(f"z has {z.shape[1]} frames but this MultiDiffusion denoiser was built for "
                             f"num_frames={num_frames}.")
        v = denoise_window(split_windows(z, starts, window), jnp.tile(t, n))  # [N * B, window, H, W, C]
        return reconcile(v.reshape((n, z.shape[0]) + v.shape[1:]), starts, num_frames, weights)

    return denoise


def independent_windows(denoise_window: Denoiser, *, num_frames: int, window: int,
                        overlap: int = 0) -> Denoiser:
    """The no-reconciliation baseline for seams: each frame comes only from the first window that covers it."""
    starts = window_starts(num_frames, window, overlap)
    frames = np.asarray(starts)[:, None] + np.arange(window)  # [N, window]
    first = np.argmax(np.asarray(starts)[:, None] + window > np.arange(num_frames), axis=0)  # [T] owning window
    owner = (first[frames] == np.arange(len(starts))[:, None]).astype(np.float32)  # [N, window], 0 or 1
    return multidiffusion(denoise_window, num_frames=num_frames, window=window, overlap=overlap, weights=owner)


def multidiffusion_text(model_fn: Callable[..., jax.Array], text: jax.Array, text_mask: jax.Array,
                        null_text: jax.Array, null_mask: jax.Array, guidance: float, *, num_frames: int,
                        window: int, overlap: int = 2, weights: str | np.ndarray = "uniform") -> Denoiser:
    """Classifier-free-guided MultiDiffusion with one prompt per window ("story mode") or one for all.

    model_fn(z, t, text, text_mask) -> v as in samplers.classifier_free_guidance. text is [N, B, L, D]
    (window n uses text[n]; N = len(window_starts(...))) or [B, L, D] (the same prompt in every window);
    text_mask is [N, B, L] or [B, L] to match. Guidance and all windows are one model call of 2 * N * B.
    """
    n = len(window_starts(num_frames, window, overlap))
    if text.ndim == 3:
        text = jnp.broadcast_to(text, (n,) + text.shape)
        text_mask = jnp.broadcast_to(text_mask, (n,) + text_mask.shape)
    if text.ndim != 4 or text.shape[0] != n or text_mask.shape != text.shape[:3]:
        raise ValueError(f"text {text.shape} / text_mask {text_mask.shape} must be [N={n}, B, L, D] / [N, B, L] "
                         f"(one per window of window_starts({num_frames}, {window}, {overlap})) or [B, L, D] / [B, L].")
    flat_text = text.reshape((-1,) + text.shape[2:])  # [N * B, L, D], window-major like the z rows
    flat_mask = text_mask.reshape((-1,) + text_mask.shape[2:])
    guided = classifier_free_guidance(model_fn, flat_text, flat_mask, null_text, null_mask, guidance)
    return multidiffusion(guided, num_frames=num_frames, window=window, overlap=overlap, weights=weights)


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
