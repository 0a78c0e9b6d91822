"""Long-video sampling: which prompt each MultiDiffusion window gets, and how the windows are reconciled."""

import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lumiere_jax import sampling
from lumiere_jax.diffusion import multidiffusion as md
from lumiere_jax.diffusion import samplers
from lumiere_jax.diffusion.schedule import CosineSchedule
from lumiere_jax.sampling import prompts_per_frame, prompts_per_window



def test_each_window_takes_the_prompt_of_its_centre_frame():
    # 16 frames, window 4, overlap 2: windows start at 0, 2, ..., 12 with centres 2, 4, ..., 14.
    spans = [(0, "left"), (8, "up")]
    assert prompts_per_window(spans, 16, 4, 2) == ["left", "left", "left", "up", "up", "up", "up"]
    assert prompts_per_window([(0, "only")], 8, 8, 2) == ["only"]
    # Shifted windows move every step, so the prompt is kept per frame and a window takes its centre frame's.
    assert prompts_per_frame([(6, "up"), (0, "left")], 8) == ["left"] * 6 + ["up"] * 2


def test_spans_must_start_at_zero_and_lie_inside_the_clip():
    with pytest.raises(ValueError, match="must start at frame 0"):
        prompts_per_window([(3, "late")], 16, 4, 2)
    with pytest.raises(ValueError, match="outside the clip's 16 frames"):
        prompts_per_window([(0, "a"), (20, "b")], 16, 4, 2)
    with pytest.raises(ValueError, match="must start at frame 0"):
        prompts_per_frame([(3, "late")], 16)


class _FrameMixer(nnx.Module):
    """A model whose frames interact (a temporal blur scaled by the text), so windows disagree."""

    def __init__(self):
        self.taps = nnx.Param(jnp.array([0.5, 0.3, 0.2]))

    def __call__(self, z, t, text, text_mask, cond=None, cond_level=None):
        w = self.taps.value
        mixed = w[0] * z + w[1] * jnp.roll(z, 1, axis=1) + w[2] * jnp.roll(z, -1, axis=1)
        # Text [B, L, D] scales the clip; per-frame text [B, T, L, D] each frame by its own prompt.
        scale = 1.0 + (text * text_mask[..., None]).mean(axis=(-2, -1)) - 0.5 * (t[:, None] if text.ndim == 4 else t)
        return mixed * scale.reshape(scale.shape + (1,) * (mixed.ndim - scale.ndim))


B, L, D = 2, 3, 4  # the toy sampler's batch, text tokens and text width


def _toy_sampler(text_shape=(B, L, D)):
    """A _FrameMixer split for generate, random text of text_shape (its mask all ones), empty null text, the
    schedule and a key."""
    graphdef, params = nnx.split(_FrameMixer())
    text = jax.random.normal(jax.random.key(0), text_shape)
    mask = jnp.ones(text_shape[:-1], bool)
    null_text, null_mask = jnp.zeros((1, L, D)), jnp.ones((1, L), bool)
    return graphdef, params, text, mask, null_text, null_mask, CosineSchedule(), jax.random.key(1)


STORY = ["a red circle moving left", "a red circle moving up", "a red circle moving right"]


@pytest.mark.parametrize("prompt, prompt_at, frames, spans", [
    ("a red circle", [], 8, [(0, "a red circle")]),
    ("a red circle", ["6:a blue square moving up", "3: up "], 8, [(0, "a red circle"), (6, "a blue square moving up"),
                                                              (3, "up")]),
    (json.dumps(STORY), [], 32, [(0, STORY[0]), (10, STORY[1]), (21, STORY[2])]),
    (json.dumps(STORY[:2]), [], 32, [(0, STORY[0]), (16, STORY[1])]),
    (' ["one"] ', [], 8, [(0, "one")]),
    (json.dumps([[0, STORY[0]], [5, " " + STORY[1]]]), [], 8, [(0, STORY[0]), (5, STORY[1])]),
    (json.dumps([{"frame": 0, "prompt": STORY[0]}, [12, STORY[2]]]), [], 16, [(0, STORY[0]), (12, STORY[2])]),
], ids=["one_prompt", "prompt_at", "json_equal_spans_3", "json_equal_spans_2", "json_one", "json_pairs",
        "json_objects_and_pairs"])
def test_story_spans_from_prompt_at_or_a_json_list(prompt, prompt_at, frames, spans):
    assert sampling.story_spans(prompt, prompt_at, frames) == spans


@pytest.mark.parametrize("prompt, prompt_at, frames, message", [
    ("a red circle", ["later a blue square"], 8, "write FRAME:TEXT"),
    ("a red circle", ["0:a blue square"], 8, "outside the clip's frames 1..7"),
    ("a red circle", ["8:a blue square"], 8, "outside the clip's frames 1..7"),
    ('["a", "b"', [], 8, "not valid JSON"),
    ("[]", [], 8, "non-empty list"),
    (json.dumps(STORY), ["4:b"], 8, "cannot take --prompt_at too"),
    (json.dumps(["x"] * 9), [], 8, "lists 9 prompts for a clip of 8 frames"),
    (json.dumps(["x", " "]), [], 8, "span 1 (from frame 4) has an empty prompt"),
    (json.dumps([[2, "x"], [4, "y"]]), [], 8, "start at frames [2, 4]"),
    (json.dumps([[0, "x"], [4, "y"], [4, "z"]]), [], 8, "start at frames [0, 4, 4]"),
    (json.dumps([[0, "x"], [8, "y"]]), [], 8, "within the clip's 8 frames"),
    (json.dumps([[0, "x"], "y"]), [], 8, 'entry "y" is not a span'),
    (json.dumps([[True, "x"]]), [], 8, "is not a span"),
    (json.dumps([{"frame": 0, "text": "x"}]), [], 8, "is not a span"),
])
def test_story_spans_refuse_bad_stories_naming_the_value(prompt, prompt_at, frames, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        sampling.story_spans(prompt, prompt_at, frames)


def _options(steps: int) -> sampling.SamplerOptions:
    return sampling.SamplerOptions(steps=steps, guidance=2.0, sampler="ddim")


def test_generate_reconciles_windows_with_the_weights_it_is_given():
    T = 10
    graphdef, params, text, mask, null_text, null_mask, schedule, rng = _toy_sampler()

    def run(weights):
        return sampling.generate(graphdef, params, sampling.Prompts(text, mask, null_text, null_mask), rng,
                                 shape=(T, 2, 2, 3), schedule=schedule, options=_options(3),
                                 windows=sampling.Windows(4, overlap=2, weights=weights))

    def by_hand(weights):
        denoise = md.multidiffusion_text(nnx.merge(graphdef, params), text, mask, null_text, null_mask, 2.0,
                                         num_frames=T, window=4, overlap=2, weights=weights)
        k_noise, k_sampler = jax.random.split(rng)
        z = jax.random.normal(k_noise, (B, T, 2, 2, 3), jnp.float32)
        return samplers.sample(denoise, z, k_sampler, schedule, num_steps=3, sampler="ddim")

    triangle, uniform = run("triangle"), run("uniform")
    np.testing.assert_allclose(triangle, by_hand("triangle"), atol=1e-5)
    np.testing.assert_allclose(uniform, by_hand("uniform"), atol=1e-5)
    assert np.abs(np.asarray(triangle) - np.asarray(uniform)).max() > 1e-3  # the weights reach the average


def test_generate_moves_the_windows_every_step_when_asked_and_takes_per_frame_text():
    T = 12
    graphdef, params, text, mask, null_text, null_mask, schedule, rng = _toy_sampler((T, B, L, D))  # per frame

    def run(shift, text, mask):
        return sampling.generate(graphdef, params, sampling.Prompts(text, mask, null_text, null_mask), rng,
                                 shape=(T, 2, 2, 3), schedule=schedule, options=_options(4),
                                 windows=sampling.Windows(4, overlap=2, weights="triangle", shift=shift))

    denoise = md.multidiffusion_text(nnx.merge(graphdef, params), text, mask, null_text, null_mask, 2.0,
                                     num_frames=T, window=4, overlap=2, weights="triangle", shift=True)
    k_noise, k_sampler = jax.random.split(rng)
    z = jax.random.normal(k_noise, (B, T, 2, 2, 3), jnp.float32)
    by_hand = samplers.sample(denoise, z, k_sampler, schedule, num_steps=4, sampler="ddim")
    shifted = run(True, text, mask)
    np.testing.assert_allclose(shifted, by_hand, atol=1e-5)
    # Fixed windows (per-window text: the centre frames' of window_starts) give another clip.
    centres = np.asarray(md.window_starts(T, 4, 2)) + 2
    fixed = run(False, text[centres], mask[centres])
    assert np.abs(np.asarray(shifted) - np.asarray(fixed)).max() > 1e-3
    # Repeated window noise: the same sampler started from multidiffusion.repeated_noise.
    repeated = sampling.generate(graphdef, params, sampling.Prompts(text, mask, null_text, null_mask), rng,
                                 shape=(T, 2, 2, 3), schedule=schedule, options=_options(4),
                                 windows=sampling.Windows(4, overlap=2, weights="triangle", shift=True,
                                                          noise="repeat"))
    z_repeat = md.repeated_noise(k_noise, (B, T, 2, 2, 3), 4)
    np.testing.assert_allclose(repeated, samplers.sample(denoise, z_repeat, k_sampler, schedule, num_steps=4,
                                                         sampler="ddim"), atol=1e-5)
    assert np.abs(np.asarray(repeated) - np.asarray(shifted)).max() > 1e-3
    with pytest.raises(ValueError, match="noise='same'\\) is not one of"):
        sampling.generate(graphdef, params, sampling.Prompts(text, mask, null_text, null_mask), rng,
                          shape=(T, 2, 2, 3), schedule=schedule, options=_options(4),
                          windows=sampling.Windows(4, overlap=2, shift=True, noise="same"))


def test_whole_clip_runs_the_model_on_all_frames_from_repeated_noise():
    T = 12
    graphdef, params, text, mask, null_text, null_mask, schedule, rng = _toy_sampler()

    def run(noise, **kwargs):
        return np.asarray(sampling.generate(graphdef, params, sampling.Prompts(text, mask, null_text, null_mask),
                                            rng, shape=(T, 2, 2, 3), schedule=schedule, options=_options(4),
                                            windows=sampling.Windows(4, noise=noise, **kwargs)))

    # By hand: one guided model call over all 12 frames per step, from noise repeated with the window's period.
    whole = samplers.classifier_free_guidance(nnx.merge(graphdef, params), text, mask, null_text, null_mask, 2.0)
    k_noise, k_sampler = jax.random.split(rng)
    for noise, z in (("repeat", md.repeated_noise(k_noise, (B, T, 2, 2, 3), 4)),
                     ("independent", jax.random.normal(k_noise, (B, T, 2, 2, 3), jnp.float32))):
        np.testing.assert_allclose(run(noise, whole_clip=True),
                                   samplers.sample(whole, z, k_sampler, schedule, num_steps=4, sampler="ddim"),
                                   atol=1e-5)
    # The frame-mixing model makes windows and the whole clip disagree.
    assert np.abs(run("repeat", whole_clip=True) - run("repeat", overlap=2)).max() > 1e-3
    # A prompt per frame ([B, T, L, D]) repeating the clip's prompt is the same sampler.
    per_frame_text = jnp.broadcast_to(text[:, None], (B, T) + text.shape[1:])
    per_frame_mask = jnp.broadcast_to(mask[:, None], (B, T) + mask.shape[1:])
    np.testing.assert_allclose(np.asarray(sampling.generate(
        graphdef, params, sampling.Prompts(per_frame_text, per_frame_mask, null_text, null_mask), rng,
        shape=(T, 2, 2, 3), schedule=schedule, options=_options(4),
        windows=sampling.Windows(4, noise="repeat", whole_clip=True))), run("repeat", whole_clip=True), atol=1e-5)
    with pytest.raises(ValueError, match="must be \[B, T, L, D\] with T = 12 frames"):
        sampling.generate(graphdef, params, sampling.Prompts(jnp.stack([text] * 3), jnp.stack([mask] * 3),
                                                             null_text, null_mask),
                          rng, shape=(T, 2, 2, 3), schedule=schedule, options=_options(4),
                          windows=sampling.Windows(4, whole_clip=True))  # one prompt per window


def test_long_video_method_picks_the_whole_clip_for_one_prompt_and_windows_for_stories():
    method = sampling.long_video_method
    assert method("auto", 1, 32, 4) == "whole"
    assert method("auto", 3, 32, 4) == "windows"  # prompts that change over time, on a model trained without
    assert method("auto", 3, 32, 4, story_trained=True) == "whole"  # ... and on one trained on stories
    assert method("auto", 3, 30, 4, story_trained=True) == "windows"
    assert method("auto", 1, 30, 4) == "windows"  # a length the U-Net cannot halve twice
    assert method("whole", 1, 32, 4) == "whole"
    assert method("whole", 2, 32, 4) == "whole"  # a prompt per frame
    assert method("windows", 1, 32, 4) == "windows"
    assert method("windows", 2, 32, 4, story_trained=True) == "windows"
    assert method("windows", 2, 8, 4, window=8) == "whole"  # within the training length: one window, the clip
    assert method("auto", 2, 16, 4, window=8) == "windows"
    with pytest.raises(ValueError, match="multiple of 4 frames \\(e.g. 28 or 32\\)"):
        method("whole", 1, 30, 4)
    with pytest.raises(ValueError, match="sample.long_video='both' is not one of"):
        method("both", 1, 32, 4)
    # Windows read each frame's prompt for several prompts on a story-trained model, or when asked.
    reads = sampling.windows_read_frame_prompts
    assert reads("windows", 2, story_trained=True) and not reads("windows", 2, story_trained=False)
    assert reads("windows", 2, False, frame_text=True) and not reads("windows", 2, True, frame_text=False)
    assert not reads("windows", 1, True) and not reads("whole", 2, True, frame_text=True)


def test_late_weights_run_the_low_noise_steps_only():
    # Stylized generation's schedule: steps at t > late.start use params, the rest late.params.
    T = 8
    graphdef, params, text, mask, null_text, null_mask, schedule, rng = _toy_sampler()
    late = jax.tree.map(lambda x: x * jnp.array([0.2, 0.5, 0.3]), params)  # other taps: another denoiser

    def run(params, late_params=None, late_from=1.0, windows=None):
        late = None if late_params is None else sampling.LateWeights(late_params, late_from)
        return np.asarray(sampling.generate(graphdef, params, sampling.Prompts(text, mask, null_text, null_mask),
                                            rng, shape=(T, 2, 2, 3), schedule=schedule, options=_options(5),
                                            windows=windows, late=late))

    early_only, late_only = run(params), run(late)
    np.testing.assert_allclose(run(params, late, 1.0), late_only, atol=1e-6)  # every step is at t <= 1
    np.testing.assert_allclose(run(params, late, 0.1), early_only, atol=1e-6)  # the last step is at t = 0.2
    # By hand: both denoisers evaluated at every step, the step's time picking one (the library runs one).
    def by_hand(late_from, **window):
        def denoiser(p):
            model = nnx.merge(graphdef, p)
            if not window:
                return samplers.classifier_free_guidance(model, text, mask, null_text, null_mask, 2.0)
            return md.multidiffusion_text(model, text, mask, null_text, null_mask, 2.0, num_frames=T, **window)
        early_d, late_d = denoiser(params), denoiser(late)
        k_noise, k_sampler = jax.random.split(rng)
        z = jax.random.normal(k_noise, (B, T, 2, 2, 3), jnp.float32)
        return samplers.sample(lambda z, t: jnp.where(t[0] > late_from, early_d(z, t), late_d(z, t)), z,
                               k_sampler, schedule, num_steps=5, sampler="ddim")

    mixed = run(params, late, 0.5)
    np.testing.assert_allclose(mixed, by_hand(0.5), atol=1e-5)
    assert min(np.abs(mixed - early_only).max(), np.abs(mixed - late_only).max()) > 1e-3
    # The same under temporal MultiDiffusion (the switch wraps the whole windowed denoiser).
    window = dict(window=4, overlap=2, weights="triangle")
    windowed = run(params, late, 0.5, sampling.Windows(4, overlap=2, weights="triangle"))
    np.testing.assert_allclose(windowed, by_hand(0.5, **window), atol=1e-5)


def test_long_videos_default_to_half_window_overlaps_with_triangle_weights_shifts_and_repeated_noise():
    assert [sampling.long_video_overlap(w) for w in (1, 4, 8, 16, 80)] == [0, 2, 4, 8, 40]
    default = sampling.LongVideo()
    assert (default.method, default.overlap, default.weights, default.shift, default.noise) == (
        "auto", None, "triangle", True, "repeat")
    assert default.weights in md.WEIGHTS and default.method in sampling.LONG_VIDEO_METHODS
    # The config's sample keys say the same, and -1 is the half-window overlap.
    from configs import t2v
    assert sampling.LongVideo.from_config(t2v.get_config("size=smoke").sample) == default
    sample = t2v.get_config("size=smoke").sample
    with sample.unlocked():
        sample.update(overlap=2, window_weights="uniform", shift_windows=False, window_noise="independent",
                      long_video="windows", window_batch=1)
    assert sampling.LongVideo.from_config(sample) == sampling.LongVideo("windows", 2, "uniform", False, "independent",
                                                                        1)
