r"""Per-device memory of the train step as the `frames` mesh axis grows, at a fixed clip length.

XLA's own figures (compiled.memory_analysis()) for the sharded train step on a fake CPU mesh: nothing
runs, so the paper-scale model can be measured on a laptop (compiling it takes minutes). The target of
frame parallelism is per-device activation memory (XLA's temp bytes) falling close to 1/N:
efficiency = temp(1) / (N * temp(N)).

  XLA_FLAGS=--xla_force_host_platform_device_count=8 python benchmarks/mesh_memory.py \
      --configs=tiny32,lumiere --frames=1,2,4,8 --json=benchmarks/results/mesh_memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import jax  # noqa: E402

from configs import t2v  # noqa: E402
from lumiere_jax import aot  # noqa: E402


def config_for(name: str, frames_axis: int):
    """tiny32: the CPU config on 32-frame clips (8 would leave one frame per device); lumiere: paper scale."""
    if name == "tiny32":
        c = t2v.get_config("size=tiny")
        c.data.num_frames = 32
        c.batch_size = 2
    elif name == "lumiere":
        c = t2v.get_config("size=lumiere")
        c.batch_size = 1
    else:
        raise SystemExit(f"--configs: unknown {name!r}; use tiny32 and/or lumiere.")
    c.mesh.data, c.mesh.fsdp, c.mesh.frames = 1, 1, frames_axis
    return c


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="tiny32,lumiere")
    parser.add_argument("--frames", default="1,2,4,8")
    parser.add_argument("--json", default=os.path.join(os.path.dirname(__file__), "results", "mesh_memory.json"))
    args = parser.parse_args()
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, fake {jax.device_count()}-device CPU mesh"
    rows = []
    for name in args.configs.split(","):
        base = None
        for n in (int(x) for x in args.frames.split(",")):
            c = config_for(name, n)
            t = time.time()
            lowered, info = aot.lower_train_step(c, jax.devices()[:n])
            compiled = lowered.compile()
            mem = aot.memory_per_device(compiled)
            base = base or mem
            row = {"config": name, "frames_axis": n, "clip": f"{c.batch_size}x{c.data.num_frames}x"
                   f"{c.data.resolution}^2", "params_M": info["num_params"] / 1e6,
                   "temp_MiB": mem["temp"] / 2**20, "argument_MiB": mem["argument"] / 2**20,
                   "total_MiB": mem["total"] / 2**20,
                   "efficiency": base["temp"] / (n * mem["temp"]) if mem["temp"] else float("nan"),
                   "compile_s": time.time() - t}
            rows.append(row)
            print(f"{name:8s} frames={n}  temp {row['temp_MiB']:10.1f} MiB  args {row['argument_MiB']:9.1f} MiB  "
                  f"total {row['total_MiB']:10.1f} MiB  efficiency {row['efficiency']:.2f}  "
                  f"({row['compile_s']:.0f} s to compile)", flush=True)
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"machine": machine, "rows": rows}, f, indent=2)
    print(f"machine: {machine}; wrote {args.json}")


if __name__ == "__main__":
    main()
