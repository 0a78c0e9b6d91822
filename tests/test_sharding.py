"""Sharding: mesh sizes, logical rules, parameters' declared logical names, and sharded == unsharded on a fake
8-device CPU mesh.

The device checks run tests/mesh_worker.py in a subprocess, because the host device count must be set
before jax starts and the rest of the suite runs on one device.
"""

import json
import os
import subprocess
import sys

import dataclasses

import jax
import ml_collections
import pytest
from flax import nnx

from configs import t2v
from lumiere_jax import sharding
from lumiere_jax.models import stunet
from lumiere_jax.state import abstract_graphdef_and_state

ROOT = os.path.join(os.path.dirname(__file__), "..")


def run_worker(case: str, meshes: str) -> dict:
    # 8 fake devices; LLVM's optimizations off as in the tests' own process (conftest.py): these small programs
    # compile faster than they would run faster.
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0",
               JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "mesh_worker.py"), case, meshes],
                          capture_output=True, text=True, env=env, timeout=2400)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


def mesh_config(**sizes) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict({"mesh": {"data": -1, "fsdp": 1, "frames": 1, "rules": (), **sizes}})


def test_axis_sizes_resolve_minus_one():
    assert sharding.axis_sizes(mesh_config(frames=2), 8) == {"data": 4, "fsdp": 1, "frames": 2}
    assert sharding.axis_sizes(mesh_config(data=2, fsdp=-1, frames=2), 8) == {"data": 2, "fsdp": 2, "frames": 2}


@pytest.mark.parametrize("sizes, words", [
    (dict(frames=3), "multiple of 3"),
    (dict(data=-1, fsdp=-1), "at most one -1"),
    (dict(data=2, fsdp=2, frames=1), "use 4 of the 8"),
    (dict(data=0), "positive"),
])
def test_axis_sizes_errors_name_the_fix(sizes, words):
    with pytest.raises(ValueError, match=words):
        sharding.axis_sizes(mesh_config(**sizes), 8)


def test_partition_spec_rules():
    mesh = jax.sharding.AbstractMesh((2, 2, 2), sharding.MESH_AXES)
    rules = sharding.DEFAULT_RULES
    P = jax.sharding.PartitionSpec
    assert sharding.partition_spec(sharding.VIDEO, (4, 8, 16, 16, 3), mesh, rules) == P(("data", "fsdp"), "frames",
                                                                                        None, None, None)
    # A dimension the mesh axes do not divide stays whole.
    assert sharding.partition_spec(sharding.VIDEO, (3, 5, 16, 16, 3), mesh, rules) == P(None, None, None, None, None)
    # Parameters: output channels over fsdp; vectors replicated.
    assert sharding.partition_spec(sharding.CONV_KERNEL, (3, 3, 8, 16), mesh, rules) == P(None, None, None, "fsdp")
    assert sharding.partition_spec(sharding.VECTOR, (16,), mesh, rules) == P(None)
    # Config rules override the defaults: replicate parameters.
    c = mesh_config(rules=(("embed", None),))
    assert sharding.partition_spec(("embed_in", "embed"), (8, 16), mesh, sharding.rules_from(c)) == P(None, None)


LOGICAL_NAMES = {name for name, _ in sharding.DEFAULT_RULES} | {None}


def _abstract_params(size: str, **model) -> list[tuple[str, nnx.Variable]]:
    """(path, Param) of configs/t2v.py:size=`size`'s STUNet, built from shapes only."""
    cfg = dataclasses.replace(stunet.STUNetConfig.from_config(t2v.get_config(f"size={size}").model), **model)
    params = nnx.state(nnx.eval_shape(lambda: stunet.STUNet(cfg, rngs=nnx.Rngs(0))), nnx.Param)
    flat = jax.tree_util.tree_flatten_with_path(params, is_leaf=lambda x: isinstance(x, nnx.Variable))[0]
    return [(".".join(str(getattr(k, "key", k)) for k in path), v) for path, v in flat]


@pytest.mark.parametrize("size, model", [
    ("tiny", dict(text_pooling="attention", cond_channels=3, cond_noise_level=True)),  # every optional layer
    ("tiny", dict(temporal=False)),
    ("lumiere", {}),
])
def test_every_parameter_declares_logical_names_one_per_dimension(size, model):
    """No module forgets: every Param of the STUNet carries `out_sharding` metadata, one name per dimension,
    from the names the rules know; kernels end in (embed_in, embed), vectors are replicated."""
    params = _abstract_params(size, **model)
    assert len(params) > 50
    for path, param in params:
        names = sharding.declared_axes(param)
        shape = param.get_value().shape
        assert names is not None, f"{path} {shape} declares no logical names"
        assert len(names) == len(shape), (path, shape, names)
        assert set(names) <= LOGICAL_NAMES, (path, names)
        assert names == ((None,) * (len(shape) - 2) + ("embed_in", "embed") if len(shape) >= 2 else
                         (None,) * len(shape)), (path, shape, names)  # the same shardings as before the metadata


def test_parameter_kinds_declare_the_expected_names():
    params = dict(_abstract_params("tiny", text_pooling="attention"))
    expected = {
        "conv_in.conv.kernel": (None, None, "embed_in", "embed"),  # [kh, kw, in, out]
        "conv_in.conv.bias": (None,),
        "time_in.kernel": ("embed_in", "embed"),  # [in, out]
        "time_in.bias": (None,),
        "norm_out.norm.scale": (None,),
        "down.0.res.0.emb_proj.kernel": ("embed_in", "embed"),
        "mid_attn.cross_norm.scale": (None,),
        "temporal_down.0.conv.kernel": (None, "embed_in", "embed"),  # [k, in, out]
        "temporal_down.0.conv.bias": (None,),
        "text_attn_pool.query": (None,),
    }
    for path, names in expected.items():
        assert sharding.declared_axes(params[path]) == names, path


def test_train_state_shardings_follow_each_parameter():
    """EMA and Adam's moments get their parameter's sharding; the step and counters are replicated; the tree
    of shardings has the state's structure (jit's in/out_shardings, orbax's restore targets)."""
    mesh = jax.sharding.AbstractMesh((2, 2, 2), sharding.MESH_AXES)
    P = jax.sharding.PartitionSpec
    for trainable in ("all", "temporal"):  # temporal: optax.multi_transform's masked moments
        c = t2v.get_config("size=smoke")
        c.trainable = trainable
        _, state = abstract_graphdef_and_state(c)
        sh = sharding.tree_shardings(state, mesh, sharding.DEFAULT_RULES)
        assert jax.tree.structure(sh) == jax.tree.structure(state)
        assert sh.step.spec == P() and sh.skipped.spec == P()
        assert sh.params["down"][0]["res"][0]["conv1"]["conv"]["kernel"].get_value().spec == P(None, None, None, "fsdp")
        assert sh.params["down"][0]["res"][0]["conv1"]["conv"]["bias"].get_value().spec == P(None)
        by_param = {}
        for path, s in jax.tree_util.tree_flatten_with_path(sh.params)[0]:
            by_param[jax.tree_util.keystr(path)] = s
        for path, s in jax.tree_util.tree_flatten_with_path(sh.ema)[0]:
            assert s == by_param[jax.tree_util.keystr(path)], path
        moments = 0
        for path, s in jax.tree_util.tree_flatten_with_path(sh.opt_state)[0]:
            key = jax.tree_util.keystr(path)
            if ".count" in key or "count" == getattr(path[-1], "name", None):
                assert s.spec == P(), key
                continue
            tail = key[key.index("['", key.index(".mu") if ".mu" in key else key.index(".nu")):]
            assert s == by_param[tail], key
            moments += 1
        trained = [k for k in by_param if trainable == "all" or "temporal" in k]
        assert moments == 2 * len(trained) > 0, (moments, len(trained))  # mu and nu of every trained one
        assert any(s.spec != P(*[None] * len(s.spec)) for s in jax.tree.leaves(sh.opt_state))
    # The config's rules still decide: embed -> None replicates every parameter.
    rules = sharding.rules_from(mesh_config(rules=(("embed", None),)))
    assert all(all(a is None for a in s.spec) for s in jax.tree.leaves(sharding.tree_shardings(state, mesh, rules)))


def test_a_parameter_without_logical_names_is_refused():
    class Forgetful(nnx.Module):
        def __init__(self):
            self.declared = nnx.Param(jax.numpy.zeros((4, 8)), **sharding.axes("embed_in", "embed"))
            self.bare = nnx.Param(jax.numpy.zeros((4, 8)))

    mesh = jax.sharding.AbstractMesh((2, 2, 2), sharding.MESH_AXES)
    params = nnx.state(Forgetful(), nnx.Param)
    with pytest.raises(ValueError, match="bare.*declares no logical axis names"):
        sharding.tree_shardings(params, mesh, sharding.DEFAULT_RULES)
    with pytest.raises(ValueError, match="declares no logical axis names"):
        sharding.declared_spec(params["bare"], mesh, sharding.DEFAULT_RULES)
    # Names must match the rank: a kernel declared with a vector's names is refused too.
    wrong = nnx.Param(jax.numpy.zeros((4, 8)), **sharding.axes(None))
    with pytest.raises(ValueError, match="one name or None per dimension"):
        sharding.declared_spec(wrong, mesh, sharding.DEFAULT_RULES)
    assert sharding.declared_spec(params["declared"], mesh, sharding.DEFAULT_RULES) == jax.sharding.PartitionSpec(
        None, "fsdp")


def test_constrain_is_a_no_op_without_a_mesh():
    x = jax.numpy.ones((2, 4, 8, 8, 3))
    assert sharding.constrain(x) is x
    assert sharding.temporal_halo_conv(x, lambda xp: xp, halo=1, stride=1) is None


def test_frame_sharded_temporal_conv_moves_only_halos():
    """Each device convolves its frames with its neighbours' halo: equal to the unsharded conv, with
    collective-permutes and no all-gather in the compiled program (stride 1 and the stride-2 downsample)."""
    result = run_worker("halo", "frames8")["frames8"]
    for stride in ("stride1", "stride2"):
        r = result[stride]
        assert r["diff"] < 1e-5, r
        assert r["permutes"] >= 1 and r["all_gathers"] == 0, r
        assert r["out_sharding"] == "P(None, 'frames')", r


def test_spatial_blocks_keep_frames_on_their_devices():
    """Conv, strided conv, group norm and attention on frame-sharded video: the unsharded values and
    gradients, and no all-gather or all-to-all in the compiled program (folding frames into the batch
    used to gather the clip)."""
    result = run_worker("spatial", "data_frames,frames8")
    for name, r in result.items():
        assert r["loss_diff"] < 1e-6 * 16 * 16 * 64 and r["grads_diff"] < 1e-6 * r["grads_scale"], (name, r)
        assert r["all_gathers"] == 0 and r["all_to_alls"] == 0, (name, r)


def test_sharded_train_step_equals_one_device():
    """data x frames and data x fsdp: same loss, gradient norm and gradients as one device."""
    result = run_worker("train", "data_frames,data_fsdp")
    for name, r in result.items():
        assert abs(r["loss"] - r["ref_loss"]) < 1e-5, (name, r)
        assert abs(r["grad_norm"] - r["ref_grad_norm"]) < 1e-5 * max(1.0, r["ref_grad_norm"]), (name, r)
        assert r["grads_diff"] < 1e-5 * max(1.0, r["grads_scale"]) and r["params_diff"] < 1e-6, (name, r)
    frames, fsdp = result["data_frames"], result["data_fsdp"]
    assert frames["video_sharding"] == "P('data', 'frames', None, None, None)"
    assert frames["collective_permutes"] > 0  # halo exchange, not a gathered clip
    assert frames["sharded_param_leaves"] == 0  # no fsdp axis: parameters replicated
    assert fsdp["video_sharding"] == "P(('data', 'fsdp'), None, None, None, None)"
    assert fsdp["sharded_param_leaves"] > 0 and fsdp["sharded_opt_leaves"] > 0


def test_sharded_train_step_with_a_caption_per_frame_equals_one_device():
    """Story batches (text [B, T, L, D], the caption changing at frame 3) on data x frames: same step."""
    r = run_worker("train_story", "data_frames")["data_frames"]
    assert r["text_shape"][:3] == [8, 8, 6], r
    assert abs(r["loss"] - r["ref_loss"]) < 1e-5, r
    assert abs(r["grad_norm"] - r["ref_grad_norm"]) < 1e-5 * max(1.0, r["ref_grad_norm"]), r
    assert r["grads_diff"] < 1e-5 * max(1.0, r["grads_scale"]) and r["params_diff"] < 1e-6, r
    assert r["collective_permutes"] > 0, r


def test_frame_sharded_sampler_equals_one_device():
    r = run_worker("sample", "frames8")["frames8"]
    assert r["retraced"], r  # the unsharded program was not reused under the mesh
    assert r["collective_permutes"] > 0, r
    assert r["clip_diff"] < 1e-4, r


def test_paper_scale_config_lowers_on_a_fake_mesh():
    """configs/t2v.py:size=lumiere (80 frames at 128x128, T5-XXL width, bf16, remat): built from shapes
    alone, its sharded train step lowers over data x fsdp x frames = 2 x 2 x 2 (lowering, not running)."""
    r = run_worker("paper", "paper")["paper"]
    print(f"paper scale: {r['num_params'] / 1e9:.3f}B parameters, {r['flops_per_step'] / 1e15:.2f} PFLOP per "
          f"step of 8 clips, video {r['video_spec']}, largest parameter {r['largest_param_spec']}")
    assert 0.5e9 < r["num_params"] < 3e9, r
    assert r["video_spec"] == "P(('data', 'fsdp'), 'frames', None, None, None)", r
    assert "fsdp" in r["largest_param_spec"], r
    assert r["flops_per_step"] > 1e14 and r["has_shard_map"] and r["bf16"], r
