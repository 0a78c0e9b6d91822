r"""Sampling speed: seconds per denoising step and per clip, with and without classifier-free guidance.

  python benchmarks/bench_sample.py                     # tiny (batch 8) and small (batch 2 on CPU)
  python benchmarks/bench_sample.py --sizes=tiny --steps=10

Runs lumiere_jax.sampling.generate (the whole DDIM loop is one XLA program) with random weights: speed
does not depend on them. Guidance 3.0 runs the conditional and unconditional halves as one doubled batch;
guidance 1.0 skips the unconditional half. s/clip is measured at --steps and scaled to 50 steps (the
default config.sample.steps of --mode=sample) by the measured s/step. Writes benchmarks/results/sample_<platform>.json.
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
from lumiere_jax import sampling  # noqa: E402
from lumiere_jax.diffusion.schedule import schedule_from  # noqa: E402
from lumiere_jax.state import init_model  # noqa: E402
from lumiere_jax import host_memory  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="tiny,small")
    p.add_argument("--steps", type=int, default=10, help="denoising steps per timed call")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--cpu_small_batch", type=int, default=2)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    platform = jax.devices()[0].platform
    print(f"machine: {bc.machine()}", flush=True)
    rows, records = [], []
    for size in args.sizes.split(","):
        config = t2v.get_config(f"size={size}")
        batch = config.eval.batch_size if size == "tiny" else config.batch_size
        if platform == "cpu" and size == "small":
            batch = args.cpu_small_batch
        if size == "tiny":
            batch = 8
        graphdef, params = init_model(config, 0)
        data, null_text, null_mask = bc.fake_batch(config, batch)
        shape = (config.data.num_frames, config.data.resolution, config.data.resolution, config.model.out_channels)
        for guidance in (1.0, 3.0):
            def run():
                return sampling.generate(graphdef, params,
                                         sampling.Prompts(data["text"], data["text_mask"], null_text, null_mask),
                                         jax.random.key(0), shape=shape, schedule=schedule_from(config),
                                         options=sampling.SamplerOptions(steps=args.steps, guidance=guidance,
                                                                         sampler="ddim"))

            t0 = time.perf_counter()
            jax.block_until_ready(run())
            first = time.perf_counter() - t0
            times = bc.time_call(run, args.repeats, warmup=0)
            total = bc.median(times)
            per_step = total / args.steps
            rec = {"size": size, "batch": batch, "frames": shape[0], "resolution": shape[1],
                   "guidance": guidance, "steps": args.steps, "seconds": total, "seconds_all": times,
                   "s_per_step": per_step, "s_per_step_per_clip": per_step / batch,
                   "s_per_clip_50_steps": 50 * per_step / batch, "compile_and_first_s": first}
            records.append(rec)
            rows.append([size, batch, f"{shape[0]}x{shape[1]}^2", guidance, f"{per_step:.3f}",
                         f"{per_step / batch * 1e3:.1f}", f"{50 * per_step / batch:.2f}", f"{first - total:.0f}"])
            print(f"{size} guidance={guidance}: {per_step:.3f} s/step", flush=True)
    table = bc.print_table(f"Sampling (DDIM) on {bc.machine()}",
                           ["size", "batch", "clip", "guidance", "s/step (batch)", "ms/step/clip",
                            "s/clip at 50 steps", "compile s"], rows)
    bc.write_json(args.out or f"sample_{platform}", {"machine": bc.machine(), "results": records, "table": table})


if __name__ == "__main__":
    host_memory.ensure_hugepage_malloc()  # timed runs get the trainer's allocator setting
    main()
