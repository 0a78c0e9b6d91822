"""Inflation: T2I weights land in the STUNet's spatial layers, which then stay frozen while temporal ones train."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import smoke_config
from configs import t2i
from lumiere_jax import checkpointing, config_lib, inflate, train
from lumiere_jax.models.stunet import is_temporal_path
from lumiere_jax.state import abstract_graphdef_and_state, init_model, resolve_trainable


def _t2i_config(data_dir, **overrides):
    c = t2i.get_config("size=smoke")
    c.data.data_dir = data_dir
    for k, v in overrides.items():
        c[k] = v
    return c


def _flat(state):
    """{(key, ...): array} of a params State."""
    return {tuple(str(getattr(p, "key", getattr(p, "idx", p))) for p in path): v
            for path, v in jax.tree_util.tree_flatten_with_path(state.to_pure_dict())[0]}


@pytest.fixture(scope="module")
def t2i_run(data_dir, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("t2i"))
    train.train_and_evaluate(_t2i_config(data_dir, total_steps=2), workdir)
    return workdir


def test_inflated_stunet_equals_the_t2i_model_on_a_static_clip(t2i_run):
    t2i_params, t2i_cfg = inflate.load_t2i_weights(t2i_run)
    # Two steps barely move the zero-initialized output layers: perturb every weight so the check has teeth.
    leaves, treedef = jax.tree.flatten(t2i_params)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    t2i_params = jax.tree.unflatten(treedef, [x + 0.3 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])
    config = smoke_config("")
    graphdef, params = init_model(config, 0)
    video = nnx.merge(graphdef, inflate.inflate(params, t2i_params))
    g_img, _ = abstract_graphdef_and_state(t2i_cfg)
    image = nnx.merge(g_img, t2i_params)
    k = jax.random.split(jax.random.key(0), 2)
    frame = jax.random.normal(k[0], (2, 1, 16, 16, 3))
    text, mask = jax.random.normal(k[1], (2, 24, 384)), jnp.ones((2, 24), bool)
    t = jnp.array([0.3, 0.9])
    apply = nnx.jit(lambda m, x: m(x, t, text, mask))
    out_image = apply(image, frame)
    assert float(jnp.abs(out_image).max()) > 0.1  # not trivially zero
    np.testing.assert_allclose(apply(video, jnp.repeat(frame, 4, axis=1)), jnp.repeat(out_image, 4, axis=1),
                               atol=2e-5, rtol=2e-5)


def test_temporal_only_training_keeps_every_spatial_weight(t2i_run, data_dir, tmp_path):
    workdir = str(tmp_path / "t2v")
    # The default (trainable="auto") with a T2I run as init_from: Lumiere's temporal-only training.
    state = train.train_and_evaluate(smoke_config(data_dir, total_steps=2, init_from=t2i_run), workdir)
    t2i_params, _ = inflate.load_t2i_weights(t2i_run)
    _, fresh = init_model(smoke_config(""), 0)
    image, trained, init = _flat(t2i_params), _flat(state.params), _flat(fresh)
    spatial = [k for k in trained if not is_temporal_path(k)]
    temporal = [k for k in trained if k not in spatial]
    assert spatial and temporal and set(spatial) == set(image)
    for k in spatial:
        np.testing.assert_array_equal(trained[k], image[k], err_msg=k)  # bit-identical
    assert any(not np.array_equal(trained[k], init[k]) for k in temporal)
    # The run stores what it resolved; sampling it with the plain config (no init_from) restores it.
    assert json.load(open(os.path.join(workdir, "config.json")))["trainable"] == "temporal"
    _, abstract = abstract_graphdef_and_state(smoke_config(data_dir), workdir)
    restored, _ = checkpointing.Checkpointer(workdir, read_only=True).restore(
        checkpointing.with_shardings(abstract, jax.sharding.SingleDeviceSharding(jax.devices()[0])))
    assert int(restored.step) == 2


def test_inflation_names_what_does_not_fit(t2i_run):
    t2i_params, _ = inflate.load_t2i_weights(t2i_run)
    config = smoke_config("", model__channels=16)
    _, params = init_model(config, 0)
    with pytest.raises(ValueError, match=r"shape mismatches: \[.*T2I \(.*\) vs STUNet"):
        inflate.inflate(params, t2i_params)
    with pytest.raises(ValueError, match="needs --config.init_from"):
        train.train_and_evaluate(smoke_config("", trainable="temporal"), "/tmp/unused")


def test_trainable_auto_freezes_spatial_layers_only_when_inflating(t2i_run, trained_workdir):
    assert resolve_trainable(smoke_config("", init_from=t2i_run)) == "temporal"
    assert resolve_trainable(smoke_config("", init_from=t2i_run, trainable="all")) == "all"
    assert resolve_trainable(smoke_config("")) == "all"  # from scratch
    assert resolve_trainable(smoke_config("", init_from=trained_workdir)) == "all"  # fine-tuning a T2V run


def test_spatial_only_optimizer_moves_spatial_weights_and_freezes_temporal_ones():
    from lumiere_jax.state import make_optimizer

    config = smoke_config("", trainable="spatial")
    _, params = init_model(config, 0)
    tx = make_optimizer(config)
    grads = jax.tree.map(jnp.ones_like, params)
    _, opt_state = tx.update(grads, tx.init(params), params)  # step 0 of the warmup has a zero rate
    updates, _ = tx.update(grads, opt_state, params)
    moved = {k: float(jnp.abs(v).max()) for k, v in _flat(updates).items()}
    temporal = [k for k in moved if is_temporal_path(list(k))]
    assert temporal and all(moved[k] == 0.0 for k in temporal)
    assert all(moved[k] > 0.0 for k in moved if k not in temporal)
    with pytest.raises(ValueError, match="trainable='spatial' needs model.temporal=True"):
        config_lib.validate(_t2i_config("", trainable="spatial"))


def test_init_from_that_is_not_a_run_is_named_with_the_fix(tmp_path):
    params = None  # never reached: the source run is read first
    with pytest.raises(ValueError, match=r"init_from=/no/such/run does not exist: point --config.init_from at the "
                                         r"workdir of a configs/t2i.py or configs/t2v.py run"):
        inflate.load_init_weights(params, "/no/such/run")
    with pytest.raises(ValueError, match=r"holds no trained run \(no config.json\): point --config.init_from"):
        inflate.load_init_weights(params, str(tmp_path))
