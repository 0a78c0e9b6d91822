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


# Shifted windows: the grid moves by step_offset(t) at every step.

@pytest.mark.parametrize("num_frames, window, overlap", [(10, 4, 2), (32, 8, 4), (32, 8, 2), (16, 8, 0), (9, 4, 3),
                                                         (8, 8, 2)])
def test_shifted_layout_covers_the_clip_from_every_offset(num_frames, window, overlap):
    stride = window - overlap
    m = md.num_shifted_windows(num_frames, window, overlap)
    assert m == len(md.window_starts(num_frames, window, overlap)) + 1  # one window more than the fixed grid
    layouts = set()
    for offset in range(stride):
        starts, keep = (np.asarray(a) for a in md.shifted_window_starts(num_frames, window, overlap, offset))
        assert starts.shape == keep.shape == (m,)
        kept = starts[keep > 0]
        assert kept[0] == 0 and kept[-1] == num_frames - window  # pinned to the clip's ends
        assert np.all(np.diff(kept) > 0) and np.all(np.diff(kept) <= stride)  # neighbours share >= overlap frames
        assert np.array_equal(keep > 0, np.r_[True, starts[1:] != starts[:-1]])  # only repeats are dropped
        layouts.add(tuple(kept))
    if (num_frames - window) % stride == 0:  # offset 0 is the fixed layout when it tiles exactly
        starts, keep = md.shifted_window_starts(num_frames, window, overlap, 0)
        assert list(np.asarray(starts)[np.asarray(keep) > 0]) == md.window_starts(num_frames, window, overlap)
    assert len(layouts) == (min(stride, num_frames - window) if num_frames > window else 1)  # they do move


def test_step_offset_is_a_fixed_function_of_t_that_moves_the_grid_between_steps():
    times = jnp.linspace(1.0, 0.0, 26)[:-1]  # a 25-step DDIM loop
    offsets = np.asarray(jax.vmap(lambda t: md.step_offset(t, 4))(times))
    again = np.asarray(jax.jit(jax.vmap(lambda t: md.step_offset(t, 4)))(times))
    np.testing.assert_array_equal(offsets, again)  # deterministic, jitted or not
    assert offsets.min() >= 0 and offsets.max() < 4
    assert len(set(offsets.tolist())) == 4  # all four layouts are used
    assert np.mean(offsets[1:] != offsets[:-1]) > 0.5  # most steps move the grid
    assert int(md.step_offset(jnp.float32(0.5), 1)) == 0


def test_shifted_windows_reconcile_a_frame_local_denoiser_exactly():
    wrapped = md.multidiffusion(_elementwise_denoiser, num_frames=T, window=4, overlap=2, weights="triangle",
                                shift=True)
    for t in (0.1, 0.37, 0.9):
        z, tt = _z(), jnp.full((B,), t)
        np.testing.assert_allclose(jax.jit(wrapped)(z, tt), _elementwise_denoiser(z, tt), atol=1e-6)


def _by_hand(denoiser, z, t, starts, keep, window, weights):
    """The MultiDiffusion average of `denoiser` over windows at `starts` (numpy, one window at a time)."""
    w = md.window_weights(window, weights)
    total, norm = np.zeros(z.shape), np.zeros(z.shape[1])
    for s, k in zip(np.asarray(starts), np.asarray(keep)):
        total[:, s:s + window] += k * w[None, :, None, None, None] * np.asarray(denoiser(z[:, s:s + window], t))
        norm[s:s + window] += k * w
    return total / norm[None, :, None, None, None]


@pytest.mark.parametrize("window_batch", [None, 2])
def test_shifted_windows_average_the_windows_of_that_steps_layout(window_batch):
    wrapped = jax.jit(md.multidiffusion(_conv_denoiser, num_frames=T, window=4, overlap=1, weights="triangle",
                                        shift=True, window_batch=window_batch))
    fixed = jax.jit(md.multidiffusion(_conv_denoiser, num_frames=T, window=4, overlap=1, weights="triangle"))
    z, seen = _z(), set()
    for t in (0.15, 0.4, 0.65, 0.9):
        tt = jnp.full((B,), t)
        offset = int(md.step_offset(tt[0], 3))
        seen.add(offset)
        starts, keep = md.shifted_window_starts(T, 4, 1, offset)
        np.testing.assert_allclose(wrapped(z, tt), _by_hand(_conv_denoiser, z, tt, starts, keep, 4, "triangle"),
                                   atol=1e-5)
        if offset:  # a moved grid gives another result than the fixed windows (the test is not vacuous)
            assert jnp.abs(wrapped(z, tt) - fixed(z, tt)).max() > 1e-3
    assert len(seen) > 1


@pytest.mark.parametrize("window_batch", [None, 1, 3])
def test_shifted_windows_take_the_text_of_their_centre_frame(window_batch):
    def model_fn(z, t, text, text_mask, cond, level):
        value = (text * text_mask[..., None]).sum(axis=(1, 2)) + level  # [rows]
        return _conv_denoiser(z + cond, t) + value[:, None, None, None, None]

    L, D = 3, 2
    per_frame = np.zeros((T, B, L, D), np.float32)
    per_frame[:, :, 0, 0] = np.repeat([1.0, 5.0], T // 2)[:, None] + np.arange(B)  # two spans of 5 frames
    text, mask = jnp.asarray(per_frame), jnp.ones((T, B, L), bool)
    null_text, null_mask = jnp.zeros((1, L, D)), jnp.ones((1, L), bool)
    cond, level = _z(7), jnp.array([0.1, 0.4])
    denoise = jax.jit(md.multidiffusion_text(model_fn, text, mask, null_text, null_mask, 2.0, num_frames=T, window=4,
                                             overlap=2, weights="triangle", window_batch=window_batch,
                                             frame_inputs={"cond": cond}, batch_inputs={"level": level},
                                             shift=True))
    z, tt = _z(), jnp.full((B,), 0.55)
    starts, keep = md.shifted_window_starts(T, 4, 2, md.step_offset(tt[0], 2))
    expected = np.zeros((B, T, H, W, C))
    norm = np.zeros(T)
    w = md.window_weights(4, "triangle")
    for s, k in zip(np.asarray(starts), np.asarray(keep)):
        value = per_frame[s + 2, :, 0, 0] + np.asarray(level)  # the centre frame's text
        # Guidance 2 against a null text of value 0: 2 * cond(value) - uncond(0).
        pred = np.asarray(_conv_denoiser(z[:, s:s + 4] + cond[:, s:s + 4], tt)) + (2 * value - np.asarray(level)
                                                                                 )[:, None, None, None, None]
        expected[:, s:s + 4] += k * w[None, :, None, None, None] * pred
        norm[s:s + 4] += k * w
    np.testing.assert_allclose(denoise(z, tt), expected / norm[None, :, None, None, None], atol=1e-5)


@pytest.mark.parametrize("shift, window_batch", [(False, None), (False, 2), (True, None), (True, 3)])
def test_windows_cut_a_prompt_per_frame_like_the_clip(shift, window_batch):
    L, D = 3, 2
    null_text, null_mask = jnp.zeros((1, L, D)), jnp.ones((1, L), bool)
    per_frame = np.zeros((B, T, L, D), np.float32)
    per_frame[:, :, 0, 0] = np.arange(1.0, T + 1) * 10 + np.arange(B)[:, None]  # frame f of example b: 10(f+1)+b
    text, mask = jnp.asarray(per_frame), jnp.ones((B, T, L), bool)

    def frame_value(z, t, text, text_mask):  # each output frame reads only its own row's text: [rows, window]
        value = (text * text_mask[..., None]).sum(axis=(2, 3))
        return jnp.broadcast_to(value[:, :, None, None, None], z.shape)

    kwargs = dict(num_frames=T, window=4, overlap=2, weights="triangle", window_batch=window_batch, shift=shift)
    denoise = jax.jit(md.multidiffusion_text(frame_value, text, mask, null_text, null_mask, 2.0, frame_text=True,
                                             **kwargs))
    # Every window reads each frame's own prompt, so all windows agree and the clip is the prompts, doubled by
    # guidance 2 against a null text of value 0; a window cut from the wrong frames would read other values.
    for t in (0.2, 0.55, 0.9):
        np.testing.assert_allclose(_per_frame(denoise(_z(), jnp.full((B,), t))), 2 * per_frame[:, :, 0, 0],
                                   atol=1e-4)

    def model_fn(z, t, text, text_mask, cond, level):  # frames interact, and the text is read per row
        value = (text * text_mask[..., None]).sum(axis=(-2, -1))
        value = value.mean(axis=1) if value.ndim == 2 else value  # [rows]: a window's frames' mean, or its text
        return _conv_denoiser(z + cond, t) + (value + level)[:, None, None, None, None]

    # The same prompt on every frame is the one-prompt path.
    extra = dict(frame_inputs={"cond": _z(7)}, batch_inputs={"level": jnp.array([0.1, 0.4])})
    one = jnp.asarray(per_frame[:, 0])  # [B, L, D]
    repeated = jnp.broadcast_to(one[:, None], (B, T, L, D))
    z, tt = _z(), jnp.full((B,), 0.55)
    same = jax.jit(md.multidiffusion_text(model_fn, repeated, mask, null_text, null_mask, 2.0, frame_text=True,
                                          **kwargs, **extra))(z, tt)
    np.testing.assert_allclose(same, jax.jit(md.multidiffusion_text(model_fn, one, mask[:, 0], null_text, null_mask,
                                                                     2.0, **kwargs, **extra))(z, tt), atol=1e-5)
    with pytest.raises(ValueError, match=r"must be \[B, T=10, L, D\]"):
        md.multidiffusion_text(model_fn, text[:, :8], mask[:, :8], null_text, null_mask, 2.0, frame_text=True,
                               **kwargs)


def test_shifted_windows_reject_inputs_they_cannot_follow():
    with pytest.raises(ValueError, match="give per-window inputs as centre_inputs"):
        md.multidiffusion(_conv_denoiser, num_frames=T, window=4, overlap=2, shift=True,
                          window_inputs={"text": jnp.zeros((4 * B, 3))})
    with pytest.raises(ValueError, match="one \\[window=4\\] profile for every window"):
        md.multidiffusion(_conv_denoiser, num_frames=T, window=4, overlap=2, shift=True,
                          weights=md.first_window_weights(T, 4, 2))
    with pytest.raises(ValueError, match="expected one per frame"):
        md.multidiffusion(_conv_denoiser, num_frames=T, window=4, overlap=2, shift=True,
                          centre_inputs={"text": jnp.zeros((4, B, 3))})
    with pytest.raises(ValueError, match="centre_inputs are for shift=True"):
        md.multidiffusion(_conv_denoiser, num_frames=T, window=4, overlap=2, centre_inputs={"text": jnp.zeros((T, B))})
    with pytest.raises(ValueError, match=r"must be \[T=10, B, L, D\]"):
        md.multidiffusion_text(lambda *a: None, jnp.zeros((4, B, 3, 2)), jnp.ones((4, B, 3), bool),
                               jnp.zeros((1, 3, 2)), jnp.ones((1, 3), bool), 1.0, num_frames=T, window=4, overlap=2,
                               shift=True)


def test_repeated_noise_shuffles_the_first_windows_frames_into_every_block():
    z = np.asarray(md.repeated_noise(jax.random.key(3), (B, 11, H, W, C), 4))  # blocks 4 + 4 + 3
    assert z.shape == (B, 11, H, W, C)
    first = z[:, :4].reshape(B, 4, -1)
    for start in (4, 8):
        block = z[:, start:start + 4].reshape(B, z[:, start:start + 4].shape[1], -1)
        # each frame is one of the first window's frames, and no frame repeats inside a block
        match = [[int(np.argmax([np.allclose(f, g) for g in first[b]])) for f in block[b]] for b in range(B)]
        for b in range(B):
            assert all(np.allclose(block[b, i], first[b, m]) for i, m in enumerate(match[b]))
            assert len(set(match[b])) == len(match[b])
    assert not np.allclose(z[:, 4:8], z[:, :4])  # shuffled, not a copy
    assert abs(z.mean()) < 0.2 and 0.8 < z.std() < 1.2
