"""Train state (params, optimizer, EMA) as one pytree, and how to build it from a config."""

from __future__ import annotations

import functools
import json
import os
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from lumiere_jax import compile_options
from lumiere_jax.diffusion.samplers import THRESHOLDING
from lumiere_jax.diffusion.schedule import CosineSchedule
from lumiere_jax.models.stunet import STUNet, STUNetConfig, check_frames, is_temporal_path


@flax.struct.dataclass
class TrainState:
    """Everything a step changes; saved whole, so a restore resumes exactly."""

    step: jax.Array  # int32 scalar: steps taken
    params: nnx.State
    opt_state: optax.OptState
    ema: nnx.State  # exponential moving average of params: what sampling uses
    skipped: jax.Array  # int32 scalar: steps whose loss or gradient was not finite (update skipped)


def model_config(config: ml_collections.ConfigDict) -> STUNetConfig:
    return STUNetConfig.from_config(config.model)


# The diffusion keys that define the noise schedule a model learned (the rest only choose training times).
SCHEDULE_KEYS = ("logsnr_min", "logsnr_max", "shift")


def schedule_from(config: ml_collections.ConfigDict, workdir: str | None = None) -> CosineSchedule:
    """The noise schedule; with `workdir`, the one that run trained with (its config.json), whatever `config` says.

    The schedule is part of what a model learned: sampling a run trained with `diffusion.shift=0.25` under
    shift 1 would ask it about noise levels it never saw at those times.
    """
    d = dict(config.diffusion)
    saved = _saved_config(workdir).get("diffusion") if workdir else None
    if isinstance(saved, dict):
        d.update({k: saved[k] for k in SCHEDULE_KEYS if k in saved})
    return CosineSchedule(logsnr_min=float(d["logsnr_min"]), logsnr_max=float(d["logsnr_max"]), shift=float(d["shift"]))


def check_resumed_schedule(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Refuses to resume the run in `workdir` under another noise schedule than the one it trained with.

    Its later steps would learn other noise levels than its earlier ones, and the config.json that sampling
    reads would describe neither. Raises before anything is built or compiled; the checkpoints stay as they are.
    """
    saved = _saved_config(workdir).get("diffusion")
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
                     optax.adamw(lr, b1=o.b1, b2=o.b2, weight_decay=o.weight_decay))
    trainable = resolve_trainable(config)
    if trainable == "all":
        return tx
    # Lumiere trains only the new temporal layers; the inflated T2I weights stay frozen. A video style tune
    # ("spatial") is the converse: spatial layers learn the style, the temporal ones keep the motion.
    return optax.multi_transform({"train": tx, "freeze": optax.set_to_zero()},
                                 functools.partial(trainable_labels, train_temporal=trainable == "temporal"))


def with_run_model(config: ml_collections.ConfigDict, workdir: str) -> ml_collections.ConfigDict:
    """`config` with the model section the run in `workdir` trained with (its config.json), for tools that
    read a run by its size alone: a run trained with other model keys (say model.text_pooling) restores."""
    saved = _saved_config(workdir).get("model")
    if isinstance(saved, dict):
        config = ml_collections.ConfigDict(config.to_dict())
        config.model.update({k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()})
    return config


def trained_on_stories(workdir: str) -> bool:
    """Whether the run in workdir trained on clips whose caption changes mid-clip (its data.story_fraction > 0);
    False where there is no readable config.json (loading the run reports that)."""
    data = _saved_config(workdir).get("data")
    return isinstance(data, dict) and float(data.get("story_fraction", 0.0)) > 0


def _saved_config(workdir: str) -> dict:
    try:
        with open(os.path.join(os.path.expanduser(workdir), "config.json")) as f:
            saved = json.load(f)
    except (OSError, ValueError):
        return {}
    return saved if isinstance(saved, dict) else {}


def resolve_trainable(config: ml_collections.ConfigDict, workdir: str | None = None) -> str:
    """config.trainable with "auto" resolved.

    A run started before in `workdir` keeps what it trained with (its config.json stores the resolved
    value), so resuming and sampling restore the same optimizer state even if init_from is gone. Otherwise
    "temporal" (Lumiere's recipe) when init_from is a T2I run (model.temporal=False), else "all".
    """
    if config.trainable != "auto":
        return config.trainable
    saved = _saved_config(workdir) if workdir else {}
    if saved.get("trainable") in ("all", "temporal", "spatial"):
        return saved["trainable"]
    init_from = saved.get("init_from") or config.init_from  # runs that stored "auto" resolve as they did
    if not (init_from and config.model.temporal):
        return "all"
    source = _saved_config(init_from).get("model", {})
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


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Checks what a config can get wrong before any data is built or anything compiles."""
    from lumiere_jax import tasks  # the task modules import this one
    known = tasks.UNCONDITIONAL + tasks.SSR + tasks.MASKED
    if config.task not in known:
        raise ValueError(f"task={config.task!r} is not one of {known}.")
    cfg = model_config(config)
    check_frames(config.data.num_frames, cfg)
    factor = 2 ** (len(cfg.channel_mult) - 1)
    res = config.data.resolution
    if res < factor or res % factor:
        raise ValueError(f"data.resolution={res} cannot be halved {len(cfg.channel_mult) - 1} times "
                         f"(model.channel_mult={tuple(cfg.channel_mult)}): use a multiple of {factor}.")
    if config.batch_size < 1:
        raise ValueError(f"batch_size={config.batch_size} must be at least 1.")
    if cfg.attention == "cudnn" and (jax.default_backend() != "gpu" or cfg.dtype not in ("bfloat16", "float16")):
        raise ValueError(f"model.attention='cudnn' runs on an NVIDIA GPU with model.dtype bfloat16 or float16 (here: "
                         f"{jax.default_backend()}, {cfg.dtype}): use model.attention='xla' here.")
    if config.trainable not in ("auto", "all", "temporal", "spatial"):
        raise ValueError(f"trainable={config.trainable!r} must be 'auto', 'all', 'temporal' (only the inflation "
                         f"layers) or 'spatial' (only the T2I layers).")
    if config.trainable in ("temporal", "spatial") and not cfg.temporal:
        raise ValueError(f"trainable={config.trainable!r} needs model.temporal=True: a T2I model has no temporal "
                         f"layers (use 'all').")
    if config.cpu_fusions not in compile_options.CPU_FUSIONS:
        raise ValueError(f"cpu_fusions={config.cpu_fusions!r} must be 'all' (XLA:CPU's YNNPACK fusions, faster) or "
                         f"'default' (XLA's own choice, less memory).")
    if config.sample.window_batch < 0:
        raise ValueError(f"sample.window_batch={config.sample.window_batch} must be >= 0 (0: all windows of a long "
                         f"video in one model call; k: k at a time, for flat memory).")
    if config.sample.thresholding not in THRESHOLDING:
        raise ValueError(f"sample.thresholding={config.sample.thresholding!r} must be one of {THRESHOLDING}.")
    if config.nan_policy not in ("stop", "skip"):
        raise ValueError(f"nan_policy={config.nan_policy!r} must be 'stop' or 'skip'.")
    d = config.diffusion
    if not 0.0 <= d.high_noise_fraction <= 1.0 or not 0.0 <= d.high_noise_t_min < 1.0:
        raise ValueError(f"diffusion.high_noise_fraction={d.high_noise_fraction} must be in [0, 1] and "
                         f"diffusion.high_noise_t_min={d.high_noise_t_min} in [0, 1).")
    if not 0.0 < d.t_max <= 1.0:
        raise ValueError(f"diffusion.t_max={d.t_max} must be in (0, 1]: the highest training time (1: all).")
    o = config.optim
    if o.decay_start and not o.warmup_steps <= o.decay_start < o.decay_steps:
        raise ValueError(f"optim.decay_start={o.decay_start} must lie in [optim.warmup_steps={o.warmup_steps}, "
                         f"optim.decay_steps={o.decay_steps}): the decay runs from decay_start to decay_steps "
                         f"(set decay_steps to the step where it should end, or decay_start=0).")
    if not 0.0 <= config.data.text_dropout < 1.0:
        raise ValueError(f"data.text_dropout={config.data.text_dropout} must be in [0, 1).")
    story = config.data.story_fraction
    if not 0.0 <= story <= 1.0:
        raise ValueError(f"data.story_fraction={story} must be in [0, 1]: the share of training clips whose "
                         f"caption changes mid-clip.")
    if story and (config.task not in tasks.UNCONDITIONAL or config.data.num_frames < 4):
        raise ValueError(f"data.story_fraction={story} trains text-to-video on clips whose caption changes "
                         f"mid-clip: it needs an unconditional task {tasks.UNCONDITIONAL} (task={config.task!r}) "
                         f"and data.num_frames >= 4 (num_frames={config.data.num_frames}); or story_fraction=0.")
    from lumiere_jax.data import stories
    stories.parse_changes(config.data.story_changes)
    if config.model.text_dim <= 0 or any(m <= 0 for m in cfg.channel_mult) or cfg.channels % cfg.num_heads:
        raise ValueError(f"model.channels={cfg.channels} must be divisible by model.num_heads={cfg.num_heads}, "
                         f"and channel_mult entries positive.")


def init_model(config: ml_collections.ConfigDict, seed: int) -> tuple[nnx.GraphDef, nnx.State]:
    """(graphdef, params) of a fresh STUNet for the config; raises if the frame count does not fit."""
    validate_config(config)
    return build_model(model_config(config), seed)


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
