"""Spatial super-resolution: conditioning, training and resume, the (windowed) SSR sampler, the cascade CLI."""

import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import ssr as ssr_configs
from lumiere_jax import sampling, ssr, video_io
from lumiere_jax.conditioning import low_res
from lumiere_jax.diffusion.schedule import CosineSchedule, schedule_from

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ssr_smoke_config(data_dir: str, **overrides):
    """configs/ssr.py:size=smoke (16 -> 32 px, 4 frames) with its data under data_dir; `a__b=value` overrides."""
    c = ssr_configs.get_config("size=smoke")
    c.data.data_dir = data_dir
    for key, value in overrides.items():
        node = c
        *path, last = key.split("__")
        for p in path:
            node = node[p]
        node[last] = value
    return c


@pytest.fixture(scope="module")
def ssr_workdir(tmp_path_factory, data_dir) -> str:
    """An SSR smoke run trained for 4 steps (checkpoints at 2 and 4); tests only read it."""
    from lumiere_jax import train
    workdir = str(tmp_path_factory.mktemp("ssr_run"))
    train.train_and_evaluate(ssr_smoke_config(data_dir), workdir)
    return workdir


def _clip(shape, seed=0):
    return jax.random.uniform(jax.random.key(seed), shape, minval=-1.0, maxval=1.0)


# Conditioning.

def test_downsample_is_the_block_mean_and_upsample_is_bilinear():
    x = _clip((1, 2, 8, 8, 3))
    low = low_res.downsample(x, 4)
    assert low.shape == (1, 2, 4, 4, 3)
    np.testing.assert_allclose(low[0, 1, 2, 3], x[0, 1, 4:6, 6:8].mean(axis=(0, 1)), atol=1e-6)
    up = low_res.upsample(low, 8)
    assert up.shape == (1, 2, 8, 8, 3)
    # Half-pixel centres: output row 1 samples input row (1 + 0.5) / 2 - 0.5 = 0.25; column 0 clamps to input 0.
    np.testing.assert_allclose(up[0, 0, 1, 0], 0.75 * low[0, 0, 0, 0] + 0.25 * low[0, 0, 1, 0], atol=1e-6)
    with pytest.raises(ValueError, match="multiple of ssr.low_resolution"):
        low_res.downsample(x, 3)


def test_conditioner_shapes_range_and_levels(data_dir):
    config = ssr_smoke_config(data_dir)
    x = _clip((4, 4, 32, 32, 3))
    out = jax.jit(low_res.make_conditioner(config))(x, jax.random.key(1))
    assert out["cond"].shape == x.shape and out["cond_level"].shape == (4,)
    level = np.asarray(out["cond_level"])
    assert np.all((level >= 0) & (level <= config.ssr.aug_level_max)) and len(set(level.tolist())) == 4
    clean = low_res.upsample(low_res.downsample(x, 16), 32)
    noise = np.asarray(out["cond"] - clean).std(axis=(1, 2, 3, 4))  # per example: grows with its level
    _, sigma = CosineSchedule().alpha_sigma(jnp.asarray(level))
    assert np.all(noise > 0) and list(np.argsort(noise)) == list(np.argsort(level))
    np.testing.assert_allclose(noise, sigma, rtol=0.25)


@pytest.mark.parametrize("method", low_res.UPSAMPLING)
def test_augmentation_level_zero_is_exactly_the_upsample(data_dir, method):
    config = ssr_smoke_config(data_dir, ssr__aug_level_max=0.0, ssr__upsample=method)
    x = _clip((2, 4, 32, 32, 3))
    out = jax.jit(low_res.make_conditioner(config))(x, jax.random.key(2))
    np.testing.assert_array_equal(out["cond_level"], 0.0)
    upsampled = low_res.upsample(low_res.downsample(x, 16), 32, method)
    np.testing.assert_allclose(out["cond"], upsampled, atol=1e-6)
    assert float(jnp.abs(out["cond"]).max()) <= 1.0  # bilinear stays in the clip's range; bicubic is clipped to it
    low = _clip((1, 4, 16, 16, 3))
    cond, clean = low_res.condition_low_res(low, jnp.zeros((1,)), jax.random.key(0), resolution=32,
                                            schedule=CosineSchedule(), method=method)
    np.testing.assert_allclose(cond, low_res.upsample(low, 32, method), atol=1e-6)
    np.testing.assert_array_equal(cond, clean)


def test_bicubic_upsampling_restores_a_smooth_clip_better_than_bilinear():
    ramp = jnp.sin(jnp.linspace(0.0, 3.0, 32))  # a smooth field along x and y
    x = jnp.broadcast_to((0.8 * ramp[:, None] * ramp[None, :])[None, None, :, :, None], (1, 2, 32, 32, 3))
    low = low_res.downsample(x, 8)
    errors = {m: float(jnp.abs(low_res.upsample(low, 32, m) - x)[:, :, 4:-4, 4:-4].mean()) for m in low_res.UPSAMPLING}
    assert errors["bicubic"] < 0.7 * errors["bilinear"], errors
    with pytest.raises(ValueError, match="ssr.upsample='nearest' is not one of"):
        low_res.upsample(low, 32, "nearest")


def test_a_residual_ssr_learns_the_detail_over_the_upsampled_clip(data_dir):
    """ssr.residual_scale > 0: the train step's diffusion target is (x - up(x_lr)) / scale, which is zero where the
    upsampling is exact, and from_residual inverts it; scale 0 leaves the clip as the target."""
    config = ssr_smoke_config(data_dir, ssr__aug_level_max=0.0)
    scale = config.ssr.residual_scale
    assert scale > 0 and config.ssr.upsample == "bicubic"  # configs/ssr.py's default
    x = _clip((2, 4, 32, 32, 3))
    out = jax.jit(low_res.make_conditioner(config))(x, jax.random.key(2))
    np.testing.assert_allclose(out["x0"], (x - out["cond"]) / scale, atol=1e-5)
    np.testing.assert_allclose(low_res.from_residual(out["x0"], out["cond"], scale), x, atol=1e-5)
    # A flat clip is exactly its own upsample: its residual is 0.
    flat = jnp.full((1, 4, 32, 32, 3), 0.3)
    np.testing.assert_allclose(jax.jit(low_res.make_conditioner(config))(flat, jax.random.key(0))["x0"], 0.0,
                               atol=1e-6)
    # The generated residual is added back and the clip clipped to [-1, 1]; a model output of zero is the upsample.
    np.testing.assert_array_equal(low_res.from_residual(jnp.zeros_like(x), out["cond"], scale), out["cond"])
    assert float(jnp.abs(low_res.from_residual(jnp.full_like(x, 5.0), out["cond"], scale)).max()) == 1.0
    plain = ssr_smoke_config(data_dir, ssr__residual_scale=0.0)
    assert "x0" not in jax.jit(low_res.make_conditioner(plain))(x, jax.random.key(2))


def test_the_train_step_diffuses_the_residual_not_the_clip(data_dir, monkeypatch):
    """The step's z_t and v target are made from the conditioner's "x0", the scaled detail over the bicubic
    upsample, which the model never sees as an input; the clean signal is read out of the jitted step."""
    from lumiere_jax import train
    from lumiere_jax.diffusion import schedule as sched
    from lumiere_jax.state import init_model, init_state, make_optimizer

    seen = []
    diffuse = sched.diffuse

    def recording(x, *args):
        jax.debug.callback(lambda v: seen.append(np.asarray(v)), x)
        return diffuse(x, *args)

    monkeypatch.setattr(sched, "diffuse", recording)
    config = ssr_smoke_config(data_dir, ssr__aug_level_max=0.0)
    graphdef, params = init_model(config, 0)
    tx = make_optimizer(config)
    b, t, r, length, dim = 2, config.data.num_frames, config.data.resolution, config.text_max_length, \
        config.model.text_dim
    x = _clip((b, t, r, r, 3), seed=7)
    batch = {"video": x, "text": jnp.zeros((b, length, dim)), "text_mask": jnp.ones((b, length), bool)}
    step = jax.jit(train.make_train_step(graphdef, tx, schedule_from(config), config))
    _, metrics = step(init_state(params, tx), batch, jnp.zeros((1, length, dim)), jnp.arange(length)[None] < 2)
    assert np.isfinite(float(metrics["loss"])) and len(seen) == 1
    upsampled = low_res.upsample(low_res.downsample(x, config.ssr.low_resolution), r, config.ssr.upsample)
    np.testing.assert_allclose(seen[0], (x - upsampled) / config.ssr.residual_scale, atol=1e-5)


def test_ssr_runs_saved_before_the_residual_keys_load_as_what_they_were(tmp_path, data_dir):
    from lumiere_jax import config_lib
    saved = ssr_smoke_config(data_dir).to_dict()
    del saved["ssr"]["upsample"], saved["ssr"]["residual_scale"]
    (tmp_path / "config.json").write_text(json.dumps(saved))
    config = config_lib.run_config(str(tmp_path))
    assert (config.ssr.upsample, config.ssr.residual_scale) == ("bilinear", 0.0)
    assert "ssr" not in config_lib.with_defaults({"task": "t2v"})


@pytest.mark.parametrize("overrides, match", [
    (dict(ssr__low_resolution=12), "ssr.low_resolution=12 must be smaller than data.resolution=32 and divide it"),
    (dict(ssr__low_resolution=32), "ssr.low_resolution=32 must be smaller"),
    (dict(ssr__aug_level_max=1.5), r"ssr.aug_level_max=1.5 must be in \[0, 1\]"),
    (dict(model__cond_channels=0), "needs model.cond_channels=3"),
    (dict(ssr__upsample="nearest"), "ssr.upsample='nearest' is not one of"),
    (dict(ssr__residual_scale=-0.5), "ssr.residual_scale=-0.5 must be >= 0"),
    (dict(ssr__window=3), "num_frames=3 cannot be halved"),
    (dict(ssr__overlap=4), r"ssr.overlap=4 must be in \[0, ssr.window=4\)"),
    (dict(ssr__window_batch=-1), "ssr.window_batch=-1 must be >= 0"),
])
def test_bad_ssr_configs_are_refused(data_dir, overrides, match):
    with pytest.raises(ValueError, match=match):
        low_res.make_conditioner(ssr_smoke_config(data_dir, **overrides))


def test_paper_scale_variant_builds_abstractly():
    """128 -> 1024 px on 16-frame windows; one MultiDiffusion step over an 80-frame clip, traced only."""
    from flax import nnx

    from lumiere_jax.diffusion import multidiffusion
    from lumiere_jax.models.stunet import STUNet
    from lumiere_jax.config_lib import model_config, validate as validate_config
    from lumiere_jax.state import split_model

    config = ssr_configs.get_config("size=lumiere")
    validate_config(config)
    low_res.validate(config)
    assert (config.ssr.low_resolution, config.data.resolution, config.ssr.window) == (128, 1024, 16)
    graphdef, params = split_model(nnx.eval_shape(lambda: STUNet(model_config(config), rngs=nnx.Rngs(0))))
    assert 4e8 < sum(p.size for p in jax.tree.leaves(params)) < 6e8
    frames = 80

    def step(params, z, low, text, mask):
        cond = low_res.upsample(low, 1024)
        model = nnx.merge(graphdef, params)
        denoise = multidiffusion.multidiffusion_text(
            model, text, mask, text[:1], mask[:1], 1.0, num_frames=frames, window=16, overlap=2,
            window_batch=config.ssr.window_batch, frame_inputs={"cond": cond},
            batch_inputs={"cond_level": jnp.full((1,), 0.1)})
        return denoise(z, jnp.full((1,), 0.5))

    f32 = jnp.float32
    out = jax.eval_shape(step, params, jax.ShapeDtypeStruct((1, frames, 1024, 1024, 3), f32),
                         jax.ShapeDtypeStruct((1, frames, 128, 128, 3), f32),
                         jax.ShapeDtypeStruct((1, 24, 384), f32), jax.ShapeDtypeStruct((1, 24), jnp.bool_))
    assert out.shape == (1, frames, 1024, 1024, 3)
    assert len(multidiffusion.window_starts(frames, 16, 2)) == 6


# Training.

def test_ssr_trains_and_resumes(ssr_workdir, data_dir, tmp_path, caplog):
    from lumiere_jax import train
    with open(os.path.join(ssr_workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert all(np.isfinite(r["loss"]) and r["loss"] > 0 for r in rows)
    with open(os.path.join(ssr_workdir, "config.json")) as f:
        assert json.load(f)["ssr"]["low_resolution"] == 16
    # Resume a copy for 2 more steps: it starts from the step-4 checkpoint.
    workdir = str(tmp_path / "resumed")
    shutil.copytree(ssr_workdir, workdir)
    caplog.set_level("INFO", logger="lumiere_jax")
    state = train.train_and_evaluate(ssr_smoke_config(data_dir, total_steps=6), workdir)
    assert int(state.step) == 6
    assert "Resumed from checkpoint at step 4" in caplog.text
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        assert [json.loads(line)["step"] for line in f] == [1, 2, 3, 4, 5, 6]


# Sampling.

def test_ssr_sampler_is_generate_on_the_augmented_upsampled_clip(ssr_workdir):
    upsampler, step = ssr.SuperResolution.from_workdir(ssr_workdir)
    assert step == 4 and upsampler.window == 4
    low = _clip((2, 4, 16, 16, 3), seed=3)
    prompts = ["a red circle moving left", "a blue square moving up"]
    high = upsampler(low, prompts, seed=5, steps=2)
    assert high.shape == (2, 4, 32, 32, 3) and np.all(np.abs(high) <= 1.0)
    # The same thing by hand: window == clip is the plain sampler with the low-res conditioning.
    k_aug, k_sample = jax.random.split(jax.random.key(5))
    level = jnp.full((2,), upsampler.config.ssr.sample_aug_level)
    upsampled = low_res.upsample(low, 32, "bicubic")
    cond = low_res.augment(upsampled, level, k_aug, upsampler.schedule)
    text, mask = upsampler.encoder.encode(prompts)
    expected = sampling.generate(upsampler.graphdef, upsampler.params,
                                 sampling.Prompts(jnp.asarray(text), jnp.asarray(mask), upsampler.null_text,
                                                  upsampler.null_mask),
                                 k_sample, shape=(4, 32, 32, 3), schedule=upsampler.schedule,
                                 options=sampling.SamplerOptions(steps=2, guidance=1.0, sampler="ddim"),
                                 condition=sampling.Condition(cond, level))
    # A residual SSR: the generated clip is the detail, added to the bicubic upsample.
    expected = np.clip(upsampled + upsampler.config.ssr.residual_scale * expected, -1.0, 1.0)
    np.testing.assert_allclose(high, expected, atol=1e-5)
    # The low-res clip reaches the model (4 training steps: weakly, but 10x above the tolerance above).
    other = upsampler(-low, prompts, seed=5, steps=2)
    assert np.abs(other - high).max() > 1e-4


def test_windowed_ssr_on_a_clip_longer_than_the_window(ssr_workdir):
    upsampler, _ = ssr.SuperResolution.from_workdir(ssr_workdir)
    low = _clip((1, 10, 16, 16, 3), seed=4)  # windows at [0, 2, 4, 6] of 4 frames
    spans = [(0, "a red circle moving left"), (5, "a red circle moving up")]
    all_at_once = upsampler(low, spans=spans, seed=1, steps=2)
    assert all_at_once.shape == (1, 10, 32, 32, 3) and np.all(np.isfinite(all_at_once))
    upsampler.window_batch = 1  # one window per model call: a scan over the windows, same result
    one_by_one = upsampler(low, spans=spans, seed=1, steps=2)
    np.testing.assert_allclose(one_by_one, all_at_once, atol=1e-4)
    with pytest.raises(ValueError, match="fewer than the SSR window"):
        upsampler(low[:, :3], ["a red circle"])
    with pytest.raises(ValueError, match=r"this SSR model takes \[B, T, 16, 16, 3\]"):
        upsampler(low[:, :, :8, :8], ["a red circle"])


# The cascade on the command line.

def run_cli(*args):
    cmd = [sys.executable, "-m", "lumiere_jax.main", "--config=configs/t2v.py:size=smoke", *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_cascade_cli_writes_the_high_res_clip(trained_workdir, ssr_workdir, tmp_path):
    out = str(tmp_path / "cascade.gif")
    proc = run_cli(f"--workdir={trained_workdir}", "--mode=sample", f"--ssr_workdir={ssr_workdir}",
                   "--prompt=a red circle moving left", "--prompt_at=3:a red circle moving up", "--frames=6",
                   f"--out={out}", "--config.sample.steps=2", "--config.sample.ssr_window_batch=1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert video_io.read_video(out).shape == (6, 32, 32, 3)
    assert "6 frames at 32x32" in proc.stdout and "SSR checkpoint step 4" in proc.stdout
    assert "SSR windows 1 at a time" in proc.stdout  # config.sample.ssr_window_batch overrides the SSR run's 0


@pytest.mark.parametrize("case, match", [
    ("resolution", "upsamples 16x16 clips but the base model makes 8x8 clips"),
    ("missing", "does not exist: train an SSR model there first"),
    ("empty", "holds no trained run"),
    ("t2v_run", "is a task='t2v' run, not a super-resolution run"),
])
def test_cascade_cli_errors(trained_workdir, ssr_workdir, tmp_path, case, match):
    ssr_dir = {"resolution": ssr_workdir, "missing": str(tmp_path / "nope"), "empty": str(tmp_path),
               "t2v_run": trained_workdir}[case]
    extra = ["--config.data.resolution=8"] if case == "resolution" else []
    proc = run_cli(f"--workdir={trained_workdir}", "--mode=sample", f"--ssr_workdir={ssr_dir}",
                   "--prompt=a red circle", f"--out={tmp_path / 'x.gif'}", *extra)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and match in lines[0], proc.stderr[-2000:]
    assert not os.path.exists(tmp_path / "x.gif")


def test_cascade_is_the_base_long_video_then_the_ssr(trained_workdir, ssr_workdir, data_dir):
    from conftest import smoke_config
    base, _ = sampling.load_text_to_video(smoke_config(data_dir), trained_workdir)
    upsampler, _ = ssr.SuperResolution.from_workdir(ssr_workdir)
    cascade = ssr.Cascade(base, upsampler)
    spans = [(0, "a red circle moving left"), (3, "a red circle moving up")]
    kwargs = dict(seed=2, guidance=2.0, sampler="ddim")
    low, high = cascade(spans, 6, base_steps=2, ssr_steps=2, layout=sampling.LongVideo("windows"), **kwargs)
    assert low.shape == (6, 16, 16, 3) and high.shape == (6, 32, 32, 3)
    expected_low = base.long_video(spans, 6, steps=2, layout=sampling.LongVideo("windows"), **kwargs)
    np.testing.assert_allclose(low, expected_low, atol=1e-6)
    np.testing.assert_allclose(high, upsampler(expected_low[None], spans=spans, seed=2, steps=2)[0], atol=1e-6)
    # One base window per model call: the same clips.
    grouped_low, grouped_high = cascade(spans, 6, base_steps=2, ssr_steps=2,
                                        layout=sampling.LongVideo("windows", window_batch=1), **kwargs)
    np.testing.assert_allclose(grouped_low, low, atol=1e-4)
    np.testing.assert_allclose(grouped_high, high, atol=1e-4)
    with pytest.raises(ValueError, match="makes 8 px clips but the SSR model upsamples 16 px"):
        ssr.Cascade(sampling.TextToVideo(base.graphdef, base.params, base.encoder, base.schedule, num_frames=4,
                                         resolution=8), upsampler)
