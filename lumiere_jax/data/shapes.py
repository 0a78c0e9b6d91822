"""Captioned moving shapes: the embedded synthetic world (docs/data.md).

Every clip shows one or two coloured shapes gliding in a straight line over a
constant dark background, with a templated caption. Because every attribute is
known, `lumiere_jax.eval.shapes_checker` can check generated clips by program.

Geometry lives in continuous frame coordinates (fractions of the frame side),
so one spec renders the same scene at 32, 64 or 128 pixels. Time is continuous
too: frame k of a T-frame clip shows time k / T, so a 16-frame clip's even
frames are exactly the 8-frame clip of the same spec (what temporal
super-resolution needs).

Pure numpy; no jax here so data workers stay light.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

# Vocabularies: the index of a name is the id stored in datasets, so never reorder.
COLORS: tuple[str, ...] = (
    "red", "green", "blue", "yellow", "magenta", "cyan", "orange", "white")
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
MOTIONS: tuple[str, ...] = ("left", "right", "up", "down", "still")
SIZES: tuple[str, ...] = ("small", "large")
SPEEDS: tuple[str, ...] = ("slow", "fast")

# Chosen so that (colour - BACKGROUND) directions are >= 23 degrees apart: the
# checker classifies colour by that direction, which anti-aliasing and blur keep.
COLOR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (40, 200, 60),
    "blue": (40, 80, 240),
    "yellow": (235, 235, 35),
    "magenta": (220, 50, 220),
    "cyan": (40, 220, 230),
    "orange": (255, 128, 0),
    "white": (240, 240, 240),
}
PALETTE = np.array([COLOR_RGB[c] for c in COLORS], np.uint8)  # [num_colors, 3]
BACKGROUND = np.array((32, 32, 32), np.uint8)

# Side of the shape's bounding box, as a fraction of the frame side.
SIZE_FRACTION = {"small": 0.22, "large": 0.34}
# Displacement over one clip time unit (frames 0..T-1 span (T-1)/T of it).
SPEED_DISPLACEMENT = {"slow": 0.28, "fast": 0.56}
MOTION_DIRECTION = {
    "left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0),
    "down": (0.0, 1.0), "still": (0.0, 0.0)}
MAX_OBJECTS = 2
TWO_OBJECT_PROB = 0.2
_MARGIN = 0.035  # Over a pixel at 32x32: keeps anti-aliased edges off the border.
_SUPERSAMPLE = 4  # Sub-pixels per pixel side for anti-aliasing.


@dataclasses.dataclass(frozen=True)
class ObjectSpec:
    """One shape: its attributes and where its box centre is at time 0."""

    color: str
    shape: str
    motion: str
    size: str
    speed: str | None  # None iff motion == "still".
    x0: float  # Box centre at time 0, fraction of frame width.
    y0: float  # Box centre at time 0, fraction of frame height.

    def center(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Box centre at times `t` (clip time units), in frame fractions."""
        dx, dy = MOTION_DIRECTION[self.motion]
        d = SPEED_DISPLACEMENT[self.speed] if self.speed else 0.0
        return self.x0 + d * dx * t, self.y0 + d * dy * t


@dataclasses.dataclass(frozen=True)
class ClipSpec:
    """A whole clip: objects drawn in order (later ones on top)."""

    objects: tuple[ObjectSpec, ...]


def _start_range(motion: str, size: str,
                 speed: str | None) -> tuple[tuple[float, float], tuple[float, float]]:
    """Ranges of start centres (x, y) that keep the box inside the frame for t in [0, 1]."""
    half = SIZE_FRACTION[size] / 2
    d = SPEED_DISPLACEMENT[speed] if speed else 0.0
    ranges = []
    for u in MOTION_DIRECTION[motion]:
        lo = _MARGIN + half + max(0.0, -u * d)
        hi = 1.0 - _MARGIN - half - max(0.0, u * d)
        ranges.append((lo, hi))
    return ranges[0], ranges[1]


def _sample_object(rng: np.random.Generator, colors: tuple[str, ...]) -> ObjectSpec:
    color = colors[rng.integers(len(colors))]
    shape = SHAPES[rng.integers(len(SHAPES))]
    motion = MOTIONS[rng.integers(len(MOTIONS))]
    size = SIZES[rng.integers(len(SIZES))]
    speed = SPEEDS[rng.integers(len(SPEEDS))] if motion != "still" else None
    (xlo, xhi), (ylo, yhi) = _start_range(motion, size, speed)
    return ObjectSpec(color, shape, motion, size, speed,
                      float(rng.uniform(xlo, xhi)), float(rng.uniform(ylo, yhi)))


def _paths_overlap(a: ObjectSpec, b: ObjectSpec) -> bool:
    """Whether the two boxes (plus a small gap) ever overlap during the clip."""
    t = np.linspace(0.0, 1.0, 17)
    (ax, ay), (bx, by) = a.center(t), b.center(t)
    reach = (SIZE_FRACTION[a.size] + SIZE_FRACTION[b.size]) / 2 + 0.03
    return bool(np.any((np.abs(ax - bx) < reach) & (np.abs(ay - by) < reach)))


def sample_clip_spec(rng: np.random.Generator) -> ClipSpec:
    """Draws a random clip: one object, or two of different colours that never overlap."""
    first = _sample_object(rng, COLORS)
    if rng.random() >= TWO_OBJECT_PROB:
        return ClipSpec((first,))
    others = tuple(c for c in COLORS if c != first.color)
    # Rejection keeps both objects fully visible, so the checker sees each one.
    for _ in range(20):
        second = _sample_object(rng, others)
        if not _paths_overlap(first, second):
            return ClipSpec((first, second))
    return ClipSpec((first,))


def _validate(color: str, shape: str, motion: str, size: str | None, speed: str | None) -> None:
    """Raises ValueError naming any attribute that is not in its vocabulary."""
    for value, vocab in ((color, COLORS), (shape, SHAPES), (motion, MOTIONS),
                         (size, SIZES + (None,)), (speed, SPEEDS + (None,))):
        if value not in vocab:
            raise ValueError(f"Unknown attribute {value!r}; expected one of {vocab}.")


def spec_from_attributes(color: str, shape: str, motion: str, size: str = "large",
                         speed: str | None = "slow",
                         rng: np.random.Generator | None = None) -> ClipSpec:
    """A one-object spec with the given attributes, e.g. a reference clip for a prompt.

    The path is centred in the frame unless `rng` is given, which draws a random
    valid start like the dataset does.
    """
    _validate(color, shape, motion, size, speed)
    speed = None if motion == "still" else (speed or "slow")
    (xlo, xhi), (ylo, yhi) = _start_range(motion, size, speed)
    if rng is None:
        x0, y0 = (xlo + xhi) / 2, (ylo + yhi) / 2
    else:
        x0, y0 = float(rng.uniform(xlo, xhi)), float(rng.uniform(ylo, yhi))
    return ClipSpec((ObjectSpec(color, shape, motion, size, speed, x0, y0),))


def shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray, rx: Any, ry: Any) -> np.ndarray:
    """Inside test at offsets (dx, dy) from the centre of a shape whose box has half-sides (rx, ry).

    Arguments broadcast, so one call can test several sizes at once.

    The triangle points up: apex at the top middle, base along the bottom.
    """
    u, v = dx / rx, dy / ry
    if shape == "circle":
        return u * u + v * v <= 1.0
    if shape == "square":
        return (np.abs(u) <= 1.0) & (np.abs(v) <= 1.0)
    if shape == "triangle":
        return (v <= 1.0) & (np.abs(u) <= (v + 1.0) / 2)
    raise ValueError(f"Unknown shape {shape!r}; expected one of {SHAPES}.")


def _coverage(obj: ObjectSpec, times: np.ndarray, resolution: int, outline: float = 0.0) -> np.ndarray:
    """Anti-aliased coverage of one object, float32 [T, H, W] in [0, 1]; `outline` > 0 draws only a rim."""
    num_frames = len(times)
    cx, cy = (c * resolution for c in obj.center(times))  # [T] each, in pixels.
    half = SIZE_FRACTION[obj.size] * resolution / 2
    # Supersample only a window around the object: ~6x cheaper at 32x32.
    n = min(int(np.ceil(2 * half)) + 2, resolution)
    ox = np.clip(np.floor(cx - half).astype(int), 0, resolution - n)  # [T]
    oy = np.clip(np.floor(cy - half).astype(int), 0, resolution - n)
    sub = (np.arange(n * _SUPERSAMPLE) + 0.5) / _SUPERSAMPLE  # [n * s]
    dx = (ox[:, None] + sub[None, :] - cx[:, None])[:, None, :]  # [T, 1, n * s]
    dy = (oy[:, None] + sub[None, :] - cy[:, None])[:, :, None]  # [T, n * s, 1]
    inside = shape_mask(obj.shape, dx, dy, half, half)  # [T, n * s, n * s]
    if outline > 0:
        inner = half - outline * resolution
        inside &= ~shape_mask(obj.shape, dx, dy, inner, inner) if inner > 0 else False
    window = inside.reshape(num_frames, n, _SUPERSAMPLE, n, _SUPERSAMPLE).mean((2, 4))
    alpha = np.zeros((num_frames, resolution, resolution), np.float32)
    for t in range(num_frames):
        alpha[t, oy[t]:oy[t] + n, ox[t]:ox[t] + n] = window[t]
    return alpha


# The striped-background style (stylized generation): horizontal stripes, this many per frame side, this much
# lighter than the background. Kept under the checker's foreground distance, so it never reads as an object.
STRIPES_PER_FRAME = 8
STRIPE_DELTA = 24.0
BACKGROUNDS = ("plain", "stripes")


def background_image(resolution: int, background: str = "plain") -> np.ndarray:
    """float32 [H, W, 3]: the constant dark background, or the same with horizontal stripes (anti-aliased)."""
    if background not in BACKGROUNDS:
        raise ValueError(f"Unknown background {background!r}; expected one of {BACKGROUNDS}.")
    image = np.broadcast_to(BACKGROUND.astype(np.float32), (resolution, resolution, 3)).copy()
    if background == "stripes":
        rows = (np.arange(resolution * _SUPERSAMPLE) + 0.5) / (_SUPERSAMPLE * resolution)  # fraction of the side
        lit = (np.floor(rows * 2 * STRIPES_PER_FRAME) % 2 == 1).reshape(resolution, _SUPERSAMPLE).mean(1)
        image += STRIPE_DELTA * lit[:, None, None]
    return image


def render_clip(spec: ClipSpec, num_frames: int, resolution: int, outline: float = 0.0,
                background: str = "plain") -> np.ndarray:
    """Renders a spec to uint8 [T, H, W, 3] with H = W = resolution.

    Two styles that the datasets never contain (they use the defaults: filled shapes on a plain background),
    for stylized generation: `outline` > 0 draws each shape as a rim that wide (fraction of the frame side),
    and `background="stripes"` draws the scene over horizontal stripes.
    """
    if num_frames < 1 or resolution < 8:
        raise ValueError(f"Need num_frames >= 1 and resolution >= 8, "
                         f"got num_frames={num_frames}, resolution={resolution}.")
    times = np.arange(num_frames) / num_frames
    video = np.broadcast_to(background_image(resolution, background),
                            (num_frames, resolution, resolution, 3)).copy()  # [T, H, W, 3]
    for obj in spec.objects:
        alpha = _coverage(obj, times, resolution, outline)[..., None]  # [T, H, W, 1]
        video += alpha * (np.asarray(COLOR_RGB[obj.color], np.float32) - video)
    return np.clip(np.rint(video), 0, 255).astype(np.uint8)


# Caption phrasing: each caption picks a template, each object its synonyms.
_DIRECTION_WORDS = {
    "left": ("left", "to the left", "leftward"),
    "right": ("right", "to the right", "rightward"),
    "up": ("up", "upward", "toward the top"),
    "down": ("down", "downward", "toward the bottom"),
}
_SPEED_WORDS = {"slow": ("slowly", "at a slow pace"), "fast": ("quickly", "fast", "rapidly")}
_SIZE_WORDS = {"small": ("small", "little"), "large": ("large", "big")}
# (phrase when moving, phrase when still, whether the noun takes an article).
_TEMPLATES = (
    ("{np} moving {dir}{speed}", "{np} staying still", True),
    ("{np} moves {dir}{speed}", "{np} stays still", True),
    ("{np} going {dir}{speed}", "{np} not moving", False),
    ("{np} that slides {dir}{speed}", "{np} that stays still", True),
    ("{np} drifting {dir}{speed}", "{np} standing still", True),
)


def _with_article(words: str) -> str:
    return ("an " if words[0] in "aeiou" else "a ") + words


def _object_phrase(color: str, shape: str, template: int, size_word: str | None,
                   dir_word: str | None, speed_word: str | None) -> str:
    """One object's phrase; `dir_word` None means the object stays still."""
    moving, still, article = _TEMPLATES[template]
    noun = " ".join(w for w in (size_word, color, shape) if w)
    np_ = _with_article(noun) if article else noun
    if dir_word is None:
        return still.format(np=np_)
    return moving.format(np=np_, dir=dir_word, speed=f" {speed_word}" if speed_word else "")


def caption(spec: ClipSpec, rng: np.random.Generator) -> str:
    """A caption for `spec` in one of several phrasings; fully determined by spec and rng."""
    # One template per caption so two-object captions stay grammatical.
    template = int(rng.integers(len(_TEMPLATES)))
    phrases = []
    for obj in spec.objects:
        size_word = _SIZE_WORDS[obj.size][rng.integers(2)] if rng.random() < 0.5 else None
        dir_word = speed_word = None
        if obj.motion != "still":
            words = _DIRECTION_WORDS[obj.motion]
            dir_word = words[rng.integers(len(words))]
            if rng.random() < 0.5:
                words = _SPEED_WORDS[obj.speed]
                speed_word = words[rng.integers(len(words))]
        phrases.append(
            _object_phrase(obj.color, obj.shape, template, size_word, dir_word, speed_word))
    return " and ".join(phrases)


def single_object_captions(color: str, shape: str, motion: str) -> list[str]:
    """Every phrasing `caption` can give one object of this colour, shape and motion (all templates, sizes,
    direction and speed words): the training captions a prompt can be checked against."""
    _validate(color, shape, motion, None, None)
    sizes = [None] + [w for words in _SIZE_WORDS.values() for w in words]
    if motion == "still":
        moves = [(None, None)]
    else:
        speeds = [None] + [w for words in _SPEED_WORDS.values() for w in words]
        moves = [(d, s) for d in _DIRECTION_WORDS[motion] for s in speeds]
    return [_object_phrase(color, shape, template, size, d, s)
            for template in range(len(_TEMPLATES)) for size in sizes for d, s in moves]


def prompt_for(color: str, shape: str, motion: str, size: str | None = None,
               speed: str | None = None) -> str:
    """Canonical one-object prompt, e.g. "a large red circle moving left slowly".

    Size and speed are left out when None; speed is ignored for still objects.
    """
    _validate(color, shape, motion, size, speed)
    if motion == "still":
        return _object_phrase(color, shape, 0, size, None, None)
    return _object_phrase(color, shape, 0, size, motion, _SPEED_WORDS[speed][0] if speed else None)


def attribute_ids(spec: ClipSpec) -> dict[str, np.ndarray]:
    """Integer attribute record: num_objects, and int32 [2] per attribute padded with -1.

    A still object's speed is -1 too: it has none.
    """
    record = {key: np.full((MAX_OBJECTS,), -1, np.int32)
              for key in ("color", "shape", "motion", "size", "speed")}
    for i, obj in enumerate(spec.objects):
        record["color"][i] = COLORS.index(obj.color)
        record["shape"][i] = SHAPES.index(obj.shape)
        record["motion"][i] = MOTIONS.index(obj.motion)
        record["size"][i] = SIZES.index(obj.size)
        record["speed"][i] = SPEEDS.index(obj.speed) if obj.speed else -1
    record["num_objects"] = np.int32(len(spec.objects))
    return record


_SPLIT_STREAMS = {"train": 0, "test": 1}


def make_example(index: int, seed: int, num_frames: int, resolution: int,
                 split: str = "train") -> dict[str, Any]:
    """Example `index` of a split, deterministic from (seed, split, index).

    Returns video uint8 [T, H, W, 3], caption str, num_objects int32 scalar and
    color/shape/motion/size/speed int32 [2] (ids into the vocabularies, -1 = none).
    """
    if split not in _SPLIT_STREAMS:
        raise ValueError(f"Unknown split {split!r}; expected one of {tuple(_SPLIT_STREAMS)}.")
    rng = np.random.default_rng([seed, _SPLIT_STREAMS[split], index])
    spec = sample_clip_spec(rng)
    return {"video": render_clip(spec, num_frames, resolution),
            "caption": caption(spec, rng), **attribute_ids(spec)}


# Stories: clips whose caption changes over time. One object changes once, at a frame drawn from the middle half
# of the clip: its motion (it turns), or its colour or its shape (it moves on the same way); the frames before and
# from that frame each carry their own caption.
_STORY_STREAM = 7  # extra seed word: story draws never share a random stream with make_example
STORY_CHANGES: tuple[str, ...] = ("motion", "color", "shape")


@dataclasses.dataclass(frozen=True)
class TurningObjectSpec:
    """One shape that is (colors[0], shapes[0]) and moves motions[0] until time `turn` (clip time units), then is
    (colors[1], shapes[1]) and moves motions[1] from there."""

    colors: tuple[str, str]
    shapes: tuple[str, str]
    size: str
    motions: tuple[str, str]
    speeds: tuple[str | None, str | None]  # None iff that motion is "still"
    turn: float
    x0: float
    y0: float

    def segment(self, i: int) -> ObjectSpec:
        """The straight-line object of segment i (0: before the turn, 1: from it) as if it started at time 0."""
        x, y = self.center(np.asarray([self.turn if i else 0.0]))
        return ObjectSpec(self.colors[i], self.shapes[i], self.motions[i], self.size, self.speeds[i], float(x[0]),
                          float(y[0]))

    def center(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t = np.asarray(t, np.float64)
        before, after = np.minimum(t, self.turn), np.maximum(t - self.turn, 0.0)
        out = []
        for axis, start in ((0, self.x0), (1, self.y0)):
            pos = start
            for motion, speed, dt in zip(self.motions, self.speeds, (before, after)):
                pos = pos + (SPEED_DISPLACEMENT[speed] if speed else 0.0) * MOTION_DIRECTION[motion][axis] * dt
            out.append(pos)
        return out[0], out[1]


def check_story_changes(changes: tuple[str, ...]) -> None:
    """Raises ValueError unless `changes` is a non-empty set of STORY_CHANGES (what a story clip may change)."""
    if not changes or len(set(changes)) != len(changes) or not set(changes) <= set(STORY_CHANGES):
        raise ValueError(f"Story changes {list(changes)} must be distinct entries of {STORY_CHANGES} (what a story "
                         f"clip changes mid-clip), at least one; e.g. 'motion' or 'motion,color,shape'.")


def _other(rng: np.random.Generator, values: tuple[str, ...], value: str) -> str:
    """One of `values` other than `value`, uniformly."""
    others = [v for v in values if v != value]
    return others[rng.integers(len(others))]


def _story_spec_and_captions(index: int, seed: int, num_frames: int, split: str,
                             changes: tuple[str, ...] = ("motion",)) -> tuple[ClipSpec, int, list[str]]:
    """(spec with one TurningObjectSpec, first frame of the second segment, one caption per frame).

    The story changes one of `changes`, drawn uniformly (with one kind, nothing is drawn for it: motion-only
    stories are the same draws whatever else the code offers).
    """
    if split not in _SPLIT_STREAMS:
        raise ValueError(f"Unknown split {split!r}; expected one of {tuple(_SPLIT_STREAMS)}.")
    if num_frames < 4:
        raise ValueError(f"A story clip changes mid-clip: it needs num_frames >= 4, got {num_frames}.")
    check_story_changes(changes)
    rng = np.random.default_rng([seed, _SPLIT_STREAMS[split], index, _STORY_STREAM])
    kind = changes[rng.integers(len(changes))] if len(changes) > 1 else changes[0]
    color, shape = COLORS[rng.integers(len(COLORS))], SHAPES[rng.integers(len(SHAPES))]
    size = SIZES[rng.integers(len(SIZES))]
    first = MOTIONS[rng.integers(len(MOTIONS))]
    second = _other(rng, MOTIONS, first) if kind == "motion" else first
    speeds = tuple(SPEEDS[rng.integers(len(SPEEDS))] if m != "still" else None for m in (first, second))
    if kind != "motion":  # it moves on as it did
        speeds = (speeds[0], speeds[0])
    colors = (color, _other(rng, COLORS, color) if kind == "color" else color)
    shapes = (shape, _other(rng, SHAPES, shape) if kind == "shape" else shape)
    quarter = max(1, num_frames // 4)
    turn_frame = int(rng.integers(quarter, num_frames - quarter + 1))  # the middle half of the clip
    turn = turn_frame / num_frames
    # Start centres that keep the whole bent path inside the frame: its extremes are at t = 0, turn and 1.
    half = SIZE_FRACTION[size] / 2
    starts = []
    for axis in (0, 1):
        a = (SPEED_DISPLACEMENT[speeds[0]] if speeds[0] else 0.0) * MOTION_DIRECTION[first][axis] * turn
        b = (SPEED_DISPLACEMENT[speeds[1]] if speeds[1] else 0.0) * MOTION_DIRECTION[second][axis] * (1 - turn)
        lo, hi = _MARGIN + half - min(0.0, a, a + b), 1.0 - _MARGIN - half - max(0.0, a, a + b)
        starts.append(float(rng.uniform(lo, hi)))
    obj = TurningObjectSpec(colors, shapes, size, (first, second), speeds, turn, starts[0], starts[1])
    captions = [caption(ClipSpec((obj.segment(i),)), rng) for i in (0, 1)]
    return ClipSpec((obj,)), turn_frame, [captions[int(k >= turn_frame)] for k in range(num_frames)]


def story_frame_captions(index: int, seed: int, num_frames: int, split: str = "train",
                         changes: tuple[str, ...] = ("motion",)) -> list[str]:
    """The per-frame captions of story example `index`, without rendering it (what the text cache needs)."""
    return _story_spec_and_captions(index, seed, num_frames, split, changes)[2]


def make_story_example(index: int, seed: int, num_frames: int, resolution: int, split: str = "train",
                       changes: tuple[str, ...] = ("motion",)) -> dict[str, Any]:
    """Story example `index`: one object that changes one of `changes` once, with a caption per frame.

    Returns video uint8 [T, H, W, 3] (the first segment's straight-line clip up to turn_frame, the second's from
    it), frame_captions (T str: the first segment's caption before turn_frame, the second's from it), caption
    (frame 0's) and turn_frame; deterministic from (seed, split, index, changes).
    """
    spec, turn_frame, captions = _story_spec_and_captions(index, seed, num_frames, split, changes)
    obj = spec.objects[0]
    before, after = (render_clip(ClipSpec((obj.segment(i),)), num_frames, resolution) for i in (0, 1))
    video = np.concatenate([before[:turn_frame], after[:num_frames - turn_frame]])
    return {"video": video, "caption": captions[0], "frame_captions": captions, "turn_frame": np.int32(turn_frame)}


def _check_ranges() -> None:
    # Every attribute combination must fit in the frame; fail at import, not mid-build.
    for motion in MOTIONS:
        for size in SIZES:
            for speed in SPEEDS:
                for lo, hi in _start_range(motion, size, speed):
                    assert lo <= hi, (motion, size, speed)


_check_ranges()
