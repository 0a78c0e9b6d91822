"""data.augment: each symmetry is the right one, drawn for about half the clips, the same on a resumed run."""

import itertools

import grain
import numpy as np
import pytest

from configs import ssr as ssr_configs
from lumiere_jax import config_lib
from lumiere_jax.data import augment


def _clip(seed=0, t=4, h=6, w=6):
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)  # [T, H, W, C]


def test_each_op_is_its_symmetry():
    v = _clip(t=3, h=5, w=5)
    np.testing.assert_array_equal(augment.apply(v, ["hflip"])[:, :, 0], v[:, :, -1])
    np.testing.assert_array_equal(augment.apply(v, ["vflip"])[:, 0], v[:, -1])
    np.testing.assert_array_equal(augment.apply(v, ["transpose"])[:, 1, 3], v[:, 3, 1])
    np.testing.assert_array_equal(augment.apply(v, ["reverse"])[0], v[-1])
    np.testing.assert_array_equal(augment.apply(v, []), v)
    # The 16 combinations give 16 different clips of a random clip, and each op undoes itself.
    combos = [c for n in range(5) for c in itertools.combinations(augment.OPS, n)]
    outs = {augment.apply(v, c).tobytes() for c in combos}
    assert len(outs) == 16
    for op in augment.OPS:
        np.testing.assert_array_equal(augment.apply(augment.apply(v, [op]), [op]), v)


def _dataset(ops, n=400, seed=3):
    examples = [{"video": _clip(i), "caption": f"clip {i}", "frame_captions": [f"f{k}" for k in range(4)]}
                for i in range(n)]
    return examples, grain.MapDataset.source(examples).random_map(augment.ClipSymmetries(ops), seed=seed)


def test_ops_are_drawn_independently_for_half_the_clips_and_again_for_the_same_index():
    examples, ds = _dataset(("hflip", "reverse"))
    drawn = []
    for i, ex in enumerate(examples):
        out = ds[i]
        assert out["caption"] == ex["caption"]
        matches = [c for c in ((), ("hflip",), ("reverse",), ("hflip", "reverse"))
                   if np.array_equal(out["video"], augment.apply(ex["video"], c))]
        assert len(matches) == 1, i
        drawn.append(matches[0])
        assert out["frame_captions"] == (ex["frame_captions"][::-1] if "reverse" in matches[0]
                                         else ex["frame_captions"])
        np.testing.assert_array_equal(ds[i]["video"], out["video"])  # a resumed run reads the same clip
    counts = {c: drawn.count(c) for c in set(drawn)}
    assert len(counts) == 4 and all(60 <= n <= 140 for n in counts.values()), counts  # 100 each expected
    _, other = _dataset(("hflip", "reverse"), seed=4)
    assert any(not np.array_equal(other[i]["video"], ds[i]["video"]) for i in range(20))


def test_transpose_refuses_frames_that_are_not_square():
    ds = grain.MapDataset.source([{"video": _clip(i, h=4, w=6), "caption": ""} for i in range(20)])
    ds = ds.random_map(augment.ClipSymmetries(("transpose",)), seed=0)
    with pytest.raises(ValueError, match="needs square frames; these are 6x4"):
        for i in range(20):
            ds[i]


@pytest.mark.parametrize("spec, match", [("hflip,rotate", "'rotate' is not an op"),
                                         ("reverse,reverse", "an op is named twice")])
def test_bad_ops_are_refused_in_one_line(spec, match):
    with pytest.raises(ValueError, match=match):
        augment.parse_augment(spec)
    assert augment.parse_augment(" hflip, vflip ,") == ("hflip", "vflip")


def test_the_config_refuses_augmenting_the_shapes_world_whose_captions_name_directions():
    config = ssr_configs.get_config("size=smoke")
    config.data.augment = "hflip"
    with pytest.raises(ValueError, match="data.augment='hflip' would mirror"):
        config_lib.validate_data(config)
    config.data.augment = "spin"
    with pytest.raises(ValueError, match="'spin' is not an op"):
        config_lib.validate_data(config)
