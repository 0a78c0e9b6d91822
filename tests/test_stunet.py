"""STUNet: inflation starts from the T2I model exactly, frame-count errors are clear, shapes hold."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lumiere_jax.models import stunet, temporal
from lumiere_jax.state import create_model

CFG = stunet.STUNetConfig(channels=8, channel_mult=(1, 2, 2), attention_levels=(1, 2), num_heads=2, text_dim=8,
                          temporal_attention_depth=2)


@nnx.jit
def apply(model, *args):
    """Models run jitted in tests: eager mode compiles every op on its own, which is slower on CPU."""
    return model(*args)


def _randomize(model: nnx.Module, seed: int, scale: float = 0.3) -> None:
    """Perturbs every parameter (zero-initialized outputs included) so the comparison is not trivially 0 == 0."""
    state = nnx.state(model, nnx.Param)
    leaves, treedef = jax.tree.flatten(state)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    nnx.update(model, jax.tree.unflatten(treedef, [x + scale * jax.random.normal(k, x.shape)
                                                  for x, k in zip(leaves, keys)]))


def _inputs(batch=2, frames=8, res=16):
    k = jax.random.split(jax.random.key(0), 3)
    t = jnp.array([0.25, 0.8])[:batch]
    text = jax.random.normal(k[1], (batch, 5, CFG.text_dim))
    mask = jnp.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)[:batch]
    return jax.random.normal(k[0], (batch, frames, res, res, 3)), t, text, mask


@pytest.fixture(scope="module")
def t2i_and_stunet():
    t2i = create_model(dataclasses.replace(CFG, temporal=False), seed=1)
    _randomize(t2i, seed=2)
    video = create_model(CFG, seed=3)
    # Inflation: the T2I weights go into the STUNet's spatial layers, temporal layers keep their init.
    nnx.update(video, nnx.state(t2i, nnx.Param))
    return t2i, video


def test_static_clip_equals_t2i_frame_by_frame(t2i_and_stunet):
    t2i, video = t2i_and_stunet
    frame, t, text, mask = _inputs(frames=1)
    clip = jnp.repeat(frame, 8, axis=1)  # all 8 frames equal
    out_video = apply(video, clip, t, text, mask)
    out_image = apply(t2i, frame, t, text, mask)
    assert float(jnp.abs(out_image).max()) > 0.1  # the comparison is not 0 == 0
    np.testing.assert_allclose(out_video, jnp.repeat(out_image, 8, axis=1), atol=2e-5, rtol=2e-5)


def test_moving_clip_differs_from_t2i_once_temporal_layers_train(t2i_and_stunet):
    t2i, video = t2i_and_stunet
    clip, t, text, mask = _inputs()
    trained = nnx.clone(video)
    state = nnx.state(trained, stunet.temporal_filter)
    leaves, treedef = jax.tree.flatten(state)
    nnx.update(trained, jax.tree.unflatten(treedef, [x + 0.1 for x in leaves]))
    frame_wise = apply(t2i, clip, t, text, mask)  # the T2I net on each frame separately
    assert float(jnp.abs(apply(trained, clip, t, text, mask) - frame_wise).max()) > 1e-3


def test_t2i_model_has_no_temporal_parameters_and_same_spatial_tree(t2i_and_stunet):
    t2i, video = t2i_and_stunet
    assert not jax.tree.leaves(nnx.state(t2i, stunet.temporal_filter))
    assert jax.tree.leaves(nnx.state(video, stunet.temporal_filter))
    spatial_video = jax.tree.map(jnp.shape, nnx.state(video, stunet.spatial_filter).to_pure_dict())
    spatial_t2i = jax.tree.map(jnp.shape, nnx.state(t2i, nnx.Param).to_pure_dict())
    assert spatial_video == spatial_t2i


def test_output_shape_and_dtype():
    model = create_model(dataclasses.replace(CFG, out_channels=5, dtype="bfloat16"))
    x, t, text, mask = _inputs(frames=4)
    out = apply(model, x, t, text, mask)
    assert out.shape == (2, 4, 16, 16, 5) and out.dtype == jnp.float32


@pytest.mark.parametrize("frames", [2, 6, 7])
def test_frames_the_unet_cannot_halve_fail_clearly(frames):
    with pytest.raises(ValueError, match=rf"num_frames={frames} cannot be halved 2 times.*multiple of 4"):
        stunet.check_frames(frames, CFG)
    stunet.check_frames(frames, dataclasses.replace(CFG, temporal=False))  # the T2I model takes any count


def test_temporal_resizing_starts_as_frame_selection_and_duplication():
    x = jax.random.normal(jax.random.key(0), (1, 8, 2, 2, 4))
    down = temporal.TemporalDownsample(4, rngs=nnx.Rngs(0))
    up = temporal.TemporalUpsample(4, rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(down(x), x[:, ::2])
    np.testing.assert_array_equal(up(x), jnp.repeat(x, 2, axis=1))


def test_temporal_blocks_start_as_identity_and_mix_frames_once_trained():
    x = jax.random.normal(jax.random.key(0), (2, 4, 4, 4, 8))
    for block in (temporal.TemporalConvBlock(8, rngs=nnx.Rngs(0)),
                  temporal.TemporalAttention(8, num_heads=2, rngs=nnx.Rngs(0))):
        np.testing.assert_array_equal(apply(block, x), x)
        _randomize(block, seed=1)
        y = apply(block, x)
        # Changing one frame now changes the output at other frames: the block mixes time.
        y2 = apply(block, x.at[:, 0].set(jax.random.normal(jax.random.key(1), x[:, 0].shape)))
        assert float(jnp.abs(y2[:, 1:] - y[:, 1:]).max()) > 1e-4


def test_remat_recomputes_blocks_without_changing_outputs_or_gradients():
    """model.remat="block" trades memory for recompute only: the same weights give the same loss gradients."""
    cfgs = [dataclasses.replace(CFG, text_pooling="attention", remat=r) for r in ("none", "block")]
    plain, remat = (create_model(c, seed=4) for c in cfgs)
    _randomize(plain, seed=5)
    nnx.update(remat, nnx.state(plain, nnx.Param))
    x, t, text, mask = _inputs(frames=4)

    @nnx.jit
    def loss_and_grads(model):
        return nnx.value_and_grad(lambda m: jnp.mean(m(x, t, text, mask) ** 2))(model)

    (loss_a, grads_a), (loss_b, grads_b) = loss_and_grads(plain), loss_and_grads(remat)
    assert float(loss_a) > 1e-3
    np.testing.assert_allclose(loss_a, loss_b, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(grads_a), jax.tree.leaves(grads_b)):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4)
    assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads_a)) > 1e-3


def test_attention_implementation_is_checked_and_reaches_every_attention_layer():
    with pytest.raises(ValueError, match="model.attention='flash' must be one of"):
        dataclasses.replace(CFG, attention="flash")
    model = create_model(dataclasses.replace(CFG, text_pooling="attention", attention="cudnn"))
    impls = {(type(m).__name__, m.attention) for _, m in nnx.iter_graph(model)
             if isinstance(m, nnx.Module) and isinstance(getattr(m, "attention", None), str)}
    # One pair per kind: a layer left at "xla" would add its own pair.
    assert impls == {("SpatialAttention", "cudnn"), ("TemporalAttention", "cudnn"), ("TextAttentionPool", "cudnn")}


def test_unknown_model_key_is_rejected():
    with pytest.raises(ValueError, match="Unknown model config keys.*chanels"):
        stunet.STUNetConfig.from_config({"chanels": 3})


def test_attention_pool_starts_at_zero_then_weights_unmasked_words_only():
    model = create_model(dataclasses.replace(CFG, text_pooling="attention"))
    assert not jnp.any(model.text_attn_pool.out.kernel.value)  # zero-initialized output projection
    _randomize(model, seed=5)
    pool = model.text_attn_pool
    pool.out.kernel.value, pool.out.bias.value = jnp.zeros_like(pool.out.kernel), jnp.zeros_like(pool.out.bias)
    x, t, text, mask = _inputs(frames=4)
    out = apply(model, x, t, text, mask)
    assert float(jnp.abs(out).max()) > 0.1  # the comparison is not 0 == 0
    model.text_attn_pool = None  # the same weights with the mean pool only
    np.testing.assert_array_equal(apply(model, x, t, text, mask), out)
    model.text_attn_pool = pool

    _randomize(pool, seed=4)
    pooled = (text * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    y = apply(pool, text, mask, pooled)
    assert y.shape == (2, 4 * CFG.channels) and float(jnp.abs(y).max()) > 1e-2
    # Tokens past the mask do not reach the pool; an unmasked word moves it.
    np.testing.assert_allclose(apply(pool, text.at[0, 3:].set(9.0), mask, pooled), y, atol=1e-6)
    assert float(jnp.abs(apply(pool, text.at[0, 1].set(9.0), mask, pooled)[0] - y[0]).max()) > 1e-3
    assert float(jnp.abs(apply(model, x, t, text, mask) - out).max()) > 1e-4  # and the STUNet reads it


def test_unknown_text_pooling_is_rejected():
    with pytest.raises(ValueError, match="text_pooling='max' must be 'mean' or 'attention'"):
        dataclasses.replace(CFG, text_pooling="max")


@pytest.mark.parametrize("pooling", ["mean", "attention"])
def test_per_frame_text_repeating_one_caption_equals_the_clip_caption(pooling):
    cfg = dataclasses.replace(CFG, text_pooling=pooling, cond_noise_level=True)
    model = create_model(cfg, seed=4)
    _randomize(model, seed=5, scale=0.1)
    x, t, text, mask = _inputs()
    level = jnp.array([0.1, 0.6])
    clip = apply(model, x, t, text, mask, None, level)
    frames = x.shape[1]
    per_frame_text = jnp.broadcast_to(text[:, None], (2, frames) + text.shape[1:])
    per_frame_mask = jnp.broadcast_to(mask[:, None], (2, frames) + mask.shape[1:])
    np.testing.assert_allclose(apply(model, x, t, per_frame_text, per_frame_mask, None, level), clip, atol=2e-5)
    # Another caption from frame 4 on: every frame changes (temporal layers mix them), the later ones the most.
    other = jax.random.normal(jax.random.key(9), text.shape)
    story = per_frame_text.at[:, 4:].set(jnp.broadcast_to(other[:, None], (2, 4) + text.shape[1:]))
    change = np.abs(np.asarray(apply(model, x, t, story, per_frame_mask, None, level) - clip)).mean((0, 2, 3, 4))
    assert change.min() > 1e-4 and change[4:].mean() > 2 * change[:4].mean(), change


def test_per_frame_text_of_the_wrong_length_is_refused():
    model = create_model(CFG, seed=0)
    x, t, text, mask = _inputs()
    with pytest.raises(ValueError, match=r"\[B, T, L, D\] / \[B, T, L\] with T = 8 frames"):
        model(x, t, jnp.broadcast_to(text[:, None], (2, 4) + text.shape[1:]),
              jnp.broadcast_to(mask[:, None], (2, 4) + mask.shape[1:]))
    with pytest.raises(ValueError, match="must be \\[B, L, D\\] / \\[B, L\\]"):
        model(x, t, text, mask[:, :3])
