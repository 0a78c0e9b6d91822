"""Schedule, v-parameterization, samplers and classifier-free guidance."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lumiere_jax.diffusion import samplers
from lumiere_jax.diffusion.schedule import CosineSchedule, diffuse, predict_x_eps, v_target

SCHEDULE = CosineSchedule()


def test_schedule_is_variance_preserving_and_decreasing():
    t = jnp.linspace(0.0, 1.0, 101)
    alpha, sigma = SCHEDULE.alpha_sigma(t)
    np.testing.assert_allclose(alpha**2 + sigma**2, 1.0, atol=1e-6)
    logsnr = SCHEDULE.logsnr(t)
    assert jnp.all(jnp.diff(logsnr) < 0)
    np.testing.assert_allclose([logsnr[0], logsnr[-1]], [15.0, -15.0], atol=1e-3)
    # A shift < 1 lowers the SNR by the same amount at every t.
    np.testing.assert_allclose(CosineSchedule(shift=0.5).logsnr(t) - logsnr, 2 * np.log(0.5), atol=1e-4)


def test_a_run_is_sampled_with_the_schedule_it_trained_with(tmp_path):
    import json

    from configs import t2v
    from lumiere_jax.diffusion.schedule import schedule_from
    from lumiere_jax.runs import schedule_of

    config = t2v.get_config("size=smoke")
    with open(tmp_path / "config.json", "w") as f:
        json.dump({"diffusion": {"logsnr_min": -12.0, "logsnr_max": 15.0, "shift": 0.25}}, f)
    assert schedule_from(config) == CosineSchedule()
    assert schedule_of(config, str(tmp_path)) == CosineSchedule(logsnr_min=-12.0, shift=0.25)
    assert schedule_of(config, str(tmp_path / "no_run_here")) == CosineSchedule()


def test_v_parameterization_inverts():
    k1, k2 = jax.random.split(jax.random.key(0))
    x = jax.random.normal(k1, (3, 2, 4, 4, 3))
    eps = jax.random.normal(k2, x.shape)
    alpha, sigma = SCHEDULE.alpha_sigma(jnp.array([0.1, 0.5, 0.9]))
    z = diffuse(x, eps, alpha, sigma)
    x_hat, eps_hat = predict_x_eps(z, v_target(x, eps, alpha, sigma), alpha, sigma)
    np.testing.assert_allclose(x_hat, x, atol=1e-5)
    np.testing.assert_allclose(eps_hat, eps, atol=1e-5)


def _oracle(x0: jax.Array):
    """A perfect denoiser for a dataset holding the single clip x0: returns the exact v."""
    def denoise(z, t):
        alpha, sigma = SCHEDULE.alpha_sigma(t)
        eps = (z - alpha.reshape(-1, 1, 1, 1, 1) * x0) / sigma.reshape(-1, 1, 1, 1, 1)
        return v_target(x0, eps, alpha, sigma)
    return denoise


@pytest.mark.parametrize("sampler", samplers.SAMPLERS)
def test_samplers_recover_the_data_point_of_a_perfect_denoiser(sampler):
    x0 = jnp.clip(jax.random.normal(jax.random.key(1), (2, 4, 4, 4, 3)) * 0.5, -1, 1)
    z = jax.random.normal(jax.random.key(2), x0.shape)
    run = jax.jit(lambda z: samplers.sample(_oracle(x0), z, jax.random.key(3), SCHEDULE, num_steps=10,
                                            sampler=sampler))
    np.testing.assert_allclose(run(z), x0, atol=1e-4)


def test_sdedit_from_time_zero_returns_the_input():
    x0 = jnp.clip(jax.random.normal(jax.random.key(1), (1, 4, 4, 4, 3)), -1, 1)
    z = samplers.noise_to(x0, jax.random.key(0), SCHEDULE, 0.0)
    out = samplers.sample(lambda z, t: jnp.zeros_like(z), z, jax.random.key(0), SCHEDULE, num_steps=3,
                          t_start=0.0)
    # sigma(t=0) = sqrt(sigmoid(-logsnr_max)) = 5.5e-4: the only change is that much noise.
    np.testing.assert_allclose(out, x0, atol=3e-3)
    assert float(jnp.abs(out - x0).mean()) < 1e-3


def test_guidance_combines_conditional_and_unconditional_predictions():
    # A model whose output is its text's first feature broadcast: v_cond = 2, v_uncond = -1.
    def model(z, t, text, mask):
        return jnp.broadcast_to(text[:, 0, 0].reshape(-1, 1, 1, 1, 1), z.shape)
    text, null = jnp.full((2, 3, 4), 2.0), jnp.full((1, 3, 4), -1.0)
    mask, null_mask = jnp.ones((2, 3), bool), jnp.ones((1, 3), bool)
    z, t = jnp.zeros((2, 2, 2, 2, 3)), jnp.full((2,), 0.5)
    for scale, expected in ((1.0, 2.0), (0.0, -1.0), (3.0, -1.0 + 3.0 * 3.0)):
        v = samplers.classifier_free_guidance(model, text, mask, null, null_mask, scale)(z, t)
        np.testing.assert_allclose(v, expected)


def test_bad_sampler_arguments_fail_clearly():
    with pytest.raises(ValueError, match="sampler='euler'"):
        samplers.sample(lambda z, t: z, jnp.zeros((1, 1, 1, 1, 1)), jax.random.key(0), SCHEDULE, num_steps=2,
                        sampler="euler")
    with pytest.raises(ValueError, match="num_steps=0"):
        samplers.sample(lambda z, t: z, jnp.zeros((1, 1, 1, 1, 1)), jax.random.key(0), SCHEDULE, num_steps=0)


def test_dynamic_thresholding_keeps_the_colour_direction_that_static_clipping_turns():
    # An orange-ish clean prediction over-driven 3x by guidance, out of [-1, 1] in two channels.
    colour = jnp.array([0.9, 0.3, -0.6])
    x = jnp.broadcast_to(3.0 * colour, (2, 2, 4, 4, 3)).at[1].set(0.5 * colour)  # sample 1 is in range
    static, dynamic = samplers.threshold(x, "static"), samplers.threshold(x, "dynamic")
    np.testing.assert_allclose(static[0, 0, 0, 0], [1.0, 0.9, -1.0])  # clipped per channel: the hue turns
    np.testing.assert_allclose(dynamic[0, 0, 0, 0], colour / 0.9, rtol=1e-6)  # scaled as a whole: it keeps it
    np.testing.assert_allclose(dynamic[1], x[1])  # a sample inside [-1, 1] is left alone
    np.testing.assert_array_equal(samplers.threshold(x, "none"), x)
    with pytest.raises(ValueError, match="thresholding='soft'"):
        samplers.threshold(x, "soft")


def test_dynamic_thresholding_still_recovers_the_data_point_of_a_perfect_denoiser():
    x0 = jnp.clip(jax.random.normal(jax.random.key(1), (2, 4, 4, 4, 3)) * 0.5, -1, 1)
    z = jax.random.normal(jax.random.key(2), x0.shape)
    out = jax.jit(lambda z: samplers.sample(_oracle(x0), z, jax.random.key(3), SCHEDULE, num_steps=10,
                                            thresholding="dynamic"))(z)
    np.testing.assert_allclose(out, x0, atol=1e-4)


def _guided_square_sampler(scale: float, thresholding: str, rescale: float = 0.0) -> np.ndarray:
    """Samples a 'model' whose conditional prediction is an orange square on grey and whose unconditional one is
    the same square in a dull mean colour (an exact denoiser of each), under classifier-free guidance: at scale
    > 1 the guided clean prediction lies outside [-1, 1] in two channels of the square."""
    orange, dull = jnp.array([0.9, 0.2, -0.7]), jnp.array([0.1, 0.0, -0.1])
    x_cond = jnp.full((1, 2, 8, 8, 3), -0.2).at[:, :, 2:6, 2:6].set(orange)
    x_null = jnp.full((1, 2, 8, 8, 3), -0.2).at[:, :, 2:6, 2:6].set(dull)

    def model(z, t, text, mask):
        x0 = jnp.where(text[:, 0, 0].reshape(-1, 1, 1, 1, 1) > 0, x_cond, x_null)
        alpha, sigma = (a.reshape(-1, 1, 1, 1, 1) for a in SCHEDULE.alpha_sigma(t))
        return alpha * (z - alpha * x0) / sigma - sigma * x0

    mask = jnp.ones((1, 2), bool)
    denoise = samplers.classifier_free_guidance(model, jnp.ones((1, 2, 4)), mask, jnp.zeros((1, 2, 4)), mask, scale,
                                                rescale)
    z = jax.random.normal(jax.random.key(0), x_cond.shape)
    return np.asarray(samplers.sample(denoise, z, jax.random.key(1), SCHEDULE, num_steps=25,
                                      thresholding=thresholding))


def _hue(rgb: np.ndarray) -> float:
    """Hue in degrees of a colour in [-1, 1]."""
    import colorsys
    return 360.0 * colorsys.rgb_to_hsv(*np.clip((np.asarray(rgb) + 1) / 2, 0, 1))[0]


def test_pixel_thresholding_keeps_hue_and_range_under_strong_guidance_and_leaves_unguided_samples_alone():
    orange_hue = _hue([0.9, 0.2, -0.7])
    unguided = _guided_square_sampler(1.0, "static")
    for mode in ("pixel", "dynamic", "none"):  # no prediction leaves [-1, 1] unguided: every mode is the same
        np.testing.assert_allclose(_guided_square_sampler(1.0, mode), unguided, atol=1e-5)
    np.testing.assert_allclose(unguided[0, :, 3, 3], [[0.9, 0.2, -0.7]] * 2, atol=1e-4)
    for scale in (3.0, 5.0):
        static, pixel = _guided_square_sampler(scale, "static"), _guided_square_sampler(scale, "pixel")
        assert abs(_hue(static[0, 0, 3, 3]) - orange_hue) > 10  # channels clipped one by one: orange turns yellow
        assert pixel.min() >= -1.0 and pixel.max() <= 1.0
        assert abs(_hue(pixel[0, 0, 3, 3]) - orange_hue) < 1.0  # scaled as a colour: the hue stays
        np.testing.assert_allclose(pixel[0, :, 0, 0], -0.2, atol=1e-4)  # the in-range background is untouched
        dynamic = _guided_square_sampler(scale, "dynamic")  # keeps the hue too, but dims the whole clip
        assert abs(float(dynamic[0, 0, 0, 0, 0]) + 0.2) > 0.05


def test_guidance_rescale_matches_the_conditional_spread_and_is_a_no_op_without_guidance():
    k1, k2 = jax.random.split(jax.random.key(4))
    cond, uncond = jax.random.normal(k1, (2, 2, 4, 4, 3)), 0.3 * jax.random.normal(k2, (2, 2, 4, 4, 3))
    guided = uncond + 4.0 * (cond - uncond)
    full = samplers.rescale_guided(guided, cond, 1.0)
    np.testing.assert_allclose(full.reshape(2, -1).std(1), cond.reshape(2, -1).std(1), rtol=1e-5)
    np.testing.assert_allclose(samplers.rescale_guided(guided, cond, 0.0), guided)
    np.testing.assert_allclose(samplers.rescale_guided(cond, cond, 0.7), cond, rtol=1e-6)
    np.testing.assert_allclose(_guided_square_sampler(1.0, "static", 0.7), _guided_square_sampler(1.0, "static"))
