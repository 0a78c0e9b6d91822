"""grain input pipeline: shuffled, per-host sharded batches of clips with cached text features.

The training stream is a `grain.MapDataset` indexed by step: batch k is the
same array whatever happened before it, so a resumed run reads exactly the
batches an uninterrupted run would have (no iterator state to checkpoint).
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Iterator, Sequence

import grain
import numpy as np

from lumiere_jax.data.augment import ClipSymmetries
from lumiere_jax.data.videos import DamagedDataError
from lumiere_jax.text.cache import TextEmbeddingCache

NULL_CAPTION = ""  # the caption that classifier-free guidance trains and samples as "unconditional"


class ToModelInputs(grain.transforms.Map):
    """uint8 clip -> float32 in [-1, 1]; caption -> its cached text features and mask."""

    def __init__(self, cache: TextEmbeddingCache):
        self._cache = cache

    def map(self, example: dict[str, Any]) -> dict[str, np.ndarray]:
        # A caption per frame (data/stories.py) gives text [T, L, D]; one per clip gives [L, D].
        # The cache reads just these rows from disk, so host memory does not grow with the number of captions.
        per_frame = "frame_captions" in example
        text, mask = self._cache.lookup(list(example["frame_captions"]) if per_frame else [example["caption"]])
        return {
            "video": example["video"].astype(np.float32) / 127.5 - 1.0,  # [T, H, W, 3]
            "text": text if per_frame else text[0],  # [(T,) L, D] float32
            "text_mask": mask if per_frame else mask[0],  # [(T,) L]
        }


def unique_captions(source: Any) -> list[str]:
    """Every distinct caption of a data source, in first-seen order (`source.captions()` where it has one)."""
    if hasattr(source, "captions"):
        return list(source.captions())
    seen: dict[str, None] = {}
    for i in range(len(source)):
        seen.setdefault(source[i]["caption"], None)
    return list(seen)


def build_text_cache(encoder: Any, cache_dir: str, sources: Sequence[Any], extra: Sequence[str] = ()) -> TextEmbeddingCache:
    """Encodes every caption of `sources` (plus `extra` and the null caption) once, on disk under cache_dir."""
    captions = [NULL_CAPTION, *extra]
    for source in sources:
        captions += unique_captions(source)
    os.makedirs(cache_dir, exist_ok=True)
    return TextEmbeddingCache(encoder, cache_dir, captions)


def train_dataset(source: Any, cache: TextEmbeddingCache, *, global_batch_size: int, seed: int,
                  process_index: int = 0, process_count: int = 1, augment: Sequence[str] = ()) -> grain.MapDataset:
    """Infinite MapDataset of this host's batches; element k is the k-th batch of the run.

    Every host shuffles with the same seed and takes every process_count-th
    example, so hosts read disjoint examples and together form the global batch.
    augment: data/augment.py's ops, each drawn per example from the seed and the example's place in the stream.
    """
    if global_batch_size % process_count:
        raise ValueError(f"batch_size={global_batch_size} must be divisible by the number of hosts "
                         f"({process_count}).")
    ds = grain.MapDataset.source(source).shuffle(seed=seed).repeat()
    ds = ds[process_index::process_count]
    if augment:
        ds = ds.random_map(ClipSymmetries(augment), seed=seed)
    return ds.map(ToModelInputs(cache)).batch(global_batch_size // process_count, drop_remainder=True)


def iterate_from(ds: grain.MapDataset, start_step: int, *, num_threads: int = 2,
                 prefetch: int = 4) -> Iterator[dict[str, np.ndarray]]:
    """Iterates batches start_step, start_step + 1, ... with background prefetch.

    An error reading a batch in a prefetch thread (DamagedDataError: a prepared shard deleted, resized or
    unreadable) is raised by the `next()` that asks for that batch, in the caller's thread.
    """
    options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)
    return iter(ds[start_step:].to_iter_dataset(options))


def check_bad_records(sources: Iterable[Any], limit: int) -> int:
    """The damaged records the sources skipped so far (VideoSource.bad_records; other sources skip none).

    Reading happens in grain's prefetch threads, which skip a damaged record and count it; the train loop calls
    this after each batch, so more than `limit` (data.max_bad_records) stops the run with one line.
    """
    count, last, fix = 0, "", ""
    for source in sources:
        bad = getattr(source, "bad_records", None)
        if bad:
            count += len(bad)
            last, fix = list(bad.values())[-1], source.fix()
    if count > limit:
        raise DamagedDataError(f"{count} damaged records of the prepared data were skipped, more than "
                               f"data.max_bad_records={limit} (the last: {last}): {fix}.")
    return count
