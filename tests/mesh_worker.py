"""Runs sharded-vs-unsharded checks on a fake 8-device CPU mesh; tests/test_sharding.py runs it in a subprocess.

Usage: python tests/mesh_worker.py CASE MESH[,MESH...]  (XLA_FLAGS must give 8 host devices before jax imports).
Prints one JSON line with the largest differences it found.
"""

import json
import os
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from configs import t2v  # noqa: E402
from lumiere_jax import sampling, sharding, train  # noqa: E402
from lumiere_jax.models import temporal  # noqa: E402
from lumiere_jax.diffusion.schedule import schedule_from  # noqa: E402
from lumiere_jax.state import init_model, init_state, make_optimizer  # noqa: E402

MESHES = {"data_frames": dict(data=2, fsdp=1, frames=4), "data_fsdp": dict(data=2, fsdp=4, frames=1),
          "frames8": dict(data=1, fsdp=1, frames=8)}


def config_for(mesh: dict[str, int]):
    c = t2v.get_config("size=smoke")
    c.data.num_frames = 8
    c.batch_size = 8
    for k, v in mesh.items():
        c.mesh[k] = v
    return c


def max_diff(a, b) -> float:
    return max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def random_batch(c, rng):
    k1, k2 = jax.random.split(rng)
    shape = (c.batch_size, c.data.num_frames, c.data.resolution, c.data.resolution, 3)
    return {"video": jax.random.uniform(k1, shape, minval=-1, maxval=1),
            "text": jax.random.normal(k2, (c.batch_size, 6, c.model.text_dim)),
            "text_mask": jnp.ones((c.batch_size, 6), bool).at[:, 4:].set(False)}


def per_frame_text(batch: dict, change_at: int = 3) -> dict:
    """The batch with a caption per frame: its own caption before `change_at`, another one from there on."""
    text, mask = batch["text"], batch["text_mask"]
    frames = batch["video"].shape[1]
    other = jnp.roll(text, 1, axis=0)  # another clip's caption
    text = jnp.stack([text if f < change_at else other for f in range(frames)], axis=1)  # [B, T, L, D]
    return {**batch, "text": text, "text_mask": jnp.broadcast_to(mask[:, None], text.shape[:-1])}


def first_gradients(opt_state, b1: float) -> list[jax.Array]:
    """The (clipped) gradients of a first step, read from Adam's first moments: mu = (1 - b1) g after one step."""
    states = [x for x in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, optax.ScaleByAdamState))
              if isinstance(x, optax.ScaleByAdamState)]
    assert len(states) == 1, states
    return [mu / (1.0 - b1) for mu in jax.tree.leaves(states[0].mu)]


def train_step_case(names: list[str], per_frame: bool = False) -> dict:
    """One train step on one device and on each mesh of `names` (per_frame: stories): loss, gradient norm, the
    gradients themselves (Adam's first moments) and the updated parameters."""
    c = config_for(MESHES[names[0]])
    graphdef, params = init_model(c, 0)
    # Non-trivial temporal and attention weights: the identity init would hide frame-mixing bugs.
    params = jax.tree.map(lambda p: p + 0.05 * jax.random.normal(jax.random.key(p.size), p.shape), params)
    tx = make_optimizer(c)
    state = init_state(params, tx)
    batch = random_batch(c, jax.random.key(1))
    batch = per_frame_text(batch) if per_frame else batch
    null_text, null_mask = jnp.zeros((1, 6, c.model.text_dim)), jnp.ones((1, 6), bool)
    step = train.make_train_step(graphdef, tx, schedule_from(c), c)
    # After one step Adam's first moment is (1 - b1) times the (clipped) gradient: comparing the states' moments
    # compares the gradients element by element, without compiling the backward pass a second time.
    ref_state, ref_metrics = jax.jit(step)(state, batch, null_text, null_mask)
    ref_grads = first_gradients(ref_state.opt_state, c.optim.b1)
    out = {}
    for name in names:
        c = config_for(MESHES[name])
        mesh = sharding.make_mesh(c)
        rules = sharding.rules_from(c)
        state_sh = sharding.tree_shardings(state, mesh, rules)
        batch_sh = sharding.batch_shardings(batch, mesh, rules)
        rep = sharding.replicated(mesh)
        with sharding.use_mesh(mesh, rules):
            sstate = jax.device_put(state, state_sh)
            sbatch = jax.device_put(batch, batch_sh)
            fn = jax.jit(step, in_shardings=(state_sh, batch_sh, rep, rep), out_shardings=(state_sh, rep))
            compiled = fn.lower(sstate, sbatch, null_text, null_mask).compile()
            new_state, metrics = compiled(sstate, sbatch, null_text, null_mask)
        hlo = compiled.as_text()
        out[name] = {
            "loss": float(metrics["loss"]), "ref_loss": float(ref_metrics["loss"]),
            "grad_norm": float(metrics["grad_norm"]), "ref_grad_norm": float(ref_metrics["grad_norm"]),
            "grads_diff": max_diff(first_gradients(new_state.opt_state, c.optim.b1), ref_grads),
            "params_diff": max_diff(new_state.params, ref_state.params),
            "grads_scale": max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(ref_grads)),
            "video_sharding": str(sbatch["video"].sharding.spec), "text_shape": list(batch["text"].shape),
            "sharded_param_leaves": sum(not x.sharding.is_fully_replicated
                                        for x in jax.tree.leaves(new_state.params)),
            "sharded_opt_leaves": sum(not x.sharding.is_fully_replicated
                                      for x in jax.tree.leaves(new_state.opt_state) if x.ndim),
            "collective_permutes": hlo.count("collective-permute-start") + hlo.count("collective-permute(")}
    return out


def sampler_case(name: str) -> dict:
    c = config_for(MESHES[name])
    graphdef, params = init_model(c, 0)
    params = jax.tree.map(lambda p: p + 0.05 * jax.random.normal(jax.random.key(p.size), p.shape), params)
    text = jax.random.normal(jax.random.key(2), (2, 6, c.model.text_dim))
    mask = jnp.ones((2, 6), bool)
    kwargs = dict(shape=(8, 16, 16, 3), schedule=schedule_from(c),
                  options=sampling.SamplerOptions(steps=3, guidance=2.0, sampler="ddim"))
    prompts = sampling.Prompts(text, mask, text[:1] * 0, mask[:1])

    def run():
        return sampling.generate(graphdef, params, prompts, jax.random.key(3), **kwargs)

    ref = run()
    # No cache clearing: under use_mesh, jit must trace generate again rather than reuse the unsharded program.
    mesh = sharding.make_mesh(c)
    traces = sampling.generate._cache_size()
    with sharding.use_mesh(mesh, sharding.rules_from(c)):
        out = run()
        hlo = sampling.generate.lower(graphdef, params, prompts, jax.random.key(3), **kwargs).as_text()
    return {"clip_diff": float(jnp.max(jnp.abs(out - ref))), "retraced": sampling.generate._cache_size() > traces,
            "collective_permutes": hlo.count("collective_permute")}


def halo_conv_case(name: str) -> dict:
    """The frame-sharded temporal conv alone: equal to unsharded, and its program moves only halos."""
    mesh = sharding.make_mesh(config_for(MESHES[name]))
    out = {}
    for stride in (1, 2):
        conv = temporal.TemporalConv(4, 3, stride=stride, identity_init=False, rngs=nnx.Rngs(0))
        x = jax.random.normal(jax.random.key(0), (2, 16, 4, 4, 4))
        ref = nnx.jit(lambda m, x: m(x))(conv, x)
        with sharding.use_mesh(mesh):
            xs = jax.device_put(x, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, "frames")))
            f = nnx.jit(lambda m, x: m(x))
            got = f(conv, xs)
            hlo = jax.jit(lambda x: conv(x)).lower(xs).compile().as_text()
        out[f"stride{stride}"] = {"diff": float(jnp.max(jnp.abs(got - ref))),
                                  "permutes": hlo.count("collective-permute"), "all_gathers": hlo.count("all-gather"),
                                  "out_sharding": str(got.sharding.spec)}
    return out


def spatial_case(name: str) -> dict:
    """The spatial blocks on frame-sharded video: same values and gradients as unsharded, and no gathered clip."""
    from lumiere_jax.models import spatial
    mesh = sharding.make_mesh(config_for(MESHES[name]))
    blocks = (spatial.FrameConv(8, 8, rngs=nnx.Rngs(0)), spatial.FrameConv(8, 8, stride=2, rngs=nnx.Rngs(1)),
              spatial.FrameGroupNorm(8, rngs=nnx.Rngs(2)), spatial.SpatialAttention(8, 8, 2, rngs=nnx.Rngs(3)))
    graphdef, params = nnx.split(blocks)
    params = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(jax.random.key(p.size), p.shape), params)
    x = jax.random.normal(jax.random.key(0), (4, 16, 8, 8, 8))
    text, text_mask = jax.random.normal(jax.random.key(1), (4, 5, 8)), jnp.ones((4, 5), bool)

    def loss(params, x):
        conv, down, norm, attn = nnx.merge(graphdef, params)
        y = attn(norm(down(conv(sharding.constrain(x)))), text, text_mask)
        return jnp.sum(jnp.sin(sharding.constrain(y)))

    grad = jax.value_and_grad(loss, argnums=(0, 1))
    ref = jax.jit(grad)(params, x)
    with sharding.use_mesh(mesh):
        xs = jax.device_put(x, sharding.batch_shardings({"video": x}, mesh, sharding.DEFAULT_RULES)["video"])
        compiled = jax.jit(grad).lower(params, xs).compile()
        got = compiled(params, xs)
    hlo = compiled.as_text()
    return {"loss_diff": abs(float(got[0]) - float(ref[0])), "grads_diff": max_diff(got[1], ref[1]),
            "grads_scale": max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(ref[1])),
            "all_gathers": hlo.count("all-gather"), "all_to_alls": hlo.count("all-to-all")}


def paper_case(_name: str) -> dict:
    """configs/t2v.py:size=lumiere built from shapes only and lowered over a 2 x 2 x 2 (data, fsdp, frames) mesh."""
    from lumiere_jax import aot
    c = t2v.get_config("size=lumiere")
    c.mesh.data, c.mesh.fsdp, c.mesh.frames = 2, 2, 2
    c.batch_size = 8
    lowered, info = aot.lower_train_step(c)
    text = lowered.as_text()
    return {**info, "flops_per_step": aot.flops(lowered), "has_shard_map": "shard_map" in text or
            "collective_permute" in text, "bf16": "bf16" in text}


if __name__ == "__main__":
    case, mesh_names = sys.argv[1], sys.argv[2].split(",")
    assert jax.device_count() == 8, jax.devices()
    if case in ("train", "train_story"):
        result = train_step_case(mesh_names, per_frame=case == "train_story")
    else:
        fn = {"sample": sampler_case, "halo": halo_conv_case, "spatial": spatial_case, "paper": paper_case}[case]
        result = {name: fn(name) for name in mesh_names}
    print("RESULT " + json.dumps(result))
