"""Input pipeline: batches are a function of the step, hosts read disjoint examples, text comes from the cache."""

import numpy as np
import pytest

from lumiere_jax.data import pipeline, shapes_tfds


class _HashEncoder:
    """Deterministic stand-in for MiniLM (the real one is tested in test_minilm.py): features from a hash."""
    name, feature_dim, max_length = "hash", 4, 3

    def encode(self, texts):
        feats = np.stack([np.full((3, 4), (hash(t) % 1000) / 1000.0, np.float32) for t in texts])
        return feats, np.ones((len(texts), 3), bool)


@pytest.fixture(scope="module")
def world(data_dir, tmp_path_factory):
    sources = shapes_tfds.load_shapes_world(data_dir, 4, 16, 32, 8, 0)
    cache = pipeline.build_text_cache(_HashEncoder(), str(tmp_path_factory.mktemp("cache")), [sources["train"]])
    return sources, cache


def test_batch_k_is_the_same_whatever_came_before(world):
    sources, cache = world
    ds = pipeline.train_dataset(sources["train"], cache, global_batch_size=4, seed=7)
    again = pipeline.train_dataset(sources["train"], cache, global_batch_size=4, seed=7)
    resumed = pipeline.iterate_from(again, 5)
    for k in range(5, 12):  # crosses an epoch boundary (8 batches per epoch)
        batch = next(resumed)
        np.testing.assert_array_equal(batch["video"], ds[k]["video"])
        assert batch["video"].shape == (4, 4, 16, 16, 3) and batch["video"].dtype == np.float32
        assert -1.0 <= batch["video"].min() and batch["video"].max() <= 1.0
    other_seed = pipeline.train_dataset(sources["train"], cache, global_batch_size=4, seed=8)
    assert not np.array_equal(other_seed[0]["video"], ds[0]["video"])


def test_epochs_are_reshuffled_and_cover_the_data(world):
    sources, cache = world
    ds = pipeline.train_dataset(sources["train"], cache, global_batch_size=4, seed=0)
    epoch = [ds[k]["video"] for k in range(8)]
    next_epoch = [ds[k]["video"] for k in range(8, 16)]
    def keys(batches):
        return sorted(v.tobytes() for b in batches for v in b)
    assert keys(epoch) == keys(next_epoch)  # every clip once per epoch
    assert not all(np.array_equal(a, b) for a, b in zip(epoch, next_epoch))  # in a new order


def test_hosts_read_disjoint_examples_that_make_up_the_global_batch(world):
    sources, cache = world
    hosts = [pipeline.train_dataset(sources["train"], cache, global_batch_size=4, seed=3, process_index=i,
                                    process_count=2) for i in range(2)]
    host_videos = [h[0]["video"] for h in hosts]
    assert host_videos[0].shape[0] == 2
    seen = {v.tobytes() for hv in host_videos for v in hv}
    assert len(seen) == 4
    with pytest.raises(ValueError, match="batch_size=5 must be divisible by the number of hosts"):
        pipeline.train_dataset(sources["train"], cache, global_batch_size=5, seed=0, process_count=2)


def test_text_features_are_the_cached_encoding_of_the_caption(world):
    sources, cache = world
    example = sources["train"][3]
    mapped = pipeline.ToModelInputs(cache).map(example)
    feats, mask = _HashEncoder().encode([example["caption"]])
    np.testing.assert_allclose(mapped["text"], feats[0], atol=1e-3)  # stored as float16
    np.testing.assert_array_equal(mapped["text_mask"], mask[0])
    assert pipeline.NULL_CAPTION in cache


def test_story_source_mixes_stories_with_per_frame_captions_into_the_batches(world):
    from lumiere_jax.data import stories
    sources, _ = world
    train = sources["train"]
    none = stories.StorySource(train, 0.0, seed=0, num_frames=4, resolution=16)
    assert not none.is_story.any()
    np.testing.assert_array_equal(none[5]["video"], train[5]["video"])
    assert none[5]["frame_captions"] == [train[5]["caption"]] * 4
    half = stories.StorySource(train, 0.5, seed=0, num_frames=4, resolution=16)
    assert 0 < half.is_story.sum() < len(train)
    i = int(np.argmax(half.is_story))
    story = half[i]
    assert len(set(story["frame_captions"])) == 2 and story["video"].shape == (4, 16, 16, 3)
    assert set(half.captions()) >= {c for j in range(len(half)) for c in half[j]["frame_captions"]}
    cache = pipeline.build_text_cache(_HashEncoder(), world[1].path.rsplit("/", 1)[0], [half])
    mapped = pipeline.ToModelInputs(cache).map(story)
    assert mapped["text"].shape == (4, 3, 4) and mapped["text_mask"].shape == (4, 3)
    feats, _ = _HashEncoder().encode(story["frame_captions"])
    np.testing.assert_allclose(mapped["text"], feats, atol=1e-3)
    batch = pipeline.train_dataset(half, cache, global_batch_size=4, seed=0)[0]
    assert batch["text"].shape == (4, 4, 3, 4) and batch["text_mask"].shape == (4, 4, 3)
    with pytest.raises(ValueError, match="story_fraction=1.5 must be in \\[0, 1\\]"):
        stories.StorySource(train, 1.5, seed=0, num_frames=4, resolution=16)
    # Stories that change the object's colour or shape: other clips, captions still all in captions().
    objects = stories.StorySource(train, 0.5, seed=0, num_frames=4, resolution=16,
                                  changes=stories.parse_changes("color,shape"))
    assert not np.array_equal(objects[i]["video"], story["video"])
    assert set(objects.captions()) >= {c for j in range(len(objects)) for c in objects[j]["frame_captions"]}
    with pytest.raises(ValueError, match="data.story_changes='motion,size'"):
        stories.parse_changes("motion,size")


def test_augmented_batches_are_symmetries_of_the_clips_and_a_function_of_the_step(world):
    sources, cache = world
    plain = pipeline.train_dataset(sources["train"], cache, global_batch_size=4, seed=5)
    ds = pipeline.train_dataset(sources["train"], cache, global_batch_size=4, seed=5, augment=("hflip", "vflip"))
    resumed = pipeline.iterate_from(
        pipeline.train_dataset(sources["train"], cache, global_batch_size=4, seed=5, augment=("hflip", "vflip")), 3)
    changed = 0
    for k in range(3, 7):
        batch, base = next(resumed)["video"], plain[k]["video"]
        np.testing.assert_array_equal(batch, ds[k]["video"])
        for clip, original in zip(batch, base):  # the same shuffle: clip i of batch k, flipped or not
            flips = [original, original[:, :, ::-1], original[:, ::-1], original[:, ::-1, ::-1]]
            assert any(np.array_equal(clip, f) for f in flips)
            changed += not np.array_equal(clip, original)
    assert 0 < changed < 16
