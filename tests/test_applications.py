"""Applications (Lumiere, Sec. 4): masks, the 7-channel model's start from T2V, paste-back, SDEdit, style weights.

Compiled programs are few and at the smoke size: one forward pass of each model, one conditional train step,
one conditional and one SDEdit sampler, one T2I style step.
"""

import importlib
import os
import subprocess
import sys
import types

import imageio.v3 as iio
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import smoke_config
from configs import conditional, style_gen
from lumiere_jax import checkpointing, inflate, sampling, train
from lumiere_jax.applications import edit, style_tune
from lumiere_jax.applications import inputs as app_inputs
from lumiere_jax.conditioning import masked
from lumiere_jax.data import shapes
from lumiere_jax.diffusion.schedule import schedule_from
from lumiere_jax.eval import app_metrics, shapes_checker
from lumiere_jax.models.stunet import is_temporal_path
from lumiere_jax.state import abstract_graphdef_and_state, init_model
from lumiere_jax.text.encoders import load_text_encoder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
B, T, H, W = 32, 4, 16, 16


def _cond_config(data_dir, **overrides):
    c = conditional.get_config("size=smoke")
    c.data.data_dir = data_dir
    for k, v in overrides.items():
        c[k] = v
    return c


def _restore(config, workdir):
    graphdef, abstract = abstract_graphdef_and_state(config)
    state, _ = checkpointing.Checkpointer(workdir, read_only=True).restore(
        checkpointing.with_shardings(abstract, jax.sharding.SingleDeviceSharding(jax.devices()[0])))
    return graphdef, state.ema


def _sampler(config, workdir):
    graphdef, ema = _restore(config, workdir)
    encoder = load_text_encoder(config.text_encoder, config.text_encoder_path, config.text_max_length)
    return sampling.TextToVideo(graphdef, ema, encoder, schedule_from(config), num_frames=config.data.num_frames,
                                resolution=config.data.resolution)


def _perturbed(params, scale=0.3):
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(7), len(leaves))
    return jax.tree.unflatten(treedef, [x + scale * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


# Masks.

@pytest.mark.parametrize("kind", masked.KINDS)
def test_each_mask_kind(kind):
    probs = np.array([k == kind for k in masked.KINDS], np.float32)
    m, kinds = masked.sample_masks(jax.random.key(0), (B, T, H, W), probs)
    m = np.asarray(m)[..., 0]  # [B, T, H, W]
    assert m.shape == (B, T, H, W) and set(np.unique(m)) <= {0.0, 1.0}
    assert (np.asarray(kinds) == masked.KINDS.index(kind)).all()
    if kind == "i2v":  # frame 1 known, nothing after it
        assert (m[:, 0] == 1).all() and (m[:, 1:] == 0).all()
    elif kind == "cinemagraph":  # frame 1 known; after it one fixed region unknown, the rest known
        assert (m[:, 0] == 1).all()
        assert (m[:, 1:] == m[:, 1:2]).all()
        hole = 1 - m[:, 1].reshape(B, -1).mean(-1)
        assert (hole >= 0.25**2 - 0.05).all() and (hole <= 0.6**2 + 0.1).all()
    elif kind == "inpaint":  # a box hole over some frames, known elsewhere
        hole = m == 0
        assert hole.any(axis=(1, 2, 3)).all() and (~hole).any(axis=(1, 2, 3)).all()
        union = hole.any(1)  # [B, H, W]: the box
        for b in range(B):
            ys, xs = np.nonzero(union[b])
            assert union[b, ys.min():ys.max() + 1, xs.min():xs.max() + 1].all()  # a rectangle
    else:
        assert (m == 0).all()


def test_conditioner_mixes_kinds_and_masks_the_clip(data_dir):
    config = _cond_config(data_dir)
    x = jax.random.uniform(jax.random.key(1), (64, T, H, W, 3), minval=-1, maxval=1)
    cond = np.asarray(jax.jit(masked.make_conditioner(config))(x, jax.random.key(2))["cond"])
    assert cond.shape == (64, T, H, W, 4)
    m = cond[..., 3:]
    assert set(np.unique(m)) == {0.0, 1.0}
    np.testing.assert_array_equal(cond[..., :3], np.asarray(x) * m)  # C is the clip where known, 0 elsewhere
    _, kinds = masked.sample_masks(jax.random.key(2), (64, T, H, W), masked.kind_probabilities(config))
    assert len(np.unique(np.asarray(kinds))) == len(masked.KINDS)
    config.task = "i2v"  # one kind only
    assert masked.kind_probabilities(config).tolist() == [1.0, 0.0, 0.0, 0.0]


@pytest.mark.parametrize("kind", ["i2v", "inpaint", "cinemagraph"])
def test_each_application_config_fine_tunes_the_conditional_model_on_its_own_masks(kind):
    config = importlib.import_module(f"configs.{kind}").get_config("size=smoke")
    assert config.task == kind and app_inputs.is_conditional(config)
    np.testing.assert_array_equal(masked.kind_probabilities(config), [k == kind for k in masked.KINDS])
    mixture = conditional.get_config("size=smoke")
    assert (masked.kind_probabilities(mixture) > 0).all()
    assert {k: v for k, v in config.to_dict().items() if k != "task"} == {
        k: v for k, v in mixture.to_dict().items() if k != "task"}


def test_conditioner_refuses_a_model_without_condition_channels(data_dir):
    config = smoke_config(data_dir)
    with config.unlocked():
        config.task = "conditional"
    with pytest.raises(ValueError, match="model.cond_channels=0: use configs/conditional.py"):
        masked.make_conditioner(config)


# Application inputs and paste-back.

def test_application_conditions_and_paste_back():
    rng = np.random.default_rng(0)
    image = rng.uniform(-1, 1, (H, W, 3)).astype(np.float32)
    video = rng.uniform(-1, 1, (T, H, W, 3)).astype(np.float32)
    region = np.zeros((H, W), bool)
    region[4:9, 5:12] = True
    i2v = masked.i2v_condition(image, T)
    inpaint = masked.inpaint_condition(video, region)
    cine = masked.cinemagraph_condition(image, region, T)
    for cond in (i2v, inpaint, cine):
        assert cond.shape == (T, H, W, 4)
    np.testing.assert_array_equal(i2v[0, ..., :3], image)
    assert (i2v[0, ..., 3] == 1).all() and (i2v[1:] == 0).all()
    assert (inpaint[:, region, 3] == 0).all() and (inpaint[:, ~region, 3] == 1).all()
    assert (cine[0, ..., 3] == 1).all() and (cine[1:, region, 3] == 0).all()
    outside = image[~region]  # [N, 3]
    np.testing.assert_array_equal(cine[1:, ~region, :3], np.broadcast_to(outside, (T - 1,) + outside.shape))
    out = rng.uniform(-1, 1, (T, H, W, 3)).astype(np.float32)
    for cond in (i2v, inpaint, cine):
        pasted = masked.paste_back(out, cond)
        known = cond[..., 3] == 1
        np.testing.assert_array_equal(pasted[known], cond[..., :3][known])
        np.testing.assert_array_equal(pasted[~known], out[~known])


# The 7-channel model starts as the T2V model.

def test_zero_initialized_condition_channels_reproduce_the_t2v_model(trained_workdir, data_dir):
    t2v_config = smoke_config(data_dir)
    g_t2v, t2v_ema = _restore(t2v_config, trained_workdir)
    g_cond, cond_params = init_model(_cond_config(data_dir), 0)
    # What init_from does with a T2V run: every weight copied, conv_in widened with zeros.
    loaded = inflate.load_init_weights(cond_params, trained_workdir)
    kernel = loaded["conv_in"]["conv"]["kernel"][...]
    assert kernel.shape[-2] == 3 + 4 and not np.any(kernel[..., 3:, :])
    np.testing.assert_array_equal(kernel[..., :3, :], t2v_ema["conv_in"]["conv"]["kernel"][...])
    # Four training steps barely move the zero-initialized output layer: perturb every weight for teeth.
    t2v_params = _perturbed(t2v_ema)
    cond_model = nnx.merge(g_cond, inflate.widen_conv_in(cond_params, t2v_params))
    t2v_model = nnx.merge(g_t2v, t2v_params)
    k = jax.random.split(jax.random.key(3), 3)
    x = jax.random.normal(k[0], (2, T, H, W, 3))
    cond = jax.random.normal(k[1], (2, T, H, W, 4))
    text, mask, t = jax.random.normal(k[2], (2, 24, 384)), jnp.ones((2, 24), bool), jnp.array([0.2, 0.8])
    out_t2v = nnx.jit(lambda m, x: m(x, t, text, mask))(t2v_model, x)
    out_cond = nnx.jit(lambda m, x, c: m(x, t, text, mask, cond=c))(cond_model, x, cond)
    assert float(jnp.abs(out_t2v).max()) > 0.1
    # float32: the wider conv_in sums in another order (4e-5 seen on outputs near 1); a wrong init differs by 0.1+.
    np.testing.assert_allclose(out_cond, out_t2v, atol=1e-4, rtol=1e-4)


def test_widen_refuses_another_model_size(data_dir):
    _, cond_params = init_model(_cond_config(data_dir), 0)
    _, other = init_model(smoke_config(data_dir, model__channels=16), 0)
    with pytest.raises(ValueError, match="differs from this config's beyond the conditioning channels"):
        inflate.widen_conv_in(cond_params, other)


@pytest.fixture(scope="module")
def conditional_run(trained_workdir, data_dir, tmp_path_factory):
    """The conditional model fine-tuned for 2 steps from the smoke T2V run, through the trainer."""
    workdir = str(tmp_path_factory.mktemp("conditional"))
    train.train_and_evaluate(_cond_config(data_dir, init_from=trained_workdir, total_steps=2), workdir)
    return workdir


def test_known_pixels_of_the_output_equal_the_input(conditional_run, data_dir):
    config = _cond_config(data_dir)
    t2v = _sampler(config, conditional_run)
    clip = shapes.render_clip(shapes.spec_from_attributes("red", "circle", "right"), T, H).astype(np.float32)
    clip = clip / 127.5 - 1.0
    region = np.zeros((H, W), bool)
    region[3:12, 2:14] = True
    conds = np.stack([masked.i2v_condition(clip[0], T), masked.inpaint_condition(clip, region),
                      masked.cinemagraph_condition(clip[0], region, T)])
    raw = edit.conditional_sample(t2v, ["a red circle moving right"] * 3, conds, steps=2)
    assert raw.shape == (3, T, H, W, 3) and np.isfinite(raw).all()
    for cond, out in zip(conds, raw):
        pasted = masked.paste_back(out, cond)
        known = cond[..., 3] == 1
        assert np.abs(out[known] - cond[..., :3][known]).max() > 0  # the raw model does not copy exactly...
        np.testing.assert_array_equal(pasted[known], cond[..., :3][known])  # ...the paste-back does
    cinemagraph = masked.paste_back(raw[2], conds[2])
    assert np.abs(np.diff(cinemagraph[:, ~region], axis=0)).max() == 0  # outside the region nothing moves


def test_requests_read_from_files_keep_their_known_pixels(conditional_run, data_dir, tmp_path, caplog):
    """plan() then run(), as the CLI calls them: the output's known pixels are the input files' own, and a
    video longer than the model's clip is trimmed to its first frames (and says so)."""
    config = _cond_config(data_dir)
    t2v = _sampler(config, conditional_run)
    clip = shapes.render_clip(shapes.spec_from_attributes("red", "circle", "right"), T + 2, H)  # uint8 [6, H, W, 3]
    iio.imwrite(tmp_path / "first.png", clip[0])
    iio.imwrite(tmp_path / "in.gif", clip, loop=0)
    region = np.zeros((H, W), np.uint8)
    region[3:12, 2:14] = 255
    iio.imwrite(tmp_path / "region.png", region)
    files = {"i2v": dict(image=f"{tmp_path}/first.png"),
             "cinemagraph": dict(image=f"{tmp_path}/first.png", mask=f"{tmp_path}/region.png"),
             "inpaint": dict(video=f"{tmp_path}/in.gif", mask=f"{tmp_path}/region.png")}
    with caplog.at_level("INFO", logger="lumiere_jax"):
        requests = {kind: app_inputs.plan(config, **paths) for kind, paths in files.items()}
    assert f"has {T + 2} frames: trimmed to the first {T}" in caplog.text
    first = iio.imread(tmp_path / "first.png").astype(np.float32) / 127.5 - 1.0
    video = iio.imread(tmp_path / "in.gif", index=None)[:T, ..., :3].astype(np.float32) / 127.5 - 1.0
    np.testing.assert_array_equal(requests["i2v"].cond[0, ..., :3], first)
    np.testing.assert_array_equal(requests["cinemagraph"].cond[:, region == 0, :3], np.stack([first[region == 0]] * T))
    np.testing.assert_array_equal(requests["inpaint"].cond[:, region == 0, :3], video[:, region == 0])
    for kind, request in requests.items():
        assert request.kind == kind
        out = edit.run(request, t2v, "a red circle moving right", steps=2)
        assert out.shape == (T, H, W, 3)
        known = request.cond[..., 3] == 1
        np.testing.assert_array_equal(out[known], request.cond[..., :3][known])


def test_cli_image_to_video(conditional_run, tmp_path):
    image = shapes.render_clip(shapes.spec_from_attributes("blue", "square", "up"), 1, 20)[0]  # resized to 16
    iio.imwrite(tmp_path / "first.png", image)
    out = tmp_path / "i2v.gif"
    proc = subprocess.run([sys.executable, "-m", "lumiere_jax.main", "--config=configs/conditional.py:size=smoke",
                           f"--workdir={conditional_run}", "--mode=sample", f"--image={tmp_path}/first.png",
                           "--prompt=a blue square moving up", f"--out={out}", "--config.sample.steps=2"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resized 20x20 -> 16x16" in proc.stderr
    frames = iio.imread(out, index=None)
    assert frames.shape[:3] == (T, H, W)


# SDEdit.

def test_sdedit_with_strength_zero_returns_the_input(trained_workdir, data_dir):
    t2v = _sampler(smoke_config(data_dir), trained_workdir)
    t2v.params = _perturbed(t2v.params)  # a model whose prediction is far from zero
    video = shapes.render_clip(shapes.spec_from_attributes("red", "circle", "left"), T, H)[None]
    x = video.astype(np.float32) / 127.5 - 1.0
    out = edit.sdedit(t2v, ["a blue circle moving left"], x, 0.0, steps=10)
    # t0 = 0 is the schedule's end, log-SNR 15 (sigma 5.5e-4): well under one uint8 level.
    assert np.abs(out - x).max() < 1 / 127.5


# Stylized generation.

def test_style_interpolation_touches_only_spatial_weights(data_dir, tmp_path):
    _, base = init_model(smoke_config(data_dir), 0)
    style = {k: v + 1.0 for k, v in edit.spatial_weights(base).items()}
    path = str(tmp_path / "style.safetensors")
    edit.save_style_weights(path, style, {"caption": "test"})
    style = edit.load_style_weights(path)
    names = [k for k, _ in edit.flat_weights(base)[0]]
    assert any(is_temporal_path(k.split("/")) for k in names) and set(style) < set(names)
    flat = lambda s: dict(edit.flat_weights(s)[0])  # noqa: E731
    b = flat(base)
    for alpha in (0.0, 0.5, 1.0, 1.5):  # 1.5: past the tune, W_base + 1.5 * (W_style - W_base)
        out = flat(edit.interpolate_spatial(base, style, alpha))
        for k, v in out.items():
            if is_temporal_path(k.split("/")):
                np.testing.assert_array_equal(v, b[k])  # never changed
            elif alpha == 0.0:
                np.testing.assert_array_equal(v, b[k])
            elif alpha == 1.0:
                np.testing.assert_allclose(v, style[k], rtol=0, atol=1e-6)
            else:
                np.testing.assert_allclose(v, b[k] + alpha, rtol=0, atol=1e-5)
    # apply_style: at style_start = 1 the styled weights replace the sampler's; below it they are its
    # late weights for the steps at t <= style_start, and the base weights stay for the noisier ones.
    for start in (1.0, 0.5):
        t2v = types.SimpleNamespace(params=base, late=None)
        edit.apply_style(t2v, app_inputs.Request("t2v", style_weights=path, style_alpha=1.0, style_start=start))
        styled = flat(t2v.params if start == 1.0 else t2v.late.params)
        assert all(np.allclose(v, style[k], atol=1e-6) for k, v in styled.items() if k in style)
        if start == 1.0:
            assert t2v.late is None
        else:
            assert t2v.late.start == 0.5 and all(np.array_equal(v, b[k]) for k, v in flat(t2v.params).items())
    # The flags left out give what a Request built in code gives: a = 1 (the style is convex in a), t = 0.5.
    planned = app_inputs.plan(smoke_config(data_dir), style_weights=path)
    default = app_inputs.Request("t2v", style_weights=path)
    assert (planned.style_alpha, planned.style_start) == (default.style_alpha, default.style_start) == (1.0, 0.5)
    del style[next(iter(style))]
    with pytest.raises(app_inputs.InputError, match="do not fit this model: missing"):
        edit.interpolate_spatial(base, style, 0.5)


def test_style_tune_changes_and_saves_only_spatial_weights(trained_workdir, data_dir, tmp_path):
    config = style_gen.get_config("size=smoke")
    config.data.data_dir = data_dir
    t2v = _sampler(config, trained_workdir)
    image = shapes.render_clip(shapes.spec_from_attributes("red", "circle", "still"), 1, H, outline=0.1)[0]
    out = str(tmp_path / "outline.safetensors")
    weights = style_tune.style_tune(config, t2v.params, t2v.encoder, image.astype(np.float32) / 127.5 - 1.0,
                                      "a red circle in outline style", out)
    base = edit.spatial_weights(t2v.params)
    assert set(edit.load_style_weights(out)) == set(weights) == set(base)
    assert any(np.abs(weights[k] - base[k]).max() > 0 for k in base)
    styled = edit.interpolate_spatial(t2v.params, weights, 1.0)
    b, s = (dict(edit.flat_weights(p)[0]) for p in (t2v.params, styled))
    assert all(np.array_equal(s[k], b[k]) for k in b if is_temporal_path(k.split("/")))


def test_video_style_tune_learns_through_the_frozen_temporal_path(trained_workdir, data_dir, tmp_path):
    from safetensors import safe_open

    config = style_gen.get_config("size=smoke")
    config.data.data_dir = data_dir
    config.style.steps, config.style.prior_fraction = 2, 0.5
    t2v = _sampler(config, trained_workdir)
    image = shapes.render_clip(shapes.spec_from_attributes("red", "circle", "still"), 1, H,
                               background="stripes")[0].astype(np.float32) / 127.5 - 1.0
    runs = {}
    for frames in (1, config.data.num_frames):
        config.style.frames = frames
        out = str(tmp_path / f"stripes_{frames}.safetensors")
        runs[frames] = style_tune.style_tune(config, t2v.params, t2v.encoder, image, "a red circle, striped", out)
        with safe_open(out, "np") as f:
            assert f.metadata()["frames"] == str(frames)
    base = edit.spatial_weights(t2v.params)
    video = runs[config.data.num_frames]
    assert set(video) == set(base)  # spatial weights only, as the image tune saves
    assert any(np.abs(video[k] - base[k]).max() > 0 for k in base)
    # The temporal layers take part in the forward pass, so the tune learns something else than on images.
    assert any(not np.allclose(video[k], runs[1][k]) for k in base)
    # style.layers: only the matching spatial weights train, the rest stay the base model's.
    config.style.layers = "^up/"
    only_up = style_tune.style_tune(config, t2v.params, t2v.encoder, image, "a red circle, striped",
                                      str(tmp_path / "up.safetensors"))
    # (relative: the EMA's float32 arithmetic moves a large frozen value, text_norm's scale, by a rounding)
    assert all(np.allclose(only_up[k], base[k], rtol=1e-6, atol=1e-6) for k in base if not k.startswith("up/"))
    assert any(np.abs(only_up[k] - base[k]).max() > 1e-5 for k in base if k.startswith("up/"))
    for pattern, match in (("^nothing/", "matches none of the spatial weights"), ("up/(", "not a regular expr")):
        config.style.layers = pattern
        with pytest.raises(app_inputs.InputError, match=match):
            style_tune.style_tune(config, t2v.params, t2v.encoder, image, "c", str(tmp_path / "x.safetensors"))
    config.style.layers = ""
    config.style.frames = 3  # the smoke STUNet halves frames once
    with pytest.raises(app_inputs.InputError, match="style.frames=3"):
        style_tune.check_style_tune(config, str(tmp_path / "none.png"), "a caption", str(tmp_path / "x.safetensors"))


def test_outline_style_is_measurable():
    for shape in shapes.SHAPES:
        spec = shapes.spec_from_attributes("green", shape, "left", "large")
        solid = shapes.render_clip(spec, T, 32)
        assert app_metrics.fill_fraction(solid) > 0.97
        assert app_metrics.fill_fraction(shapes.render_clip(spec, T, 32, outline=0.07)) < 0.8
    # The default rendering (what the datasets use) is unchanged by the outline option.
    spec = shapes.spec_from_attributes("green", "circle", "left")
    np.testing.assert_array_equal(shapes.render_clip(spec, T, 32), shapes.render_clip(spec, T, 32, outline=0.0))


def test_striped_background_style_is_measurable_and_checkable():
    rng = np.random.default_rng(0)
    for i, shape in enumerate(shapes.SHAPES):
        color, motion = shapes.COLORS[i], ("left", "up", "still")[i]
        spec = shapes.spec_from_attributes(color, shape, motion, "large", rng=rng)
        plain, striped = (shapes.render_clip(spec, T, 32, background=b) for b in ("plain", "stripes"))
        assert app_metrics.stripe_amplitude(plain) < 0.5
        assert app_metrics.stripe_amplitude(striped) > 15
        # Phase-free: stripes shifted by one row (a shifted style image) score the same.
        assert abs(app_metrics.stripe_amplitude(np.roll(striped, 1, axis=1))
                   - app_metrics.stripe_amplitude(striped)) < 1e-3
        # The stripes stay under the checker's foreground distance: it still reads the clip's attributes.
        found = shapes_checker.analyze_clip(striped)
        assert (found["color"], found["shape"], found["motion"]) == (color, shape, motion)
    with pytest.raises(ValueError, match="Unknown background 'dots'"):
        shapes.background_image(32, "dots")


def test_style_tune_prior_preservation_and_phrasings(trained_workdir, data_dir, tmp_path):
    from safetensors import safe_open

    config = style_gen.get_config("size=smoke")
    config.data.data_dir = data_dir
    config.style.steps = 2
    t2v = _sampler(config, trained_workdir)
    image = shapes.render_clip(shapes.spec_from_attributes("red", "circle", "still"), 1, H,
                               background="stripes")[0].astype(np.float32) / 127.5 - 1.0
    caption = "a red circle on a striped background | a red circle moving left on a striped background"
    runs = {}
    for fraction in (0.0, 0.5):
        config.style.prior_fraction = fraction
        out = str(tmp_path / f"stripes_{fraction}.safetensors")
        runs[fraction] = style_tune.style_tune(config, t2v.params, t2v.encoder, image, caption, out)
        with safe_open(out, "np") as f:
            assert f.metadata()["prior_fraction"] == str(fraction)
    # Half of each batch being the base model's own images changes what the tune learns.
    assert any(not np.array_equal(runs[0.0][k], runs[0.5][k]) for k in runs[0.0])
    config.style.prior_fraction = 1.0
    with pytest.raises(app_inputs.InputError, match="prior_fraction=1.0 leaves no room"):
        style_tune.style_tune(config, t2v.params, t2v.encoder, image, caption, str(tmp_path / "x.safetensors"))


def test_style_tune_on_a_folder_pairs_each_image_with_its_caption(trained_workdir, data_dir, tmp_path,
                                                                   monkeypatch):
    config = style_gen.get_config("size=smoke")
    config.data.data_dir = data_dir
    config.style.steps = 2
    t2v = _sampler(config, trained_workdir)
    red, blue = (shapes.render_clip(shapes.spec_from_attributes(c, s, "still"), 1, H, background="stripes")[0]
                 for c, s in (("red", "circle"), ("blue", "square")))
    captions = ["a red circle, striped", "a blue square, striped | a blue square moving up, striped"]
    folder = tmp_path / "style"
    folder.mkdir()
    iio.imwrite(folder / "a.png", red)
    iio.imwrite(folder / "b.png", blue)
    (folder / "b.txt").write_text(captions[1] + "\n")
    (folder / "notes.md").write_text("not an image")
    # a.png has no caption file, so it takes --prompt; b.png its own.
    images, read = app_inputs.read_style_images(str(folder), captions[0], H)
    assert read == captions and images.shape == (2, H, H, 3)
    np.testing.assert_array_equal(images[1], blue.astype(np.float32) / 127.5 - 1.0)
    with pytest.raises(app_inputs.InputError, match="a.png has no caption: give --prompt"):
        app_inputs.read_style_images(str(folder), None, H)
    (tmp_path / "empty").mkdir()
    with pytest.raises(app_inputs.InputError, match="is a folder without .png/.jpg images"):
        app_inputs.read_style_images(str(tmp_path / "empty"), "a caption", H)
    with pytest.raises(app_inputs.InputError, match="2 style images with 1 captions"):
        style_tune.style_tune(config, t2v.params, t2v.encoder, images, captions[:1], str(tmp_path / "x.safetensors"))

    # A folder of one captioned image is the one-image tune, to the bit.
    one = tmp_path / "one"
    one.mkdir()
    iio.imwrite(one / "ref.png", red)
    (one / "ref.txt").write_text(captions[0])
    image, caption = app_inputs.read_style_images(str(one), "not this caption", H)
    assert caption == captions[0:1]
    from_folder = style_tune.style_tune(config, t2v.params, t2v.encoder, image, caption,
                                          str(tmp_path / "folder.safetensors"))
    from_file = style_tune.style_tune(config, t2v.params, t2v.encoder, image[0], captions[0],
                                        str(tmp_path / "file.safetensors"))
    assert all(np.array_equal(from_folder[k], from_file[k]) for k in from_file)

    # Every view of a style image is captioned with that image's caption (one of its phrasings).
    batches = []

    def recording_step(graphdef, tx, schedule, cfg, donate_argnums=()):
        def step(state, batch, null_text, null_mask):
            batches.append({k: np.asarray(v) for k, v in batch.items()})
            return state, {"loss": jnp.zeros(())}
        return step

    monkeypatch.setattr(train, "jit_train_step", recording_step)
    config.style.steps, config.style.batch_size, config.style.prior_fraction = 6, 8, 0.0
    style_tune.style_tune(config, t2v.params, t2v.encoder, images, captions, str(tmp_path / "two.safetensors"))
    texts = [[t2v.encoder.encode([p.strip()])[0][0] for p in c.split("|")] for c in captions]
    colour = images.mean((1, 2))  # [2, 3]: shifts and flips keep each image's mean colour
    shown = []
    for batch in batches:
        for video, text in zip(batch["video"], batch["text"]):
            i = int(np.argmin(np.abs(video.mean((0, 1, 2)) - colour).sum(-1)))
            np.testing.assert_allclose(video.mean((0, 1, 2)), colour[i], atol=1e-5)
            matches = [j for j, t in enumerate(texts[i]) if np.allclose(text, t)]
            assert matches, f"a view of image {i} captioned with another image's text"
            shown.append((i, matches[0]))
    assert set(shown) == {(0, 0), (1, 0), (1, 1)}  # both images, each phrasing of the second
