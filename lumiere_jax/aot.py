"""Ahead of time: build a config's train step from shapes alone and lower (or compile) it for a mesh.

Nothing is allocated: the model and optimizer are built with `jax.eval_shape`, so the paper-scale STUNet
can be checked on a laptop. Lowering proves the shardings are coherent; compiling gives XLA's own
per-device memory figures (`memory_analysis`) and FLOP count (`cost_analysis`).
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections

from lumiere_jax import config_lib, sharding, train
from lumiere_jax.diffusion.schedule import schedule_from
from lumiere_jax.state import abstract_graphdef_and_state, make_optimizer


def _sds(shape: Sequence[int], dtype: Any, s: jax.sharding.Sharding) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(tuple(shape), dtype, sharding=s)


def lower_train_step(config: ml_collections.ConfigDict,
                     devices: Sequence[jax.Device] | None = None) -> tuple[Any, dict[str, Any]]:
    """Lowers the sharded train step of `config` on its mesh over `devices` (default: all).

    Returns (lowered, info) with info: num_params, mesh axis sizes, and the shardings of the video
    batch and of the largest parameter.
    """
    config_lib.validate(config)
    mesh = sharding.make_mesh(config, devices)
    rules = sharding.rules_from(config)
    train.check_mesh(config, mesh)
    graphdef, abstract = abstract_graphdef_and_state(config)
    state_sh = sharding.tree_shardings(abstract, mesh, rules)
    state = jax.tree.map(lambda a, s: _sds(a.shape, a.dtype, s), abstract, state_sh)
    b, d = config.batch_size, config.data
    length, width = config.text_max_length, config.model.text_dim
    batch_shapes = {"video": ((b, d.num_frames, d.resolution, d.resolution, config.model.in_channels), jnp.float32),
                    "text": ((b, length, width), jnp.float32), "text_mask": ((b, length), jnp.bool_)}
    batch_sh = sharding.batch_shardings({k: jax.ShapeDtypeStruct(*v) for k, v in batch_shapes.items()}, mesh, rules)
    batch = {k: _sds(shape, dtype, batch_sh[k]) for k, (shape, dtype) in batch_shapes.items()}
    rep = sharding.replicated(mesh)
    null_text, null_mask = _sds((1, length, width), jnp.float32, rep), _sds((1, length), jnp.bool_, rep)
    step = train.make_train_step(graphdef, make_optimizer(config), schedule_from(config), config)
    fn = jax.jit(step, in_shardings=(state_sh, batch_sh, rep, rep), out_shardings=(state_sh, rep),
                 donate_argnums=(0,))
    with sharding.use_mesh(mesh, rules):
        lowered = fn.lower(state, batch, null_text, null_mask)
    params = jax.tree.leaves(abstract.params)
    sizes = [(p.size, s) for p, s in zip(params, jax.tree.leaves(state_sh.params))]
    largest = max(sizes, key=lambda x: x[0])
    info = {"num_params": int(sum(p.size for p in params)), "mesh": dict(mesh.shape),
            "video_spec": str(batch_sh["video"].spec), "largest_param": int(largest[0]),
            "largest_param_spec": str(largest[1].spec)}
    return lowered, info


def memory_per_device(compiled: Any) -> dict[str, int]:
    """XLA's per-device memory figures (bytes) for a compiled program."""
    m = compiled.memory_analysis()
    out = {k: int(getattr(m, f"{k}_size_in_bytes", 0)) for k in ("argument", "output", "temp", "alias",
                                                                 "generated_code")}
    # Donated state aliases its outputs: count arguments + temporaries + outputs that are not aliases.
    out["total"] = out["argument"] + out["temp"] + out["output"] - out["alias"]
    return out


def flops(lowered_or_compiled: Any) -> float:
    """FLOPs of the whole (global) program from XLA's cost analysis."""
    cost = lowered_or_compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0]
    return float(cost.get("flops", 0.0)) if cost else 0.0
