"""Captioned images as data: the text-to-image model on a folder of images, and joint image-video training.

Images enter the video model as single-frame clips with its temporal layers bypassed (`STUNet(images=True)`):
the spatial path alone, which is exactly the T2I U-Net of the same weights, and the temporal layers learn nothing
from them.
"""

import dataclasses
import json
import os
import subprocess
import sys

import imageio.v3 as iio
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from configs import t2i, t2v
from lumiere_jax import config_lib
from lumiere_jax.data import mixture, videos
from lumiere_jax.models import stunet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _picture(height: int, width: int, seed: int) -> np.ndarray:
    y, x = np.mgrid[:height, :width]
    rng = np.random.default_rng(seed)
    colour = rng.uniform(40, 215, 3)
    return np.clip(colour + 30 * np.sin(0.2 * x + seed)[..., None] * np.cos(0.15 * y)[..., None],
                   0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pictures")
    for i, (h, w, ext) in enumerate([(40, 60, "png"), (64, 48, "jpg"), (33, 33, "png"), (50, 90, "webp"),
                                     (24, 40, "bmp")]):
        iio.imwrite(folder / f"pic{i}.{ext}", _picture(h, w, i))
        (folder / f"pic{i}.txt").write_text(f"a picture of pattern {i}")
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    (folder / "broken.txt").write_text("a broken picture")
    (folder / "nocaption.png").write_bytes(iio.imwrite("<bytes>", _picture(20, 20, 9), extension=".png"))
    return folder


@pytest.fixture(scope="module")
def video_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("footage")
    t = np.arange(24)[:, None, None, None]
    for i in range(3):
        frames = np.broadcast_to(((t * 9 + 40 * i) % 255), (24, 36, 48, 3)).astype(np.uint8)
        iio.imwrite(folder / f"clip{i}.mp4", frames, fps=12, codec="libx264", plugin="pyav")
        (folder / f"clip{i}.txt").write_text(f"a fading colour number {i}")
    return folder


def _data(config, **keys) -> ml_collections.ConfigDict:
    d = ml_collections.ConfigDict(config.data.to_dict())
    for k, v in keys.items():
        setattr(d, k, v)
    return d


def test_an_image_folder_gives_single_frame_clips_and_skips_bad_files(image_folder, tmp_path):
    data = _data(t2v.get_config("smoke"), images=str(image_folder), data_dir=str(tmp_path / "tfds"),
                 test_fraction=0.2)
    sources = videos.load_videos(data, videos.IMAGES)
    clips = [sources[s][i] for s in ("train", "test") for i in range(len(sources[s]))]
    assert len(clips) == 5  # five good images, whatever their size and format
    res = data.resolution
    assert all(c["video"].shape == (1, res, res, 3) and c["video"].dtype == np.uint8 for c in clips)
    assert len(sources["test"]) >= 1  # held out by file, like videos
    skipped = [json.loads(line) for line in open(os.path.join(os.path.dirname(sources["train"].directory),
                                                               videos.SKIPPED_FILE))]
    assert {(os.path.basename(s["path"]), s["reason"]) for s in skipped} == {
        ("broken.png", "undecodable"), ("nocaption.png", "missing_caption")}
    # The picture survives the trip: the centre crop of pic2 (33x33, resized) keeps its mean colour.
    pic2 = next(c for c in clips if c["caption"] == "a picture of pattern 2")["video"][0]
    assert np.abs(pic2.mean((0, 1)) - _picture(33, 33, 2).mean((0, 1))).max() < 6


def test_parse_mixture_normalizes_and_names_bad_values():
    assert mixture.parse_mixture("videos:0.7,images:0.3") == pytest.approx({"videos": 0.7, "images": 0.3})
    assert mixture.parse_mixture("shapes_world:3, images:1") == pytest.approx({"shapes_world": 0.75,
                                                                               "images": 0.25})
    assert mixture.parse_mixture("") == {}
    for bad, words in [("videos:0.7", "one source"), ("videos:0.7,images:-1", "'images:-1'"),
                       ("videos,images:1", "'videos'"), ("videos:1,videos:2", "twice"),
                       ("videos:1,sound:1", "'sound' is not a source")]:
        with pytest.raises(ValueError, match=words):
            mixture.parse_mixture(bad, ("videos", "images"))


def test_mixture_plan_follows_the_weights_and_reads_each_source_in_order():
    weights = {"videos": 0.7, "images": 0.3}
    plan = mixture.plan(weights, seed=3, num_steps=4000)
    assert abs((plan == 1).mean() - 0.3) < 0.03
    np.testing.assert_array_equal(plan, mixture.plan(weights, seed=3, num_steps=4000))  # resumable
    # A run resumed with a larger total_steps keeps the plan of the steps it already took.
    np.testing.assert_array_equal(plan[:200], mixture.plan(weights, seed=3, num_steps=200))
    assert not np.array_equal(plan, mixture.plan(weights, seed=4, num_steps=4000))
    import grain
    streams = {"videos": grain.MapDataset.range(0, 10_000), "images": grain.MapDataset.range(100_000, 110_000)}
    ds = mixture.mixture_dataset(streams, weights, seed=3, num_steps=200)
    got = [ds[k] for k in range(200)]
    assert [g for g in got if g < 100_000] == list(range(int((plan[:200] == 0).sum())))
    assert [g - 100_000 for g in got if g >= 100_000] == list(range(int((plan[:200] == 1).sum())))
    assert [g >= 100_000 for g in got] == list(plan[:200] == 1)


def test_mixture_and_image_keys_are_checked_before_anything_runs(image_folder, video_folder):
    def config(**data):
        c = t2v.get_config("smoke")
        with c.unlocked():
            for k, v in data.items():
                setattr(c.data, k, v)
        return c

    config_lib.validate(config(mixture="shapes_world:0.7,images:0.3", images=str(image_folder)))
    for keys, words in [
        (dict(mixture="shapes_world:0.7,images:0.3"), "reads data.images"),
        (dict(mixture="videos:0.7,images:0.3", images=str(image_folder)), "'videos' is not a source"),
        (dict(mixture="shapes_world:1,images:1", images="/nonexistent/pictures"), "does not exist"),
        (dict(dataset="images", images=str(image_folder)), "single frames, but data.num_frames=4"),
    ]:
        with pytest.raises(ValueError, match=words):
            config_lib.validate(config(**keys))
    c = t2i.get_config("smoke")
    with c.unlocked():
        c.data.dataset, c.data.images = "images", str(image_folder)
    config_lib.validate(c)  # the T2I model reads images directly
    with c.unlocked():
        c.data.dataset, c.data.mixture = "shapes_world", "shapes_world:1,images:1"
    with pytest.raises(ValueError, match="text-to-video model"):
        config_lib.validate(c)


def test_images_bypass_the_temporal_layers_exactly():
    """images=True runs the T2I U-Net of the same spatial weights, and gives the temporal weights no gradient."""
    cfg = config_lib.model_config(t2v.get_config("smoke"))
    video = stunet.STUNet(cfg, rngs=nnx.Rngs(0))
    image = stunet.STUNet(dataclasses.replace(cfg, temporal=False), rngs=nnx.Rngs(0))
    # Move every weight off its initialization (the output conv starts at zero, the temporal layers at the
    # identity), so that a temporal layer that still ran would show.
    params = nnx.state(video, nnx.Param)
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    nnx.update(video, jax.tree.unflatten(treedef, [p + 0.1 * jax.random.normal(k, p.shape)
                                                   for p, k in zip(leaves, keys)]))
    nnx.update(image, nnx.state(video, stunet.spatial_filter))
    k = jax.random.split(jax.random.key(2), 3)
    x = jax.random.normal(k[0], (2, 1, 16, 16, cfg.in_channels))
    t = jnp.array([0.3, 0.8])
    text = jax.random.normal(k[1], (2, 5, cfg.text_dim))
    mask = jnp.ones((2, 5), bool)
    out = video(x, t, text, mask, images=True)
    assert float(jnp.abs(out).max()) > 1e-2
    np.testing.assert_allclose(out, image(x, t, text, mask), atol=1e-4)
    frames = jax.random.normal(k[2], (2, 4, 16, 16, cfg.in_channels))
    # With the temporal layers on, the frames of a clip interact; with images=True each frame is on its own.
    on = video(frames, t, text, mask)
    off = video(frames, t, text, mask, images=True)
    assert float(jnp.abs(on - off).max()) > 1e-2
    np.testing.assert_allclose(off[:, 2:3], video(frames[:, 2:3], t, text, mask, images=True), atol=1e-5)

    graphdef, params = nnx.split(video, nnx.Param)
    grads = jax.grad(lambda p: jnp.sum(nnx.merge(graphdef, p)(x, t, text, mask, images=True) ** 2))(params)
    flat = nnx.to_flat_state(grads)
    temporal_norms = [float(jnp.abs(v.value).max()) for path, v in flat if stunet.is_temporal_path(path)]
    spatial_norms = [float(jnp.abs(v.value).max()) for path, v in flat if not stunet.is_temporal_path(path)]
    assert temporal_norms and max(temporal_norms) == 0.0
    assert max(spatial_norms) > 0.0


def _cli(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lumiere_jax.main", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def test_t2i_on_images_and_t2v_on_videos_mixed_with_images(image_folder, video_folder, tmp_path):
    data_dir = tmp_path / "data"
    proc = _cli("--config=configs/t2i.py:size=smoke", f"--workdir={tmp_path / 't2i'}", "--config.data.dataset=images",
                f"--config.data.images={image_folder}", f"--config.data.data_dir={data_dir}",
                "--config.total_steps=2", "--config.sample_every=0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert os.path.isdir(tmp_path / "t2i" / "checkpoints" / "2")

    run = tmp_path / "mixed"
    proc = _cli("--config=configs/t2v.py:size=smoke", f"--workdir={run}", "--config.data.dataset=videos",
                f"--config.data.videos={video_folder}", f"--config.data.images={image_folder}",
                "--config.data.mixture=videos:0.5,images:0.5", f"--config.data.data_dir={data_dir}",
                "--config.total_steps=6", "--config.log_every=1", "--config.sample_every=0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    plan = mixture.plan({"videos": 0.5, "images": 0.5}, seed=0, num_steps=6)
    assert 0 < plan.sum() < 6  # both kinds of step ran
    line = next(x for x in proc.stderr.splitlines() if "data.mixture" in x)
    assert f"{int(plan.sum())} of 6 steps read images" in line
    rows = [json.loads(x) for x in open(run / "metrics.jsonl")]
    assert [r["step"] for r in rows] == list(range(1, 7)) and all(np.isfinite(r["loss"]) for r in rows)
