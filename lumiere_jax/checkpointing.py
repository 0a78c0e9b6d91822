"""orbax checkpoints of the TrainState plus a JSON record of the config that made them."""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp


class Checkpointer:
    """Saves and restores `<workdir>/checkpoints/<step>/{state,meta}`, keeping the newest `max_to_keep`.

    orbax writes each step to a temporary folder and renames it when complete,
    so an interrupted save never looks like a checkpoint.
    """

    def __init__(self, workdir: str, *, max_to_keep: int = 3, async_save: bool = True, read_only: bool = False):
        self.directory = os.path.join(os.path.abspath(os.path.expanduser(workdir)), "checkpoints")
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, enable_async_checkpointing=async_save,
                                               create=not read_only, read_only=read_only)
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "meta"))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, meta: dict[str, Any], *, force: bool = False) -> bool:
        """Starts saving `state` at `step` (async when enabled); returns whether a save started."""
        return self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                               meta=ocp.args.JsonSave(meta)), force=force)

    def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, dict[str, Any]]:
        """Restores into the shapes, dtypes and shardings of `abstract_state`; newest step by default."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"No checkpoint in {self.directory}: train first (--mode=train) or point "
                                    f"--workdir at a run that has one.")
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
        return restored["state"], restored["meta"]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def with_shardings(abstract_state: Any, sharding: jax.sharding.Sharding) -> Any:
    """Attaches one sharding to every leaf of a ShapeDtypeStruct tree (orbax restores onto it)."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), abstract_state)
