r"""A feedback round for stylized generation (StyleDrop's second round), rated by the shapes world's checker.

A style tuned on one image learns the image's content along with its style: on the tiny motion model most
squares and triangles prompted with the striped style's words come out as circles, the reference's shape.
StyleDrop's remedy is a second round: sample the first-round model on prompts with other content, keep the
samples that show the style and the prompted content (rated by people or by CLIP there), and tune again,
from the base weights, on the reference plus the kept samples. Here the program checker (colour, shape) and
the style's measure (stripe amplitude) are the raters:

  python -m tools.style_feedback --t2v=runs/t2v_motion --style_weights=stripes.safetensors \
      --reference=app_inputs/style_stripes.png --caption="a large red circle on a striped background" \
      --out=stripes_round2
  python -m lumiere_jax.main --config=configs/style_gen.py --workdir=runs/t2v_motion --mode=style_tune \
      --style_image=stripes_round2 --style_weights=stripes_round2.safetensors

Every colour x shape is prompted "a large <colour> <shape> <--style_words>" with `--seeds` seeds, sampled
with the first-round weights (a = --style_alpha, from --style_start). A sample is kept when the checker finds
the prompted colour and shape and its stripes reach --min_style; kept samples are picked round-robin over the
shapes, the most striped first, one per colour and shape, up to --keep. The middle frame of each is written as
a PNG with its prompt as caption (.txt), beside the reference, in the folder layout `--style_image` reads;
scores.json holds every candidate's scores. --out must not hold other images (they would join the tune); an
earlier round's reference and samples there are replaced.
"""

from __future__ import annotations

import json
import os
import time

import imageio.v3 as iio
import numpy as np
from absl import app, flags

from lumiere_jax import config_lib, video_io
from lumiere_jax.applications import edit
from lumiere_jax.applications.inputs import Request, read_image
from lumiere_jax.data import shapes
from lumiere_jax.eval import app_metrics, shapes_checker

_T2V = flags.DEFINE_string("t2v", None, "The configs/t2v.py run the style was tuned from.")
_STYLE = flags.DEFINE_string("style_weights", None, "The first round's style weights (--mode=style_tune).")
_REFERENCE = flags.DEFINE_string("reference", None, "The style reference image the first round was tuned on.")
_CAPTION = flags.DEFINE_string("caption", None, "The reference's caption (the first round's --prompt).")
_OUT = flags.DEFINE_string("out", None, "Folder to write (the reference, kept samples, captions, scores.json).")
_STYLE_WORDS = flags.DEFINE_string("style_words", "on a striped background", "The words naming the style.")
_SEEDS = flags.DEFINE_integer("seeds", 4, "Samples per colour and shape.")
_KEEP = flags.DEFINE_integer("keep", 8, "At most this many samples are kept.")
_MIN_STYLE = flags.DEFINE_float("min_style", 2.0, "Least stripe amplitude of a kept sample (the style image "
                                "scores ~17, the base model ~0.3).")
_ALPHA = flags.DEFINE_float("style_alpha", 1.0, "Style weight a of the first round's samples (above 1 "
                            "extrapolates: a stronger style; docs/applications.md).")
_STYLE_START = flags.DEFINE_float("style_start", config_lib.base_config().sample.style_start,
                                  "Diffusion time from which the style weights apply (1: every step).")
_SIZE = flags.DEFINE_string("size", "tiny", "Config size of the run.")
_STEPS = flags.DEFINE_integer("steps", 25, "DDIM steps.")
_GUIDANCE = flags.DEFINE_float("guidance", 2.0, "Classifier-free guidance.")


def main(argv) -> None:
    del argv
    from configs import t2v as t2v_config
    from lumiere_jax import sampling

    for name, flag in (("--t2v", _T2V), ("--style_weights", _STYLE), ("--reference", _REFERENCE),
                       ("--caption", _CAPTION), ("--out", _OUT)):
        if not flag.value:
            raise app.UsageError(f"{name} is required.")
    if _SEEDS.value < 1 or _KEEP.value < 0:
        raise app.UsageError(f"--seeds={_SEEDS.value} must be at least 1 and --keep={_KEEP.value} at least 0.")
    if os.path.isdir(_OUT.value):
        foreign = sorted(n for n in os.listdir(_OUT.value) if os.path.splitext(n)[1].lower() in
                         (".png", ".jpg", ".jpeg") and not n.startswith(("sample_", "reference.")))
        if foreign:
            raise app.UsageError(f"--out={_OUT.value} holds other images ({', '.join(foreign[:3])}), which would "
                                 f"join the next round's tune: give an empty or new folder.")
    config = t2v_config.get_config(f"size={_SIZE.value}")
    reference = read_image(_REFERENCE.value, config.data.resolution, "--reference")
    t2v = sampling.load_text_to_video(config, _T2V.value)[0]
    edit.apply_style(t2v, Request("t2v", style_weights=_STYLE.value, style_alpha=_ALPHA.value,
                                  style_start=_STYLE_START.value))
    content = [(c, s) for c in shapes.COLORS for s in shapes.SHAPES]
    prompts = [f"a large {c} {s} {_STYLE_WORDS.value}" for c, s in content]  # as the reference's caption
    t0 = time.time()
    candidates, frames = [], []
    for seed in range(_SEEDS.value):
        clips = video_io.to_uint8(t2v(prompts, seed=1000 + seed, steps=_STEPS.value, guidance=_GUIDANCE.value,
                                      sampler="ddim"))
        for (color, shape), prompt, clip in zip(content, prompts, clips):
            found = shapes_checker.analyze_clip(clip)
            frame = clip[len(clip) // 2]
            frames.append(frame)
            candidates.append({"prompt": prompt, "color": color, "shape": shape, "seed": seed,
                               "found_color": found["color"], "found_shape": found["shape"],
                               "style": app_metrics.stripe_amplitude(frame[None])})
    kept = app_metrics.select_feedback(candidates, _KEEP.value, _MIN_STYLE.value)
    os.makedirs(_OUT.value, exist_ok=True)
    for name in os.listdir(_OUT.value):  # an earlier round's samples must not join this one
        if name.startswith(("sample_", "reference.")):
            os.remove(os.path.join(_OUT.value, name))
    images = [video_io.to_uint8(reference)] + [frames[i] for i in kept]
    captions = [_CAPTION.value.strip()] + [candidates[i]["prompt"] for i in kept]
    for stem, image, words in zip(["reference"] + [f"sample_{rank:02d}" for rank in range(len(kept))],
                                  images, captions):
        iio.imwrite(os.path.join(_OUT.value, stem + ".png"), image)
        with open(os.path.join(_OUT.value, stem + ".txt"), "w") as f:
            f.write(words + "\n")
    with open(os.path.join(_OUT.value, "scores.json"), "w") as f:
        json.dump({"kept": kept, "candidates": candidates}, f, indent=1)
    styles = np.array([c["style"] for c in candidates])
    right = np.array([c["found_color"] == c["color"] and c["found_shape"] == c["shape"] for c in candidates])
    print(f"{len(candidates)} samples in {time.time() - t0:.0f}s: stripe amplitude mean {styles.mean():.2f}, "
          f"colour and shape as prompted {right.mean():.0%}; kept {len(kept)} (mean stripes "
          f"{styles[kept].mean() if kept else float('nan'):.2f}):")
    for i in kept:
        print(f"  {candidates[i]['prompt']:<48} stripes {candidates[i]['style']:.2f}")
    print(f"Tune the next round with --style_image={_OUT.value}")


if __name__ == "__main__":
    app.run(main)
