"""Evaluates text-to-video samples on the shapes world: checker accuracy per attribute, and Frechet distances.

The program checker says whether each clip shows what its prompt asked for. The Frechet distances say how
far the generated clips are, as a distribution, from real test clips: in the feature space of the
project's shapes-world classifier (`config.eval.feature_net`, see configs/feature_net.py) and, with
converted I3D weights (`config.eval.i3d_weights`), the standard FVD.
"""

from __future__ import annotations

import itertools
import json
import os
from typing import Any

import numpy as np
from tensorboardX import SummaryWriter

from lumiere_jax import paths, video_io
from lumiere_jax.data import shapes
from lumiere_jax.eval import feature_net, frechet, i3d, paraphrases, shapes_checker

ATTRIBUTES = ("color", "shape", "motion", "consistent")


def eval_prompts(num: int, seed: int, prompt_set: str = "template") -> list[dict[str, str]]:
    """A fixed, balanced set of single-object prompts: every colour x motion, shapes cycled.

    Colour and motion are the attributes the targets are stated for, so the
    first 30 prompts cover each of their combinations once. prompt_set "template" words them as the
    training captions do; "paraphrase" in words and forms no training caption uses (eval/paraphrases.py),
    for the same attributes.
    """
    if prompt_set not in paraphrases.PROMPT_SETS:
        raise ValueError(f"eval.prompts={prompt_set!r} must be one of {paraphrases.PROMPT_SETS}.")
    combos = list(itertools.product(shapes.COLORS[:6], shapes.MOTIONS))  # 30 (colour, motion) pairs
    order = np.random.default_rng(seed).permutation(len(combos))
    out = []
    for i in range(num):
        color, motion = combos[order[i % len(combos)]]
        shape = shapes.SHAPES[(i + i // len(combos)) % len(shapes.SHAPES)]
        prompt = (paraphrases.paraphrase(color, shape, motion, i) if prompt_set == "paraphrase"
                  else shapes.prompt_for(color, shape, motion))
        out.append({"color": color, "shape": shape, "motion": motion, "prompt": prompt})
    return out


def score_clips(clips_uint8: np.ndarray, expected: list[dict[str, str]]) -> dict[str, Any]:
    """Checks each clip [N, T, H, W, 3] against its prompt's attributes; returns accuracies and per-clip rows."""
    rows = []
    for clip, exp in zip(clips_uint8, expected):
        found = shapes_checker.analyze_clip(clip)
        ok = shapes_checker.check_clip(clip, exp)
        rows.append({"prompt": exp["prompt"], **{f"found_{k}": found.get(k) for k in ("color", "shape", "motion")},
                     **{k: bool(ok.get(k, False)) for k in ATTRIBUTES}})
    accuracy = {k: float(np.mean([r[k] for r in rows])) for k in ATTRIBUTES}
    accuracy["all"] = float(np.mean([all(r[k] for k in ("color", "shape", "motion")) for r in rows]))
    return {"accuracy": accuracy, "clips": rows}


def real_clips(config: Any, num: int) -> np.ndarray:
    """The first `num` clips of the test split of config.data, uint8 [N, T, H, W, 3]."""
    return feature_net.load_split(config.data, "test", num)["video"]


def frechet_scores(generated_uint8: np.ndarray, real_uint8: np.ndarray, *, feature_net_dir: str = "",
                   i3d_weights: str = "", i3d_resolution: int = 224) -> dict[str, float]:
    """Frechet distances between generated and real clips (uint8 [N, T, H, W, 3]) in each feature space set.

    `*_real_floor` is the distance between two disjoint halves of the real clips, the first as large as the
    generated set: what a perfect generator would score with this many samples (the estimate's bias).
    """
    gen, real = feature_net.to_float(generated_uint8), feature_net.to_float(real_uint8)
    n = len(gen)
    embedders = {}
    if feature_net_dir:
        embedders["feature_net"] = feature_net.FeatureNet.load(feature_net_dir).features
    if i3d_weights:
        embedders["fvd_i3d"] = i3d.I3DFeatures(i3d_weights, resolution=i3d_resolution).features
    out = {}
    for name, embed in embedders.items():
        f_gen, f_real = embed(gen), embed(real)
        out[f"frechet_{name}"] = frechet.frechet_distance_features(f_gen, f_real)
        if len(real) >= n + 2:
            out[f"frechet_{name}_real_floor"] = frechet.frechet_distance_features(f_real[:n], f_real[n:])
    return out


def run_eval(t2v: Any, config: Any, workdir: str, step: int) -> dict[str, Any]:
    """Samples config.eval.num_clips clips, scores them, writes eval_<step>.json, TensorBoard and a GIF grid.

    With config.eval.feature_net (a trained feature-net workdir) or config.eval.i3d_weights set, it also
    measures Frechet distances to config.eval.num_real real test clips.
    """
    e = config.eval
    expected = eval_prompts(e.num_clips, e.seed, e.prompts)
    clips = t2v([x["prompt"] for x in expected], seed=e.seed, steps=e.steps, guidance=e.guidance,
                sampler=config.sample.sampler, batch_size=e.batch_size)
    clips_uint8 = video_io.to_uint8(clips)
    result = score_clips(clips_uint8, expected)
    result.update(step=step, prompts=e.prompts, num_clips=e.num_clips, steps=e.steps, guidance=e.guidance,
                  sampler=config.sample.sampler, thresholding=config.sample.thresholding,
                  guidance_rescale=config.sample.guidance_rescale)
    feature_net_dir, i3d_weights = e.feature_net, e.i3d_weights
    if feature_net_dir or i3d_weights:
        real = real_clips(config, min(e.num_real, config.data.num_test))
        result["frechet"] = frechet_scores(clips_uint8, real, feature_net_dir=feature_net_dir,
                                           i3d_weights=i3d_weights, i3d_resolution=e.i3d_resolution)
        result["frechet"]["num_real"] = int(len(real))
    # Each file is written whole or not at all (a full disk: paths.DiskFullError, one line naming it).
    out_dir = os.path.join(workdir, "eval")
    text = json.dumps(result, indent=2)
    paths.write_atomic(paths.resolve(out_dir) / f"eval_{step:07d}.json", text)
    paths.write_atomic(paths.resolve(workdir) / "eval.json", text)
    columns = 10 if len(clips_uint8) > 30 else 6
    video_io.write_video(os.path.join(out_dir, f"grid_{step:07d}.gif"),
                         video_io.upscale(video_io.grid(clips_uint8[:100], columns=columns), 2), config.sample.fps)
    with SummaryWriter(os.path.join(workdir, "tb")) as writer:
        for k, v in result["accuracy"].items():
            writer.add_scalar(f"eval/{k}_accuracy", v, step)
        for k, v in result.get("frechet", {}).items():
            if k != "num_real":
                writer.add_scalar(f"eval/{k}", v, step)
    return result
