"""Tests for the program that checks generated shapes-world clips."""

import dataclasses

import numpy as np
import pytest
from scipy import ndimage

from lumiere_jax.data import shapes
from lumiere_jax.eval import shapes_checker

_KEYS = ("color", "shape", "motion", "size", "speed")


def _single_objects(n: int, seed: int) -> list[shapes.ObjectSpec]:
    rng = np.random.default_rng(seed)
    return [shapes.sample_clip_spec(rng).objects[0] for _ in range(n)]


def _render(obj: shapes.ObjectSpec, num_frames: int = 8, resolution: int = 32) -> np.ndarray:
    return shapes.render_clip(shapes.ClipSpec((obj,)), num_frames, resolution)


def _degrade(video: np.ndarray, noise: float, blur: float, rng: np.random.Generator) -> np.ndarray:
    """What a diffusion model might produce: blurred, noisy, still uint8."""
    out = video.astype(np.float32)
    if blur:
        out = ndimage.gaussian_filter(out, (0, blur, blur, 0))
    out = out + rng.normal(0.0, noise, out.shape)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def _expected(obj: shapes.ObjectSpec) -> dict:
    return {key: getattr(obj, key) for key in _KEYS}


@pytest.mark.parametrize("noise,blur", [(0.0, 0.0), (20.0, 0.7)])
def test_recovers_attributes_of_rendered_clips(noise, blur):
    rng = np.random.default_rng(0)
    results = [shapes_checker.check_clip(_degrade(_render(obj), noise, blur, rng), _expected(obj))
               for obj in _single_objects(200, seed=1)]
    for key in _KEYS + ("consistent",):
        accuracy = np.mean([r[key] for r in results if key in r])
        assert accuracy >= 0.95, (key, accuracy)


def test_recovers_attributes_at_sixteen_frames_and_64_pixels():
    rng = np.random.default_rng(0)
    for obj in _single_objects(12, seed=2):
        video = _degrade(_render(obj, num_frames=16, resolution=64), 20.0, 0.7, rng)
        result = shapes_checker.check_clip(video, _expected(obj))
        assert all(result.values()), (obj, result)


def test_wrong_expectations_fail():
    obj = shapes.ObjectSpec("red", "circle", "left", "large", "fast", 0.7, 0.5)
    wrong = {"color": "orange", "shape": "square", "motion": "right", "size": "small",
             "speed": "slow"}
    result = shapes_checker.check_clip(_render(obj), wrong)
    assert result == {**{key: False for key in _KEYS}, "consistent": True}


def test_check_clip_reports_only_expected_keys():
    obj = shapes.ObjectSpec("blue", "square", "still", "small", None, 0.5, 0.5)
    result = shapes_checker.check_clip(_render(obj), {"color": "blue", "speed": "fast",
                                                      "motion": "still"})
    # A still object has no speed to check.
    assert result == {"color": True, "motion": True, "consistent": True}


def _splice(obj: shapes.ObjectSpec, num_frames: int = 8, **changes) -> np.ndarray:
    """The clip of `obj` whose second half shows the object with `changes`."""
    first = _render(obj, num_frames)
    second = _render(dataclasses.replace(obj, **changes), num_frames)
    return np.concatenate([first[:num_frames // 2], second[num_frames // 2:]])


def _other(vocab: tuple[str, ...], value: str) -> str:
    return vocab[(vocab.index(value) + 1) % len(vocab)]


def test_inconsistent_clips_fail():
    for obj in _single_objects(20, seed=3):
        assert shapes_checker.analyze_clip(_render(obj))["consistent"], obj
        jump = 0.3 if obj.x0 < 0.5 else -0.3
        broken = {
            "colour jump": _splice(obj, color=_other(shapes.COLORS, obj.color)),
            "shape change": _splice(obj, shape=_other(shapes.SHAPES, obj.shape)),
            "size change": _splice(obj, size=_other(shapes.SIZES, obj.size)),
            "teleport": _splice(obj, x0=obj.x0 + jump),
        }
        vanished = _render(obj)
        vanished[5] = shapes.BACKGROUND
        broken["vanishing"] = vanished
        for name, video in broken.items():
            result = shapes_checker.analyze_clip(video)
            assert not result["consistent"], (name, obj)
            assert result["consistency"] < 1.0 or name == "size change", (name, obj)


@pytest.mark.parametrize("fill", ["background", "black", "white", "noise"])
def test_clips_without_object(fill):
    rng = np.random.default_rng(0)
    video = {"background": np.broadcast_to(shapes.BACKGROUND, (8, 32, 32, 3)),
             "black": np.zeros((8, 32, 32, 3), np.uint8),
             "white": np.full((8, 32, 32, 3), 255, np.uint8),
             "noise": _degrade(np.broadcast_to(shapes.BACKGROUND, (8, 32, 32, 3)), 25.0, 0.0, rng),
             }[fill]
    found = shapes_checker.analyze_clip(video)
    assert found["color"] is None and found["shape"] is None and found["motion"] is None
    assert not found["consistent"]
    result = shapes_checker.check_clip(video, {"color": "red", "shape": "circle", "motion": "up"})
    assert result == {"color": False, "shape": False, "motion": False, "consistent": False}


def test_short_clips_do_not_crash():
    obj = shapes.ObjectSpec("yellow", "triangle", "right", "large", "slow", 0.3, 0.5)
    for num_frames in (1, 2):
        found = shapes_checker.analyze_clip(_render(obj, num_frames))
        assert (found["color"], found["shape"]) == ("yellow", "triangle")


def test_two_objects_report_the_larger_one():
    big = shapes.ObjectSpec("green", "square", "down", "large", "slow", 0.25, 0.3)
    small = shapes.ObjectSpec("magenta", "circle", "left", "small", "fast", 0.75, 0.5)
    for objects in ((big, small), (small, big)):
        found = shapes_checker.analyze_clip(shapes.render_clip(shapes.ClipSpec(objects), 8, 32))
        assert (found["color"], found["shape"], found["motion"]) == ("green", "square", "down")
        assert found["consistent"]


def test_rejects_float_clips():
    with pytest.raises(ValueError, match="uint8"):
        shapes_checker.analyze_clip(np.zeros((8, 32, 32, 3), np.float32))


def test_count_jumps_finds_teleports_and_losses_but_not_smooth_motion():
    for obj in _single_objects(12, seed=5) + [shapes.ObjectSpec("red", "circle", "right", "small", "fast", 0.2, 0.5)]:
        assert shapes_checker.count_jumps(_render(obj, num_frames=16)) == 0, obj
        assert shapes_checker.count_jumps(_splice(obj, 16, x0=obj.x0 + (0.3 if obj.x0 < 0.5 else -0.3))) == 1, obj
        lost = _render(obj, num_frames=16)
        lost[7] = shapes.BACKGROUND
        assert shapes_checker.count_jumps(lost) == 2, obj  # into and out of the empty frame


def test_count_jumps_follows_an_object_across_a_colour_change_at_the_given_segments():
    for index in range(6):
        story = shapes.make_story_example(index, seed=0, num_frames=16, resolution=32, changes=("color",))
        video, k = story["video"], int(story["turn_frame"])
        assert shapes_checker.count_jumps(video) >= min(k, 16 - k)  # the other colour's frames read as lost
        assert shapes_checker.count_jumps(video, segments=[k]) == 0, index  # one smooth path over the change
        # A teleport at the colour change is counted across the border.
        obj = shapes._story_spec_and_captions(index, 0, 16, "train", ("color",))[0].objects[0]
        moved = dataclasses.replace(obj.segment(1), x0=obj.segment(1).x0 + (0.3 if obj.x0 < 0.5 else -0.3))
        spliced = np.concatenate([video[:k], shapes.render_clip(shapes.ClipSpec((moved,)), 16, 32)[:16 - k]])
        assert shapes_checker.count_jumps(spliced, segments=[k]) == 1, index
    empty = np.broadcast_to(shapes.BACKGROUND, (8, 32, 32, 3)).copy()
    assert shapes_checker.count_jumps(empty) == shapes_checker.count_jumps(empty, segments=[4]) == 7
