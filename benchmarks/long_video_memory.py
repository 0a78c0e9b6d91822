r"""Memory and time of the base model's long-video sampler as the clip grows: the whole clip against windows.

  python benchmarks/long_video_memory.py                 # configs/t2v.py:size=tiny (32 px, 8-frame window)
  python benchmarks/long_video_memory.py --size=smoke --frames=8,16 --repeats=0

For each clip length, the three ways `TextToVideo.long_video` can sample one prompt: the whole clip in one
model call per step (`--config.sample.long_video=whole`, the default for one prompt), and temporal-MultiDiffusion
windows (the defaults, `sampling.LongVideo`: half-window overlap, triangle weights, a shifted grid, repeated
noise) with all windows in one model call or one window per call (`Windows(batch=1)`, a lax.scan). Compiles the
jitted sampler (`sampling.generate`, 2 DDIM steps, guidance) and reads compiled.memory_analysis(): temporaries
(activations and workspace) and arguments; then times it (random weights: the cost does not depend on their
values) and reports seconds per step. Writes benchmarks/results/long_video_memory_<platform>.json.
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

import bench_common as bc  # noqa: E402
from configs import t2v as t2v_configs  # noqa: E402
from lumiere_jax import host_memory, sampling  # noqa: E402
from lumiere_jax.config_lib import model_config  # noqa: E402
from lumiere_jax.diffusion import multidiffusion  # noqa: E402
from lumiere_jax.diffusion.schedule import schedule_from  # noqa: E402
from lumiere_jax.state import build_model  # noqa: E402

MIB = 2 ** 20
STEPS = 2
# name -> (whole_clip, window_batch)
METHODS = {"whole": (True, None), "windows": (False, None), "windows_wb1": (False, 1)}


def measure(config, graphdef, params, frames: int, method: str, repeats: int) -> dict[str, float]:
    whole, window_batch = METHODS[method]
    window, res = config.data.num_frames, config.data.resolution
    overlap = sampling.long_video_overlap(window)
    null_text = jnp.zeros((1, config.text_max_length, config.model.text_dim), jnp.float32)  # [B=1, L, D]
    null_mask = jnp.ones((1, config.text_max_length), bool)
    text, mask = null_text, null_mask
    if not whole:  # shifted windows take one prompt per frame: [T, B, L, D]
        text, mask = (jnp.broadcast_to(a[None], (frames,) + a.shape) for a in (null_text, null_mask))
    layout = sampling.LongVideo()  # the long-video defaults of TextToVideo.long_video and --mode=sample
    kw = dict(shape=(frames, res, res, 3), schedule=schedule_from(config),
              options=sampling.SamplerOptions(steps=STEPS, guidance=float(config.sample.guidance), sampler="ddim"),
              windows=sampling.Windows(window=window, overlap=overlap, weights=layout.weights, shift=layout.shift,
                                       noise=layout.noise, batch=window_batch, whole_clip=whole))
    prompts = sampling.Prompts(text, mask, null_text, null_mask)
    args = (graphdef, params, prompts, jax.random.key(0))
    t0 = time.perf_counter()
    compiled = sampling.generate.lower(*args, **kw).compile()
    row = {"frames": frames, "method": method, "compile_s": time.perf_counter() - t0,
           "windows": 1 if whole else len(multidiffusion.window_starts(frames, window, overlap))}
    m = compiled.memory_analysis()
    for k in ("argument", "output", "temp"):
        row[f"{k}_mib"] = getattr(m, k + "_size_in_bytes") / MIB
    if repeats:
        dynamic = (params, prompts, jax.random.key(0))
        row["step_s"] = bc.median(bc.time_call(lambda: compiled(*dynamic), repeats)) / STEPS
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="tiny", help="configs/t2v.py size")
    parser.add_argument("--frames", default="16,32,64,128", help="clip lengths (multiples of the U-Net's)")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"of {', '.join(METHODS)}")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs of the sampler (0: memory only)")
    args = parser.parse_args()

    config = t2v_configs.get_config(f"size={args.size}")
    methods = args.methods.split(",")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        parser.error(f"--methods: unknown {unknown}; choose from {', '.join(METHODS)}.")
    multiple = model_config(config).frame_multiple
    frames_list = [int(x) for x in args.frames.split(",")]
    bad = [f for f in frames_list if f % multiple or f < config.data.num_frames]
    if bad:
        parser.error(f"--frames: {bad} are not multiples of {multiple} of at least the {config.data.num_frames}-frame "
                     f"window.")
    graphdef, params = build_model(model_config(config), 0)
    machine = bc.machine()
    print(f"Long-video sampler memory, configs/t2v.py:size={args.size} ({config.data.resolution} px, window "
          f"{config.data.num_frames}, guidance {config.sample.guidance}, batch 1, {STEPS} DDIM steps) on {machine}",
          flush=True)
    print(f"{'frames':>6} {'method':>12} {'windows':>7} | {'temp MiB':>9} {'args MiB':>9} | {'s/step':>7} "
          f"{'compile s':>9}", flush=True)
    rows = []
    for method in methods:
        for frames in frames_list:
            r = measure(config, graphdef, params, frames, method, args.repeats)
            rows.append(r)
            print(f"{frames:>6} {method:>12} {r['windows']:>7} | {r['temp_mib']:>9.1f} {r['argument_mib']:>9.1f} | "
                  f"{r.get('step_s', float('nan')):>7.3f} {r['compile_s']:>9.1f}", flush=True)
    os.makedirs(bc.RESULTS_DIR, exist_ok=True)
    path = os.path.join(bc.RESULTS_DIR, f"long_video_memory_{jax.devices()[0].platform}.json")
    with open(path, "w") as f:
        json.dump({"machine": machine, "size": args.size, "window": config.data.num_frames,
                   "resolution": config.data.resolution, "steps": STEPS, "rows": rows}, f, indent=2)
    print(f"Wrote {path}")


if __name__ == "__main__":
    host_memory.ensure_hugepage_malloc()  # timed runs get the trainer's allocator setting
    main()
