"""Inflation: a trained text-to-image U-Net's weights become the STUNet's spatial layers (Lumiere, Sec. 3.1)."""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from lumiere_jax import config_lib, runs
from lumiere_jax.models.stunet import is_temporal_path

log = logging.getLogger("lumiere_jax")


def load_t2i_weights(workdir: str) -> tuple[nnx.State, ml_collections.ConfigDict]:
    """The EMA weights of the newest checkpoint of a T2I run (configs/t2i.py), and that run's config."""
    run = runs.load(workdir, _run_config(workdir), flag="init_from")
    if run.config.model.temporal:
        raise ValueError(f"init_from={workdir} holds a video model (model.temporal=True); inflation starts from "
                         f"a text-to-image run (configs/t2i.py).")
    return run.params, run.config


def _run_config(workdir: str) -> ml_collections.ConfigDict:
    return config_lib.run_config(workdir, flag="init_from", fix="point --config.init_from at the workdir of a "
                                 "configs/t2i.py or configs/t2v.py run")


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


def load_init_weights(params: nnx.State, init_from: str) -> nnx.State:
    """Starts a run from another run's EMA weights: a T2I run is inflated; a T2V run is copied, with conv_in
    widened (zero weights) when this model takes conditioning channels that the T2V model lacks."""
    source = runs.load(init_from, _run_config(init_from), flag="init_from")
    if not source.config.model.temporal:
        return inflate(params, source.params)
    return widen_conv_in(params, source.params)


def widen_conv_in(params: nnx.State, source: nnx.State) -> nnx.State:
    """Copies a T2V model's weights into a conditional STUNet (Lumiere, Sec. 4): every weight is the same
    except conv_in's kernel, whose extra input channels (the conditioning) start at zero, so the new model
    computes exactly what the T2V model did, whatever the conditioning.

    Fails, naming the parameters, if anything else differs in name or shape.
    """
    name = jax.tree_util.keystr
    target = dict(jax.tree_util.tree_flatten_with_path(params.to_pure_dict())[0])
    old = dict(jax.tree_util.tree_flatten_with_path(source.to_pure_dict())[0])
    conv_in = [k for k in target if name(k).startswith("['conv_in']") and name(k).endswith("['kernel']")]
    missing = [name(k) for k in target if k not in old]
    extra = [name(k) for k in old if k not in target]
    misfit = [f"{name(k)}: {old[k].shape} vs {target[k].shape}" for k in target
              if k in old and k not in conv_in and old[k].shape != target[k].shape]
    for k in conv_in:
        o, t = old[k].shape, target[k].shape
        if o[:-2] != t[:-2] or o[-1] != t[-1] or o[-2] > t[-2]:
            misfit.append(f"{name(k)}: {o} vs {t}")
    if missing or extra or misfit:
        raise ValueError("init_from: the T2V run's model differs from this config's beyond the conditioning "
                         f"channels. Missing: {missing[:5]}; not in this model: {extra[:5]}; shape mismatches: "
                         f"{misfit[:5]}. Use the T2V run's model config (channels, channel_mult, ...).")

    def value(k, v):
        if k not in conv_in:
            return old[k]
        pad = [(0, 0)] * (v.ndim - 2) + [(0, v.shape[-2] - old[k].shape[-2]), (0, 0)]
        return jnp.pad(old[k], pad)  # new input channels: zero weights

    flat, treedef = jax.tree_util.tree_flatten_with_path(params.to_pure_dict())
    out = jax.tree.map(lambda x: x, params)
    nnx.replace_by_pure_dict(out, jax.tree_util.tree_unflatten(treedef, [value(k, v) for k, v in flat]))
    widened = sum(v.shape[-2] - old[k].shape[-2] for k, v in target.items() if k in conv_in)
    log.info("Loaded %d T2V weights; conv_in takes %d new zero-weight input channels.", len(old), widened)
    return out
