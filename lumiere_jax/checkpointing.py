"""orbax checkpoints of the TrainState plus a JSON record of the config that made them."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
from typing import Any

import jax
import orbax.checkpoint as ocp

from lumiere_jax import paths


class _QuietDiskFull(logging.Filter):
    """Drops orbax's own tracebacks of a save that ran out of space: Checkpointer reports it in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        try:
            text = record.getMessage()
        except Exception:  # noqa: BLE001  a malformed record: let logging report it as usual
            return True
        return not ((error is not None and paths.is_disk_full(error)) or paths.is_disk_full(RuntimeError(text)))


_QUIET_DISK_FULL = _QuietDiskFull()


def _hide_closed_loop_errors() -> None:
    """Hides the `RuntimeError: Event loop is closed` tracebacks (and only those) that sys.unraisablehook would
    print when a save fails (a full disk): tensorstore's writes still in flight then finish on orbax's closed
    event loop, one traceback each, before the failure reaches the main thread."""
    previous = sys.unraisablehook
    if getattr(previous, "hides_closed_loop_errors", False):
        return

    def hook(unraisable: Any) -> None:
        value = unraisable.exc_value
        if not (isinstance(value, RuntimeError) and str(value) == "Event loop is closed"):
            previous(unraisable)

    hook.hides_closed_loop_errors = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook


class Checkpointer:
    """Saves and restores `<workdir>/checkpoints/<step>/{state,meta}`, keeping the newest `max_to_keep`.

    orbax writes each step to a temporary folder and renames it when complete,
    so an interrupted save never looks like a checkpoint.

    A save that runs out of disk space or quota raises paths.DiskFullError: one line naming the folder, the size
    of a checkpoint and the free space. With async saves the error surfaces at the next save, wait or close, and
    still names the step that failed. Its partial folder is removed; earlier checkpoints are untouched, and
    orbax deletes old ones (max_to_keep) only after a newer save completes.
    """

    def __init__(self, workdir: str, *, max_to_keep: int = 3, async_save: bool = True, read_only: bool = False):
        self.directory = os.fspath(paths.resolve(workdir) / "checkpoints")  # a local folder or a gs:// URL
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, enable_async_checkpointing=async_save,
                                               create=not read_only, read_only=read_only,
                                               # a save killed mid-write leaves a tmp folder: remove it
                                               cleanup_tmp_directories=not read_only)
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "meta"))
        # A failed save is reported once, by _raise_disk_full: not by orbax's logs (through absl) nor by
        # tensorstore's late callbacks.
        logging.getLogger("absl").addFilter(_QUIET_DISK_FULL)  # added once
        _hide_closed_loop_errors()
        self._in_flight: int | None = None  # the step an async save may still be writing
        self._state_bytes = 0  # the byte size of the state last saved, for the disk-full estimate

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, meta: dict[str, Any], *, force: bool = False) -> bool:
        """Starts saving `state` at `step` (async when enabled); returns whether a save started.

        First waits for the previous async save (as orbax would): a full disk there raises DiskFullError naming
        that step."""
        self._finish()
        self._state_bytes = sum(int(getattr(x, "nbytes", 0)) for x in jax.tree.leaves(state))
        try:
            started = self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                                      meta=ocp.args.JsonSave(meta)), force=force)
        except Exception as e:  # sync saves fail here; async ones only if the first files already do not fit
            self._raise_disk_full(e, step)
            raise
        self._in_flight = step if started else None
        return started

    def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, dict[str, Any]]:
        """Restores into the shapes, dtypes and shardings of `abstract_state`; newest step by default.

        Checks the stored shapes first, so a checkpoint of another config fails naming the first parameter
        that differs; an unreadable checkpoint fails naming its folder. Nothing on disk is changed. The newest
        step of a run that is training may be deleted (max_to_keep) while it is read: then the new newest one is.
        """
        if step is not None:
            return self._restore(abstract_state, step)
        for attempt in range(4):
            step = self.latest_step()
            if step is None:
                raise FileNotFoundError(f"No checkpoint in {self.directory}: train first (--mode=train) or point "
                                        f"--workdir at a run that has one.")
            try:
                return self._restore(abstract_state, step)
            except ValueError:
                if attempt == 3 or (paths.resolve(self.directory) / str(step)).exists():
                    raise  # unreadable, not rotated away
                self.manager.reload()
        raise AssertionError("unreachable")

    def _restore(self, abstract_state: Any, step: int) -> tuple[Any, dict[str, Any]]:
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
        """Waits for an async save to finish; a full disk raises DiskFullError naming its step."""
        self._finish()

    def close(self) -> None:
        """Waits for the last save (DiskFullError as in `wait`), then releases orbax's threads."""
        try:
            self._finish()
        except BaseException:
            with contextlib.suppress(Exception):
                self.manager.close()
            raise
        self.manager.close()

    def _finish(self) -> None:
        step, self._in_flight = self._in_flight, None
        try:
            self.manager.wait_until_finished()
        except Exception as e:  # an async save's error is raised by the wait that follows it
            self._raise_disk_full(e, step)
            raise

    def _raise_disk_full(self, error: Exception, step: int | None) -> None:
        """If error is ENOSPC/EDQUOT: removes the step's partial folder and raises DiskFullError from it."""
        if not paths.is_disk_full(error):
            return
        self._in_flight = None
        if step is not None and jax.process_index() == 0:
            self._remove_partial(step)
        try:
            self.manager.reload()  # the steps on disk, not a cached list
        except Exception:  # noqa: BLE001  (the message below still names the folder)
            pass
        latest = self.manager.latest_step()
        needed, free = self._needed_bytes(latest), paths.free_bytes(self.directory)
        what = f"checkpoint step {step}" if step is not None else "a checkpoint"
        room = f" and {paths.human_bytes(free)} is free there" if free is not None else ""
        more = f"at least {paths.human_bytes(needed - free)}" if free is not None and needed > free else "space"
        kept = (f"Checkpoints up to step {latest} are intact" if latest is not None else
                "There is no earlier checkpoint")
        resume = f"resume from step {latest}" if latest is not None else "start again"
        raise paths.DiskFullError(
            f"Disk full saving {what} in {self.directory}: a checkpoint of this run takes about "
            f"{paths.human_bytes(needed)}{room}. {kept} and the partial save was removed; free {more} there (or "
            f"use a --workdir on a larger disk) and re-run the same command to {resume}.") from error

    def _remove_partial(self, step: int) -> None:
        """Deletes `<step>.orbax-checkpoint-tmp*`, what the failed save left (orbax would at the next start)."""
        try:
            for entry in paths.resolve(self.directory).iterdir():
                if entry.name.startswith(f"{step}.orbax-checkpoint-tmp"):
                    if paths.is_remote(entry):
                        entry.rmtree()
                    else:
                        shutil.rmtree(os.fspath(entry), ignore_errors=True)
        except Exception:  # noqa: BLE001  best effort: a leftover is still never read as a checkpoint
            pass

    def _needed_bytes(self, latest: int | None) -> int:
        """About how much one more checkpoint takes: the newest one's size on disk, or the state's byte size
        plus the newest one's metadata (the early ones compress better), whichever is larger. In a bucket: the
        state's byte size."""
        total = data = 0
        if latest is not None and not paths.is_remote(self.directory):
            for folder, _, files in os.walk(os.path.join(self.directory, str(latest))):
                for name in files:
                    with contextlib.suppress(OSError):
                        size = os.path.getsize(os.path.join(folder, name))
                        total += size
                        data += size if os.path.basename(folder) == "d" else 0  # array chunks; the rest: metadata
        return max(total, self._state_bytes + total - data)


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
