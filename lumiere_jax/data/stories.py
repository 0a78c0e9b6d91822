"""Training clips whose captions change over time: a share of the shapes world replaced by story clips.

A story clip (`shapes.make_story_example`) shows one object that changes once, mid-clip (its motion, or its colour
or shape: `changes`), and carries one caption per frame. A model trained on a mix of these and the plain captioned
clips learns to follow per-frame captions ([B, T, L, D] text, `models/stunet.py`), which story mode on the whole clip
(`sampling.generate` with per-frame text) needs: a model trained only on one caption per clip follows
captions that change within a clip only partly (docs/long_video.md).

Every element carries `frame_captions` (a plain clip repeats its caption), so a batch stacks to per-frame
text. Which examples are stories is a function of (seed, index) alone: a resumed run reads the same batches.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lumiere_jax.data import shapes

_CHOICE_STREAM = 11  # seed word of the story-or-plain draw


def parse_changes(text: str) -> tuple[str, ...]:
    """config.data.story_changes ("motion" or e.g. "motion,color,shape") as a tuple; ValueError naming it if bad."""
    changes = tuple(c.strip() for c in str(text).split(","))
    try:
        shapes.check_story_changes(changes)
    except ValueError as e:
        raise ValueError(f"data.story_changes={text!r}: {e}") from None
    return changes


class StorySource:
    """Random-access source: element i is story example i with probability `fraction`, else source[i]."""

    def __init__(self, source: Any, fraction: float, *, seed: int, num_frames: int, resolution: int,
                 split: str = "train", changes: tuple[str, ...] = ("motion",)):
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"data.story_fraction={fraction} must be in [0, 1] (the share of training clips "
                             f"whose caption changes mid-clip).")
        shapes.check_story_changes(tuple(changes))
        self._source, self.fraction, self.changes = source, fraction, tuple(changes)
        self.seed, self.num_frames, self.resolution, self.split = seed, num_frames, resolution, split
        draws = np.random.default_rng([seed, _CHOICE_STREAM]).random(len(source))
        self.is_story = draws < fraction  # [N] bool

    def __len__(self) -> int:
        return len(self._source)

    def __repr__(self) -> str:
        return f"StorySource({self._source!r}, fraction={self.fraction}, changes={self.changes})"

    def __getitem__(self, index: int) -> dict[str, Any]:
        if self.is_story[index]:
            return shapes.make_story_example(int(index), self.seed, self.num_frames, self.resolution, self.split,
                                             self.changes)
        example = dict(self._source[index])
        example["frame_captions"] = [example["caption"]] * self.num_frames
        return example

    def captions(self) -> list[str]:
        """Every distinct caption of the source, stories' per-frame ones included, without rendering a story."""
        seen: dict[str, None] = {}
        for i in range(len(self)):
            if self.is_story[i]:
                for c in shapes.story_frame_captions(i, self.seed, self.num_frames, self.split, self.changes):
                    seen.setdefault(c, None)
            else:
                seen.setdefault(self._source[i]["caption"], None)
        return list(seen)
