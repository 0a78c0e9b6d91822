"""Tests for the captioned moving shapes world and its tfds builder."""

import numpy as np
import pytest

from lumiere_jax.data import shapes
from lumiere_jax.data import shapes_tfds

_KEYS = ("video", "caption", "num_objects", "color", "shape", "motion", "size", "speed")


def _specs(n: int, seed: int = 0) -> list[shapes.ClipSpec]:
    rng = np.random.default_rng(seed)
    return [shapes.sample_clip_spec(rng) for _ in range(n)]


def _assert_examples_equal(a: dict, b: dict) -> None:
    assert set(a) == set(b) == set(_KEYS)
    assert a["caption"] == b["caption"]
    for key in _KEYS[2:] + ("video",):
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.mark.parametrize("num_frames,resolution", [(8, 32), (16, 64)])
def test_example_format(num_frames, resolution):
    example = shapes.make_example(3, seed=0, num_frames=num_frames, resolution=resolution)
    assert set(example) == set(_KEYS)
    assert example["video"].dtype == np.uint8
    assert example["video"].shape == (num_frames, resolution, resolution, 3)
    assert isinstance(example["caption"], str) and example["caption"]
    assert example["num_objects"].dtype == np.int32 and example["num_objects"] in (1, 2)
    for key in ("color", "shape", "motion", "size", "speed"):
        assert example[key].dtype == np.int32 and example[key].shape == (2,)
    # Absent objects are padded with -1.
    assert np.all(example["color"][example["num_objects"]:] == -1)


def test_make_example_is_deterministic_and_seeded():
    a = shapes.make_example(5, seed=1, num_frames=8, resolution=32)
    _assert_examples_equal(a, shapes.make_example(5, seed=1, num_frames=8, resolution=32))
    others = [shapes.make_example(5, seed=2, num_frames=8, resolution=32),
              shapes.make_example(6, seed=1, num_frames=8, resolution=32),
              shapes.make_example(5, seed=1, num_frames=8, resolution=32, split="test")]
    for other in others:
        assert not np.array_equal(a["video"], other["video"])


def test_all_attribute_values_appear():
    specs = _specs(400)
    objects = [o for spec in specs for o in spec.objects]
    assert {o.color for o in objects} == set(shapes.COLORS)
    assert {o.shape for o in objects} == set(shapes.SHAPES)
    assert {o.motion for o in objects} == set(shapes.MOTIONS)
    assert {o.size for o in objects} == set(shapes.SIZES)
    assert {o.speed for o in objects if o.motion != "still"} == set(shapes.SPEEDS)
    assert all(o.speed is None for o in objects if o.motion == "still")
    two = [spec for spec in specs if len(spec.objects) == 2]
    assert 0.1 < len(two) / len(specs) < 0.3
    assert all(spec.objects[0].color != spec.objects[1].color for spec in two)


def test_attribute_ids_match_spec():
    for index in range(50):
        rng = np.random.default_rng([0, 0, index])
        spec = shapes.sample_clip_spec(rng)
        example = shapes.make_example(index, seed=0, num_frames=2, resolution=16)
        assert example["num_objects"] == len(spec.objects)
        for i, obj in enumerate(spec.objects):
            assert shapes.COLORS[example["color"][i]] == obj.color
            assert shapes.SHAPES[example["shape"][i]] == obj.shape
            assert shapes.MOTIONS[example["motion"][i]] == obj.motion
            assert shapes.SIZES[example["size"][i]] == obj.size
            assert example["speed"][i] == (shapes.SPEEDS.index(obj.speed) if obj.speed else -1)


_MOTION_WORDS = {"left": ("left",), "right": ("right",), "up": ("up", "top"),
                 "down": ("down", "bottom"), "still": ("still", "not moving")}


def test_captions_mention_colour_shape_motion():
    rng = np.random.default_rng(0)
    for spec in _specs(300):
        text = shapes.caption(spec, rng)
        for obj in spec.objects:
            assert obj.color in text and obj.shape in text, text
            assert any(w in text for w in _MOTION_WORDS[obj.motion]), text
        if len(spec.objects) == 2:
            assert " and " in text


def test_captions_vary_and_are_reproducible():
    spec = shapes.spec_from_attributes("red", "circle", "left", "large", "fast")
    texts = {shapes.caption(spec, np.random.default_rng(i)) for i in range(60)}
    assert len(texts) >= 8
    # The verb tells the template apart: at least four phrasings are in use.
    verbs = {v for v in ("moving", "moves", "going", "slides", "drifting")
             if any(f" {v} " in t for t in texts)}
    assert len(verbs) >= 4
    rng_a, rng_b = np.random.default_rng(7), np.random.default_rng(7)
    assert shapes.caption(spec, rng_a) == shapes.caption(spec, rng_b)


def test_prompt_for_is_canonical():
    assert shapes.prompt_for("red", "circle", "left") == "a red circle moving left"
    assert (shapes.prompt_for("orange", "square", "up", "large", "fast")
            == "a large orange square moving up quickly")
    assert shapes.prompt_for("blue", "triangle", "still", "small", "fast") == (
        "a small blue triangle staying still")


def test_spec_from_attributes():
    spec = shapes.spec_from_attributes("green", "triangle", "down", "small", "fast")
    (obj,) = spec.objects
    assert (obj.color, obj.shape, obj.motion, obj.size, obj.speed) == (
        "green", "triangle", "down", "small", "fast")
    assert shapes.spec_from_attributes("green", "square", "still").objects[0].speed is None
    with pytest.raises(ValueError, match="purple"):
        shapes.spec_from_attributes("purple", "circle", "left")


def _mass(video: np.ndarray) -> np.ndarray:
    """Per-frame sum of |pixel - background|, [T]."""
    diff = np.abs(video.astype(np.float64) - shapes.BACKGROUND)
    return diff.sum(axis=(1, 2, 3))


def test_objects_stay_inside_the_frame():
    for spec in _specs(200, seed=3):
        video = shapes.render_clip(spec, num_frames=16, resolution=32)
        border = np.concatenate([video[:, 0], video[:, -1], video[:, :, 0], video[:, :, -1]], 1)
        assert np.all(border == shapes.BACKGROUND), spec
        # A fully visible object has the same ink in every frame (up to anti-aliasing).
        mass = _mass(video)
        assert mass.min() > 0.9 * mass.max(), spec


def _centroid(frame: np.ndarray) -> np.ndarray:
    weight = np.abs(frame.astype(np.float64) - shapes.BACKGROUND).sum(-1)
    yy, xx = np.mgrid[0:frame.shape[0], 0:frame.shape[1]]
    return np.array([(weight * xx).sum(), (weight * yy).sum()]) / weight.sum()


@pytest.mark.parametrize("motion", shapes.MOTIONS)
@pytest.mark.parametrize("speed,expected", [("slow", 0.245), ("fast", 0.49)])
def test_motion_direction_and_distance(motion, speed, expected):
    spec = shapes.spec_from_attributes("cyan", "square", motion, "small", speed)
    video = shapes.render_clip(spec, num_frames=8, resolution=64)
    moved = (_centroid(video[-1]) - _centroid(video[0])) / 64  # (dx, dy), frame fractions.
    direction = np.array(shapes.MOTION_DIRECTION[motion])
    if motion == "still":
        expected = 0.0
    np.testing.assert_allclose(moved, direction * expected, atol=0.01)


def test_sixteen_frames_contain_the_eight_frame_clip():
    for spec in _specs(10, seed=4):
        np.testing.assert_array_equal(shapes.render_clip(spec, 16, 32)[::2],
                                      shapes.render_clip(spec, 8, 32))


def test_resolutions_render_the_same_scene():
    for spec in _specs(10, seed=5):
        small = shapes.render_clip(spec, 4, 32).astype(np.float64)
        large = shapes.render_clip(spec, 4, 64).astype(np.float64)
        pooled = large.reshape(4, 32, 2, 32, 2, 3).mean((2, 4))
        assert np.abs(pooled - small).mean() < 1.0


def test_tfds_round_trip(tmp_path):
    args = dict(num_frames=4, resolution=16, num_train=6, num_test=3, seed=11)
    sources = shapes_tfds.load_shapes_world(str(tmp_path), **args)
    assert set(sources) == {"train", "test"}
    assert (len(sources["train"]), len(sources["test"])) == (6, 3)
    for split, source in sources.items():
        for index in range(len(source)):
            example = source[index]
            assert isinstance(example["caption"], str)
            assert example["video"].dtype == np.uint8
            assert example["num_objects"].dtype == np.int32
            reference = shapes.make_example(index, 11, 4, 16, split=split)
            _assert_examples_equal(example, reference)
    batch = sources["train"].__getitems__([4, 1])
    _assert_examples_equal(batch[0], shapes.make_example(4, 11, 4, 16))

    # A second call reuses the files; a different size gets its own directory.
    files = sorted(p for p in tmp_path.rglob("*.array_record*"))
    stamps = [p.stat().st_mtime_ns for p in files]
    shapes_tfds.load_shapes_world(str(tmp_path), **args)
    assert [p.stat().st_mtime_ns for p in files] == stamps
    other = shapes_tfds.load_shapes_world(str(tmp_path), **{**args, "resolution": 8})
    assert other["train"][0]["video"].shape == (4, 8, 8, 3)
    assert len(list(tmp_path.rglob("*train.array_record*"))) == 2


def test_story_clips_turn_once_stay_in_frame_and_caption_each_segment():
    turns = set()
    for index in range(40):
        ex = shapes.make_story_example(index, seed=0, num_frames=16, resolution=32)
        video, k = ex["video"], int(ex["turn_frame"])
        assert 4 <= k <= 12 and len(ex["frame_captions"]) == 16, k  # the middle half of the clip
        turns.add(k)
        first, second = ex["frame_captions"][0], ex["frame_captions"][k]
        assert ex["frame_captions"] == [first] * k + [second] * (16 - k) and ex["caption"] == first
        assert shapes.story_frame_captions(index, 0, 16) == ex["frame_captions"]  # no render needed
        border = np.concatenate([video[:, 0], video[:, -1], video[:, :, 0], video[:, :, -1]], 1)
        assert np.all(border == shapes.BACKGROUND), index
        # Up to the turn: the straight-line clip of the first segment; from it on: that of the second.
        obj = shapes._story_spec_and_captions(index, 0, 16, "train")[0].objects[0]
        straight = [shapes.render_clip(shapes.ClipSpec((obj.segment(i),)), 16, 32) for i in (0, 1)]
        assert np.abs(video[:k + 1].astype(int) - straight[0][:k + 1]).max() <= 1
        assert np.abs(video[k:].astype(int) - straight[1][:16 - k]).max() <= 1
        assert obj.motions[0] != obj.motions[1] and len(set(obj.colors)) == len(set(obj.shapes)) == 1
        # Each caption names its own segment's motion.
        for caption, i in ((first, 0), (second, 1)):
            words = _MOTION_WORDS[obj.motions[i]]
            assert obj.colors[i] in caption and obj.shapes[i] in caption and any(w in caption for w in words), caption
        # The object moves each segment's way: centroid displacement from its first to its last frame.
        for i, (a, b) in enumerate(((0, k), (k, 15))):
            moved = _centroid(video[b]) - _centroid(video[a])
            direction = np.asarray(shapes.MOTION_DIRECTION[obj.motions[i]])
            if obj.motions[i] == "still":
                assert np.abs(moved).max() < 0.2, (index, i, moved)
            else:
                assert moved @ direction > 0.9 * np.linalg.norm(moved) > 0.5, (index, i, moved)
    assert len(turns) >= 5
    a, b = (shapes.make_story_example(3, seed=s, num_frames=8, resolution=32) for s in (0, 0))
    np.testing.assert_array_equal(a["video"], b["video"])
    with pytest.raises(ValueError, match="num_frames >= 4"):
        shapes.make_story_example(0, seed=0, num_frames=2, resolution=32)


def test_story_clips_can_change_the_objects_colour_or_shape_instead():
    changed = set()
    for index in range(30):
        ex = shapes.make_story_example(index, seed=0, num_frames=16, resolution=32, changes=("color", "shape"))
        video, k, captions = ex["video"], int(ex["turn_frame"]), ex["frame_captions"]
        obj = shapes._story_spec_and_captions(index, 0, 16, "train", ("color", "shape"))[0].objects[0]
        assert obj.motions[0] == obj.motions[1] and obj.speeds[0] == obj.speeds[1]  # it moves on the same way
        kinds = [kind for kind, pair in (("color", obj.colors), ("shape", obj.shapes)) if pair[0] != pair[1]]
        assert len(kinds) == 1, obj  # exactly one of the two changes
        changed.add(kinds[0])
        assert captions == [captions[0]] * k + [captions[k]] * (16 - k)
        for i, frames in ((0, video[:k]), (1, video[k:])):
            assert obj.colors[i] in captions[0 if i == 0 else k] and obj.shapes[i] in captions[0 if i == 0 else k]
            # Every frame of a segment is drawn in its colour: the pixel farthest from the background (the
            # object's inside; its anti-aliased rim is a blend of the two).
            for frame in frames:
                far = np.abs(frame.astype(int) - shapes.BACKGROUND).sum(-1).argmax()
                assert tuple(frame.reshape(-1, 3)[far]) == tuple(shapes.COLOR_RGB[obj.colors[i]]), (index, i)
        border = np.concatenate([video[:, 0], video[:, -1], video[:, :, 0], video[:, :, -1]], 1)
        assert np.all(border == shapes.BACKGROUND), index
        if obj.motions[0] != "still":  # one straight path over the turn
            moved = _centroid(video[15]) - _centroid(video[0])
            direction = np.asarray(shapes.MOTION_DIRECTION[obj.motions[0]])
            assert moved @ direction > 0.9 * np.linalg.norm(moved) > 0.5, (index, moved)
    assert changed == {"color", "shape"}
    # Motion-only stories (the default) are the same clips whichever other kinds the code offers.
    np.testing.assert_array_equal(shapes.make_story_example(4, 0, 8, 32)["video"],
                                  shapes.make_story_example(4, 0, 8, 32, changes=("motion",))["video"])
    with pytest.raises(ValueError, match=r"must be distinct entries of \('motion', 'color', 'shape'\)"):
        shapes.make_story_example(0, seed=0, num_frames=8, resolution=32, changes=("colour",))
