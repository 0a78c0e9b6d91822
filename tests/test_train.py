"""Trainer: one-step smoke, exact resume, checkpoint round trip, NaN abort; sampling from a trained run."""

import json
import logging
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import smoke_config
from lumiere_jax import checkpointing, sampling, train
from lumiere_jax.data import pipeline
from lumiere_jax.diffusion.schedule import schedule_from
from lumiere_jax.runs import trained_on_stories, with_run_model
from lumiere_jax.state import abstract_graphdef_and_state


def _losses(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return {row["step"]: row["loss"] for row in map(json.loads, f)}


def test_resumed_run_continues_the_same_trajectory(data_dir, tmp_path, caplog):
    straight = str(tmp_path / "straight")
    train.train_and_evaluate(smoke_config(data_dir, total_steps=5), straight)

    interrupted = str(tmp_path / "interrupted")
    train.train_and_evaluate(smoke_config(data_dir, total_steps=3), interrupted)
    assert checkpointing.Checkpointer(interrupted).latest_step() == 3
    with caplog.at_level(logging.INFO, logger="lumiere_jax"):
        state = train.train_and_evaluate(smoke_config(data_dir, total_steps=5), interrupted)
    assert "Resumed from checkpoint at step 3" in caplog.text
    assert int(state.step) == 5

    a, b = _losses(straight), _losses(interrupted)
    assert sorted(a) == [1, 2, 3, 4, 5] and sorted(b) == [1, 2, 3, 4, 5]
    assert [a[k] for k in range(1, 6)] == [b[k] for k in range(1, 6)]  # bit-exact on CPU
    assert len(set(a.values())) == 5  # the loss really moves from step to step


def test_checkpoint_round_trip(trained_workdir):
    config = smoke_config("")
    _, abstract = abstract_graphdef_and_state(config)
    ckpt = checkpointing.Checkpointer(trained_workdir, read_only=True)
    assert ckpt.latest_step() == 4
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    state4, meta = ckpt.restore(checkpointing.with_shardings(abstract, sharding))
    state2, _ = ckpt.restore(checkpointing.with_shardings(abstract, sharding), step=2)
    assert int(state4.step) == 4 and int(state2.step) == 2
    assert meta["data"] == {"num_frames": 4, "resolution": 16}
    leaves4, leaves2 = jax.tree.leaves(state4.params), jax.tree.leaves(state2.params)
    assert len(leaves4) == len(jax.tree.leaves(abstract.params))
    assert any(not np.array_equal(x, y) for x, y in zip(leaves4, leaves2))  # training changed the weights


def test_checkpoint_with_arrays_the_config_lacks_is_refused(tmp_path):
    """A run with more layers than the config builds (model.text_pooling="attention" read as "mean") fails
    naming an extra array, instead of restoring part of it."""
    ckpt = checkpointing.Checkpointer(str(tmp_path), async_save=False)
    ckpt.save(1, {"params": {"conv": jnp.zeros(3), "text_attn_pool": jnp.ones(2)}}, {"data": {}})
    ckpt.wait()
    abstract = {"params": {"conv": jax.ShapeDtypeStruct((3,), jnp.float32)}}
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    with pytest.raises(ValueError, match=r"it has params\.text_attn_pool \(and 0 more arrays\) that this config"):
        ckpt.restore(checkpointing.with_shardings(abstract, sharding))
    assert ckpt.latest_step() == 1  # left as it was
    ckpt.close()


def test_tools_read_a_run_with_its_own_model_keys(trained_workdir):
    """with_run_model: a config of another size takes the run's model section, so the run restores."""
    from configs import t2v as t2v_config
    config = with_run_model(t2v_config.get_config("size=tiny"), trained_workdir)
    assert config.model.to_dict() == smoke_config("").model.to_dict()
    assert config.model.channels != t2v_config.get_config("size=tiny").model.channels  # it did change
    t2v, step = sampling.load_text_to_video(config, trained_workdir)
    assert step == 4


def test_sampling_from_the_trained_run(trained_workdir):
    config = smoke_config("")
    graphdef, abstract = abstract_graphdef_and_state(config)
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    state, _ = checkpointing.Checkpointer(trained_workdir, read_only=True).restore(
        checkpointing.with_shardings(abstract, sharding))

    class Encoder:  # two fixed prompts; MiniLM itself is tested in test_minilm.py
        def encode(self, texts):
            feats = np.stack([np.full((24, 384), 0.1 * len(t), np.float32) for t in texts])
            return feats, np.ones((len(texts), 24), bool)

    t2v = sampling.TextToVideo(graphdef, state.ema, Encoder(), schedule_from(config), num_frames=4, resolution=16)
    clips = t2v(["a red circle", "a blue square moving up"], seed=0, steps=3, guidance=2.0)
    assert clips.shape == (2, 4, 16, 16, 3) and np.isfinite(clips).all()
    assert np.abs(clips).max() <= 1.0
    again = t2v(["a red circle", "a blue square moving up"], seed=0, steps=3, guidance=2.0)
    np.testing.assert_array_equal(clips, again)  # seeded
    other = t2v(["a red circle", "a blue square moving up"], seed=1, steps=3, guidance=2.0)
    assert not np.array_equal(clips, other)
    # Batched in twos with padding: the first clip of a batch of one equals the same seed's batch of two.
    single = t2v(["a red circle"], seed=0, steps=3, guidance=2.0, batch_size=2)
    np.testing.assert_allclose(single[0], clips[0], atol=1e-5)

    # Past the 4-frame training length: one prompt runs the STUNet on all 8 frames at once (its temporal
    # attention takes any length the U-Net can halve); a story, or 7 frames, on MultiDiffusion windows. Four
    # training steps leave the zero-initialized output and temporal layers near zero, so that frames barely
    # interact and windows give the whole clip's result: every weight is moved to tell the two apart.
    def moved(x):
        return x + 0.3 * jnp.sin(jnp.arange(x.size, dtype=x.dtype) * 1.7).reshape(x.shape)

    t2v = sampling.TextToVideo(graphdef, jax.tree.map(moved, state.ema), Encoder(), schedule_from(config),
                               num_frames=4, resolution=16)
    assert t2v.frame_multiple == 2  # the smoke U-Net halves its frames once
    kwargs = dict(seed=0, steps=2, guidance=2.0)
    WINDOWS = sampling.LongVideo("windows")  # noqa: N806
    long_clip = t2v.long_video([(0, "a red circle")], 8, **kwargs)
    text, mask = Encoder().encode(["a red circle"])
    options = sampling.SamplerOptions(steps=2, guidance=2.0, sampler="ddim")
    by_hand = sampling.generate(t2v.graphdef, t2v.params, t2v.prompts(text, mask), jax.random.key(0),
                                shape=(8, 16, 16, 3), schedule=t2v.schedule, options=options,
                                windows=sampling.Windows(4, noise="repeat", whole_clip=True))
    assert long_clip.shape == (8, 16, 16, 3) and np.isfinite(long_clip).all()
    np.testing.assert_allclose(long_clip, np.asarray(by_hand)[0], atol=1e-5)
    windows = t2v.long_video([(0, "a red circle")], 8, layout=WINDOWS, **kwargs)
    assert np.abs(windows - long_clip).max() > 1e-3
    story = t2v.long_video([(0, "a red circle"), (4, "a blue square moving up")], 8, **kwargs)
    np.testing.assert_allclose(story, t2v.long_video([(0, "a red circle"), (4, "a blue square moving up")], 8,
                                                     layout=WINDOWS, **kwargs), atol=1e-6)
    # One window per model call (config.sample.window_batch = 1: flat memory) samples the same story.
    np.testing.assert_allclose(t2v.long_video([(0, "a red circle"), (4, "a blue square moving up")], 8,
                                              layout=sampling.LongVideo(window_batch=1), **kwargs), story,
                               atol=1e-5)
    # A story on the whole clip: each frame its span's prompt, in one model call per step ([1, T, L, D] text).
    spans = [(0, "a red circle"), (4, "a blue square moving up")]
    text, mask = Encoder().encode([p for _, p in spans])
    per_frame = np.repeat(np.arange(2), 4)
    by_hand = sampling.generate(t2v.graphdef, t2v.params, t2v.prompts(text[per_frame][None], mask[per_frame][None]),
                                jax.random.key(0), shape=(8, 16, 16, 3), schedule=t2v.schedule, options=options,
                                windows=sampling.Windows(4, noise="repeat", whole_clip=True))
    whole_story = t2v.long_video(spans, 8, layout=sampling.LongVideo("whole"), **kwargs)
    np.testing.assert_allclose(whole_story, np.asarray(by_hand)[0], atol=1e-5)
    assert np.abs(whole_story - story).max() > 1e-3
    t2v.story_trained = True  # a model trained on stories takes them on the whole clip by default
    np.testing.assert_allclose(t2v.long_video(spans, 8, **kwargs), whole_story, atol=1e-6)
    # ... and on windows, each window reads its own frames' prompts (frame_text) instead of its centre frame's.
    story_windows = t2v.long_video(spans, 8, layout=WINDOWS, **kwargs)
    by_hand = sampling.generate(t2v.graphdef, t2v.params, t2v.prompts(text[per_frame][None], mask[per_frame][None]),
                                jax.random.key(0), shape=(8, 16, 16, 3), schedule=t2v.schedule, options=options,
                                windows=sampling.Windows(4, overlap=2, weights="triangle", shift=True, noise="repeat",
                                                         frame_text=True))
    np.testing.assert_allclose(story_windows, np.asarray(by_hand)[0], atol=1e-5)
    assert min(np.abs(story_windows - story).max(), np.abs(story_windows - whole_story).max()) > 1e-3
    np.testing.assert_allclose(t2v.long_video(spans, 8, layout=sampling.LongVideo("windows", frame_text=False),
                                              **kwargs), story,
                               atol=1e-6)
    # A story within the training length is one window: the whole clip, a prompt per frame.
    short = t2v.long_video([(0, "a red circle"), (2, "a blue square moving up")], 4, **kwargs)
    t2v.story_trained = False
    np.testing.assert_allclose(t2v.long_video([(0, "a red circle"), (2, "a blue square moving up")], 4, **kwargs),
                               short, atol=1e-6)
    assert short.shape == (4, 16, 16, 3) and np.isfinite(short).all()
    odd = t2v.long_video([(0, "a red circle")], 7, **kwargs)
    np.testing.assert_allclose(odd, t2v.long_video([(0, "a red circle")], 7, layout=WINDOWS, **kwargs),
                               atol=1e-6)
    with pytest.raises(ValueError, match="multiple of 2 frames"):
        t2v.long_video([(0, "a red circle")], 7, layout=sampling.LongVideo("whole"), **kwargs)


def test_story_training_reads_a_caption_per_frame(data_dir, tmp_path):
    workdir = str(tmp_path / "story")
    config = smoke_config(data_dir, total_steps=2, data__story_fraction=0.5, data__story_changes="motion,color,shape")
    sources, _, cache = train.load_data(config)
    assert sources["train"].is_story.any()  # data/stories.py: a share of the clips changes mid-clip
    assert sources["train"].changes == ("motion", "color", "shape")
    assert all(c in cache for i in range(len(sources["train"])) for c in sources["train"][i]["frame_captions"])
    state = train.train_and_evaluate(config, workdir)
    assert int(state.step) == 2 and all(np.isfinite(v) for v in _losses(workdir).values())
    assert trained_on_stories(workdir) and not trained_on_stories(str(tmp_path))
    t2v, _ = sampling.load_text_to_video(smoke_config(data_dir), workdir)
    assert t2v.story_trained  # read from the run's config.json, whatever the command line's config says
    # The command line samples a story from it on the whole clip, a prompt per frame (config.sample.long_video='auto').
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-m", "lumiere_jax.main", "--config=configs/t2v.py:size=smoke",
                           f"--workdir={workdir}", "--mode=sample", "--prompt=a red circle moving left",
                           "--frames=8", "--prompt_at=4:a red circle moving up", "--config.sample.steps=2",
                           f"--out={tmp_path / 'story.gif'}"], cwd=root, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "8 frames at 16x16, the whole clip with a prompt per frame" in proc.stdout, proc.stdout


def test_non_finite_loss_aborts_and_keeps_the_checkpoint(data_dir, tmp_path, monkeypatch):
    workdir = str(tmp_path / "nan")
    train.train_and_evaluate(smoke_config(data_dir, total_steps=2), workdir)
    # Corrupt data from here on (same compiled step, so no new compile): the loss turns NaN at step 3.
    original = pipeline.ToModelInputs.map
    monkeypatch.setattr(pipeline.ToModelInputs, "map",
                        lambda self, ex: {**original(self, ex), "video": np.full((4, 16, 16, 3), np.nan, np.float32)})
    with pytest.raises(train.NonFiniteError, match=r"Non-finite loss first at step 3 .*checkpoint \(step 2\) is intact"):
        train.train_and_evaluate(smoke_config(data_dir, total_steps=4), workdir)
    assert checkpointing.Checkpointer(workdir).latest_step() == 2
    # nan_policy=skip: the bad steps are skipped, training goes on, parameters stay finite.
    state = train.train_and_evaluate(smoke_config(data_dir, total_steps=4, nan_policy="skip"), workdir)
    assert int(state.step) == 4 and int(state.skipped) == 2
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(state.params))


def test_resuming_under_another_noise_schedule_is_refused(trained_workdir, data_dir, tmp_path):
    workdir = str(tmp_path / "run")
    shutil.copytree(trained_workdir, workdir)
    with open(os.path.join(workdir, "config.json")) as f:
        saved = f.read()
    with pytest.raises(ValueError, match=r"diffusion.shift=0.25, but the run in .* trained with 1.0: resume it with "
                                         r"--config.diffusion.shift=1.0, or .*--config.init_from="):
        train.train_and_evaluate(smoke_config(data_dir, diffusion__shift=0.25, total_steps=6), workdir)
    assert checkpointing.Checkpointer(workdir).latest_step() == 4
    with open(os.path.join(workdir, "config.json")) as f:
        assert f.read() == saved  # what sampling reads still describes the checkpoints


def test_draw_times_puts_the_asked_share_at_high_noise():
    key = jax.random.key(3)
    # No share: the low-discrepancy sequence the trainer always drew (so earlier runs resume identically).
    plain = np.asarray(train.draw_times(key, 8))
    np.testing.assert_array_equal(plain, np.asarray(jnp.mod(jax.random.uniform(key) + jnp.arange(8) / 8, 1.0)))
    t = np.asarray(train.draw_times(key, 8, 0.5, 0.9))
    high, rest = np.sort(t[:4]), np.sort(t[4:])
    assert np.all((high >= 0.9) & (high < 1.0)) and np.all((rest >= 0.0) & (rest < 1.0))
    np.testing.assert_allclose(np.diff(high), 0.025, atol=1e-6)  # stratified over [0.9, 1)
    np.testing.assert_allclose(np.diff(rest), 0.25, atol=1e-6)  # and over [0, 1)
    assert np.all(np.asarray(train.draw_times(key, 8, 1.0, 0.9)) >= 0.9)
    t = np.asarray(train.draw_times(key, 8, 0.3, 0.9))  # round(2.4) = 2 at high noise, 6 over [0, 1)
    assert t.shape == (8,) and np.all(t[:2] >= 0.9)
    np.testing.assert_allclose(np.diff(np.sort(t[2:])), 1 / 6, atol=1e-6)
    # t_max < 1 (a style tune of the low-noise steps): the same sequence scaled into [0, t_max).
    low = np.asarray(train.draw_times(key, 8, t_max=0.5))
    np.testing.assert_allclose(low, 0.5 * plain, atol=1e-7)
    t = np.asarray(train.draw_times(key, 8, 0.5, 0.9, t_max=0.5))
    assert np.all(t[:4] >= 0.9) and np.all(t[4:] < 0.5)


def test_decay_start_holds_the_peak_then_decays_to_decay_steps(data_dir):
    from lumiere_jax.state import learning_rate_schedule
    c = smoke_config(data_dir)
    c.optim.learning_rate, c.optim.warmup_steps, c.optim.decay_to = 1e-3, 10, 0.1
    c.optim.decay_steps = 100
    plain = learning_rate_schedule(c)  # cosine from the end of warmup
    c.optim.decay_steps = 0
    constant = learning_rate_schedule(c)
    c.optim.decay_start, c.optim.decay_steps = 60, 100
    wsd = learning_rate_schedule(c)
    steps = np.arange(0, 120)
    lr, lr_constant = np.array([wsd(s) for s in steps]), np.array([constant(s) for s in steps])
    # Up to decay_start it is the constant-rate run, step for step (so such a run resumes into it unchanged).
    np.testing.assert_allclose(lr[:61], lr_constant[:61], rtol=1e-6)
    np.testing.assert_allclose(lr[5], 5e-4, rtol=1e-6)  # warmup
    assert np.all(np.diff(lr[60:101]) < 0)  # then strictly down ...
    np.testing.assert_allclose(lr[80], 1e-3 * (0.1 + 0.9 * 0.5), rtol=1e-5)  # cosine midpoint
    np.testing.assert_allclose(lr[100:], 1e-4, rtol=1e-5)  # ... to decay_to at decay_steps, and stays
    assert float(plain(60)) < 1e-3  # decay_start=0 keeps the old meaning: decay right after warmup
    c.optim.decay_start = 100  # must end before decay_steps
    from lumiere_jax.config_lib import validate as validate_config
    with pytest.raises(ValueError, match="optim.decay_start=100 must lie in"):
        validate_config(c)


def test_high_noise_share_switches_phase_at_the_configured_step():
    config = smoke_config("unused", diffusion__high_noise_fraction=1.0, diffusion__high_noise_until=100,
                          diffusion__high_noise_fraction_after=0.25)
    key = jax.random.key(5)
    for step, share in ((0, 1.0), (99, 1.0), (100, 0.25), (5000, 0.25)):
        assert float(train.high_noise_share(config, jnp.asarray(step))) == share
        t = np.asarray(train.draw_times(key, 8, train.high_noise_share(config, jnp.asarray(step)), 0.9))
        assert int((t >= 0.9).sum()) >= round(share * 8) and np.all(t[:round(share * 8)] >= 0.9)
    config.diffusion.high_noise_until = 0  # one phase: high_noise_fraction throughout
    assert float(train.high_noise_share(config, jnp.asarray(10_000))) == 1.0
    # Traced and static fractions draw the same times (a resumed run repeats its batches' times exactly).
    traced = jax.jit(lambda f: train.draw_times(key, 8, f, 0.9))(jnp.float32(0.5))
    np.testing.assert_array_equal(np.asarray(traced), np.asarray(train.draw_times(key, 8, 0.5, 0.9)))


def test_text_statistics_standardize_the_training_tokens_and_stay_frozen():
    from lumiere_jax.config_lib import model_config
    from lumiere_jax.state import build_model, set_text_statistics
    from lumiere_jax.text.cache import token_statistics
    rng = np.random.default_rng(0)
    features = rng.normal(3.0, [0.5] * 8 + [4.0] * 8, (40, 6, 16)).astype(np.float32)
    masks = np.arange(6)[None, :] < rng.integers(1, 7, (40, 1))
    mean, std = token_statistics(features, masks, chunk=7)  # chunks that do not divide the rows
    np.testing.assert_allclose(mean, features[masks].mean(0), rtol=1e-5)
    np.testing.assert_allclose(std, features[masks].std(0), rtol=1e-4)
    config = smoke_config("unused")
    config.model.text_dim = 16
    graphdef, params = build_model(model_config(config), 0)
    params = set_text_statistics(graphdef, params, mean, std)
    model = nnx.merge(graphdef, params)
    normed = np.asarray(model.text_norm(jnp.asarray(features), jnp.asarray(masks)))
    np.testing.assert_allclose(normed[masks].mean(0), 0.0, atol=1e-3)
    np.testing.assert_allclose(normed[masks].std(0), 1.0, atol=1e-2)
    assert np.all(normed[~masks] == 0)  # padding stays zero
    grads = jax.grad(lambda m: jnp.sum(m.text_norm(jnp.asarray(features), jnp.asarray(masks)) ** 2))(model)
    assert float(jnp.abs(grads.text_norm.shift.value).max()) == 0.0  # frozen: no gradient reaches them
