"""Measurements of the applications on the shapes world: the striped style's amplitude, how filled the shapes are,
and which samples a StyleDrop feedback round keeps (tools/app_bench.py, tools/style_feedback.py).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from lumiere_jax.data import shapes


def select_feedback(candidates: list[dict], keep: int, min_style: float) -> list[int]:
    """A feedback round's kept samples (tools/style_feedback.py), by index: the checker found the prompted colour
    and shape, style >= min_style, one per colour and shape, round-robin over the shapes with the most styled
    first, at most `keep`.

    Each candidate is {"color", "shape", "found_color", "found_shape", "style"}.
    """
    good = [i for i, c in enumerate(candidates) if c["found_color"] == c["color"]
            and c["found_shape"] == c["shape"] and c["style"] >= min_style]
    queues: dict[str, list[int]] = {}
    for i in sorted(good, key=lambda i: -candidates[i]["style"]):
        queues.setdefault(candidates[i]["shape"], []).append(i)
    kept, seen = [], set()
    while len(kept) < keep and any(queues.values()):
        for shape in sorted(queues, key=lambda s: -candidates[queues[s][0]]["style"] if queues[s] else 0.0):
            while queues[shape]:
                i = queues[shape].pop(0)
                content = (candidates[i]["color"], candidates[i]["shape"])
                if content not in seen:
                    seen.add(content)
                    kept.append(i)
                    break
            if len(kept) == keep:
                break
    return kept


def fill_fraction(clip: np.ndarray, threshold: float = 60.0) -> float:
    """Mean over frames of (object pixels) / (object pixels with holes filled), for a uint8 clip [T, H, W, 3].

    Filled shapes (the training data) score ~1; shapes drawn as outlines (the style) score well below.
    Frames without an object are skipped; NaN when no frame has one.
    """
    clip = np.asarray(clip, np.float32)
    background = np.median(clip.reshape(-1, 3), axis=0)
    scores = []
    for frame in clip:
        fg = np.linalg.norm(frame - background, axis=-1) > threshold  # [H, W]
        filled = ndimage.binary_fill_holes(fg)
        if filled.sum() >= 4:
            scores.append(fg.sum() / filled.sum())
    return float(np.mean(scores)) if scores else float("nan")


def stripe_amplitude(clip: np.ndarray) -> float:
    """Amplitude (grey levels) of the striped-background style's frequency in a uint8 clip [T, H, W, 3].

    Each frame's row profile (median brightness over each row, so an object does not count) is projected on
    the stripes' frequency, a phase-free measure: shifted stripes score the same. The style image scores
    ~17, the plain background of the training data ~0.
    """
    clip = np.asarray(clip, np.float32)
    rows = np.median(clip.mean(-1), axis=2)  # [T, H]
    height = rows.shape[1]
    wave = np.exp(-2j * np.pi * shapes.STRIPES_PER_FRAME * np.arange(height) / height)
    return float(np.mean(2 * np.abs((rows - rows.mean(1, keepdims=True)) @ wave) / height))
