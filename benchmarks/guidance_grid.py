r"""The evaluator over guidance scales and guidance rules, on one trained T2V run: which default works.

  python benchmarks/guidance_grid.py --workdir=runs/t2v_tiny --name=default_seed0 \
      [--guidance=1.5,2,3,5] [--thresholding=static,dynamic,pixel] [--rescale=0,0.7] \
      [--prompts=template,paraphrase] [--num_clips=60] [--steps=25]

For every (prompt set, guidance, thresholding, rescale) it samples the evaluator's prompts (lumiere_jax/evaluate.py:
the same prompts, seed and steps as `--mode=eval`) with the run's EMA weights and scores them with the shapes-world
checker: colour, shape, motion, all three. Calls with the same --name add their cells to one file. A rule that keeps the prompted hue under strong guidance without losing
the motion is what the default should be; run it on more than one training run before choosing. Writes
benchmarks/results/guidance_<name>.json with the machine and the seconds each cell took.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import bench_common  # noqa: E402
from lumiere_jax import config_lib, runs, sampling, video_io  # noqa: E402
from lumiere_jax.evaluate import eval_prompts, score_clips  # noqa: E402


def floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v]


def previous_cells(name: str, header: dict) -> list[dict]:
    """The cells already in benchmarks/results/<name>.json for the same run, step and evaluation settings: a grid
    grows over several calls (a cell measured again replaces its earlier figure)."""
    path = os.path.join(bench_common.RESULTS_DIR, name + ".json")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        saved = json.load(f)
    if any(saved.get(k) != v for k, v in header.items()):
        sys.exit(f"error: {path} holds another run or other settings ({ {k: saved.get(k) for k in header} }): "
                 f"give another --name.")
    return saved["cells"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="A trained configs/t2v.py run.")
    parser.add_argument("--name", required=True, help="Results file: benchmarks/results/guidance_<name>.json.")
    parser.add_argument("--guidance", default="1.5,2,3,5")
    parser.add_argument("--thresholding", default="static,dynamic,pixel")
    parser.add_argument("--rescale", default="0", help="sample.guidance_rescale values.")
    parser.add_argument("--prompts", default="template,paraphrase", help="eval.prompts sets.")
    parser.add_argument("--num_clips", type=int, default=0, help="0: the run's eval.num_clips.")
    parser.add_argument("--steps", type=int, default=0, help="DDIM steps; 0: the run's eval.steps.")
    args = parser.parse_args()

    run = runs.load(args.workdir)
    config = run.config
    num_clips = args.num_clips or config.eval.num_clips
    steps = args.steps or config.eval.steps
    for mode in args.thresholding.split(","):
        if mode not in config_lib.THRESHOLDING:
            parser.error(f"--thresholding={mode!r}: each must be one of {config_lib.THRESHOLDING}.")
    t2v = sampling.TextToVideo.from_run(run)
    header = {"run": os.path.basename(os.path.normpath(args.workdir)), "step": run.step, "num_clips": num_clips,
              "steps": steps, "seed": config.eval.seed, "sampler": config.sample.sampler,
              "train_seed": config.seed}
    cells = previous_cells(f"guidance_{args.name}", header)
    for prompt_set, guidance, mode, rescale in itertools.product(
            args.prompts.split(","), floats(args.guidance), args.thresholding.split(","), floats(args.rescale)):
        if guidance == 1.0 and (mode != "static" or rescale):
            continue  # no guided prediction to keep in range: every rule samples the same clips
        expected = eval_prompts(num_clips, config.eval.seed, prompt_set)
        t2v.thresholding, t2v.guidance_rescale = mode, rescale
        start = time.perf_counter()
        clips = t2v([x["prompt"] for x in expected], seed=config.eval.seed, steps=steps, guidance=guidance,
                    sampler=config.sample.sampler, batch_size=config.eval.batch_size)
        accuracy = score_clips(video_io.to_uint8(clips), expected)["accuracy"]
        seconds = time.perf_counter() - start
        cell = {"prompts": prompt_set, "guidance": guidance, "thresholding": mode, "rescale": rescale}
        cells = [c for c in cells if {k: c[k] for k in cell} != cell]
        cells.append({**cell, "accuracy": accuracy, "seconds": seconds})
        print(f"{prompt_set:>10} guidance {guidance:<4} {mode:>7} rescale {rescale:<4} "
              + "  ".join(f"{k} {100 * v:5.1f}%" for k, v in accuracy.items()) + f"  ({seconds:.0f} s)", flush=True)
        # Rewritten after every cell: a grid stopped part-way keeps what it measured.
        bench_common.write_json(f"guidance_{args.name}", {"machine": bench_common.machine(), **header,
                                                            "cells": cells})


if __name__ == "__main__":
    main()
