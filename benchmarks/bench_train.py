r"""Train-step throughput (clips/s) and FLOP utilization of configs/t2v.py sizes, in one process.

  python benchmarks/bench_train.py                       # smoke, tiny, small (small at batch 2 on CPU)
  python benchmarks/bench_train.py --sizes=tiny --steps=10

FLOPs per step are XLA's cost analysis of the compiled step (forward, backward, optimizer, EMA). Utilization
is FLOPs / step time / peak: on CPU the peak is a large f32 matmul timed in the same run (so the ratio holds
on a shared, noisy machine), on a GPU the vendor's bf16 dense peak (H100 SXM: 989 TFLOP/s). Prints a table
and writes benchmarks/results/train_<platform>.json.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402

import bench_common as bc  # noqa: E402
from configs import t2v  # noqa: E402
from lumiere_jax.diffusion.schedule import schedule_from  # noqa: E402
from lumiere_jax.state import init_model, init_state, make_optimizer  # noqa: E402
from lumiere_jax.train import jit_train_step  # noqa: E402
from lumiere_jax import host_memory  # noqa: E402


def build_step(config, batch_size: int, num_frames: int | None = None):
    """(compiled step, state, batch args, FLOPs per step, compile seconds) for a config at a batch size."""
    if num_frames:
        config.data.num_frames = num_frames
    config.batch_size = batch_size
    graphdef, params = init_model(config, 0)
    tx = make_optimizer(config)
    state = init_state(params, tx)
    batch, null_text, null_mask = bc.fake_batch(config, batch_size)
    step = jit_train_step(graphdef, tx, schedule_from(config), config, donate_argnums=(0,))  # as the trainer
    t0 = time.perf_counter()
    compiled = step.lower(state, batch, null_text, null_mask).compile()
    compile_s = time.perf_counter() - t0
    num_params = sum(x.size for x in jax.tree.leaves(params))
    return compiled, state, (batch, null_text, null_mask), bc.flops_of(compiled), compile_s, num_params


def time_steps(compiled, state, args, steps: int) -> list[float]:
    """Per-step wall seconds of `steps` steps after one warm-up step (the state is threaded through)."""
    holder = {"state": state}

    def run():
        holder["state"], metrics = compiled(holder["state"], *args)
        return metrics

    return bc.time_call(run, steps, warmup=1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="smoke,tiny,small")
    p.add_argument("--steps", type=int, default=5, help="timed steps per size (after one warm-up step)")
    p.add_argument("--cpu_small_batch", type=int, default=2, help="batch of size=small on CPU (config: 32)")
    p.add_argument("--out", default=None, help="results JSON name (default train_<platform>)")
    args = p.parse_args()

    platform = jax.devices()[0].platform
    peak, peak_how = bc.device_peak()
    print(f"machine: {bc.machine()}\npeak: {peak / 1e9:.1f} GFLOP/s ({peak_how})", flush=True)
    rows, records = [], []
    for size in args.sizes.split(","):
        config = t2v.get_config(f"size={size}")
        batch = config.batch_size
        note = ""
        if platform == "cpu" and size == "small":
            batch, note = args.cpu_small_batch, f"batch reduced from {config.batch_size} on CPU"
        compiled, state, step_args, flops, compile_s, num_params = build_step(config, batch)
        times = time_steps(compiled, state, step_args, args.steps)
        step_s = bc.median(times)
        util = flops / step_s / peak
        rec = {"size": size, "params_M": num_params / 1e6, "batch": batch, "frames": config.data.num_frames,
               "resolution": config.data.resolution, "dtype": config.model.dtype, "step_s": step_s,
               "step_s_all": times, "clips_per_s": batch / step_s, "gflops_per_step": flops / 1e9,
               "achieved_gflops_per_s": flops / step_s / 1e9, "utilization": util, "compile_s": compile_s,
               "note": note}
        records.append(rec)
        rows.append([size, f"{num_params / 1e6:.2f}M", batch, f"{config.data.num_frames}x{config.data.resolution}^2",
                     config.model.dtype, f"{step_s * 1e3:.1f}", f"{batch / step_s:.2f}", f"{flops / 1e9:.2f}",
                     f"{flops / step_s / 1e9:.1f}", f"{100 * util:.1f}%", f"{compile_s:.0f}", note])
        print(f"{size}: {step_s * 1e3:.1f} ms/step", flush=True)
    # A second peak measurement after the runs: the shared machine's load drifts; keep the higher.
    if platform == "cpu":
        peak2 = bc.measured_matmul_peak()
        if peak2 > peak:
            for r, rec in zip(rows, records):
                rec["utilization"] = rec["achieved_gflops_per_s"] * 1e9 / peak2
                r[9] = f"{100 * rec['utilization']:.1f}%"
            peak = peak2
    table = bc.print_table(f"Train step on {bc.machine()}; peak {peak / 1e9:.1f} GFLOP/s ({peak_how})",
                           ["size", "params", "batch", "clip", "dtype", "ms/step", "clips/s", "GFLOP/step",
                            "GFLOP/s", "of peak", "compile s", "note"], rows)
    bc.write_json(args.out or f"train_{platform}", {"machine": bc.machine(), "peak_flops": peak,
                                                    "peak_how": peak_how, "results": records, "table": table})


if __name__ == "__main__":
    host_memory.ensure_hugepage_malloc()  # timed runs get the trainer's allocator setting
    main()
