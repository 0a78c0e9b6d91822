"""Trained weights that ship with the package, so a fresh install samples without training first.

A shipped model is a folder `lumiere_jax/weights/<name>/` holding

  ema.safetensors  the EMA weights, float32, each named by its path in the model ("down.0.res.0.conv1.conv.kernel")
  config.json      the run's config.json as the trainer wrote it: what builds the model and its noise schedule
  provenance.json  the commit and command that trained it, its step, the training loop's wall time, the machine
                   and the date (`PROVENANCE_FIELDS`)
  eval.json        the run's `--mode=eval` output at that step

written by `python -m tools.ship_weights` from a trained run. `load` returns the same `runs.Run` as `runs.load`, so
the samplers take a shipped model and a run alike. A model whose code has changed since the export no longer fits
the file: loading (and `check`, which the tests run over every shipped folder) names the first array that does not
fit and says to re-export.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from typing import Any, Mapping

import jax
import ml_collections
import numpy as np
import safetensors.numpy
from flax import nnx

from lumiere_jax import config_lib, runs
from lumiere_jax.state import abstract_graphdef_and_state

# Where shipped models live; tests point it at a folder of their own.
WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")
# The shipped model of each (config.task, config.size): what sampling and evaluation without --workdir use.
DEFAULTS = {("t2v", "tiny"): "t2v_tiny"}
DEFAULT = DEFAULTS[("t2v", "tiny")]
# Distilled students of a shipped model (configs/distill.py), by the step count each stands in at: sampling or
# evaluating without --workdir at that count (config.sample.steps, config.eval.steps) uses the student, one model
# call a step, instead of its teacher. At 8 steps that is the guidance-conditioned student (it samples at any count;
# the tiny teacher's own 8-step DDIM keeps its accuracy, docs/training.md), at 4 a halving round learnt from it at 8.
STUDENTS = {"t2v_tiny": {8: "t2v_tiny_guided", 4: "t2v_tiny_4step"}}
# A package is downloaded by every install: the weights of a shipped model stay under 10 MB.
MAX_BYTES = 10_000_000
WEIGHTS, CONFIG, PROVENANCE, EVAL = "ema.safetensors", "config.json", "provenance.json", "eval.json"
PROVENANCE_FIELDS = ("commit", "command", "step", "train_wall_s", "machine", "date")
# What the weights learned, taken from the shipped config.json over the caller's config; the caller's config keeps
# how to sample and evaluate (config.sample, config.eval) and where its data lives.
TRAINED_KEYS = ("data.num_frames", "data.resolution", "text_encoder", "text_max_length")
# The sampling settings that --mode=eval records in eval.json, which a shipped model samples at by default.
MEASURED_SAMPLING = ("steps", "guidance", "sampler", "thresholding", "guidance_rescale")
PARTIAL = ".partial"  # an export being written; renamed to the model's name once whole
_REEXPORT = "re-export it with python -m tools.ship_weights --workdir=RUN --name={name}"


def default_name(config: ml_collections.ConfigDict, steps: int | None = None) -> str | None:
    """The shipped model for `config` (configs/t2v.py at size tiny: "t2v_tiny"), or None where none ships; with
    `steps`, its distilled student for that step count where one ships (STUDENTS)."""
    name = DEFAULTS.get((config.get("task"), config.get("size")))
    student = STUDENTS.get(name, {}).get(steps)
    return student if student in names() else name


def names(root: str | None = None) -> list[str]:
    """The shipped models present, by folder name."""
    root = root or WEIGHTS_DIR
    if not os.path.isdir(root):
        return []
    return sorted(n for n in os.listdir(root) if os.path.isdir(os.path.join(root, n))
                  and not n.startswith((".", "_")) and not n.endswith(PARTIAL))


def folder(name: str, root: str | None = None) -> str:
    """The folder of shipped model `name`; a one-line error where it is missing or incomplete."""
    root = root or WEIGHTS_DIR
    where = os.path.join(root, name)
    if not os.path.isdir(where):
        raise ValueError(f"No shipped model {name}: {where} does not exist (this install ships no trained weights); "
                         f"give a trained run with --workdir=DIR.")
    for file in (WEIGHTS, CONFIG, PROVENANCE):
        if not os.path.isfile(os.path.join(where, file)):
            raise ValueError(f"The shipped model {name} lacks {file} in {where}: {_REEXPORT.format(name=name)}.")
    return where


def sampling_config(name: str, config: ml_collections.ConfigDict | None = None, *,
                    root: str | None = None) -> ml_collections.ConfigDict:
    """The config that samples shipped model `name`: its own config.json (keys added since at their defaults) with the
    sampling settings its eval.json was measured at (`with_measured_sampling`) when `config` is None; else `config`
    with the model section and `TRAINED_KEYS` of the shipped one. Reads only JSON."""
    where = folder(name, root)
    stored = config_lib.read_run_config(where)
    if not stored:
        raise ValueError(f"The shipped model {name}'s {CONFIG} is not a readable JSON object: "
                         f"{_REEXPORT.format(name=name)}.")
    saved = config_lib.with_defaults(stored)
    if config is None:
        return with_measured_sampling(saved, name, root)
    merged = runs.with_run_model(ml_collections.ConfigDict(config.to_dict()), where)  # never the caller's config
    for key in TRAINED_KEYS:
        section, _, leaf = key.rpartition(".")
        (merged[section] if section else merged)[leaf] = (saved[section] if section else saved)[leaf]
    return merged


def with_measured_sampling(config: ml_collections.ConfigDict, name: str,
                           root: str | None = None) -> ml_collections.ConfigDict:
    """`config` with config.sample's `MEASURED_SAMPLING` keys as the shipped model's eval.json records them: the
    settings its published figures were measured at, where the config.json the trainer wrote keeps the defaults of
    its training day. Without an eval.json, `config` as it is."""
    if not os.path.isfile(os.path.join(folder(name, root), EVAL)):
        return config
    measured = read_json(name, EVAL, root)
    for key in MEASURED_SAMPLING:
        if key in measured:
            config.sample[key] = type(config.sample[key])(measured[key])
    return config


def array_name(path: tuple[Any, ...]) -> str:
    """A parameter's name in the file: its path in the model joined by dots ("down.0.res.0.conv1.conv.kernel")."""
    return ".".join(str(getattr(k, "key", k)) for k in path)


def flatten(params: nnx.State) -> dict[str, np.ndarray]:
    """The weights as the file holds them: {array_name: float32 array}."""
    flat, _ = jax.tree_util.tree_flatten_with_path(params.to_pure_dict())
    return {array_name(path): np.ascontiguousarray(np.asarray(leaf, np.float32)) for path, leaf in flat}


def _check_arrays(found: Mapping[str, tuple[int, ...]], expected: Mapping[str, tuple[int, ...]], name: str) -> None:
    """Raises one line naming the first array whose name or shape differs from the model's."""
    fix = _REEXPORT.format(name=name)
    for key in sorted(expected):
        if key not in found:
            raise ValueError(f"The shipped model {name} has no array {key}, which the model its config.json builds "
                             f"needs: {fix}.")
        if tuple(found[key]) != tuple(expected[key]):
            raise ValueError(f"The shipped model {name}'s array {key} is {tuple(found[key])}, but the model its "
                             f"config.json builds has {tuple(expected[key])}: {fix}.")
    for key in sorted(found):
        if key not in expected:
            raise ValueError(f"The shipped model {name} holds an array {key}, which the model its config.json "
                             f"builds does not have: {fix}.")


def _read_arrays(where: str, name: str) -> dict[str, np.ndarray]:
    try:
        return safetensors.numpy.load_file(os.path.join(where, WEIGHTS))
    except Exception as e:  # safetensors raises its own error types for damaged files
        raise ValueError(f"The shipped model {name}'s {WEIGHTS} cannot be read ({type(e).__name__}): "
                         f"{_REEXPORT.format(name=name)}.") from None


def _abstract_params(config: ml_collections.ConfigDict, where: str) -> tuple[nnx.GraphDef, nnx.State]:
    """The graphdef and the shape/dtype tree of the EMA weights that `config` builds; nothing allocated."""
    graphdef, abstract = abstract_graphdef_and_state(config, where)
    return graphdef, abstract.ema


def _shapes(params: nnx.State) -> dict[str, tuple[int, ...]]:
    flat, _ = jax.tree_util.tree_flatten_with_path(params.to_pure_dict())
    return {array_name(path): tuple(leaf.shape) for path, leaf in flat}


def check(name: str, root: str | None = None) -> None:
    """Checks that shipped model `name`'s arrays match, by name and shape, the model its config.json builds."""
    where = folder(name, root)
    _, abstract = _abstract_params(sampling_config(name, root=root), where)
    _check_arrays({k: v.shape for k, v in _read_arrays(where, name).items()}, _shapes(abstract), name)


def read_json(name: str, file: str, root: str | None = None) -> dict[str, Any]:
    """One of the shipped model's JSON files (provenance.json, eval.json) as a dict; one line where it is unreadable."""
    path = os.path.join(root or WEIGHTS_DIR, name, file)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"The shipped model {name}'s {file} cannot be read ({type(e).__name__}): "
                         f"{_REEXPORT.format(name=name)}.") from None
    if not isinstance(data, dict):
        raise ValueError(f"The shipped model {name}'s {file} is not a JSON object: {_REEXPORT.format(name=name)}.")
    return data


def is_folder(path: str | None) -> bool:
    """Whether `path` is a shipped model's folder (it holds ema.safetensors and config.json), which tools that take
    a trained run (distillation's init_from) read as one."""
    return bool(path) and all(os.path.isfile(os.path.join(str(path), f)) for f in (WEIGHTS, CONFIG))


def load_folder(path: str, config: ml_collections.ConfigDict | None = None) -> runs.Run:
    """`load` of the shipped model in folder `path` (say lumiere_jax/weights/t2v_tiny, or a copy of it elsewhere)."""
    path = os.path.abspath(path)
    return load(os.path.basename(path), config, root=os.path.dirname(path))


def step_of(path: str) -> int:
    """The training step of the shipped model in folder `path` (its provenance.json)."""
    path = os.path.abspath(path)
    step = read_json(os.path.basename(path), PROVENANCE, os.path.dirname(path)).get("step")
    if not isinstance(step, int):
        raise ValueError(f"The shipped model in {path} has no integer step in its {PROVENANCE}: "
                         f"{_REEXPORT.format(name=os.path.basename(path))}.")
    return step


def load(name: str = DEFAULT, config: ml_collections.ConfigDict | None = None, *,
         root: str | None = None) -> runs.Run:
    """Shipped model `name` as `runs.load` returns a run: EMA weights on the first device, its graph, its noise
    schedule, whether it trained on stories, and its step.

    config: the caller's config, whose model section and `TRAINED_KEYS` are replaced by the shipped ones
    (`sampling_config`); None samples with the shipped config.json alone.
    """
    where = folder(name, root)
    config = sampling_config(name, config, root=root)
    graphdef, abstract = _abstract_params(config, where)
    arrays = _read_arrays(where, name)
    _check_arrays({k: v.shape for k, v in arrays.items()}, _shapes(abstract), name)
    flat, treedef = jax.tree_util.tree_flatten_with_path(abstract.to_pure_dict())
    device = jax.devices()[0]
    leaves = [jax.device_put(arrays[array_name(path)].astype(leaf.dtype), device) for path, leaf in flat]
    abstract.replace_by_pure_dict(jax.tree_util.tree_unflatten(treedef, leaves))
    return runs.Run(workdir=where, config=config, graphdef=graphdef, params=abstract, step=step_of(where),
                    schedule=runs.schedule_of(config, where), story_trained=runs.trained_on_stories(where))


def save(name: str, params: nnx.State, *, config_json: str, provenance: Mapping[str, Any], eval_json: str | None,
         root: str | None = None) -> str:
    """Writes shipped model `name` (replacing one of that name) and returns its folder. Refuses weights over
    MAX_BYTES and provenance without PROVENANCE_FIELDS, before anything is written."""
    if not re.fullmatch(r"[a-z0-9_]+", name):
        raise ValueError(f"--name={name!r}: a shipped model's name is its folder's, in lowercase letters, digits and "
                         f"underscores, e.g. t2v_tiny.")
    missing = [k for k in PROVENANCE_FIELDS if k not in provenance]
    if missing:
        raise ValueError(f"provenance for {name} lacks {missing}: give every one of {PROVENANCE_FIELDS}.")
    data = safetensors.numpy.save(flatten(params))
    if len(data) > MAX_BYTES:
        raise ValueError(f"The EMA weights of {name} take {len(data) / 1e6:.1f} MB as safetensors, over the "
                         f"{MAX_BYTES / 1e6:g} MB a shipped model may take: ship a smaller model (configs/t2v.py at "
                         f"size tiny takes about 6 MB).")
    root = root or WEIGHTS_DIR
    where = os.path.join(root, name)
    partial = where + PARTIAL  # written whole first, so a failed export leaves the shipped model as it was
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    files = {WEIGHTS: data, CONFIG: config_json, PROVENANCE: json.dumps(dict(provenance), indent=2) + "\n"}
    if eval_json is not None:
        files[EVAL] = eval_json
    for file, content in files.items():
        with open(os.path.join(partial, file), "wb" if isinstance(content, bytes) else "w") as f:
            f.write(content)
    shutil.rmtree(where, ignore_errors=True)
    os.rename(partial, where)
    return where
