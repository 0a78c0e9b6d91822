r"""What a trained SSR model adds over bilinear and bicubic upsampling, and whether its temporal windows leave seams.

  python -m lumiere_jax.main --config=configs/ssr.py --workdir=runs/ssr_tiny   # 32 -> 64 px, 1,000 steps
  python benchmarks/ssr_quality.py --workdir=runs/ssr_tiny --gif=docs/ssr_tiny.gif
  # An SSR trained on a video source, measured on that source's held-out clips (benchmarks/ssr_real_footage.py):
  python benchmarks/ssr_quality.py --workdir=runs/ssr_footage/run --held_out=source --frames=16

Held-out clips (`--frames` long) at the SSR's output size: with --held_out=shapes, test-split clips of the shapes
world, rendered; with --held_out=source, the test split of the run's own video source (data.videos: the files it
held out of training), cut into --frames-long clips every --clip_stride seconds. They are box-downsampled to the
SSR's input size as in training and upsampled bilinearly, bicubically, and by the SSR over temporal MultiDiffusion
windows (overlap ssr.overlap, reconciled at every step) and over independent windows (overlap 0: each window
sampled on its own). Against the ground truth: PSNR, SSIM and mean absolute error in uint8 levels
(lumiere_jax/eval/image_quality.py); and multidiffusion.seam_ratio at each layout's window borders (~1: borders
look like the inside), with the ground truth's own ratio at the same borders as the reference. Both SSR layouts
start from the same seed. Writes benchmarks/results/<--out>.json; --gif writes, one row per clip, low-res input
(nearest) | bicubic | SSR (MultiDiffusion) | ground truth.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

import bench_common as bc  # noqa: E402
from lumiere_jax import host_memory, ssr, video_io  # noqa: E402
from lumiere_jax.conditioning import low_res  # noqa: E402
from lumiere_jax.data import shapes, videos  # noqa: E402
from lumiere_jax.diffusion import multidiffusion as md  # noqa: E402
from lumiere_jax.eval import image_quality  # noqa: E402

LAYOUTS = ("ssr_multidiffusion", "ssr_independent")
GIF_CLIPS = 4


def shapes_clips(config: ml_collections.ConfigDict, clips: int, frames: int) -> tuple[np.ndarray, list[str]]:
    examples = [shapes.make_example(i, config.data.seed, frames, config.data.resolution, split="test")
                for i in range(clips)]
    return np.stack([e["video"] for e in examples]), [e["caption"] for e in examples]


def source_clips(config: ml_collections.ConfigDict, clips: int, frames: int,
                 clip_stride: float, split: str = "test") -> tuple[np.ndarray, list[str], list[str]]:
    """The run's video source, test split (or `split`), as --frames-long clips (prepared once beside the training
    clips): uint8 clips, captions and the file each comes from; at most `clips`, spread evenly over the split."""
    if config.data.dataset != "videos":
        raise SystemExit(f"--held_out=source needs a run trained on a video source (data.dataset=videos); this run "
                         f"has data.dataset={config.data.dataset}: use --held_out=shapes.")
    data = ml_collections.ConfigDict(config.data.to_dict())
    data.num_frames, data.clip_stride = frames, clip_stride
    test = videos.load_videos(data)[split]
    if not len(test):
        raise SystemExit(f"The {split} split of {data.videos} has no clip of {frames} frames at {data.fps:g} fps: "
                         f"give fewer --frames.")
    picks = np.unique(np.linspace(0, len(test) - 1, min(clips, len(test))).round().astype(int))
    rows = test.__getitems__([int(i) for i in picks])
    return (np.stack([r["video"] for r in rows]), [r["caption"] for r in rows], [r["source"] for r in rows])


def evaluate(workdir: str, *, held_out: str = "shapes", clips: int = 8, frames: int = 32, steps: int | None = None,
             seed: int = 0, aug_level: float | None = None, clip_stride: float = 0.25,
             more_steps: tuple[int, ...] = (), split: str = "test") -> dict:
    """Every upsampling of the held-out clips against the ground truth; the figures and the clips themselves.

    more_steps: further step counts of the SSR on MultiDiffusion windows (rows `ssr_multidiffusion_<n>steps`). One
    DDIM step from pure noise gives the model's prediction of the clean clip at t = 1, where the noisy clip tells
    nothing: its estimate of the mean of all high-resolution clips that fit the low-resolution one, the output
    that minimises the squared error; more steps commit to one of those clips, with detail of its own.
    split: with held_out="source", "train" measures the clips the run trained on (how much it learnt by heart)."""
    upsampler, step = ssr.SuperResolution.from_workdir(workdir)
    config = upsampler.config
    if aug_level is not None:
        config.ssr.sample_aug_level = aug_level
    files = None
    if held_out == "source":
        high, captions, files = source_clips(config, clips, frames, clip_stride, split)
    else:
        high, captions = shapes_clips(config, clips, frames)
    frames = high.shape[1]
    low = np.asarray(low_res.downsample(high.astype(np.float32) / 127.5 - 1.0, config.ssr.low_resolution))
    outputs = {m: image_quality.upsample(low, config.data.resolution, m) for m in image_quality.BASELINES}
    results = {m: image_quality.compare(video_io.to_uint8(outputs[m]), high) for m in image_quality.BASELINES}
    for name, overlap in zip(LAYOUTS, (config.ssr.overlap, 0)):
        upsampler.overlap = overlap
        starts = md.window_starts(frames, upsampler.window, overlap)
        t0 = time.perf_counter()
        outputs[name] = upsampler(low, captions, seed=seed, steps=steps)
        seconds = time.perf_counter() - t0
        results[name] = {**image_quality.compare(video_io.to_uint8(outputs[name]), high), "overlap": overlap,
                         "windows": len(starts), "seam_ratio": md.seam_ratio(outputs[name], starts, upsampler.window),
                         "reference_seam_ratio": md.seam_ratio(high, starts, upsampler.window), "seconds": seconds}
        print(f"{name}: {results[name]}", flush=True)
    upsampler.overlap = config.ssr.overlap
    for n in more_steps:
        name = f"ssr_multidiffusion_{n}steps"
        t0 = time.perf_counter()
        clip = upsampler(low, captions, seed=seed, steps=n)
        results[name] = {**image_quality.compare(video_io.to_uint8(clip), high), "steps": n,
                         "seconds": time.perf_counter() - t0}
        print(f"{name}: {results[name]}", flush=True)
    return {"workdir": workdir, "step": step, "held_out": held_out, "split": split, "clips": len(high),
            "frames": frames,
            "resolution": [config.ssr.low_resolution, config.data.resolution], "window": upsampler.window,
            "steps": steps or config.sample.steps, "sample_aug_level": float(config.ssr.sample_aug_level),
            "upsample": config.ssr.upsample, "residual_scale": float(config.ssr.residual_scale),
            "seed": seed, "captions": captions, "files": files, "results": results,
            "_clips": {"high": high, "low": low, **outputs}, "_fps": config.sample.fps}


def table(d: dict, machine: str) -> str:
    rows = [[name, f"{r['psnr']:.2f}", f"{r['ssim']:.4f}", f"{r['mae']:.2f}", r.get("windows", "-"),
             f"{r['seam_ratio']:.3f}" if "seam_ratio" in r else "-",
             f"{r['reference_seam_ratio']:.3f}" if "seam_ratio" in r else "-",
             f"{r['seconds']:.0f}" if "seconds" in r else "-"] for name, r in d["results"].items()]
    low, high = d["resolution"]
    return bc.print_table(
        f"SSR {low} -> {high} px, {d['clips']} held-out {d['held_out']} clips of {d['frames']} frames, window "
        f"{d['window']}, checkpoint step {d['step']}, {d['steps']} steps, aug level {d['sample_aug_level']:g}, on "
        f"{machine}", ["upsampling", "PSNR dB", "SSIM", "MAE (uint8)", "windows", "seam ratio",
                       "ground truth's seam ratio", "s"], rows)


def write_gif(path: str, d: dict, scale: int = 2) -> None:
    """One row per clip (the first GIF_CLIPS): low-res input (nearest) | bicubic | SSR | ground truth."""
    c = d["_clips"]
    n = min(GIF_CLIPS, d["clips"])
    factor = c["high"].shape[2] // c["low"].shape[2]
    cells = []
    for i in range(n):
        cells += [video_io.upscale(video_io.to_uint8(c["low"][i]), factor), video_io.to_uint8(c["bicubic"][i]),
                  video_io.to_uint8(c["ssr_multidiffusion"][i]), c["high"][i]]
    grid = video_io.grid(np.stack(cells), columns=4)
    video_io.write_video(path, video_io.upscale(grid, scale), d["_fps"])
    print(f"wrote {path}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", required=True, help="a configs/ssr.py run")
    p.add_argument("--held_out", choices=("shapes", "source"), default="shapes",
                   help="shapes: the shapes world's test clips; source: the run's own video source, test split")
    p.add_argument("--clips", type=int, default=8)
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--clip_stride", type=float, default=0.25, help="--held_out=source: seconds between clip starts")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the run's sample.steps)")
    p.add_argument("--aug_level", type=float, default=None, help="the low-res input's noise level (default: the "
                   "run's ssr.sample_aug_level)")
    p.add_argument("--more_steps", default="", help="further SSR step counts, comma-separated (1: its mean estimate)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--gif", default=None, help=f"low-res | bicubic | SSR | ground truth of the first {GIF_CLIPS} clips")
    p.add_argument("--out", default=None, help="benchmarks/results/<out>.json (default ssr_quality_<platform>)")
    args = p.parse_args()
    machine = bc.machine()
    print(f"machine: {machine}", flush=True)
    d = evaluate(args.workdir, held_out=args.held_out, clips=args.clips, frames=args.frames, steps=args.steps,
                 seed=args.seed, aug_level=args.aug_level, clip_stride=args.clip_stride,
                 more_steps=tuple(int(n) for n in args.more_steps.split(",") if n))
    d["table"] = table(d, machine)
    if args.gif:
        write_gif(args.gif, d)
    bc.write_json(args.out or f"ssr_quality_{jax.devices()[0].platform}",
                  {"machine": machine, **{k: v for k, v in d.items() if not k.startswith("_")}})


if __name__ == "__main__":
    host_memory.ensure_hugepage_malloc()  # timed runs get the trainer's allocator setting
    main()
