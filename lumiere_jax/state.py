"""Train state (params, optimizer, EMA) as one pytree, and how to build it from a config."""

from __future__ import annotations

import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from lumiere_jax import config_lib
from lumiere_jax.diffusion.schedule import SCHEDULE_KEYS
from lumiere_jax.models.stunet import STUNet, STUNetConfig, is_temporal_path


@flax.struct.dataclass
class TrainState:
    """Everything a step changes; saved whole, so a restore resumes exactly."""

    step: jax.Array  # int32 scalar: steps taken
    params: nnx.State
    opt_state: optax.OptState
    ema: nnx.State  # exponential moving average of params: what sampling uses
    skipped: jax.Array  # int32 scalar: steps whose loss or gradient was not finite (update skipped)


def check_resumed_schedule(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Refuses to resume the run in `workdir` under another noise schedule than the one it trained with.

    Its later steps would learn other noise levels than its earlier ones, and the config.json that sampling
    reads would describe neither. Raises before anything is built or compiled; the checkpoints stay as they are.
    """
    saved = config_lib.read_run_config(workdir).get("diffusion")
    if not isinstance(saved, dict):
        return
    for key in SCHEDULE_KEYS:
        if key in saved and float(saved[key]) != float(config.diffusion[key]):
            raise ValueError(
                f"diffusion.{key}={config.diffusion[key]}, but the run in {workdir} trained with {saved[key]}: "
                f"resume it with --config.diffusion.{key}={saved[key]}, or train under the new schedule in a new "
                f"workdir with --config.init_from={workdir}.")


def learning_rate_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
    """Linear warmup, then constant, or cosine decay that ends at step optim.decay_steps.

    optim.decay_start > 0 holds the peak rate until that step and decays from there (warmup-stable-decay): a run
    trained at a constant rate can be resumed into its decay without changing the steps it has taken.
    The schedule never reads total_steps: raising total_steps and resuming continues the same trajectory.
    """
    o = config.optim
    warmup = optax.linear_schedule(0.0, o.learning_rate, o.warmup_steps)
    if o.decay_steps and o.decay_start:
        return optax.join_schedules(
            [warmup, optax.constant_schedule(o.learning_rate),
             optax.cosine_decay_schedule(o.learning_rate, o.decay_steps - o.decay_start, alpha=o.decay_to)],
            [o.warmup_steps, o.decay_start])
    if o.decay_steps:
        return optax.warmup_cosine_decay_schedule(
            init_value=0.0, peak_value=o.learning_rate, warmup_steps=o.warmup_steps,
            decay_steps=max(o.decay_steps, o.warmup_steps + 1), end_value=o.learning_rate * o.decay_to)
    return optax.join_schedules([warmup, optax.constant_schedule(o.learning_rate)], [o.warmup_steps])


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """AdamW under `learning_rate_schedule`, with global-norm clipping."""
    o = config.optim
    lr = learning_rate_schedule(config)
    tx = optax.chain(optax.clip_by_global_norm(o.grad_clip),
                     optax.adamw(lr, b1=o.b1, b2=o.b2, weight_decay=o.weight_decay,
                                 mask=decayed if o.weight_decay else None))
    trainable = resolve_trainable(config)
    if trainable == "all":
        return tx
    # Lumiere trains only the new temporal layers; the inflated T2I weights stay frozen. A video style tune
    # ("spatial") is the converse: spatial layers learn the style, the temporal ones keep the motion.
    return optax.multi_transform({"train": tx, "freeze": optax.set_to_zero()},
                                 functools.partial(trainable_labels, train_temporal=trainable == "temporal"))


def decayed(params: Any) -> Any:
    """Weight decay's mask: every parameter but the frozen text statistics (STUNet.text_norm), which get no
    gradient and must not shrink. Used only with weight decay on, so the optimizer state of runs without it keeps
    the structure earlier checkpoints were saved with."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: "text_norm" not in [getattr(k, "key", k) for k in path], params)


def set_text_statistics(graphdef: nnx.GraphDef, params: nnx.State, mean: np.ndarray,
                        std: np.ndarray) -> nnx.State:
    """The params with STUNet.text_norm's frozen buffers set to the training captions' token statistics
    (text.cache.token_statistics): shift = mean, scale = 1 / std (a dimension that never varies stays at 0)."""
    model = nnx.merge(graphdef, params)
    model.text_norm.shift.value = jnp.asarray(mean, jnp.float32)
    model.text_norm.scale.value = jnp.asarray(1.0 / np.sqrt(np.square(std) + 1e-4), jnp.float32)
    return split_model(model)[1]


def resolve_trainable(config: ml_collections.ConfigDict, workdir: str | None = None) -> str:
    """config.trainable with "auto" resolved.

    A run started before in `workdir` keeps what it trained with (its config.json stores the resolved
    value), so resuming and sampling restore the same optimizer state even if init_from is gone. Otherwise
    "temporal" (Lumiere's recipe) when init_from is a T2I run (model.temporal=False), else "all".
    """
    if config.trainable != "auto":
        return config.trainable
    saved = config_lib.read_run_config(workdir)
    if saved.get("trainable") in ("all", "temporal", "spatial"):
        return saved["trainable"]
    init_from = saved.get("init_from") or config.init_from  # runs that stored "auto" resolve as they did
    if not (init_from and config.model.temporal):
        return "all"
    source = config_lib.read_run_config(init_from).get("model", {})
    if not isinstance(source, dict) or "temporal" not in source:
        return "all"  # loading init_from then fails with a message that names the problem
    return "all" if source["temporal"] else "temporal"


def trainable_labels(params: Any, train_temporal: bool = True) -> Any:
    """'train' for temporal-layer parameters and 'freeze' for the spatial ones (the converse without
    `train_temporal`)."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: "train" if is_temporal_path([getattr(k, "key", k) for k in path]) == train_temporal
        else "freeze", params)


def split_model(model: STUNet) -> tuple[nnx.GraphDef, nnx.State]:
    """(graphdef, params); the STUNet holds nothing but parameters, which keeps steps pure."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    if jax.tree.leaves(rest):
        raise TypeError(f"STUNet holds non-parameter state, which the pure train step would drop: {rest}")
    return graphdef, params


def init_model(config: ml_collections.ConfigDict, seed: int) -> tuple[nnx.GraphDef, nnx.State]:
    """(graphdef, params) of a fresh STUNet for the config; raises if the frame count does not fit."""
    config_lib.validate(config)
    return build_model(config_lib.model_config(config), seed)


def build_model(cfg: STUNetConfig, seed: int) -> tuple[nnx.GraphDef, nnx.State]:
    """Initializes under jit with an RBG key: hundreds of threefry initializers take XLA ~5x longer to compile."""
    def make() -> STUNet:
        return STUNet(cfg, rngs=nnx.Rngs(jax.random.key(seed, impl="rbg")))

    graphdef, _ = split_model(nnx.eval_shape(make))
    params = jax.jit(lambda: split_model(make())[1])()
    return graphdef, params


def create_model(cfg: STUNetConfig, seed: int = 0) -> STUNet:
    """A concrete STUNet module (for tests, tools and notebooks)."""
    return nnx.merge(*build_model(cfg, seed))


def init_state(params: nnx.State, tx: optax.GradientTransformation) -> TrainState:
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                      ema=jax.tree.map(jnp.copy, params), skipped=jnp.zeros((), jnp.int32))


def abstract_graphdef_and_state(config: ml_collections.ConfigDict,
                                workdir: str | None = None) -> tuple[nnx.GraphDef, Any]:
    """The graphdef and the shape/dtype tree of the TrainState, built without allocating weights.

    With `workdir`, the optimizer is the one that run trained with (see `resolve_trainable`), so its
    checkpoints restore into this tree.
    """
    if workdir is not None and config.trainable == "auto":
        config = config.copy_and_resolve_references()
        with config.unlocked():
            config.trainable = resolve_trainable(config, workdir)
    tx = make_optimizer(config)
    holder = {}

    def build():
        graphdef, params = init_model(config, 0)
        holder["graphdef"] = graphdef
        return init_state(params, tx)

    abstract = jax.eval_shape(build)
    return holder["graphdef"], abstract
