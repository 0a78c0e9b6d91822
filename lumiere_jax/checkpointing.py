"""orbax checkpoints of the TrainState plus a JSON record of the config that made them."""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from lumiere_jax import paths


class Checkpointer:
    """Saves and restores `<workdir>/checkpoints/<step>/{state,meta}`, keeping the newest `max_to_keep`.

    orbax writes each step to a temporary folder and renames it when complete,
    so an interrupted save never looks like a checkpoint.
    """

    def __init__(self, workdir: str, *, max_to_keep: int = 3, async_save: bool = True, read_only: bool = False):
        self.directory = os.fspath(paths.resolve(workdir) / "checkpoints")  # a local folder or a gs:// URL
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, enable_async_checkpointing=async_save,
                                               create=not read_only, read_only=read_only,
                                               # a save killed mid-write leaves a tmp folder: remove it
                                               cleanup_tmp_directories=not read_only)
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "meta"))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, meta: dict[str, Any], *, force: bool = False) -> bool:
        """Starts saving `state` at `step` (async when enabled); returns whether a save started."""
        return self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                               meta=ocp.args.JsonSave(meta)), force=force)

    def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, dict[str, Any]]:
        """Restores into the shapes, dtypes and shardings of `abstract_state`; newest step by default.

        Checks the stored shapes first, so a checkpoint of another config fails naming the first parameter
        that differs; an unreadable checkpoint fails naming its folder. Nothing on disk is changed.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"No checkpoint in {self.directory}: train first (--mode=train) or point "
                                    f"--workdir at a run that has one.")
        step_dir = os.path.join(self.directory, str(step))
        self.check_compatible(abstract_state, step)
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
        except Exception as e:  # orbax/tensorstore raise many types for damaged files
            raise ValueError(f"Checkpoint {step_dir} is unreadable ({type(e).__name__}: {str(e)[:200]}). It was "
                             f"left untouched; move that folder aside to resume from an earlier step.") from e
        return restored["state"], restored["meta"]

    def check_compatible(self, abstract_state: Any, step: int) -> None:
        """Raises ValueError naming the first parameter whose stored shape differs from the config's."""
        step_dir = os.path.join(self.directory, str(step))
        try:
            with ocp.StandardCheckpointer() as reader:  # closed here, not by a late garbage collection
                stored = reader.metadata(os.path.join(step_dir, "state")).item_metadata
        except Exception as e:
            raise ValueError(f"Checkpoint {step_dir} is unreadable ({type(e).__name__}: {str(e)[:200]}). It was "
                             f"left untouched; move that folder aside to resume from an earlier step.") from e
        stored_shapes = {name: tuple(leaf.shape) for name, leaf in _named_leaves(stored) if hasattr(leaf, "shape")}
        wanted = _named_leaves(abstract_state)
        if not any(name in stored_shapes for name, _ in wanted):
            raise ValueError(f"Checkpoint {step_dir} is unreadable (its metadata lists none of the expected "
                             f"arrays). It was left untouched; move that folder aside to resume from an earlier "
                             f"step.")
        for name, leaf in wanted:
            if name not in stored_shapes:
                raise ValueError(f"Checkpoint {step_dir} does not match this config: it has no {name}. Was it "
                                 f"written by another config? Use that config, or a fresh --workdir.")
            if stored_shapes[name] != tuple(leaf.shape):
                raise ValueError(f"Checkpoint {step_dir} does not match this config: {name} is "
                                 f"{stored_shapes[name]} in the checkpoint but {tuple(leaf.shape)} in the config. "
                                 f"Use the config it was trained with, or a fresh --workdir.")
        extra = sorted(set(stored_shapes) - {name for name, _ in wanted})
        if extra:  # e.g. a run trained with model.text_pooling="attention", read with the default "mean"
            raise ValueError(f"Checkpoint {step_dir} does not match this config: it has {extra[0]} (and "
                             f"{len(extra) - 1} more arrays) that this config does not have. Was it written by "
                             f"another config? Use that config (its config.json), or a fresh --workdir.")

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def with_shardings(abstract_state: Any, sharding: jax.sharding.Sharding | Any) -> Any:
    """Attaches shardings to a ShapeDtypeStruct tree (orbax restores onto them): one sharding for every
    leaf, or a tree of shardings of the same structure."""
    if isinstance(sharding, jax.sharding.Sharding):
        return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), abstract_state)
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract_state, sharding)


def _named_leaves(tree: Any) -> list[tuple[str, Any]]:
    """(dotted name, leaf) pairs, the same names for a TrainState and for orbax's stored metadata tree."""
    def part(key: Any) -> str:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                return str(getattr(key, attr))
        return str(key)

    out = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        parts = [part(k) for k in path]
        out.append((".".join(p for p in parts if p != "value"), leaf))
    return out
