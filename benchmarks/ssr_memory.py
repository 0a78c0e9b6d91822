r"""Memory and time of the windowed SSR sampler as the clip grows (16, 32, 64, 128 frames, fixed window).

  python benchmarks/ssr_memory.py                        # configs/ssr.py:size=tiny (64 px, window 8)
  python benchmarks/ssr_memory.py --size=smoke --frames=16,32 --window_batch=0,1 --repeats=1

For each clip length and each `ssr.window_batch` (0: all windows in one model call; k: a lax.scan over
groups of k windows), compiles one MultiDiffusion denoising step and the whole jitted sampler and reads
compiled.memory_analysis(): arguments (weights, clip, conditioning), outputs, temporaries (activations
and workspace). Then times the step (random weights; the cost does not depend on their values).
Writes benchmarks/results/ssr_memory_<platform>.json.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

import bench_common as bc  # noqa: E402
from configs import ssr as ssr_configs  # noqa: E402
from lumiere_jax import sampling  # noqa: E402
from lumiere_jax.config_lib import model_config  # noqa: E402
from lumiere_jax.diffusion import multidiffusion  # noqa: E402
from lumiere_jax.diffusion.schedule import schedule_from  # noqa: E402
from lumiere_jax.state import build_model  # noqa: E402
from lumiere_jax import host_memory  # noqa: E402

MIB = 2 ** 20


def measure(config, graphdef, params, frames: int, window_batch: int, repeats: int) -> dict[str, float]:
    s, res = config.ssr, config.data.resolution
    wb = window_batch or None
    f32 = jnp.float32
    z = jnp.zeros((1, frames, res, res, 3), f32)  # [B, T, H, W, 3]
    cond = jnp.zeros_like(z)
    level = jnp.full((1,), s.sample_aug_level, f32)
    text = jnp.zeros((1, config.text_max_length, config.model.text_dim), f32)
    mask = jnp.ones((1, config.text_max_length), bool)
    guidance = float(config.sample.guidance)

    @jax.jit
    def step(params, z, t, cond, level, text, mask):
        model = nnx.merge(graphdef, params)
        denoise = multidiffusion.multidiffusion_text(
            model, text, mask, text, mask, guidance, num_frames=frames, window=s.window, overlap=s.overlap,
            window_batch=wb, frame_inputs={"cond": cond}, batch_inputs={"cond_level": level})
        return denoise(z, t)

    args = (params, z, jnp.full((1,), 0.5, f32), cond, level, text, mask)
    t0 = time.perf_counter()
    compiled = step.lower(*args).compile()
    compile_s = time.perf_counter() - t0
    m = compiled.memory_analysis()
    row = {"frames": frames, "window_batch": window_batch, "windows": len(multidiffusion.window_starts(
        frames, s.window, s.overlap)), "compile_s": compile_s}
    for k in ("argument", "output", "temp"):
        row[f"step_{k}_mib"] = getattr(m, k + "_size_in_bytes") / MIB
    sampler = sampling.generate.lower(
        graphdef, params, sampling.Prompts(text, mask, text, mask), jax.random.key(0), shape=(frames, res, res, 3),
        schedule=schedule_from(config), options=sampling.SamplerOptions(steps=2, guidance=guidance, sampler="ddim"),
        windows=sampling.Windows(window=s.window, overlap=s.overlap, batch=wb),
        condition=sampling.Condition(cond, level)).compile().memory_analysis()
    for k in ("argument", "output", "temp"):
        row[f"sampler_{k}_mib"] = getattr(sampler, k + "_size_in_bytes") / MIB
    row["clip_mib"] = z.size * 4 / MIB
    if repeats:
        times = bc.time_call(lambda: compiled(*args), repeats)
        row["step_s"] = bc.median(times)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="tiny", help="configs/ssr.py size")
    parser.add_argument("--frames", default="16,32,64,128")
    parser.add_argument("--window_batch", default="0,1", help="0 = all windows in one call")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs of the step (0: memory only)")
    args = parser.parse_args()

    config = ssr_configs.get_config(f"size={args.size}")
    graphdef, params = build_model(model_config(config), 0)
    machine = bc.machine()
    print(f"SSR sampler memory, configs/ssr.py:size={args.size} ({config.ssr.low_resolution} -> "
          f"{config.data.resolution} px, window {config.ssr.window}, overlap {config.ssr.overlap}, guidance "
          f"{config.sample.guidance}, batch 1) on {machine}", flush=True)
    header = (f"{'frames':>6} {'windows':>7} {'win/call':>8} | {'step temp':>9} {'step args':>9} {'step out':>8} | "
              f"{'sampler temp':>12} {'sampler args':>12} | {'step s':>7}  (MiB)")
    print(header, flush=True)
    rows = []
    for wb in (int(x) for x in args.window_batch.split(",")):
        for frames in (int(x) for x in args.frames.split(",")):
            r = measure(config, graphdef, params, frames, wb, args.repeats)
            rows.append(r)
            print(f"{r['frames']:>6} {r['windows']:>7} {wb or 'all':>8} | {r['step_temp_mib']:>9.1f} "
                  f"{r['step_argument_mib']:>9.1f} {r['step_output_mib']:>8.1f} | {r['sampler_temp_mib']:>12.1f} "
                  f"{r['sampler_argument_mib']:>12.1f} | {r.get('step_s', float('nan')):>7.2f}", flush=True)
    os.makedirs(bc.RESULTS_DIR, exist_ok=True)
    path = os.path.join(bc.RESULTS_DIR, f"ssr_memory_{jax.devices()[0].platform}.json")
    with open(path, "w") as f:
        json.dump({"machine": machine, "size": args.size, "window": config.ssr.window,
                   "overlap": config.ssr.overlap, "resolution": config.data.resolution, "rows": rows}, f, indent=2)
    print(f"Wrote {path}")


if __name__ == "__main__":
    host_memory.ensure_hugepage_malloc()  # timed runs get the trainer's allocator setting
    main()
