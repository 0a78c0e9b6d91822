"""Program that checks a generated shapes-world clip against its prompt (no learned model).

It finds the object, names its colour, shape and motion, and tells whether it
stays the same object from frame to frame. This is how the project measures
sample quality (docs/data.md).

How, and why it survives diffusion-model noise and blur:
  * Background: the clip's median colour, so a model's slightly-off grey is fine.
  * Colour: the direction of (pixel - background) in RGB. Anti-aliasing, blur
    and dimming scale that vector but keep its direction, so edge pixels vote
    for the right colour instead of a darker neighbour in the palette. The
    colour covering the most pixels wins (the larger object of two).
  * Object: per frame, the largest connected blob of that colour; its soft
    coverage is the projection on the colour direction.
  * Shape: the coverage is correlated with a circle, a square and an upward
    triangle sized from its second moments and smoothed like the clip; the
    best mean correlation over frames wins. Binary masks and bounding boxes
    were too coarse for 7-pixel objects.
  * Motion and speed: least-squares slope of the coverage centroid track.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from scipy import ndimage

from lumiere_jax.data import shapes


# Pixels nearer the background than this (after light smoothing) are background.
# With pixel noise std 20 the smoothed noise norm stays far below it.
FOREGROUND_DISTANCE = 50.0
# Pixels whose colour direction is further than this from every palette colour
# belong to no object (e.g. a grey smear).
MAX_COLOR_ANGLE_DEG = 30.0
# Smaller blobs are noise: the smallest object (a small triangle) covers ~0.024
# of the frame.
MIN_OBJECT_PIXELS = 3
MIN_OBJECT_FRACTION = 0.003
# A centroid that travels less than this fraction of the frame is still.
STILL_DISPLACEMENT = 0.1
# Per clip time unit, between slow (0.28) and fast (0.56); frames 0..T-1 cover
# (T-1)/T of it (see shapes.py).
FAST_DISPLACEMENT = 0.42
# Box side (fraction of frame) that separates small (0.22) from large (0.34).
LARGE_SIDE = 0.28
# Consistency: area may change by at most this factor (frame to median, and
# largest to smallest), and the centroid may step at most this far (frame
# fraction) from the typical step.
AREA_TOLERANCE = 1.6
STEP_TOLERANCE = 0.12
# A frame changed shape when another template fits it better by this much.
SHAPE_MARGIN = 0.01
_SMOOTH = 0.6  # Gaussian sigma (pixels) applied to clips and shape templates.
_SUB = 4  # Sub-pixels per pixel side when drawing templates, as the renderer.
# Box side / RMS radius of gyration per axis: circle 4, square sqrt(12), and
# the triangle's (1/24 + 1/18) / 2 variance per unit side squared.
_SIDE_PER_SIGMA = {"circle": 4.0, "square": np.sqrt(12.0), "triangle": np.sqrt(144 / 7)}


def _empty(num_frames: int) -> dict[str, Any]:
    return {"color": None, "shape": None, "motion": None, "size": None, "speed": None,
            "displacement": None, "centroids": None, "areas": np.zeros(num_frames),
            "frame_colors": [None] * num_frames, "shape_scores": None,
            "consistency": 0.0, "consistent": False}


def _templates(shape: str, cx: float, cy: np.ndarray, side: np.ndarray, height: int,
               width: int) -> np.ndarray:
    """Coverage [S, h, w] of `shape`, box centres (cx, cy[s]) and sides side[s] in pixels."""
    sub = (np.arange(_SUB) + 0.5) / _SUB
    gx = (np.arange(width)[:, None] + sub).reshape(1, 1, -1) - cx  # [1, 1, w * n]
    gy = (np.arange(height)[:, None] + sub).reshape(1, -1, 1) - cy[:, None, None]  # [S, h * n, 1]
    half = side[:, None, None] / 2
    inside = shapes.shape_mask(shape, gx, gy, half, half)  # [S, h * n, w * n]
    return inside.reshape(len(side), height, _SUB, width, _SUB).mean((2, 4))


def _shape_fit(obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best normalized correlation of coverage [h, w] with each shape, and fitted sides; both [3].

    Each shape's side comes from the coverage's second moments (free of the
    unknown brightness), refined over a few scales; the templates get the same
    smoothing as the clip.
    """
    height, width = obs.shape
    yy, xx = np.mgrid[0:height, 0:width] + 0.5
    mass = obs.sum()
    mx, my = (obs * xx).sum() / mass, (obs * yy).sum() / mass
    var = ((obs * (xx - mx) ** 2).sum() + (obs * (yy - my) ** 2).sum()) / (2 * mass)
    sigma = np.sqrt(max(var - _SMOOTH**2, 0.25))
    scores, sides = np.zeros(len(shapes.SHAPES)), np.zeros(len(shapes.SHAPES))
    for i, name in enumerate(shapes.SHAPES):
        side = sigma * _SIDE_PER_SIGMA[name] * np.array([0.88, 0.94, 1.0, 1.06, 1.12])  # [S]
        # The triangle's centroid sits a sixth of its side below its box centre.
        cy = my - side / 6 if name == "triangle" else np.full_like(side, my)
        tmpl = ndimage.gaussian_filter(_templates(name, mx, cy, side, height, width),
                                       (0, _SMOOTH, _SMOOTH))  # [S, h, w]
        corr = (tmpl * obs).sum((1, 2)) / np.maximum(
            np.linalg.norm(tmpl, axis=(1, 2)) * np.linalg.norm(obs), 1e-6)
        best = int(np.argmax(corr))
        scores[i], sides[i] = corr[best], side[best]
    return scores, sides


def _find_object(seed: np.ndarray) -> np.ndarray | None:
    """Region [H, W] around the largest connected blob of `seed`; None if that is a speck."""
    if not seed.any():
        return None
    blobs, count = ndimage.label(seed)
    sizes = ndimage.sum(seed, blobs, index=np.arange(1, count + 1))
    if sizes.max() < max(MIN_OBJECT_PIXELS, MIN_OBJECT_FRACTION * seed.size):
        return None
    # Dilation takes back the faint anti-aliased or blurred rim.
    return ndimage.binary_dilation(blobs == 1 + int(np.argmax(sizes)), iterations=2)


def analyze_clip(video: np.ndarray) -> dict[str, Any]:
    """Names the main object's colour, shape, motion, size and speed in a uint8 [T, H, W, 3] clip.

    Returns a dict with those names (None when no object is found),
    `displacement` (dx, dy) in frame fractions from first to last frame,
    `centroids` [T, 2] (x, y pixels, NaN where absent), soft `areas` [T],
    `frame_colors`, `shape_scores` (mean template correlation per shape),
    `consistency` (fraction of frames in which the object is present with the
    clip's colour and shape, a steady area and a steady step) and `consistent`
    (every frame passes and the largest area is within AREA_TOLERANCE of the
    smallest).
    """
    video = np.asarray(video)
    if video.ndim != 4 or video.shape[-1] != 3:
        raise ValueError(f"Expected a [T, H, W, 3] clip, got shape {video.shape}.")
    if video.dtype != np.uint8:
        raise ValueError(f"Expected a uint8 clip, got {video.dtype}; convert with "
                         "np.clip(np.round(x * 255), 0, 255).astype(np.uint8) for x in [0, 1].")
    num_frames, height, width, _ = video.shape
    # The object covers well under half the pixels, so the median is the
    # background, even when a model renders it a shade off.
    background = np.median(video.reshape(-1, 3), axis=0).astype(np.float32)  # [3]
    directions = shapes.PALETTE.astype(np.float32) - background  # [K, 3]
    norms = np.maximum(np.linalg.norm(directions, axis=-1), 1e-6)  # [K]
    units = directions / norms[:, None]  # [K, 3]
    # Light smoothing trades a little sharpness for immunity to pixel noise.
    diff = ndimage.gaussian_filter(video.astype(np.float32) - background,
                                   sigma=(0, _SMOOTH, _SMOOTH, 0))  # [T, H, W, 3]
    dist = np.linalg.norm(diff, axis=-1)  # [T, H, W]
    cosine = diff @ units.T / np.maximum(dist, 1e-6)[..., None]  # [T, H, W, K]
    label = np.argmax(cosine, axis=-1)  # [T, H, W]
    colored = (dist > FOREGROUND_DISTANCE) & (
        np.max(cosine, axis=-1) > np.cos(np.radians(MAX_COLOR_ANGLE_DEG)))
    if not colored.any():
        return _empty(num_frames)

    def vote(labels: np.ndarray) -> int:
        return int(np.argmax(np.bincount(labels, minlength=len(shapes.COLORS))))

    # Colour: the palette entry covering the most pixels, i.e. the largest object.
    k = vote(label[colored])
    frame_colors = [shapes.COLORS[vote(label[t][colored[t]])]
                    if colored[t].any() else None for t in range(num_frames)]

    # Soft coverage of colour k (1 = pixel fully covered at palette brightness).
    cover = np.clip(diff @ units[k] / norms[k], 0.0, None)  # [T, H, W]
    regions = [_find_object(colored[t] & (label[t] == k)) for t in range(num_frames)]
    present = np.array([r is not None for r in regions])
    areas = np.zeros(num_frames)
    centroids = np.full((num_frames, 2), np.nan)
    frame_scores = np.zeros((num_frames, len(shapes.SHAPES)))
    frame_sides = np.zeros((num_frames, len(shapes.SHAPES)))
    for t in np.nonzero(present)[0]:
        region = regions[t]
        ys, xs = np.nonzero(region)
        y0, y1 = max(ys.min() - 1, 0), min(ys.max() + 2, height)
        x0, x1 = max(xs.min() - 1, 0), min(xs.max() + 2, width)
        obs = (cover[t] * region)[y0:y1, x0:x1]  # [h, w] window around the object.
        areas[t] = obs.sum()
        yy, xx = np.mgrid[y0:y1, x0:x1] + 0.5
        centroids[t] = (obs * xx).sum() / areas[t], (obs * yy).sum() / areas[t]
        frame_scores[t], frame_sides[t] = _shape_fit(obs)
    times = np.nonzero(present)[0]
    if len(times) == 0:
        return _empty(num_frames)

    # Motion: least-squares slope of the centroid track, in frame fractions.
    if len(times) >= 2:
        slope = np.polyfit(times, centroids[times], 1)[0]  # [2], pixels per frame.
        dx, dy = slope * (num_frames - 1) / np.array([width, height])
    else:
        dx = dy = 0.0
    if max(abs(dx), abs(dy)) < STILL_DISPLACEMENT:
        motion = "still"
    elif abs(dx) >= abs(dy):
        motion = "right" if dx > 0 else "left"
    else:
        motion = "down" if dy > 0 else "up"
    travel = max(abs(dx), abs(dy)) * num_frames / max(num_frames - 1, 1)
    speed = None if motion == "still" else ("fast" if travel >= FAST_DISPLACEMENT else "slow")

    # Shape and size: the template that fits best on average over frames.
    shape_scores = frame_scores[times].mean(axis=0)
    shape_id = int(np.argmax(shape_scores))
    side = np.median(frame_sides[times, shape_id]) / min(height, width)
    size = "large" if side >= LARGE_SIDE else "small"

    # Consistency: every frame shows the same object, steady in colour, shape
    # and area, moving without jumps.
    median_area = np.median(areas[present])
    shape_gap = frame_scores.max(axis=-1) - frame_scores[:, shape_id]  # [T]
    frame_ok = (present
                & np.array([c == shapes.COLORS[k] for c in frame_colors])
                & (shape_gap <= SHAPE_MARGIN)
                & (areas <= AREA_TOLERANCE * median_area)
                & (areas >= median_area / AREA_TOLERANCE))
    if num_frames >= 3 and present.all():
        steps = np.diff(centroids, axis=0) / np.array([width, height])  # [T-1, 2]
        jump = np.linalg.norm(steps - np.median(steps, axis=0), axis=-1) > STEP_TOLERANCE
        frame_ok[1:] &= ~jump
    consistency = float(np.mean(frame_ok))
    steady = areas[present].max() <= AREA_TOLERANCE * areas[present].min()
    return {
        "color": shapes.COLORS[k], "shape": shapes.SHAPES[shape_id], "motion": motion,
        "size": size, "speed": speed, "displacement": (float(dx), float(dy)),
        "centroids": centroids, "areas": areas, "frame_colors": frame_colors,
        "shape_scores": dict(zip(shapes.SHAPES, shape_scores.tolist())),
        "consistency": consistency,
        "consistent": bool(consistency == 1.0 and steady),
    }


def check_clip(video: np.ndarray, expected: dict[str, Any]) -> dict[str, bool]:
    """Checks a clip against expected attributes, e.g. dict(color="red", shape="circle").

    Returns a bool for each of color/shape/motion/size/speed given (not None)
    in `expected`, plus "consistent" always. A clip with no object fails all.
    Expected speed is ignored for still objects.
    """
    found = analyze_clip(video)
    result = {}
    for key in ("color", "shape", "motion", "size", "speed"):
        if expected.get(key) is None:
            continue
        if key == "speed" and expected.get("motion") == "still":
            continue
        result[key] = found[key] is not None and found[key] == expected[key]
    result["consistent"] = found["consistent"]
    return result


def count_jumps(video: np.ndarray, max_step: float = 4.0, segments: Sequence[int] = ()) -> int:
    """Frame pairs of a uint8 [T, H, W, 3] clip where the object's centroid moves more than `max_step` pixels
    or the object is lost: breaks that smooth motion never makes (the world's fastest objects move ~2.6 px a
    frame at 32 px). Independent of how a long clip was stitched, so it compares window schemes fairly.

    segments: frames where the object may change its colour (a story that changes it): the object is found in
    each segment on its own, and the pairs across a segment border are counted too (its centroid on both sides).
    """
    bounds = sorted({0, *(int(s) for s in segments if 0 < s < len(video)), len(video)})
    centroids = []
    for start, end in zip(bounds[:-1], bounds[1:]):
        found = analyze_clip(video[start:end])["centroids"]  # None: no object in the segment, lost throughout
        centroids.append(np.full((end - start, 2), np.nan) if found is None else found)
    centroids = np.concatenate(centroids)
    steps = np.linalg.norm(np.diff(centroids, axis=0), axis=-1)  # [T - 1], NaN if lost
    return int(np.sum(np.nan_to_num(steps, nan=np.inf) > max_step))
