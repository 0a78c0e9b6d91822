"""Temporal MultiDiffusion: window layout, the reconciliation rule, one batched call, per-window text, seams."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lumiere_jax.diffusion import multidiffusion as md
from lumiere_jax.diffusion import samplers
from lumiere_jax.diffusion.schedule import CosineSchedule

SCHEDULE = CosineSchedule()
B, T, H, W, C = 2, 10, 2, 2, 3


def _z(seed: int = 0, frames: int = T) -> jax.Array:
    return jax.random.normal(jax.random.key(seed), (B, frames, H, W, C))


def _conv_denoiser(z: jax.Array, t: jax.Array) -> jax.Array:
    """A fixed nonlinear denoiser whose frames interact (a zero-padded temporal blur), like a video U-Net."""
    zp = jnp.pad(z, ((0, 0), (1, 1), (0, 0), (0, 0), (0, 0)))
    blur = 0.25 * zp[:, :-2] + 0.5 * zp[:, 1:-1] + 0.25 * zp[:, 2:]
    return jnp.tanh(blur * (1.0 + t[:, None, None, None, None])) + 0.1 * jnp.sin(z)


def _elementwise_denoiser(z: jax.Array, t: jax.Array) -> jax.Array:
    """Does not know which window it is in, so every window agrees and reconciliation must be exact."""
    return jnp.tanh(z * (1.0 + t[:, None, None, None, None])) * 0.7


def _window_id_denoiser(batch: int):
    """Predicts 1 + the window index of each row (rows are window-major), so outputs show which window won."""
    def denoise(z, t):
        return jnp.broadcast_to((jnp.arange(z.shape[0]) // batch + 1.0)[:, None, None, None, None], z.shape)
    return denoise


def _per_frame(x: jax.Array) -> np.ndarray:
    """[B, T, H, W, C] that is constant over H, W, C -> [B, T]."""
    x = np.asarray(x)
    np.testing.assert_allclose(x, np.broadcast_to(x[:, :, :1, :1, :1], x.shape), atol=1e-6)
    return x[:, :, 0, 0, 0]


@pytest.mark.parametrize("num_frames, window, overlap, expected", [
    (16, 8, 0, [0, 8]),       # exact tiling
    (14, 8, 2, [0, 6]),       # exact tiling with the paper's overlap
    (16, 8, 2, [0, 6, 8]),    # a short last window is moved back to end at frame 15
    (10, 4, 3, [0, 1, 2, 3, 4, 5, 6]),
    (10, 10, 2, [0]),         # one window is the whole clip
])
def test_window_starts(num_frames, window, overlap, expected):
    starts = md.window_starts(num_frames, window, overlap)
    assert starts == expected
    assert starts[-1] + window == num_frames
    assert all(b - a <= window - overlap for a, b in zip(starts, starts[1:]))


@pytest.mark.parametrize("args, match", [
    ((8, 16, 2), "window=16 is longer than the clip"),
    ((8, 4, 4), "overlap=4 must satisfy 0 <= overlap < window=4"),
    ((8, 4, -1), "overlap=-1"),
    ((8, 0, 0), "window=0"),
])
def test_window_starts_rejects_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        md.window_starts(*args)


@pytest.mark.parametrize("sampler", samplers.SAMPLERS)
def test_one_window_over_the_whole_clip_is_the_plain_sampler(sampler):
    wrapped = md.multidiffusion(_conv_denoiser, num_frames=T, window=T, overlap=2)

    @jax.jit
    def both(z):
        run = lambda d: samplers.sample(d, z, jax.random.key(1), SCHEDULE, num_steps=4, sampler=sampler)
        return run(_conv_denoiser), run(wrapped)

    plain, windowed = both(_z())
    np.testing.assert_allclose(windowed, plain, atol=1e-6)
    # Smaller windows do change a denoiser whose frames interact, so the test above is not vacuous.
    small = md.multidiffusion(_conv_denoiser, num_frames=T, window=4, overlap=2)
    z, t = _z(), jnp.full((B,), 0.5)
    assert jnp.abs(jax.jit(small)(z, t) - _conv_denoiser(z, t)).max() > 1e-3


@pytest.mark.parametrize("window, overlap, weights", [(4, 0, "uniform"), (4, 2, "uniform"), (6, 3, "triangle"),
                                                      (4, 3, "triangle"), (3, 1, "triangle")])
def test_window_independent_denoiser_is_reconciled_exactly(window, overlap, weights):
    wrapped = md.multidiffusion(_elementwise_denoiser, num_frames=T, window=window, overlap=overlap,
                                weights=weights)
    z, t = _z(), jnp.array([0.3, 0.8])
    np.testing.assert_allclose(jax.jit(wrapped)(z, t), _elementwise_denoiser(z, t), atol=1e-6)


def test_windowed_sampling_equals_full_sampling_for_a_window_independent_denoiser():
    wrapped = md.multidiffusion(_elementwise_denoiser, num_frames=T, window=4, overlap=1, weights="triangle")
    run = jax.jit(lambda z: [samplers.sample(d, z, jax.random.key(2), SCHEDULE, num_steps=5, sampler="ancestral")
                             for d in (_elementwise_denoiser, wrapped)])
    full, windowed = run(_z(3))
    np.testing.assert_allclose(windowed, full, atol=1e-5)


def test_reconcile_takes_single_cover_frames_from_their_window_and_averages_overlaps():
    starts = md.window_starts(8, 4, 2)  # [0, 2, 4]
    preds = jnp.broadcast_to(jnp.array([1.0, 2.0, 3.0])[:, None, None, None, None, None], (3, B, 4, H, W, C))
    uniform = _per_frame(md.reconcile(preds, starts, 8))
    np.testing.assert_allclose(uniform[0], [1, 1, 1.5, 1.5, 2.5, 2.5, 3, 3], atol=1e-6)
    # Triangle weights [1, 2, 2, 1]: frame 2 is in window 0 at weight 2 and in window 1 at weight 1.
    triangle = _per_frame(md.reconcile(preds, starts, 8, "triangle"))
    np.testing.assert_allclose(triangle[0], [1, 1, 4 / 3, 5 / 3, 7 / 3, 8 / 3, 3, 3], atol=1e-6)
    np.testing.assert_allclose(md.window_weights(5, "triangle"), [1, 2, 3, 2, 1])
    with pytest.raises(ValueError, match="must cover each of num_frames=9"):
        md.reconcile(preds, starts, 9)
    with pytest.raises(ValueError, match="weights='box' is not one of"):
        md.reconcile(preds, starts, 8, "box")


def test_wrapper_orders_windows_and_handles_a_short_last_window():
    # 10 frames, window 4, no overlap: starts [0, 4, 6]; the last window is shifted back over frames 6, 7.
    wrapped = md.multidiffusion(_window_id_denoiser(B), num_frames=T, window=4, overlap=0)
    out = jax.jit(wrapped)(_z(), jnp.zeros((B,)))
    assert out.shape == (B, T, H, W, C)
    np.testing.assert_allclose(_per_frame(out), [[1, 1, 1, 1, 2, 2, 2.5, 2.5, 3, 3]] * B, atol=1e-6)


def test_independent_windows_take_each_frame_from_its_first_window_and_leave_seams():
    # starts [0, 2, 4, 6]: frames 0-3 from window 0, 4-5 from 1, 6-7 from 2, 8-9 from 3.
    independent = md.independent_windows(_window_id_denoiser(B), num_frames=T, window=4, overlap=2)
    ids = jax.jit(independent)(_z(), jnp.zeros((B,)))
    np.testing.assert_allclose(_per_frame(ids)[0], [1, 1, 1, 1, 2, 2, 3, 3, 4, 4], atol=1e-6)
    ramp = jnp.broadcast_to(0.01 * jnp.arange(T)[None, :, None, None, None], ids.shape)
    starts = md.window_starts(T, 4, 2)
    assert md.seam_ratio(ramp, starts, 4) == pytest.approx(1.0)
    assert md.seam_ratio(ramp + ids, starts, 4) > 10.0


def test_all_windows_go_through_the_model_in_one_call_per_step():
    traced, ran = [], []

    def model(z, t):
        traced.append(z.shape)
        jax.debug.callback(lambda: ran.append(1))
        return _elementwise_denoiser(z, t)

    wrapped = md.multidiffusion(model, num_frames=T, window=4, overlap=2)  # 4 windows
    out = jax.jit(lambda z: samplers.sample(wrapped, z, jax.random.key(0), SCHEDULE, num_steps=3))(_z())
    out.block_until_ready()
    jax.effects_barrier()
    assert traced == [(4 * B, 4, H, W, C)]
    assert len(ran) == 3


def test_each_window_follows_its_own_text_and_overlaps_blend():
    traced = []

    def model_fn(z, t, text, text_mask):
        traced.append(z.shape)
        value = (text * text_mask[..., None]).sum(axis=(1, 2))  # [rows]
        return jnp.broadcast_to(value[:, None, None, None, None], z.shape)

    starts = md.window_starts(8, 4, 2)  # [0, 2, 4]
    L, D = 3, 2
    text = np.zeros((len(starts), B, L, D), np.float32)
    text[:, :, 0, 0] = 10.0 * np.arange(1, 4)[:, None] + np.arange(B)  # window n, example b: 10 (n + 1) + b
    mask = np.ones((len(starts), B, L), bool)
    null_text, null_mask = jnp.zeros((1, L, D)), jnp.ones((1, L), bool)
    denoise = md.multidiffusion_text(model_fn, jnp.asarray(text), jnp.asarray(mask), null_text, null_mask, 2.0,
                                     num_frames=8, window=4, overlap=2)
    out = _per_frame(jax.jit(denoise)(_z(frames=8), jnp.zeros((B,))))
    assert traced == [(2 * len(starts) * B, 4, H, W, C)]  # guidance and all windows in one call
    for b in range(B):
        # Guidance 2 with a null text of value 0 doubles each window's value.
        np.testing.assert_allclose(out[b], 2 * (np.array([10, 10, 15, 15, 25, 25, 30, 30]) + b), atol=1e-5)
    # One text [B, L, D] for all windows: every frame follows it.
    shared = md.multidiffusion_text(model_fn, jnp.asarray(text[0]), jnp.asarray(mask[0]), null_text, null_mask,
                                    1.0, num_frames=8, window=4, overlap=2)
    np.testing.assert_allclose(_per_frame(jax.jit(shared)(_z(frames=8), jnp.zeros((B,)))),
                               np.broadcast_to(text[0, :, 0, 0][:, None], (B, 8)), atol=1e-5)
    with pytest.raises(ValueError, match=r"must be \[N=3, B, L, D\]"):
        md.multidiffusion_text(model_fn, jnp.asarray(text[:2]), jnp.asarray(mask[:2]), null_text, null_mask, 1.0,
                               num_frames=8, window=4, overlap=2)


def test_seam_ratio_rejects_layouts_without_borders():
    with pytest.raises(ValueError, match="no border frame pairs"):
        md.seam_ratio(np.zeros((1, 4, 1, 1, 1)), [0], 4)


@pytest.mark.parametrize("window_batch", [1, 2, 3])
def test_windows_in_groups_give_the_same_result_with_per_window_inputs(window_batch):
    # 10 frames, window 4, overlap 1: starts [0, 3, 6] -> 3 windows; groups of 2 leave a padded group.
    traced = []

    def model_fn(z, t, text, text_mask, cond, level):
        traced.append(z.shape)
        value = (text * text_mask[..., None]).sum(axis=(1, 2)) + level  # [rows]
        return _conv_denoiser(z + cond, t) + value[:, None, None, None, None]

    n = len(md.window_starts(T, 4, 1))
    L, D = 3, 2
    text = jax.random.normal(jax.random.key(5), (n, B, L, D))
    mask = jnp.ones((n, B, L), bool)
    null_text, null_mask = jnp.zeros((1, L, D)), jnp.ones((1, L), bool)
    cond, level = _z(7), jnp.array([0.1, 0.4])

    def run(wb):
        return md.multidiffusion_text(model_fn, text, mask, null_text, null_mask, 2.0, num_frames=T, window=4,
                                      overlap=1, weights="triangle", window_batch=wb, frame_inputs={"cond": cond},
                                      batch_inputs={"level": level})

    z, t = _z(), jnp.array([0.3, 0.8])
    full = jax.jit(run(None))(z, t)
    grouped = jax.jit(run(window_batch))(z, t)
    np.testing.assert_allclose(grouped, full, atol=1e-5)
    assert traced[0] == (2 * n * B, 4, H, W, C)
    assert traced[1] == (2 * min(window_batch, n) * B, 4, H, W, C)  # one traced call of the group size
    # The inputs matter, so the comparison is not vacuous.
    other = md.multidiffusion_text(model_fn, text, mask, null_text, null_mask, 2.0, num_frames=T, window=4,
                                   overlap=1, weights="triangle", window_batch=window_batch,
                                   frame_inputs={"cond": cond * 0}, batch_inputs={"level": level})
    assert jnp.abs(jax.jit(other)(z, t) - grouped).max() > 1e-3


def test_window_batch_must_be_positive():
    with pytest.raises(ValueError, match="window_batch=0 must be at least 1"):
        md.multidiffusion(_conv_denoiser, num_frames=T, window=4, overlap=2, window_batch=0)


def test_window_batch_keeps_the_step_memory_flat_as_the_clip_grows():
    def wide_denoiser(z, t):
        # A 64x wider hidden layer, like a U-Net's activations: it dominates memory when all windows run at once.
        hidden = jnp.tanh(jnp.repeat(z, 64, axis=-1) * (1.0 + t[:, None, None, None, None]))
        return hidden.reshape(z.shape + (64,)).mean(-1)

    def temp_bytes(frames, window_batch):
        step = md.multidiffusion(wide_denoiser, num_frames=frames, window=4, overlap=2, window_batch=window_batch)
        z = jax.ShapeDtypeStruct((1, frames, 8, 8, C), jnp.float32)
        compiled = jax.jit(step).lower(z, jax.ShapeDtypeStruct((1,), jnp.float32)).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    short, long = 16, 64  # 7 and 31 windows
    assert temp_bytes(long, None) > 3 * temp_bytes(short, None)
    assert temp_bytes(long, 1) < 1.5 * temp_bytes(short, 1)
    assert temp_bytes(long, 1) < temp_bytes(long, None) / 5
