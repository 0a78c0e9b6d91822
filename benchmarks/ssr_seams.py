r"""Seams at window borders of long videos: temporal MultiDiffusion vs independent windows (Lumiere,
Bar-Tal et al. 2024, Sec. 3.2).

  python benchmarks/ssr_seams.py --workdir=runs/t2v_tiny           # configs/t2v.py tiny, 32 frames
  python benchmarks/ssr_seams.py --workdir=DIR --config_size=smoke --frames=8 --clips=2 --steps=2

Samples `--clips` prompts (lumiere_jax.evaluate.eval_prompts) as clips of `--frames` frames (4x the
8-frame training length) from the same noise with three window schemes, and reports
multidiffusion.seam_ratio: the mean |frame difference| across window borders over that inside windows
(~1: borders look like the inside; > 1: a jump at borders).
  multidiffusion   windows of 8 with overlap 2, reconciled (averaged) at every step
  independent      the same windows, each frame taken from the first window covering it, never averaged
  independent_o0   non-overlapping windows, each sampled on its own
  multidiffusion_o4  windows of 8 with overlap 4 (twice the windows), reconciled
  multidiffusion_o6_triangle  overlap 6 (stride 2), each window's frames weighted by a triangle ramp
  multidiffusion_o4_triangle_shift  overlap 4, triangle, the grid moved by a pseudo-random offset every step
  multidiffusion_o4_triangle_shift_repeat  the same from repeated window noise (multidiffusion.repeated_noise)
  whole_repeat     no windows: the model on all frames at once (--config.sample.long_video=whole), from repeated
                   noise
Names are `whole[_repeat]`, or `multidiffusion` or `independent`, then optionally `_o<overlap>` (default 2),
`_triangle`, `_shift` (multidiffusion only; its seam ratio is taken at the fixed layout's borders, which it does
not keep) and `_repeat` (every window starts from the first window's noise frames, shuffled; FreeNoise).
The seam ratio is taken at each scheme's own borders (the whole clip's at the overlap-2 layout's), so schemes
with more windows are judged at more frame pairs; `jumps` does not depend on the windows: frame pairs per clip
where the shapes checker's object centroid moves more than 4 pixels or vanishes (shapes_checker.count_jumps;
the world's fastest objects move ~2.6 px a frame at 32 px); `clean` is the share of clips with no jump, and
colour / shape / motion the checker's accuracy on the whole clip against its prompt.
A reference row measures both on clips rendered by the shapes world itself.
Writes benchmarks/results/ssr_seams_<platform>.json.
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
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

import bench_common as bc  # noqa: E402
from configs import t2v as t2v_configs  # noqa: E402
from lumiere_jax import evaluate, sampling, video_io  # noqa: E402
from lumiere_jax.data import shapes  # noqa: E402
from lumiere_jax.diffusion import multidiffusion as md  # noqa: E402
from lumiere_jax.diffusion import samplers  # noqa: E402
from lumiere_jax.eval import shapes_checker  # noqa: E402
from lumiere_jax import host_memory  # noqa: E402


def sample_long(t2v, text, mask, frames: int, overlap: int, weights, steps: int, guidance: float,
                seed: int, shift: bool = False, noise: str = "independent", whole: bool = False) -> np.ndarray:
    """Clips [B, frames, H, W, 3] in [-1, 1] with MultiDiffusion under the given per-window weights, or with the
    model on the whole clip (whole: the library's sampling.generate with Windows(whole_clip=True))."""
    window = t2v.shape[0]
    if whole:
        return np.asarray(sampling.generate(
            t2v.graphdef, t2v.params, t2v.prompts(text, mask), jax.random.key(seed),
            shape=(frames,) + t2v.shape[1:], schedule=t2v.schedule,
            options=sampling.SamplerOptions(steps=steps, guidance=guidance, sampler="ddim"),
            windows=sampling.Windows(window=window, noise=noise, whole_clip=True)))

    @jax.jit
    def run(params, text, mask, rng):
        model = nnx.merge(t2v.graphdef, params)
        denoise = md.multidiffusion_text(model, text, mask, t2v.null_text, t2v.null_mask, guidance,
                                         num_frames=frames, window=window, overlap=overlap, weights=weights,
                                         shift=shift)
        k_noise, k_sampler = jax.random.split(rng)
        shape = (text.shape[0], frames) + t2v.shape[1:]
        z = (md.repeated_noise(k_noise, shape, window) if noise == "repeat"
             else jax.random.normal(k_noise, shape, jnp.float32))
        return samplers.sample(denoise, z, k_sampler, t2v.schedule, num_steps=steps, sampler="ddim")

    return np.asarray(run(t2v.params, text, mask, jax.random.key(seed)))


DEFAULT_SCHEMES = "multidiffusion,independent,independent_o0,multidiffusion_o4"


def jumps(video: np.ndarray) -> list[int]:
    """shapes_checker.count_jumps of each clip [B, T, H, W, 3] in [-1, 1]."""
    return [shapes_checker.count_jumps(clip) for clip in video_io.to_uint8(video)]


def parse_scheme(name: str, frames: int, window: int) -> tuple[int, str | np.ndarray, bool, str, bool]:
    """`whole[_repeat]` or `multidiffusion|independent[_o<overlap>][_triangle][_shift][_repeat]`
    -> (overlap, weights, shift, noise, whole)."""
    kind, *mods = name.split("_")
    if kind == "whole":
        if mods not in ([], ["repeat"]):
            raise ValueError(f"--schemes: {name!r}: the whole clip takes only the _repeat suffix.")
        return 0, "uniform", False, "repeat" if mods else "independent", True
    overlap, weights, shift, noise = 2, "uniform", False, "independent"
    for m in mods:
        if m.startswith("o") and m[1:].isdigit():
            overlap = int(m[1:])
        elif m in md.WEIGHTS:
            weights = m
        elif m == "shift":
            shift = True
        elif m == "repeat":
            noise = "repeat"
        else:
            kind = None
    if kind not in ("multidiffusion", "independent") or (kind == "independent" and (weights != "uniform" or shift)):
        raise ValueError(f"--schemes: {name!r} is not whole[_repeat] or multidiffusion|independent[_o<overlap>]"
                         f"[_triangle][_shift][_repeat] (triangle and shift only with multidiffusion).")
    if kind == "independent":
        weights = md.first_window_weights(frames, window, overlap)
    return overlap, weights, shift, noise, False


def ratios(video: np.ndarray, starts, window: int, expected: list[dict]) -> dict[str, float]:
    per_clip = [md.seam_ratio(v[None], starts, window) for v in video]
    per_clip_jumps = jumps(video)
    found = [shapes_checker.analyze_clip(clip) for clip in video_io.to_uint8(video)]
    accuracy = {k: float(np.mean([f[k] == e[k] for f, e in zip(found, expected)])) for k in ("color", "shape",
                                                                                             "motion")}
    return {"pooled": md.seam_ratio(video, starts, window), "clip_median": float(np.median(per_clip)),
            "clip_min": float(np.min(per_clip)), "clip_max": float(np.max(per_clip)),
            "jumps_per_clip": float(np.mean(per_clip_jumps)), "jumps": per_clip_jumps,
            "clean": float(np.mean([j == 0 for j in per_clip_jumps])), "accuracy": accuracy}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default="runs/t2v_tiny", help="a trained configs/t2v.py run")
    parser.add_argument("--config_size", default="tiny")
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--schemes", default=DEFAULT_SCHEMES)
    parser.add_argument("--out", default=None, help="results JSON (default: benchmarks/results/ssr_seams_<platform>"
                                                    "<schemes, clips, seed, steps, frames>.json)")
    parser.add_argument("--gif", default=None, help="also write the first 6 clips of each scheme, a row per scheme")
    args = parser.parse_args()

    config = t2v_configs.get_config(f"size={args.config_size}")
    t2v, step = sampling.load_text_to_video(config, args.workdir)
    window = t2v.shape[0]
    expected = evaluate.eval_prompts(args.clips, seed=args.seed)
    text, mask = (jnp.asarray(a) for a in t2v.encoder.encode([e["prompt"] for e in expected]))
    machine = bc.machine()
    print(f"Seams at window borders: {args.workdir} (step {step}), {args.clips} clips of {args.frames} frames, "
          f"window {window}, {args.steps} DDIM steps, guidance {args.guidance}, on {machine}", flush=True)

    names = args.schemes.split(",")
    schemes = {name: parse_scheme(name, args.frames, window) for name in names}
    results, clips = {}, {}
    for name, (overlap, weights, shift, noise, whole) in schemes.items():
        t0 = time.perf_counter()
        video = sample_long(t2v, text, mask, args.frames, overlap, weights, args.steps, args.guidance, args.seed,
                            shift, noise, whole)
        clips[name] = video
        # The whole clip has no borders of its own: its seam ratio is taken at the overlap-2 layout's.
        starts = md.window_starts(args.frames, window, overlap or 2)
        results[name] = {"overlap": overlap, "shift": shift, "noise": noise, "whole": whole, "starts": starts,
                         "seconds": time.perf_counter() - t0,
                         **ratios(video, starts, window, expected)}
        print(f"  sampled {name} in {results[name]['seconds']:.0f} s", flush=True)
    # Reference: clips the world itself renders (smooth motion), under the overlap-2 borders.
    rendered = np.stack([shapes.render_clip(shapes.spec_from_attributes(e["color"], e["shape"], e["motion"]),
                                            args.frames, t2v.shape[1]) for e in expected]).astype(np.float32)
    results["rendered_reference"] = {"overlap": 2, "starts": md.window_starts(args.frames, window, 2),
                                     **ratios(rendered / 127.5 - 1.0, md.window_starts(args.frames, window, 2),
                                              window, expected)}

    print(f"{'scheme':<28} {'overlap':>7} {'seam ratio':>10} {'per-clip median [min, max]':>28} {'jumps/clip':>10} "
          f"{'clean':>6} {'colour':>6} {'shape':>6} {'motion':>6}")
    for name, r in results.items():
        a = r["accuracy"]
        print(f"{name:<28} {r['overlap']:>7} {r['pooled']:>10.3f} {r['clip_median']:>12.3f} "
              f"[{r['clip_min']:.3f}, {r['clip_max']:.3f}] {r['jumps_per_clip']:>10.2f} {r['clean']:>6.2f} "
              f"{a['color']:>6.2f} {a['shape']:>6.2f} {a['motion']:>6.2f}")
    if args.gif:
        shown = np.concatenate([video_io.to_uint8(clips[name][:6]) for name in names])
        video_io.write_video(args.gif, video_io.grid(shown, columns=min(6, args.clips)), config.sample.fps)
        print(f"Wrote {args.gif}: rows {', '.join(names)}")
    os.makedirs(bc.RESULTS_DIR, exist_ok=True)
    suffix = "" if args.schemes == DEFAULT_SCHEMES else "_" + "_".join(names)
    if (args.clips, args.seed) != (8, 0):  # other prompts and noise: keep the default run's file
        suffix += f"_{args.clips}clips_seed{args.seed}"
    if args.steps != 25:
        suffix += f"_{args.steps}steps"
    if args.frames != 32:
        suffix += f"_{args.frames}frames"
    path = args.out or os.path.join(bc.RESULTS_DIR, f"ssr_seams_{jax.devices()[0].platform}{suffix}.json")
    with open(path, "w") as f:
        json.dump({"machine": machine, "workdir": args.workdir, "step": step, "frames": args.frames,
                   "window": window, "clips": args.clips, "steps": args.steps, "guidance": args.guidance,
                   "prompts": [e["prompt"] for e in expected], "results": results}, f, indent=2)
    print(f"Wrote {path}")


if __name__ == "__main__":
    host_memory.ensure_hugepage_malloc()  # timed runs get the trainer's allocator setting
    main()
