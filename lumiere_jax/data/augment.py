"""Random symmetries of training clips: mirror, flip, transpose, play backwards (data.augment).

    ds = grain.MapDataset.source(source).shuffle(seed=0).repeat()
    ds = ds.random_map(ClipSymmetries(("hflip", "reverse")), seed=0)   # each op applied to half the clips

A few dozen clips of real footage are learnt by heart long before a model generalises; the same clips under the
symmetries of the square and of time are new clips with the same local statistics, which is what a super-resolution
model learns (EDSR's flips and rotations). Each op is drawn independently with probability 1/2 per clip, from a
generator that grain seeds by the element's index: a resumed run reads the same augmented batches.
None of these keeps a caption that names a direction true ("moving left" mirrored moves right), so
config_lib.validate_data refuses them on the shapes world, whose captions do.
"""

from __future__ import annotations

from typing import Any, Sequence

import grain
import numpy as np

# op -> what it does to a clip [T, H, W, C].
OPS = {
    "hflip": "mirror left-right",
    "vflip": "flip upside down",
    "transpose": "swap rows and columns (with the flips: every rotation and reflection of the square)",
    "reverse": "play the frames backwards",
}


def parse_augment(spec: str) -> tuple[str, ...]:
    """"hflip,reverse" -> ("hflip", "reverse"); "" -> (). Raises ValueError, one line naming the value and the ops."""
    ops = tuple(op.strip() for op in spec.split(",") if op.strip())
    unknown = [op for op in ops if op not in OPS]
    if unknown or len(set(ops)) != len(ops):
        what = f"{unknown[0]!r} is not an op" if unknown else "an op is named twice"
        raise ValueError(f"data.augment={spec!r}: {what}; give comma-separated ops from {', '.join(OPS)} (or '' "
                         f"for none).")
    return ops


def apply(video: np.ndarray, ops: Sequence[str]) -> np.ndarray:
    """The clip [T, H, W, C] under `ops`, applied in OPS order (transpose needs H == W)."""
    if "hflip" in ops:
        video = video[:, :, ::-1]
    if "vflip" in ops:
        video = video[:, ::-1]
    if "transpose" in ops:
        video = video.transpose(0, 2, 1, 3)
    if "reverse" in ops:
        video = video[::-1]
    return np.ascontiguousarray(video)


class ClipSymmetries(grain.transforms.RandomMap):
    """Applies each of `ops` to half the examples' clips, independently; a per-frame caption list follows "reverse"."""

    def __init__(self, ops: Sequence[str]):
        self._ops = tuple(ops)

    def random_map(self, example: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        drawn = [op for op, keep in zip(self._ops, rng.random(len(self._ops)) < 0.5) if keep]
        video = example["video"]  # [T, H, W, C]
        if "transpose" in drawn and video.shape[1] != video.shape[2]:
            raise ValueError(f"data.augment='transpose' needs square frames; these are {video.shape[2]}x"
                             f"{video.shape[1]}: drop transpose.")
        out = {**example, "video": apply(video, drawn)}
        if "reverse" in drawn and "frame_captions" in example:
            out["frame_captions"] = list(example["frame_captions"])[::-1]
        return out
