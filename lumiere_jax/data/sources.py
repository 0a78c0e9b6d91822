"""The training data that config.data names: the built-in shapes world, or a folder or manifest of captioned videos
or images.

    sources = load_sources(config.data)    # {"train": ..., "test": ...}: random access, {"video", "caption", ...}
    images = load_image_sources(config.data)  # data.images, for the image share of data.mixture

Every kind gives uint8 clips [data.num_frames, data.resolution, data.resolution, 3] with a caption (images: one
frame); the shapes world's also carry the attributes its checker evaluates (docs/data.md).
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import ml_collections

from lumiere_jax import paths
from lumiere_jax.data import shapes_tfds, videos

NUM_SAMPLE_PROMPTS = 4


def load_sources(data: ml_collections.ConfigDict) -> dict[str, Any]:
    """Builds (first use) and opens the source of config.data; {"train": ..., "test": ...}."""
    if data.dataset == "videos":
        return videos.load_videos(data)
    if data.dataset == "images":
        return videos.load_videos(data, videos.IMAGES)
    return shapes_tfds.load_shapes_world(os.fspath(paths.resolve(data.data_dir)), data.num_frames, data.resolution,
                                         data.num_train, data.num_test, data.seed)


def load_image_sources(data: ml_collections.ConfigDict) -> dict[str, Any]:
    """The captioned images of data.images as single-frame clips; {"train": ..., "test": ...}."""
    return videos.load_videos(data, videos.IMAGES)


LOCAL_TEXT_CACHE = "~/.cache/lumiere_jax/text_cache"  # for a data_dir in a bucket: the cache is read by row


def text_cache_dir(data: ml_collections.ConfigDict) -> str:
    """Where the source's caption features are cached: beside its data, one folder per source; on local disk
    (LOCAL_TEXT_CACHE, a folder per data_dir) when data_dir is a gs:// URL, since rows are read at random."""
    root = os.path.join(os.fspath(paths.resolve(data.data_dir)), "text_cache")
    if paths.is_remote(root):
        root = os.path.join(os.path.expanduser(LOCAL_TEXT_CACHE), hashlib.sha1(root.encode()).hexdigest()[:12])
    if data.dataset in ("videos", "images"):
        path = os.fspath(paths.resolve(videos.source_path(data, videos.IMAGES if data.dataset == "images"
                                                          else videos.VIDEOS)))
        return os.path.join(root, f"{data.dataset}_" + hashlib.sha1(path.encode()).hexdigest()[:12])
    return os.path.join(root, shapes_tfds.shapes_world_config(data.num_frames, data.resolution, data.num_train,
                                                              data.num_test, data.seed).name)


def sample_prompts(config: ml_collections.ConfigDict, sources: dict[str, Any]) -> list[str]:
    """The prompts of the trainer's periodic samples: config.sample.prompts for the shapes world; for videos, the
    first captions of the held-out split (of the training split when none is held out), so the samples can be
    set beside real clips of the same captions."""
    if config.data.dataset == "shapes_world":
        return list(config.sample.prompts)
    split = sources["test"] if len(sources["test"]) else sources["train"]
    return split.captions()[:NUM_SAMPLE_PROMPTS]
