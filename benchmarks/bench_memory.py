r"""Per-device memory XLA plans for the train step as the clip grows (16, 32, 64, 80 frames).

  python benchmarks/bench_memory.py                          # tiny and small, batch 1
  python benchmarks/bench_memory.py --sizes=small --frames=16,80 --batch=4

Compiles (never runs) the train step and reads compiled.memory_analysis(): arguments (state and batch),
outputs, the aliased part (the donated state is updated in place), and temporaries (activations kept for
the backward pass, gradients, workspace). Peak per device ~ arguments + outputs - aliased + temporaries.
Writes benchmarks/results/memory_<platform>.json.
"""

from __future__ import annotations

import os
import sys

# The memory plan is fixed by XLA's HLO passes and buffer assignment, before machine code is generated:
# skipping LLVM's optimizations cuts the compile severalfold without changing these figures.
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true")

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402

import jax  # noqa: E402

import bench_common as bc  # noqa: E402
from configs import t2v  # noqa: E402
from lumiere_jax.diffusion.schedule import schedule_from  # noqa: E402
from lumiere_jax.state import abstract_graphdef_and_state, make_optimizer  # noqa: E402
from lumiere_jax.train import jit_train_step  # noqa: E402

MIB = 2 ** 20


def memory_of(config, frames: int, batch: int) -> dict[str, float]:
    config.data.num_frames = frames
    config.batch_size = batch
    graphdef, abstract = abstract_graphdef_and_state(config)
    data, null_text, null_mask = jax.eval_shape(lambda: bc.fake_batch(config, batch))
    # Compiled as the trainer compiles it (its compiler options: on CPU in float32 they plan more temporaries).
    step = jit_train_step(graphdef, make_optimizer(config), schedule_from(config), config, donate_argnums=(0,))
    compiled = step.lower(abstract, data, null_text, null_mask).compile()
    m = compiled.memory_analysis()
    out = {k: getattr(m, k + "_size_in_bytes") / MIB for k in ("argument", "output", "alias", "temp")}
    out["peak"] = out["argument"] + out["output"] - out["alias"] + out["temp"]
    out["gflops"] = bc.flops_of(compiled) / 1e9
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="tiny,small")
    p.add_argument("--frames", default="16,32,64,80")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    platform = jax.devices()[0].platform
    print(f"machine: {bc.machine()}", flush=True)
    rows, records = [], []
    for size in args.sizes.split(","):
        base = None
        for frames in map(int, args.frames.split(",")):
            config = t2v.get_config(f"size={size}")
            m = memory_of(config, frames, args.batch)
            base = base or m["peak"]
            records.append({"size": size, "frames": frames, "batch": args.batch,
                            "resolution": config.data.resolution, "dtype": config.model.dtype, **m})
            rows.append([size, args.batch, f"{frames}x{config.data.resolution}^2", f"{m['argument']:.1f}",
                         f"{m['output']:.1f}", f"{m['alias']:.1f}", f"{m['temp']:.1f}", f"{m['peak']:.1f}",
                         f"{m['peak'] / base:.2f}x", f"{m['gflops']:.1f}"])
            print(f"{size} {frames} frames: {m['peak']:.1f} MiB", flush=True)
    table = bc.print_table(f"Train-step memory per device (XLA memory_analysis) on {bc.machine()}",
                           ["size", "batch", "clip", "args MiB", "out MiB", "aliased MiB", "temp MiB",
                            "peak MiB", "vs first", "GFLOP/step"], rows)
    bc.write_json(args.out or f"memory_{platform}", {"machine": bc.machine(), "results": records, "table": table})


if __name__ == "__main__":
    main()
