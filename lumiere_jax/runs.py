"""One loader for trained runs: a run's saved config, its model graph and its EMA weights.

Sampling, the SSR cascade, inflation, the applications and evaluation all read a run through `load`, so a run is
restored one way: the optimizer it trained with (`state.resolve_trainable`), its noise schedule (`schedule_of`),
the newest (or a given) checkpoint's EMA weights on the first device, and one-line errors that name the flag.
"""

from __future__ import annotations

import dataclasses

import jax
import ml_collections
from flax import nnx

from lumiere_jax import checkpointing, config_lib, paths
from lumiere_jax.diffusion.schedule import SCHEDULE_KEYS, CosineSchedule, schedule_from
from lumiere_jax.state import abstract_graphdef_and_state


@dataclasses.dataclass(frozen=True)
class Run:
    """A trained run's sampling weights and what they need: loaded by `load`."""

    workdir: str
    config: ml_collections.ConfigDict  # the config it was loaded with (its schedule: `schedule`)
    graphdef: nnx.GraphDef
    params: nnx.State  # the EMA weights
    step: int  # the checkpoint's step
    schedule: CosineSchedule  # the noise schedule the run trained with
    story_trained: bool  # trained on clips whose caption changes mid-clip (data.story_fraction > 0)


def schedule_of(config: ml_collections.ConfigDict, workdir: str | None = None) -> CosineSchedule:
    """The noise schedule; with `workdir`, the one that run trained with (its config.json), whatever `config` says.

    The schedule is part of what a model learned: sampling a run trained with `diffusion.shift=0.25` under
    shift 1 would ask it about noise levels it never saw at those times.
    """
    d = dict(config.diffusion)
    saved = config_lib.read_run_config(workdir).get("diffusion")
    if isinstance(saved, dict):
        d.update({k: saved[k] for k in SCHEDULE_KEYS if k in saved})
    return schedule_from({"diffusion": d})


def trained_on_stories(workdir: str) -> bool:
    """Whether the run in workdir trained on clips whose caption changes mid-clip (its data.story_fraction > 0);
    False where there is no readable config.json (loading the run reports that)."""
    data = config_lib.read_run_config(workdir).get("data")
    return isinstance(data, dict) and float(data.get("story_fraction", 0.0)) > 0


def with_run_model(config: ml_collections.ConfigDict, workdir: str) -> ml_collections.ConfigDict:
    """`config` with the model section the run in `workdir` trained with (its config.json), for tools that
    read a run by its size alone: a run trained with other model keys (say model.text_pooling) restores."""
    saved = config_lib.read_run_config(workdir).get("model")
    if isinstance(saved, dict):
        # A key the run's config.json lacks is newer than the run, which trained with its base default.
        saved = {**config_lib.base_config().model.to_dict(), **saved}
        config = ml_collections.ConfigDict(config.to_dict())
        config.model.update({k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()})
    return config


def latest_step(workdir: str) -> int | None:
    """The newest checkpoint's step of the run in `workdir`, or None (no run or no checkpoint there)."""
    if not paths.resolve(workdir).is_dir():
        return None
    return checkpointing.Checkpointer(workdir, read_only=True).latest_step()


def load(workdir: str, config: ml_collections.ConfigDict | None = None, *, step: int | None = None,
         flag: str = "--workdir") -> Run:
    """Restores a run's EMA weights (newest checkpoint, or `step`) on the first device.

    config: the config to build the model from (default: the run's own config.json, `config_lib.run_config`).
    flag names the input in the one-line errors (e.g. "--ssr_workdir", "init_from").
    """
    if not workdir or not paths.resolve(workdir).is_dir():
        raise ValueError(f"{flag}={workdir} does not exist: train a run there first with --mode=train.")
    if config is None:
        config = config_lib.run_config(workdir, flag)
    ckpt = checkpointing.Checkpointer(workdir, read_only=True)
    if ckpt.latest_step() is None:
        if (paths.resolve(workdir) / "ema.safetensors").is_file():  # the layout of lumiere_jax/shipped.py
            raise ValueError(f"{flag}={workdir} is a shipped model's folder, not a training run: leave {flag} out "
                             f"to sample or evaluate the shipped model, or give a run's workdir.")
        where = "" if flag == "--workdir" else f" ({flag}={workdir})"
        raise ValueError(f"No checkpoint in {ckpt.directory}{where}: train it first with --mode=train "
                         f"--workdir={workdir}.")
    graphdef, abstract = abstract_graphdef_and_state(config, workdir)
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    state, _ = ckpt.restore(checkpointing.with_shardings(abstract, sharding), step)
    return Run(workdir=workdir, config=config, graphdef=graphdef, params=state.ema, step=int(state.step),
               schedule=schedule_of(config, workdir), story_trained=trained_on_stories(workdir))
