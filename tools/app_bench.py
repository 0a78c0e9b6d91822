r"""Measures the applications (Lumiere, Bar-Tal et al. 2024, Sec. 4) with the shapes world's program checker.

  python -m tools.app_bench --t2v=runs/t2v_tiny --conditional=runs/conditional \
      --style_weights=outline.safetensors --out=benchmarks/results/applications.json --gif_dir=docs

Each row samples `--num` clips of single large shapes (colours, shapes, motions cycled) and reports:
  i2v          frame-1 error of the raw model output (mean |diff|, uint8 levels; 0 after paste-back), and
               checker colour / motion accuracy against the prompt (the caption of the source clip)
  inpaint      the hole covers the object's whole path, so only background is known: colour accuracy of the
               restored object (same prompt) and of a replaced one (prompt with another colour)
  cinemagraph  mean |frame difference| outside and inside the region (uint8 levels), raw and pasted, and
               motion accuracy of the object inside the region
  sdedit       prompt with another colour than the source: checker colour accuracy for the new colour, and
               the source's motion kept, per strength
  style        "... <--style_prompt>" prompts with spatial weights interpolated at a: stripe amplitude (grey
               levels of the striped-background style, ~0 in training data, ~17 in the style image), fill
               fraction (1 = filled shapes as in training, lower = the outline style), colour, shape and
               motion accuracy; the style weights run the steps at t <= --style_start
A section runs only when its run is given; the numbers print as a table. Runs on a 2-core CPU in minutes at
the tiny size.
"""

from __future__ import annotations

import json
import os

import numpy as np
from absl import app, flags

from lumiere_jax import config_lib, video_io
from lumiere_jax.applications import edit
from lumiere_jax.applications.inputs import Request
from lumiere_jax.conditioning import masked
from lumiere_jax.data import shapes
from lumiere_jax.eval import app_metrics, shapes_checker
from tools.app_inputs import path_box

_T2V = flags.DEFINE_string("t2v", None, "A configs/t2v.py run (SDEdit, style).")
_COND = flags.DEFINE_string("conditional", None, "A configs/conditional.py run (i2v, inpaint, cinemagraph).")
_STYLE = flags.DEFINE_string("style_weights", None, "Style weights from --mode=style_tune over --t2v.")
_STYLE_START = flags.DEFINE_float("style_start", config_lib.base_config().sample.style_start,
                                   "Diffusion time from which the style weights apply (1: every step).")
_STYLE_PROMPT = flags.DEFINE_string("style_prompt", "on a striped background",
                                    "Words naming the style, appended to each style prompt (as in the tuning caption).")
_SIZE = flags.DEFINE_string("size", "tiny", "Config size of the runs.")
_ALPHAS = flags.DEFINE_list("alphas", ["0", "0.5", "1"], "Style weights a to sample with --style_weights.")
_GIF_ALPHA = flags.DEFINE_float("gif_alpha", 1.0, "The a of --alphas whose clips make the style GIF.")
_NUM = flags.DEFINE_integer("num", 12, "Clips per measurement.")
_STEPS = flags.DEFINE_integer("steps", 25, "Sampling steps.")
_GUIDANCE = flags.DEFINE_float("guidance", 3.0, "Classifier-free guidance.")
_SDEDIT = flags.DEFINE_bool("sdedit", True, "Measure SDEdit when --t2v is given.")
_OUT = flags.DEFINE_string("out", None, "Write the numbers as JSON here.")
_GIF_DIR = flags.DEFINE_string("gif_dir", None, "Write one example GIF per application here.")


def _cases(num: int, frames: int, res: int, seed: int = 0) -> list[dict]:
    """Single large moving shapes with random starts: spec attributes, clip in [-1, 1], caption."""
    rng = np.random.default_rng(seed)
    out = []
    moving = [m for m in shapes.MOTIONS if m != "still"]
    for i in range(num):
        color, shape, motion = shapes.COLORS[i % 6], shapes.SHAPES[i % 3], moving[i % 4]
        spec = shapes.spec_from_attributes(color, shape, motion, "large", "slow", rng=rng)
        clip = shapes.render_clip(spec, frames, res)
        out.append({"color": color, "shape": shape, "motion": motion, "uint8": clip,
                    "clip": clip.astype(np.float32) / 127.5 - 1.0, "prompt": shapes.prompt_for(color, shape, motion)})
    return out


def _other_color(color: str) -> str:
    palette = shapes.COLORS[:6]
    return palette[(palette.index(color) + 3) % 6]


def _found(clips: np.ndarray) -> list[dict]:
    return [shapes_checker.analyze_clip(c) for c in video_io.to_uint8(clips)]


def _acc(found: list[dict], key: str, wanted: list[str]) -> float:
    return float(np.mean([f[key] == w for f, w in zip(found, wanted)]))


def _gif(name: str, clips: np.ndarray, sources: np.ndarray | None = None) -> None:
    if not _GIF_DIR.value:
        return
    rows = clips[:4] if sources is None else np.concatenate([sources[:4], clips[:4]])
    frames = video_io.upscale(video_io.grid(video_io.to_uint8(rows), columns=min(4, len(clips))), 3)
    video_io.write_video(os.path.join(_GIF_DIR.value, f"app_{name}.gif"), frames, 4)


def _load(config, workdir):
    from lumiere_jax import sampling
    return sampling.load_text_to_video(config, workdir)[0]


def conditional_rows(workdir: str, kw: dict) -> dict:
    from configs import conditional
    config = conditional.get_config(f"size={_SIZE.value}")
    t2v = _load(config, workdir)
    t, res = config.data.num_frames, config.data.resolution
    cases = _cases(_NUM.value, t, res)
    prompts = [c["prompt"] for c in cases]
    rows = {}

    # Image-to-video.
    conds = np.stack([masked.i2v_condition(c["clip"][0], t) for c in cases])
    raw = edit.conditional_sample(t2v, prompts, conds, **kw)
    out = masked.paste_back(raw, conds)
    found = _found(out)
    rows["i2v"] = {"frame1_error_raw": float(np.abs(raw[:, 0] - conds[:, 0, ..., :3]).mean() * 127.5),
                   "frame1_error_pasted": float(np.abs(out[:, 0] - conds[:, 0, ..., :3]).mean() * 127.5),
                   "color_acc": _acc(found, "color", [c["color"] for c in cases]),
                   "motion_acc": _acc(found, "motion", [c["motion"] for c in cases])}
    _gif("i2v", out)

    # Inpainting: the hole covers the object's whole path.
    holes = np.stack([path_box(c["uint8"]) for c in cases])  # [N, H, W]
    conds = np.stack([masked.inpaint_condition(c["clip"], h) for c, h in zip(cases, holes)])
    for name, colors in (("inpaint_restore", [c["color"] for c in cases]),
                         ("inpaint_replace", [_other_color(c["color"]) for c in cases])):
        ps = [shapes.prompt_for(col, c["shape"], c["motion"]) for col, c in zip(colors, cases)]
        raw = edit.conditional_sample(t2v, ps, conds, **kw)
        out = masked.paste_back(raw, conds)
        known = conds[..., 3] == 1
        rows[name] = {"known_error_raw": float(np.abs(raw - conds[..., :3])[known].mean() * 127.5),
                      "color_acc": _acc(_found(out), "color", colors),
                      "hole_error_vs_source": float(np.abs(out - np.stack([c["clip"] for c in cases]))[~known].mean()
                                                    * 127.5)}
        _gif(name, out, conds[..., :3])

    # Cinemagraph: animate the object's path region of the still first frame.
    conds = np.stack([masked.cinemagraph_condition(c["clip"][0], h, t) for c, h in zip(cases, holes)])
    raw = edit.conditional_sample(t2v, prompts, conds, **kw)
    out = masked.paste_back(raw, conds)

    def frame_diff(x, inside):
        d = np.abs(np.diff(x, axis=1)).mean(-1) * 127.5  # [N, T-1, H, W]
        m = np.broadcast_to((holes if inside else ~holes)[:, None], d.shape)
        return float(d[m].mean())

    rows["cinemagraph"] = {"diff_outside_raw": frame_diff(raw, False), "diff_outside_pasted": frame_diff(out, False),
                           "diff_inside": frame_diff(out, True),
                           "motion_acc": _acc(_found(out), "motion", [c["motion"] for c in cases])}
    _gif("cinemagraph", out)
    return rows


def t2v_rows(workdir: str, style_weights: str | None, kw: dict) -> dict:
    from configs import t2v as t2v_config
    config = t2v_config.get_config(f"size={_SIZE.value}")
    t2v = _load(config, workdir)
    t, res = config.data.num_frames, config.data.resolution
    cases = _cases(_NUM.value, t, res, seed=1)
    rows = {}
    sources = np.stack([c["clip"] for c in cases])
    targets = [_other_color(c["color"]) for c in cases]
    prompts = [shapes.prompt_for(col, c["shape"], c["motion"]) for col, c in zip(targets, cases)]
    for strength in (0.4, 0.6, 0.8) if _SDEDIT.value else ():
        out = edit.sdedit(t2v, prompts, sources, strength, **kw)
        found = _found(out)
        rows[f"sdedit_{strength}"] = {"new_color_acc": _acc(found, "color", targets),
                                      "motion_kept": _acc(found, "motion", [c["motion"] for c in cases]),
                                      "change_vs_source": float(np.abs(out - sources).mean() * 127.5)}
        if strength == 0.6:
            _gif("sdedit", out, sources)
    if style_weights:
        base = t2v.params
        prompts = [f'{shapes.prompt_for(c["color"], c["shape"], c["motion"], "large")} {_STYLE_PROMPT.value}'
                   for c in cases]
        for alpha in (float(a) for a in _ALPHAS.value):
            t2v.params = base
            edit.apply_style(t2v, Request("t2v", style_weights=style_weights, style_alpha=alpha,
                                          style_start=_STYLE_START.value))
            out = t2v(prompts, seed=kw["seed"], steps=kw["steps"], guidance=kw["guidance"], sampler=kw["sampler"])
            found = _found(out)
            rows[f"style_a{alpha}"] = {
                "stripe_amplitude": float(np.mean([app_metrics.stripe_amplitude(c) for c in video_io.to_uint8(out)])),
                "fill_fraction": float(np.nanmean([app_metrics.fill_fraction(c) for c in video_io.to_uint8(out)])),
                "color_acc": _acc(found, "color", [c["color"] for c in cases]),
                "shape_acc": _acc(found, "shape", [c["shape"] for c in cases]),
                "motion_acc": _acc(found, "motion", [c["motion"] for c in cases])}
            if alpha == _GIF_ALPHA.value:
                _gif("style", out)
        t2v.params, t2v.late = base, None
    return rows


def main(argv) -> None:
    del argv
    kw = dict(seed=0, steps=_STEPS.value, guidance=_GUIDANCE.value, sampler="ddim")
    rows = {}
    if _COND.value:
        rows.update(conditional_rows(_COND.value, kw))
    if _T2V.value:
        rows.update(t2v_rows(_T2V.value, _STYLE.value, kw))
    print(f"{'measurement':<18} values ({_NUM.value} clips each, {_STEPS.value} DDIM steps, "
          f"guidance {_GUIDANCE.value})")
    for name, values in rows.items():
        print(f"{name:<18} " + "  ".join(f"{k}={v:.3f}" for k, v in values.items()))
    if _OUT.value:
        with open(_OUT.value, "w") as f:
            json.dump({"num": _NUM.value, "steps": _STEPS.value, "guidance": _GUIDANCE.value,
                       "style_start": _STYLE_START.value if _STYLE.value else None, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    app.run(main)
