r"""What a trained SSR model adds over bilinear upsampling, and whether its temporal windows leave seams.

  python -m lumiere_jax.main --config=configs/ssr.py --workdir=runs/ssr_tiny   # 32 -> 64 px, 1,000 steps
  python benchmarks/ssr_quality.py --workdir=runs/ssr_tiny --gif=docs/ssr_tiny.gif

Test-split clips of the shapes world (`--frames` long, 4x the SSR's 8-frame window by default) are rendered at
the SSR's output size, box-downsampled to its input size as in training, and upsampled three ways: bilinearly,
and by the SSR over temporal MultiDiffusion windows (overlap ssr.overlap, reconciled at every step) or over
independent windows (overlap 0: each window sampled on its own). Against the rendered clips: mean absolute
error in uint8 levels and PSNR; and multidiffusion.seam_ratio at each layout's window borders (~1: borders look
like the inside), with the rendered clips' own ratio at the same borders as the reference. Both SSR runs start
from the same seed. Writes benchmarks/results/ssr_quality_<platform>.json.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

import bench_common as bc  # noqa: E402
from lumiere_jax import host_memory, ssr, video_io  # noqa: E402
from lumiere_jax.conditioning import low_res  # noqa: E402
from lumiere_jax.data import shapes  # noqa: E402
from lumiere_jax.diffusion import multidiffusion as md  # noqa: E402


def errors(clips: np.ndarray, reference_uint8: np.ndarray) -> dict[str, float]:
    """Mean absolute error (uint8 levels) and PSNR (dB) of clips in [-1, 1] against uint8 reference clips."""
    diff = video_io.to_uint8(clips).astype(np.float64) - reference_uint8.astype(np.float64)
    return {"mae": float(np.abs(diff).mean()), "psnr": float(10 * np.log10(255.0 ** 2 / (diff ** 2).mean()))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", required=True, help="a configs/ssr.py run")
    p.add_argument("--clips", type=int, default=8)
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the run's sample.steps)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--gif", default=None, help="write the first 4 clips: rendered, bilinear, SSR rows")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    print(f"machine: {bc.machine()}", flush=True)
    upsampler, step = ssr.SuperResolution.from_workdir(args.workdir)
    config = upsampler.config
    examples = [shapes.make_example(i, config.data.seed, args.frames, config.data.resolution, split="test")
                for i in range(args.clips)]
    high = np.stack([e["video"] for e in examples])  # uint8 [N, T, H, W, 3]
    captions = [e["caption"] for e in examples]
    low = np.asarray(low_res.downsample(high.astype(np.float32) / 127.5 - 1.0, config.ssr.low_resolution))
    bilinear = np.asarray(low_res.upsample(low, config.data.resolution))
    results = {"bilinear": errors(bilinear, high)}
    outputs = {}
    for name, overlap in (("ssr_multidiffusion", config.ssr.overlap), ("ssr_independent", 0)):
        upsampler.overlap = overlap
        starts = md.window_starts(args.frames, upsampler.window, overlap)
        t0 = time.perf_counter()
        outputs[name] = upsampler(low, captions, seed=args.seed, steps=args.steps)
        seconds = time.perf_counter() - t0
        results[name] = {**errors(outputs[name], high), "overlap": overlap, "windows": len(starts),
                         "seam_ratio": md.seam_ratio(outputs[name], starts, upsampler.window),
                         "reference_seam_ratio": md.seam_ratio(high, starts, upsampler.window), "seconds": seconds}
        print(f"{name}: {results[name]}", flush=True)
    rows = [[name, f"{r['mae']:.2f}", f"{r['psnr']:.2f}", r.get("windows", "-"),
             f"{r['seam_ratio']:.3f}" if "seam_ratio" in r else "-",
             f"{r['reference_seam_ratio']:.3f}" if "seam_ratio" in r else "-",
             f"{r['seconds']:.0f}" if "seconds" in r else "-"] for name, r in results.items()]
    table = bc.print_table(f"SSR {config.ssr.low_resolution} -> {config.data.resolution} px, {args.clips} clips of "
                           f"{args.frames} frames, window {upsampler.window}, checkpoint step {step}, on "
                           f"{bc.machine()}",
                           ["upsampling", "MAE (uint8)", "PSNR dB", "windows", "seam ratio",
                            "rendered clips' seam ratio", "s"], rows)
    bc.write_json(args.out or f"ssr_quality_{jax.devices()[0].platform}", {
        "machine": bc.machine(), "workdir": args.workdir, "step": step, "clips": args.clips, "frames": args.frames,
        "steps": args.steps or config.sample.steps, "seed": args.seed, "captions": captions, "results": results,
        "table": table})
    if args.gif:
        n = min(4, args.clips)
        rows_ = [high[:n].astype(np.float32) / 127.5 - 1.0, bilinear[:n], outputs["ssr_multidiffusion"][:n]]
        video_io.write_video(args.gif, video_io.grid(video_io.to_uint8(np.concatenate(rows_)), columns=n),
                             config.sample.fps)


if __name__ == "__main__":
    host_memory.ensure_hugepage_malloc()  # timed runs get the trainer's allocator setting
    main()
