"""Inflation: a trained text-to-image U-Net's weights become the STUNet's spatial layers (SPEC section 1)."""

from __future__ import annotations

import json
import logging
import os

import jax
import ml_collections
from flax import nnx

from lumiere_jax import checkpointing
from lumiere_jax.models.stunet import is_temporal_path
from lumiere_jax.state import abstract_graphdef_and_state

log = logging.getLogger("lumiere_jax")


def load_t2i_weights(workdir: str) -> tuple[nnx.State, ml_collections.ConfigDict]:
    """The EMA weights of the newest checkpoint of a T2I run (configs/t2i.py), and that run's config."""
    path = os.path.join(os.path.expanduser(workdir), "config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"init_from={workdir} has no config.json: point --config.init_from at the workdir "
                                f"of a configs/t2i.py run.")
    with open(path) as f:
        config = ml_collections.ConfigDict(json.load(f))
    if config.model.temporal:
        raise ValueError(f"init_from={workdir} holds a video model (model.temporal=True); inflation starts from "
                         f"a text-to-image run (configs/t2i.py).")
    _, abstract = abstract_graphdef_and_state(config)
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    state, _ = checkpointing.Checkpointer(workdir, read_only=True).restore(
        checkpointing.with_shardings(abstract, sharding))
    return state.ema, config


def inflate(stunet_params: nnx.State, t2i_params: nnx.State) -> nnx.State:
    """Copies every T2I weight into the same-named spatial layer of the STUNet; temporal layers keep their init.

    Fails, naming the parameters, if a T2I weight finds no place (or a different shape) in the STUNet, or a
    STUNet spatial weight has no T2I counterpart: inflation must account for every pre-trained weight.
    """
    video = dict(jax.tree_util.tree_flatten_with_path(stunet_params.to_pure_dict())[0])
    image = dict(jax.tree_util.tree_flatten_with_path(t2i_params.to_pure_dict())[0])
    name = jax.tree_util.keystr
    homeless = [name(k) for k in image if k not in video or is_temporal_path([p.key for p in k])]
    misfit = [f"{name(k)}: T2I {image[k].shape} vs STUNet {video[k].shape}"
              for k in image if k in video and image[k].shape != video[k].shape]
    uncovered = [name(k) for k in video if k not in image and not is_temporal_path([p.key for p in k])]
    if homeless or misfit or uncovered:
        raise ValueError("Inflation failed: the T2I and STUNet configs differ in their spatial layers. "
                         f"T2I weights with no place: {homeless[:5]}; shape mismatches: {misfit[:5]}; "
                         f"STUNet spatial weights without a T2I weight: {uncovered[:5]}. Use the T2I run's "
                         f"model config (channels, channel_mult, attention_levels, ...) with temporal=True.")
    flat, treedef = jax.tree_util.tree_flatten_with_path(stunet_params.to_pure_dict())
    pure = jax.tree_util.tree_unflatten(treedef, [image.get(k, v) for k, v in flat])
    out = jax.tree.map(lambda x: x, stunet_params)  # same Variable types; values replaced below
    nnx.replace_by_pure_dict(out, pure)
    num_temporal = sum(v.size for k, v in video.items() if is_temporal_path([p.key for p in k]))
    log.info("Inflated %d T2I weights into the STUNet; %.2fM temporal parameters start as the identity.",
             len(image), num_temporal / 1e6)
    return out
