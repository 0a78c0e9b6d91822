"""The train step's memory, stated before it runs: XLA's plan for the compiled step against what the devices have.

A config whose step would not fit is refused (one ValueError line) with XLA's estimate and the config keys that
would shrink it, right after the step is compiled and before the first step runs, instead of an out-of-memory
crash once the data is built and the first steps ran.

The estimate is `compiled.memory_analysis()` of the step the trainer runs, lowered with its shardings: per device,
arguments + outputs - aliased (the donated state is updated in place) + temporaries (activations kept for the
backward pass, gradients, workspace). The limit is config.memory_limit_gb when set; else the device's allocator
limit (`memory_stats()["bytes_limit"]` on GPU/TPU); else, on CPU, the host's available memory (MemAvailable, or
a smaller cgroup limit), shared by the process's devices, plus what the already-resident state holds. Compiling
here costs nothing extra: jax caches the executable and the trainer's first call reuses it
(tests/test_memory_check.py counts the backend compiles).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from typing import Any, Sequence

import jax
import ml_collections

from lumiere_jax import sharding

log = logging.getLogger("lumiere_jax")

GIB = 1024 ** 3
MEMINFO = "/proc/meminfo"
CGROUP_FILES = (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),  # cgroup v2
                ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"))


@dataclasses.dataclass(frozen=True)
class StepMemory:
    """XLA's per-device memory plan of a compiled program, in bytes."""

    argument: int
    output: int
    alias: int
    temp: int

    @property
    def peak(self) -> int:
        """Arguments + outputs - aliased (donated inputs updated in place) + temporaries."""
        return self.argument + self.output - self.alias + self.temp

    @classmethod
    def of(cls, compiled: Any) -> "StepMemory":
        m = compiled.memory_analysis()
        return cls(*(int(getattr(m, f"{k}_size_in_bytes", 0) or 0) for k in ("argument", "output", "alias", "temp")))

    def describe(self) -> str:
        return (f"{size(self.peak)} per device by XLA's plan (arguments {size(self.argument)} + outputs "
                f"{size(self.output)} - donated {size(self.alias)} + temporaries {size(self.temp)})")


@dataclasses.dataclass(frozen=True)
class Limit:
    """The memory a step may use on each device, and what that figure is (for the messages)."""

    bytes_per_device: int
    what: str  # reads after "more than": "memory_limit_gb=0.5 (512.0 MiB)"
    configured: bool = False  # set by config.memory_limit_gb


def size(n: float) -> str:
    """Bytes as GiB (from 1 GiB) or MiB."""
    return f"{n / GIB:.2f} GiB" if abs(n) >= GIB else f"{n / 2 ** 20:.1f} MiB"


def host_available_bytes() -> int | None:
    """Memory the host can still give this process: MemAvailable, or a smaller cgroup limit's headroom."""
    available = None
    try:
        with open(MEMINFO) as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    if available is None and hasattr(os, "sysconf"):
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError):
            pass
    for limit_file, usage_file in CGROUP_FILES:
        try:
            with open(limit_file) as f:
                limit = f.read().strip()
            with open(usage_file) as f:
                usage = int(f.read().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 2 ** 60:  # "max" or a huge number: no limit
            headroom = max(int(limit) - usage, 0)
            available = headroom if available is None else min(available, headroom)
        break
    return available


def device_limit(devices: Sequence[jax.Device], limit_gb: float = 0.0, resident_bytes: int = 0) -> Limit | None:
    """The per-device limit for `devices` (this process's): limit_gb when > 0; else the allocator's bytes_limit
    less what other arrays hold; else, on CPU, the host's available memory over the devices. `resident_bytes`:
    this process's share of the step's arguments already allocated (the state), which the plan counts and the
    device or host already holds. None where nothing is known (no check then)."""
    if limit_gb > 0:
        return Limit(int(limit_gb * GIB), f"memory_limit_gb={limit_gb:g} ({size(limit_gb * GIB)})", configured=True)
    stats = []
    for d in devices:
        try:
            stats.append(d.memory_stats() or {})
        except Exception:  # noqa: BLE001  (backends without memory statistics raise or return None)
            stats.append({})
    if stats and all(s.get("bytes_limit") for s in stats):
        # What the allocator can still give, plus this step's own arguments, which it holds already.
        capacity = min(int(s["bytes_limit"]) for s in stats)
        others = max(max(int(s.get("bytes_in_use", 0)) for s in stats) - resident_bytes // len(devices), 0)
        held = f", {size(others)} of it held by other arrays" if others >= 2 ** 20 else ""
        return Limit(capacity - others, f"{devices[0].device_kind}'s {size(capacity)} (its allocator's limit{held})")
    if devices and devices[0].platform == "cpu":
        available = host_available_bytes()
        if available is not None:
            per_device = (available + resident_bytes) // len(devices)
            what = f"the host's {size(available)} of available memory"
            if len(devices) > 1:
                what = f"{size(per_device)} per device ({what} over its {len(devices)} devices)"
            return Limit(per_device, what)
    return None


def knobs(config: ml_collections.ConfigDict, mesh_shape: dict[str, int], num_devices: int, memory: StepMemory,
          limit: Limit) -> list[str]:
    """The config changes that would shrink the step, with a batch size estimated to fit where one does."""
    out = []
    ways = mesh_shape["data"] * mesh_shape["fsdp"]
    per_device = max(config.batch_size // ways, 1)
    if per_device > 1:
        # Temporaries grow about linearly with the clips per device; the rest (state, code) does not.
        per_clip = memory.temp / per_device
        fit = math.floor((limit.bytes_per_device - (memory.peak - memory.temp)) / per_clip) if per_clip else 0
        hint = f"; about batch_size={fit * ways} fits" if 1 <= fit < per_device else ""
        out.append(f"a smaller batch_size (now {config.batch_size}: {per_device} clips per device{hint})")
    if config.model.remat == "none":
        out.append("model.remat='block' (recomputes activations in the backward pass)")
    frames, fsdp = mesh_shape["frames"], mesh_shape["fsdp"]
    if num_devices % (2 * frames * fsdp) == 0 and config.data.num_frames % (2 * frames) == 0:
        out.append(f"mesh.frames={2 * frames} (each clip's frames over more devices)")
    if num_devices % (2 * frames * fsdp) == 0:
        out.append(f"mesh.fsdp={2 * fsdp} (parameters and optimizer state over more devices)")
    if not out:
        out.append("a smaller model (model.channels, model.num_res_blocks) or devices with more memory")
    return out


def check_fits(memory: StepMemory, limit: Limit | None, suggestions: Sequence[str]) -> None:
    """Raises ValueError (one line: the estimate, the limit, the knobs) when the step needs more than the limit."""
    if limit is None or memory.peak <= limit.bytes_per_device:
        return
    change = "" if limit.configured else "; --config.memory_limit_gb sets the limit"
    raise ValueError(f"The train step needs {memory.describe()}, more than {limit.what}: use "
                     f"{'; or '.join(suggestions)}{change}.")


def _resident_bytes(args: Any) -> int:
    """Bytes this process already holds for the concrete arrays among `args` (the restored or initialized state)."""
    total = 0
    for leaf in jax.tree.leaves(args):
        if isinstance(leaf, jax.Array):
            shard = math.prod(leaf.sharding.shard_shape(leaf.shape)) * leaf.dtype.itemsize
            total += shard * len(leaf.sharding.addressable_devices)
    return total


def check_train_step(jitted: Any, args: Sequence[Any], config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                     rules: sharding.Rules) -> StepMemory:
    """Compiles `jitted` for `args` (arrays or ShapeDtypeStructs with the shardings the step will get) as the
    trainer will call it, under its mesh, and refuses the config when the plan exceeds the limit (module doc)."""
    with sharding.use_mesh(mesh, rules):
        compiled = jitted.lower(*args).compile()
    memory = StepMemory.of(compiled)
    local = [d for d in mesh.devices.flat if d.process_index == jax.process_index()]
    limit = device_limit(local, config.memory_limit_gb, _resident_bytes(args))
    check_fits(memory, limit, knobs(config, dict(mesh.shape), mesh.devices.size, memory, limit) if limit else ())
    log.info("Train step: %s; the limit: %s.", memory.describe(), limit.what if limit else "unknown, not checked")
    return memory
