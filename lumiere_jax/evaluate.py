"""Evaluates text-to-video samples: on the shapes world with the program checker, or against real video.

`config.eval.protocol` picks what the samples are measured against:

- "shapes" (default): the program checker says whether each clip shows what its prompt asked for, and Frechet
  distances say how far the generated clips are, as a distribution, from the shapes world's test clips: in the
  feature space of the project's shapes-world classifier (`config.eval.feature_net`, see configs/feature_net.py)
  and, with converted I3D weights (`config.eval.i3d_weights`), the standard FVD.
- "ucf101": zero-shot UCF-101 as Make-A-Video and Lumiere report it: prompts from the 101 class names
  (eval/ucf101.py), clips generated and real clips drawn class-balanced from a local UCF-101 copy
  (`config.eval.data`), FVD with I3D beside the real-vs-real floor of the same size, and the Inception Score where a
  C3D checkpoint is given (`config.eval.is_classifier`; eval/c3d.py), else reported as unavailable.
- "videos": the same measurements against any folder or manifest of captioned videos, prompted by the captions.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import time
from typing import Any, Callable

import numpy as np
from tensorboardX import SummaryWriter

from lumiere_jax import paths, video_io
from lumiere_jax.data import shapes
from lumiere_jax.eval import c3d, feature_net, frechet, i3d, paraphrases, real_video, shapes_checker, ucf101

log = logging.getLogger("lumiere_jax")

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
    """Runs config.eval.protocol's evaluation and writes eval.json and eval/eval_<step>.json, TensorBoard and a GIF
    grid of the clips under workdir; returns the result.

    "shapes": samples config.eval.num_clips clips of the evaluation prompts and scores them with the checker; with
    config.eval.feature_net (a trained feature-net workdir) or config.eval.i3d_weights set, it also measures Frechet
    distances to config.eval.num_real real test clips. "ucf101" and "videos": `run_real_eval`.
    """
    e = config.eval
    if e.protocol != "shapes":
        return run_real_eval(t2v, config, workdir, step)
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
    scalars = {f"{k}_accuracy": v for k, v in result["accuracy"].items()}
    scalars.update({k: v for k, v in result.get("frechet", {}).items() if k != "num_real"})
    _write(result, clips_uint8, scalars, workdir, step, config.sample.fps)
    return result


def _write(result: dict[str, Any], clips_uint8: np.ndarray, scalars: dict[str, float], workdir: str, step: int,
           fps: int) -> None:
    """eval.json, eval/eval_<step>.json, a GIF grid of the clips (up to 100) and the scalars in TensorBoard."""
    # Each file is written whole or not at all (a full disk: paths.DiskFullError, one line naming it).
    out_dir = os.path.join(workdir, "eval")
    text = json.dumps(result, indent=2)
    paths.write_atomic(paths.resolve(out_dir) / f"eval_{step:07d}.json", text)
    paths.write_atomic(paths.resolve(workdir) / "eval.json", text)
    columns = 10 if len(clips_uint8) > 30 else 6
    video_io.write_video(os.path.join(out_dir, f"grid_{step:07d}.gif"),
                         video_io.upscale(video_io.grid(clips_uint8[:100], columns=columns), 2), fps)
    with SummaryWriter(os.path.join(workdir, "tb")) as writer:
        for k, v in scalars.items():
            if v is not None:
                writer.add_scalar(f"eval/{k}", v, step)


# ------------------------------------------------------------------------------------------------- real video


def check_real_eval(config: Any) -> list[real_video.Group]:
    """Everything a real-video evaluation (eval.protocol "ucf101" or "videos") reads, checked before any weights are
    restored or anything compiles: the source's groups, the sizes against them, and the embedding weights (read
    and matched by name and shape). Returns the groups; one-line ValueError / FileNotFoundError otherwise."""
    e = config.eval
    if e.protocol == "ucf101" and not e.i3d_weights:
        raise ValueError("eval.protocol='ucf101' measures FVD with I3D: give --config.eval.i3d_weights=PATH, "
                         "converted pytorch-i3d Kinetics-400 weights (.npz; see docs/evaluation.md). Nothing is "
                         "downloaded.")
    if not e.i3d_weights and not e.feature_net:
        raise ValueError("eval.protocol='videos' needs a feature space for its Frechet distance: give "
                         "--config.eval.i3d_weights=PATH (converted I3D weights: FVD) or "
                         "--config.eval.feature_net=DIR.")
    groups = real_video.groups_of(e.protocol, e.data)
    if e.protocol == "ucf101":
        for key, value in (("num_clips", e.num_clips), ("num_real", e.num_real)):
            if value < len(groups):
                raise ValueError(f"eval.{key}={value} is fewer than the {len(groups)} classes in eval.data={e.data}: "
                                 f"every class gets its share, so use at least {len(groups)} (the paper's protocol: "
                                 f"10000).")
    if e.i3d_weights:
        i3d.check_weights(os.path.expanduser(e.i3d_weights))  # names and shapes, read without building the net
    if e.is_classifier:
        c3d.check_weights(e.is_classifier)
    return groups


class _Features:
    """The feature spaces of config.eval (I3D for FVD, the feature net) and C3D's class probabilities for IS, of
    uint8 clips, collected chunk by chunk so no more than a chunk of clips is held."""

    def __init__(self, e: Any, frames: int):
        self.spaces: dict[str, Callable[[np.ndarray], np.ndarray]] = {}
        if e.i3d_weights:
            net = i3d.I3DFeatures(os.path.expanduser(e.i3d_weights), resolution=e.i3d_resolution)
            self.spaces["fvd"] = net.features
        if e.feature_net:
            self.spaces["frechet_feature_net"] = feature_net.FeatureNet.load(e.feature_net).features
        self.c3d = c3d.C3DClassifier(e.is_classifier) if e.is_classifier and frames >= c3d.NUM_FRAMES else None

    def collector(self, scored: bool = True) -> tuple[dict[str, list[np.ndarray]], Callable[[np.ndarray], None]]:
        """An empty store and the function that adds a chunk's features to it (and C3D's probabilities, where
        `scored` and C3D is given)."""
        store: dict[str, list[np.ndarray]] = {k: [] for k in self.spaces}
        classify = scored and self.c3d is not None
        if classify:
            store["c3d"] = []

        def add(clips_uint8: np.ndarray) -> None:
            x = feature_net.to_float(clips_uint8)
            for name, embed in self.spaces.items():
                store[name].append(embed(x))
            if classify:
                store["c3d"].append(self.c3d.probabilities(clips_uint8))

        return store, add


def inception_score_unavailable(e: Any, frames: int) -> str | None:
    """Why the Inception Score cannot be measured with config.eval `e` on clips of `frames` frames; None when it can."""
    if not e.is_classifier:
        return ("no C3D classifier given (config.eval.is_classifier): the UCF-101 Inception Score is that of "
                "tgan2's C3D; give its converted weights to measure it")
    if frames < c3d.NUM_FRAMES:
        return (f"C3D reads {c3d.NUM_FRAMES} frames and these clips have {frames} (config.eval.frames, or the "
                f"model's data.num_frames)")
    return None


def run_real_eval(t2v: Any, config: Any, workdir: str, step: int) -> dict[str, Any]:
    """Evaluation against real video (eval.protocol "ucf101" or "videos"; eval/real_video.py says how clips are dealt
    and drawn).

    1. The groups of eval.data (UCF-101's classes, or the captions) and the embeddings (I3D, feature net, C3D).
    2. The real reference set (eval.num_real clips) and the floor set (eval.num_clips clips, dealt as the generated
       ones are), decoded at the model's frames, side and data.fps; the floor set takes other files while a group
       has enough.
    3. eval.num_clips generated clips, the prompts dealt the same way, eval.batch_size at a time.
    4. Frechet distances of generated vs reference (FVD with I3D) and floor vs reference (what a generator as good
       as the data would score with this many clips), and the Inception Score of the generated and the reference
       clips where C3D is given.
    Only the first eval.frames frames (0: all) of each clip are read. Writes eval.json as run_eval does.
    """
    e = config.eval
    t0 = time.perf_counter()
    groups = check_real_eval(config)
    frames = e.frames or config.data.num_frames
    geometry = real_video.Geometry(frames, config.data.resolution, float(config.data.fps), config.data.resize)
    features = _Features(e, frames)

    # 2. Real clips: the reference set, then the floor set, from one drawer.
    generated_groups = real_video.deal(groups, e.num_clips, e.seed)
    reference, add_reference = features.collector()
    floor, add_floor = features.collector(scored=False)  # the floor is a Frechet distance only
    with real_video.ClipDrawer(groups, geometry, e.seed, int(config.data.prepare_workers)) as drawer:
        reference_files = drawer.draw(real_video.deal(groups, e.num_real, e.seed), add_reference,
                                      desc="Real clips (reference)")
        floor_files = drawer.draw(generated_groups, add_floor, desc="Real clips (floor)")
    real_summary = drawer.summary()
    real_summary["floor_files_also_in_reference"] = len(set(floor_files) & set(reference_files))

    # 3. Generated clips.
    generated, add_generated = features.collector()
    prompts = [groups[g].prompt for g in generated_groups]
    shown: list[np.ndarray] = []
    t_sample = time.perf_counter()
    for b, start in enumerate(range(0, len(prompts), e.batch_size)):
        batch = prompts[start:start + e.batch_size]
        clips = video_io.to_uint8(t2v(batch, seed=(e.seed + b) % 2 ** 63, steps=e.steps, guidance=e.guidance,
                                      sampler=config.sample.sampler, batch_size=e.batch_size))[:, :frames]
        add_generated(clips)
        if sum(len(c) for c in shown) < 100:
            shown.append(clips)
        done, elapsed = start + len(batch), time.perf_counter() - t_sample
        log.info("Evaluation: %d of %d clips sampled, %.2f clips/s, ETA %.0f s.", done, len(prompts),
                 done / elapsed, (len(prompts) - done) * elapsed / done)

    # 4. Distances and scores.
    generated, reference, floor = ({k: np.concatenate(v) for k, v in store.items()}
                                   for store in (generated, reference, floor))
    result: dict[str, Any] = {"protocol": e.protocol, "data": e.data, "step": step}
    if e.protocol == "ucf101":
        result.update(classes=len(groups), classes_of_ucf101=ucf101.NUM_CLASSES)
    else:
        result.update(captions=len(groups))
    result.update(num_clips=e.num_clips, num_real=e.num_real, num_floor=e.num_clips, frames=frames,
                  model_frames=config.data.num_frames, resolution=config.data.resolution, fps=float(config.data.fps))
    for name in features.spaces:
        result[name] = frechet.frechet_distance_features(generated[name], reference[name])
        result[f"{name}_real_floor"] = frechet.frechet_distance_features(floor[name], reference[name])
    if "fvd" in features.spaces:
        result["i3d_resolution"] = e.i3d_resolution
    why = inception_score_unavailable(e, frames)
    if why is None:
        result["inception_score"] = c3d.inception_score(generated["c3d"])
        result["inception_score_real"] = c3d.inception_score(reference["c3d"])
    else:
        result.update(inception_score=None, inception_score_real=None, inception_score_why=why)
    result.update(steps=e.steps, guidance=e.guidance, sampler=config.sample.sampler, seed=e.seed,
                  thresholding=config.sample.thresholding, guidance_rescale=config.sample.guidance_rescale,
                  real_clips=real_summary, seconds=round(time.perf_counter() - t0, 1))
    scalars = {k: result[k] for k in [*features.spaces, *(f"{n}_real_floor" for n in features.spaces),
                                      "inception_score"]}
    _write(result, np.concatenate(shown)[:100], scalars, workdir, step, config.sample.fps)
    return result
