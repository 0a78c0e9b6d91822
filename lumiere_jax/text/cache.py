"""On-disk cache of frozen text-encoder features, so training never runs the encoder.

A dataset has a fixed, small set of captions; their token features are computed
once, stored as one .npz per (encoder, max_length), and gathered by index in the
data pipeline.

Example:
    cache = TextEmbeddingCache(encoder, "runs/text_cache", captions)
    features, mask = cache.lookup(batch_captions)  # [B, L, D], [B, L]
    rows = cache.index_of(batch_captions)          # or gather cache.features[rows]
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from typing import Protocol

import numpy as np


class TextEncoder(Protocol):
    """What the cache needs from a text encoder (e.g. MiniLMTextEncoder)."""

    name: str
    feature_dim: int
    max_length: int

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Returns features [N, L, D] and a bool mask [N, L]."""
        ...


class TextEmbeddingCache:
    """Token features and masks for a set of strings, computed once and kept in an .npz file.

    Attributes:
        path: the .npz file; its name holds the encoder name and max_length.
        strings: the cached strings, in row order.
        features: [S, L, D] array in the storage dtype (float16 by default).
        masks: [S, L] bool array.
    """

    def __init__(
        self,
        encoder: TextEncoder,
        cache_dir: str,
        captions: Sequence[str] = (),
        dtype: type[np.floating] = np.float16,
    ):
        """Loads the cache file for `encoder` if present, then encodes any missing captions."""
        if np.dtype(dtype) not in (np.float16, np.float32):
            raise ValueError(f"dtype={dtype!r} is not supported; use np.float16 or np.float32.")
        self.encoder = encoder
        self.dtype = np.dtype(dtype)
        self.path = os.path.join(
            os.fspath(cache_dir), f"text_{encoder.name}_L{encoder.max_length}.npz"
        )
        length, dim = encoder.max_length, encoder.feature_dim
        self.strings: list[str] = []
        self.features = np.zeros((0, length, dim), self.dtype)  # [S, L, D]
        self.masks = np.zeros((0, length), bool)  # [S, L]
        if os.path.isfile(self.path):
            self._load()
        self._rows = {s: i for i, s in enumerate(self.strings)}
        self.add(captions)

    def _load(self) -> None:
        try:
            with np.load(self.path) as data:
                strings, features, masks = data["strings"], data["features"], data["masks"]
        except Exception as e:
            raise ValueError(
                f"Text cache {self.path} is unreadable ({e}); delete it to rebuild."
            ) from e
        shape = (self.encoder.max_length, self.encoder.feature_dim)
        # A file with the right name but other shapes came from another encoder
        # build; recomputing beats serving features of the wrong size.
        if features.shape[1:] != shape or masks.shape != features.shape[:2]:
            return
        self.strings = [str(s) for s in strings]
        self.features = features.astype(self.dtype)
        self.masks = masks.astype(bool)

    def add(self, captions: Sequence[str]) -> None:
        """Encodes captions not yet cached; if any were new, rewrites the file atomically."""
        if isinstance(captions, str):
            raise TypeError("add() takes a sequence of strings, not a single string.")
        missing = [s for s in dict.fromkeys(captions) if s not in self._rows]
        if not missing:
            return
        features, masks = self.encoder.encode(missing)  # [M, L, D], [M, L]
        self.features = np.concatenate([self.features, features.astype(self.dtype)])
        self.masks = np.concatenate([self.masks, masks.astype(bool)])
        for s in missing:
            self._rows[s] = len(self.strings)
            self.strings.append(s)
        self._save()

    def _save(self) -> None:
        folder = os.path.dirname(self.path) or "."
        os.makedirs(folder, exist_ok=True)
        # Write then rename, so a crash or a concurrent reader never sees half a file.
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".npz.tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, strings=np.array(self.strings, dtype=str),
                         features=self.features, masks=self.masks)
            os.replace(tmp, self.path)
        except BaseException:
            os.unlink(tmp)
            raise

    def __len__(self) -> int:
        return len(self.strings)

    def __contains__(self, caption: str) -> bool:
        return caption in self._rows

    def index_of(self, captions: Sequence[str]) -> np.ndarray:
        """Rows of `captions` in `features`/`masks`, as int32 [N]; KeyError names a missing one."""
        rows = np.empty(len(captions), np.int32)
        for i, caption in enumerate(captions):
            row = self._rows.get(caption)
            if row is None:
                raise KeyError(
                    f"Caption {caption!r} is not in the text cache {self.path}; "
                    "pass it when building the cache or call add()."
                )
            rows[i] = row
        return rows

    def lookup(self, captions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Returns float32 features [N, L, D] and bool mask [N, L] for cached captions."""
        rows = self.index_of(captions)
        return self.features[rows].astype(np.float32), self.masks[rows]
