r"""Story mode: one clip 4x the training length, a prompt per time span, each span checked by the evaluator.

  python benchmarks/ssr_story.py --workdir=runs/t2v_tiny --gif=docs/story_tiny.gif
  python benchmarks/ssr_story.py --workdir=DIR --config_size=smoke --frames=16 --seeds=1 --steps=2

The base model (configs/t2v.py tiny, 8 frames) runs on the whole clip with a prompt per frame when it was trained
on stories (data.story_fraction > 0; this script's --long_video=whole asks for it on any model), else on 8-frame
windows with overlap 4 and triangle weights, the grid moved by a pseudo-random offset at every step (the defaults
of --mode=sample, sampling.LongVideo; --overlap=2 --weights=uniform --no-shift is the paper's MultiDiffusion)
reconciled by temporal MultiDiffusion (sampling.generate), each window prompted by the span that holds its centre frame
(sampling.prompts_per_window / prompts_per_frame), or, on a model trained on stories, by its own frames' prompts
(--frame_text). Then lumiere_jax/eval/shapes_checker.analyze_clip names the colour, shape and motion it finds in
each span's frames, for `--seeds` clips of the same story. --story=objects changes the object (its colour, then
its motion, then its shape) instead of only its motion.
The same thing from the command line (one clip):

  python -m lumiere_jax.main --config=configs/t2v.py --workdir=runs/t2v_tiny --mode=sample --frames=32 \
      --prompt="a red circle moving left" --prompt_at="8:a red circle moving up" \
      --prompt_at="16:a red circle moving right" --prompt_at="24:a red circle moving down" --out=story.gif

Writes the GIF (the first 4 seeds side by side, 2x upscaled) and benchmarks/results/ssr_story_<platform>.json.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

import bench_common as bc  # noqa: E402
from configs import t2v as t2v_configs  # noqa: E402
from lumiere_jax import sampling, video_io  # noqa: E402
from lumiere_jax.diffusion import multidiffusion as md  # noqa: E402
from lumiere_jax.eval import shapes_checker  # noqa: E402
from lumiere_jax import host_memory  # noqa: E402

# Each story: four spans of (colour, shape, motion). "motion" turns the same object four ways; "objects" changes
# one attribute at each span border: its colour, then its motion, then its shape.
STORIES = {
    "motion": [("red", "circle", "left"), ("red", "circle", "up"), ("red", "circle", "right"),
               ("red", "circle", "down")],
    "objects": [("red", "circle", "left"), ("blue", "circle", "left"), ("blue", "circle", "right"),
                ("blue", "square", "right")],
}
# The long-video defaults of TextToVideo.long_video and --mode=sample (config.sample's long-video keys).
LONG_VIDEO = sampling.LongVideo()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default="runs/t2v_tiny", help="a trained configs/t2v.py run")
    parser.add_argument("--config_size", default="tiny")
    parser.add_argument("--frames", type=int, default=32, help="clip length (4x the training length)")
    parser.add_argument("--seeds", type=int, default=4, help="clips of the same story, one batch")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--overlap", type=int, default=None,
                        help="frames shared by neighbouring windows (default: half the window, as --mode=sample)")
    parser.add_argument("--weights", default=LONG_VIDEO.weights, choices=md.WEIGHTS,
                        help="per-frame window weights of the reconciliation (uniform: the paper's average)")
    parser.add_argument("--shift", action=argparse.BooleanOptionalAction, default=LONG_VIDEO.shift,
                        help="move the window grid at every step (--no-shift: fixed windows, as the paper)")
    parser.add_argument("--window_noise", default=LONG_VIDEO.noise, choices=md.NOISES,
                        help="repeat: later windows start from shuffles of the first window's noise (FreeNoise); "
                             "independent: every frame's own noise")
    parser.add_argument("--long_video", default=LONG_VIDEO.method, choices=sampling.LONG_VIDEO_METHODS,
                        help="whole: the model on all frames, a prompt per frame; windows: MultiDiffusion; auto "
                             "(as --mode=sample): whole when the run trained on stories, else windows")
    parser.add_argument("--frame_text", action=argparse.BooleanOptionalAction, default=None,
                        help="windows: every window reads its own frames' prompts (default when the run trained on "
                             "stories, as --mode=sample) instead of its centre frame's")
    parser.add_argument("--story", default="motion", choices=sorted(STORIES),
                        help="motion: one red circle turning left, up, right, down; objects: a colour change, "
                             "a turn, a shape change")
    parser.add_argument("--gif", default="docs/story_tiny.gif")
    parser.add_argument("--out", default=None, help="results JSON (default: benchmarks/results/ssr_story_<platform>)")
    args = parser.parse_args()

    config = t2v_configs.get_config(f"size={args.config_size}")
    t2v, step = sampling.load_text_to_video(config, args.workdir)
    window = t2v.shape[0]
    overlap = sampling.long_video_overlap(window) if args.overlap is None else args.overlap
    story = STORIES[args.story]
    span = args.frames // len(story)
    spans = [(i * span, f"a {c} {s} moving {m}") for i, (c, s, m) in enumerate(story)]
    window_prompts = sampling.prompts_per_window(spans, args.frames, window, overlap)
    whole = sampling.long_video_method(args.long_video, len(spans), args.frames, t2v.frame_multiple,
                                       t2v.story_trained) == "whole"
    frame_text = sampling.windows_read_frame_prompts("whole" if whole else "windows", len(spans), t2v.story_trained,
                                                     args.frame_text)
    machine = bc.machine()
    layout = (f"the whole clip, a prompt per frame ({'trained on' if t2v.story_trained else 'not trained on'} "
              f"stories)" if whole else
              f"windows at {md.window_starts(args.frames, window, overlap)} ({args.weights} weights"
              f"{', shifted every step' if args.shift else ''}"
              f"{', each reading its own frames prompts' if frame_text else ''})")
    print(f"Story mode: {args.workdir} (step {step}), {args.frames} frames = {args.frames // window}x the "
          f"{window}-frame training length, {layout}, {args.window_noise} noise, "
          f"{args.seeds} seeds, {args.steps} DDIM steps, guidance {args.guidance}, on {machine}", flush=True)
    for start, prompt in spans:
        print(f"  frames {start}-{start + span - 1}: {prompt!r}")
    per_window = not (args.shift or whole or frame_text)  # else a prompt per frame (shifted: the centre frame's)
    if per_window:
        print(f"  window prompts: {window_prompts}")

    text, mask = t2v.long_video_text(spans, args.frames, whole=whole, frame_text=frame_text, shift=args.shift,
                                     overlap=overlap, batch=args.seeds)  # as --mode=sample lays them out
    t0 = time.perf_counter()
    clips = np.asarray(sampling.generate(
        t2v.graphdef, t2v.params, t2v.prompts(text, mask), jax.random.key(0),
        shape=(args.frames,) + t2v.shape[1:], schedule=t2v.schedule,
        options=sampling.SamplerOptions(steps=args.steps, guidance=float(args.guidance), sampler="ddim"),
        windows=sampling.Windows(window=window, overlap=overlap, weights=args.weights, shift=args.shift,
                                 noise=args.window_noise, whole_clip=whole, frame_text=frame_text)))
    seconds = time.perf_counter() - t0
    frames_u8 = video_io.to_uint8(clips)  # [S, T, H, W, 3]

    rows, hits = [], {k: [0] * len(story) for k in ("color", "shape", "motion", "all")}
    print(f"{'seed':>4} " + " ".join(f"{f'frames {s}-{s + span - 1}':>24}" for s, _ in spans))
    for seed, clip in enumerate(frames_u8):
        found = []
        for i, (start, _) in enumerate(spans):
            f = shapes_checker.analyze_clip(clip[start:start + span])
            c, s, m = story[i]
            ok = {"color": f["color"] == c, "shape": f["shape"] == s, "motion": f["motion"] == m}
            ok["all"] = all(ok.values())
            for k, v in ok.items():
                hits[k][i] += int(v)
            found.append({"span": [start, start + span - 1], "expected": f"{c} {s} {m}",
                          "found": f"{f['color']} {f['shape']} {f['motion']}", **ok})
        rows.append(found)
        print(f"{seed:>4} " + " ".join(f"{r['found'] + (' ok' if r['motion'] else ' x'):>24}" for r in found))
    print(f"{'per-span accuracy over ' + str(args.seeds) + ' seeds':<30}")
    for k, v in hits.items():
        print(f"  {k:<7} " + " ".join(f"{x / args.seeds:>6.2f}" for x in v)
              + f"   mean {sum(v) / (args.seeds * len(story)):.2f}")
    seam = md.seam_ratio(clips, md.window_starts(args.frames, window, overlap), window)
    # The object is followed through colour changes: found anew from each span whose colour differs from the last.
    recolour = [start for i, (start, _) in enumerate(spans) if i and story[i][0] != story[i - 1][0]]
    jumps = [shapes_checker.count_jumps(clip, segments=recolour) for clip in frames_u8]
    print(f"seam ratio (borders of the fixed layout / inside): {seam:.3f}; "
          f"object jumps per clip {np.mean(jumps):.2f} {jumps}; "
          f"sampling took {seconds:.0f} s")

    os.makedirs(os.path.dirname(os.path.abspath(args.gif)), exist_ok=True)
    shown = frames_u8[:4]  # a small GIF: the first 4 seeds, 2x
    video_io.write_video(args.gif, video_io.upscale(video_io.grid(shown, columns=len(shown)), 2),
                         config.sample.fps)
    os.makedirs(bc.RESULTS_DIR, exist_ok=True)
    path = args.out or os.path.join(bc.RESULTS_DIR, f"ssr_story_{jax.devices()[0].platform}.json")
    with open(path, "w") as f:
        json.dump({"machine": machine, "workdir": args.workdir, "step": step, "frames": args.frames,
                   "long_video": "whole" if whole else "windows", "story_trained": t2v.story_trained,
                   "story": args.story, "frame_text": frame_text,
                   "window": window, "overlap": overlap, "weights": args.weights, "shift": args.shift,
                   "window_noise": args.window_noise, "spans": spans,
                   "window_prompts": window_prompts if per_window else None, "seeds": args.seeds, "steps": args.steps,
                   "guidance": args.guidance, "seam_ratio": seam, "jumps": jumps, "seconds": seconds,
                   "accuracy": {k: [x / args.seeds for x in v] for k, v in hits.items()}, "clips": rows},
                  f, indent=2)
    print(f"Wrote {args.gif} and {path}")


if __name__ == "__main__":
    host_memory.ensure_hugepage_malloc()  # timed runs get the trainer's allocator setting
    main()
