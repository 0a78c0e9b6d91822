"""I3D end to end on random weights the test writes in pytorch-i3d naming: load, forward, features, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lumiere_jax import evaluate
from lumiere_jax.data import shapes
from lumiere_jax.eval import i3d


def _random_weights(seed: int = 0, num_classes: int = 400) -> dict[str, np.ndarray]:
    """Weights in PyTorch layout with activations of sane scale (He-scaled convs, unit BN statistics)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in i3d.expected_shapes(num_classes).items():
        if name.endswith("conv3d.weight"):
            fan_in = int(np.prod(shape[1:]))
            out[name] = (rng.normal(size=shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        elif name.endswith("running_var"):
            out[name] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        elif name.endswith("bn.weight"):
            out[name] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        else:  # biases and running means
            out[name] = (0.1 * rng.normal(size=shape)).astype(np.float32)
        if name.endswith("bn.bias"):
            out[name.replace("bn.bias", "bn.num_batches_tracked")] = np.array(100, np.int64)
    return out


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("i3d") / "i3d_rgb.npz"
    np.savez(path, **_random_weights(num_classes=16))
    return str(path)


def test_load_forward_features_shape_and_determinism(weights_file):
    clips = np.random.default_rng(1).uniform(-1, 1, (2, 8, 32, 32, 3)).astype(np.float32)
    net = i3d.I3DFeatures(weights_file, resolution=32)
    a = net.features(clips)
    b = i3d.I3DFeatures(weights_file, resolution=32).features(clips)  # a second load from the same file
    assert a.shape == (2, 16)
    assert np.all(np.isfinite(a)) and np.std(a) > 0
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a[0], a[1])  # different clips, different features


def test_eval_fvd_with_i3d_weights_ranks_noise_above_real_clips(weights_file):
    """The FVD that --mode=eval reports with config.eval.i3d_weights: evaluate.frechet_scores on I3D features."""
    specs = [shapes.spec_from_attributes(c, s, m) for c in ("red", "blue", "green") for s in ("circle", "square")
             for m in ("left", "right", "up")]
    clips = np.stack([shapes.render_clip(spec, 8, 32) for spec in specs])  # uint8 [18, 8, 32, 32, 3]
    real, held_out = clips[::2][:8], clips[1::2][:4]
    noise = np.random.default_rng(2).integers(0, 256, held_out.shape, dtype=np.uint8)
    good = evaluate.frechet_scores(held_out, real, i3d_weights=weights_file, i3d_resolution=32)
    bad = evaluate.frechet_scores(noise, real, i3d_weights=weights_file, i3d_resolution=32)
    assert set(good) == {"frechet_fvd_i3d", "frechet_fvd_i3d_real_floor"}
    assert np.isfinite(good["frechet_fvd_i3d"]) and good["frechet_fvd_i3d"] >= 0
    assert bad["frechet_fvd_i3d"] > 2 * good["frechet_fvd_i3d"]
    assert bad["frechet_fvd_i3d_real_floor"] == good["frechet_fvd_i3d_real_floor"]  # the same real halves


def test_first_unit_matches_pytorch_layout_conv(weights_file):
    # Conv3d_1a_7x7 as PyTorch computes it: NCDHW input, OIDHW weight, TF-SAME padding (2 before and 3
    # after, stride 2 on an even size), eval-mode BatchNorm with eps 1e-3, ReLU.
    w = dict(np.load(weights_file))
    model = i3d.load_i3d(weights_file)
    x = np.random.default_rng(2).normal(size=(1, 8, 16, 16, 3)).astype(np.float32)
    ours = np.asarray(model.Conv3d_1a_7x7(jnp.asarray(x)))
    y = jax.lax.conv_general_dilated(jnp.asarray(x.transpose(0, 4, 1, 2, 3)),
                                     jnp.asarray(w["Conv3d_1a_7x7.conv3d.weight"]), (2, 2, 2), [(2, 3)] * 3,
                                     dimension_numbers=("NCDHW", "OIDHW", "NCDHW"))
    p = "Conv3d_1a_7x7.bn."
    shape = (1, -1, 1, 1, 1)
    y = (y - w[p + "running_mean"].reshape(shape)) / np.sqrt(w[p + "running_var"].reshape(shape) + 1e-3)
    y = np.maximum(y * w[p + "weight"].reshape(shape) + w[p + "bias"].reshape(shape), 0.0)
    np.testing.assert_allclose(ours, np.asarray(y).transpose(0, 2, 3, 4, 1), rtol=1e-4, atol=1e-4)


def test_pool_endpoint_is_1024_wide(weights_file):
    model = i3d.load_i3d(weights_file)
    f = jax.jit(lambda x: model.features(x, "pool"))(jnp.zeros((1, 8, 32, 32, 3)))
    assert f.shape == (1, 1024)


def test_name_mismatch_is_a_clear_error(tmp_path):
    w = _random_weights(num_classes=16)
    w["Mixed_3b.branch0.conv3d.weight"] = w.pop("Mixed_3b.b0.conv3d.weight")
    path = tmp_path / "renamed.npz"
    np.savez(path, **w)
    with pytest.raises(ValueError, match=r"missing 1 \['Mixed_3b.b0.conv3d.weight'\].*unexpected 1"):
        i3d.load_i3d(str(path))


def test_wrong_shape_and_missing_file_are_clear_errors(tmp_path):
    w = _random_weights(num_classes=16)
    w["Mixed_4c.b1b.conv3d.weight"] = w["Mixed_4c.b1b.conv3d.weight"][:, :, :1]
    path = tmp_path / "bad.npz"
    np.savez(path, **w)
    with pytest.raises(ValueError, match="Mixed_4c.b1b.conv3d.weight has shape"):
        i3d.load_i3d(str(path))
    with pytest.raises(FileNotFoundError, match="is not a file"):
        i3d.load_i3d(str(tmp_path / "nope.npz"))
