"""The shapes-world feature net: labels, a short training run, save/load, and Frechet distances that rank
real vs real below real vs noise-corrupted real, growing with the noise."""

import numpy as np
import pytest

from configs import feature_net as feature_net_config
from lumiere_jax.eval import feature_net, frechet
from lumiere_jax.evaluate import frechet_scores


def smoke_feature_config(data_dir: str):
    c = feature_net_config.get_config("size=smoke")
    c.data.data_dir = data_dir
    return c


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir):
    workdir = str(tmp_path_factory.mktemp("feature_net"))
    config = smoke_feature_config(data_dir)
    accuracy = feature_net.train(config, workdir)
    return workdir, config, accuracy


def test_labels_are_multi_hot_over_each_vocabulary():
    examples = {"color": np.array([[0, -1], [2, 7]]), "shape": np.array([[1, -1], [0, 0]]),
                "motion": np.array([[4, -1], [0, 3]])}
    y = feature_net.labels_of(examples)
    assert y.shape == (2, feature_net.NUM_LABELS)
    assert y[0].sum() == 3 and y[1].sum() == 5  # the second clip's two objects share their shape
    assert y[0, 0] == 1 and y[0, 8 + 1] == 1 and y[0, 8 + 3 + 4] == 1


def test_train_save_load_round_trip(trained):
    workdir, config, accuracy = trained
    assert set(accuracy) == {"color", "shape", "motion"}
    net = feature_net.FeatureNet.load(workdir)
    clips = feature_net.to_float(feature_net.load_split(config.data, "test")["video"])
    f = net.features(clips)
    assert f.shape == (len(clips), config.model.feature_dim)
    np.testing.assert_array_equal(f, feature_net.FeatureNet.load(workdir).features(clips))


def test_wrong_clip_size_and_missing_workdir_are_clear_errors(trained, tmp_path):
    net = feature_net.FeatureNet.load(trained[0])
    with pytest.raises(ValueError, match="trained on clips of"):
        net.features(np.zeros((2, 8, 32, 32, 3), np.float32))
    with pytest.raises(FileNotFoundError, match="holds no trained feature net"):
        feature_net.FeatureNet.load(str(tmp_path))


def test_frechet_real_vs_real_is_smallest_and_grows_with_corruption(trained):
    workdir, config, _ = trained
    video = feature_net.load_split(config.data, "train")["video"]  # 32 clips
    a, b = video[:16], video[16:]
    rng = np.random.default_rng(0)

    def corrupt(v, std):
        x = feature_net.to_float(v) + std * rng.normal(size=v.shape)
        return np.clip(np.round((x + 1.0) * 127.5), 0, 255).astype(np.uint8)

    scores = [frechet_scores(corrupt(a, std) if std else a, b, feature_net_dir=workdir)["frechet_feature_net"]
              for std in (0.0, 0.3, 0.6, 1.0)]
    assert scores[0] < scores[1] < scores[2] < scores[3], scores
    # The floor reported beside a score is the distance between two halves of the real clips.
    floor = frechet_scores(a[:8], b, feature_net_dir=workdir)["frechet_feature_net_real_floor"]
    net = feature_net.FeatureNet.load(workdir)
    fb = net.features(feature_net.to_float(b))
    assert floor == pytest.approx(frechet.frechet_distance_features(fb[:8], fb[8:]))


def test_run_eval_adds_frechet_to_json_tensorboard_and_grid(trained, data_dir, tmp_path):
    import json
    import os

    from lumiere_jax import evaluate
    from conftest import smoke_config

    config = smoke_config(data_dir)
    config.unlock()
    config.eval.feature_net = trained[0]
    shape = (config.data.num_frames, config.data.resolution, config.data.resolution, 3)

    def fake_t2v(prompts, **kwargs):  # stands in for the sampler: the wiring is under test, not the model
        return np.random.default_rng(0).uniform(-1, 1, (len(prompts),) + shape).astype(np.float32)

    result = evaluate.run_eval(fake_t2v, config, str(tmp_path), step=7)
    with open(tmp_path / "eval.json") as f:
        written = json.load(f)
    assert written["frechet"]["frechet_feature_net"] == pytest.approx(result["frechet"]["frechet_feature_net"])
    assert written["frechet"]["frechet_feature_net"] > written["frechet"]["frechet_feature_net_real_floor"]
    assert written["frechet"]["num_real"] == config.data.num_test
    assert os.path.exists(tmp_path / "eval" / "grid_0000007.gif")
    assert any(name.startswith("events") for name in os.listdir(tmp_path / "tb"))
