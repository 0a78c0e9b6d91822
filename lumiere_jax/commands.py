"""What each `--mode` of the command line does with its inputs: the layer between main.py's flags and the library.

Each command checks its inputs first, with one-line errors (`UsageError`, `ValueError`) that name the value and
the fix, before any weights are restored or anything compiles. Sampling and evaluation read the trained run in
--workdir or, without one, the model that ships with the package for the config (`resolve_run`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Sequence

import ml_collections

from lumiere_jax import (config_lib, distill, evaluate as evaluation, paths, runs, sampling, sharding, shipped, ssr,
                         train, video_io)
from lumiere_jax.applications import edit, inputs, style_tune as tuning

MAX_PROMPT_CHARS = 1000
# The modes that run without --workdir, on the shipped model of the config (`resolve_run`).
SHIPPED_MODES = ("sample", "eval")
# Where --mode=eval without --workdir or --out writes its results.
SHIPPED_EVAL_DIR = "eval_shipped"


class UsageError(ValueError):
    """A mistake in the command line or its inputs; reported as one line, without a traceback."""


@dataclasses.dataclass(frozen=True)
class SampleInputs:
    """The inputs and output of `--mode=sample` (how to sample is config.sample's)."""

    prompt: str | None
    out: str | None
    seed: int = 0
    frames: int | None = None  # clip length; default the training length
    prompt_at: Sequence[str] = ()  # story mode: FRAME:TEXT spans after --prompt's
    image: str | None = None
    video: str | None = None
    mask: str | None = None
    style_weights: str | None = None
    ssr_workdir: str | None = None


@dataclasses.dataclass(frozen=True)
class StyleInputs:
    """The inputs and output of `--mode=style_tune`."""

    style_image: str | None
    prompt: str | None
    style_weights: str | None


def check(mode: str, config: ml_collections.ConfigDict, workdir: str | None, request: SampleInputs | None = None,
          style: StyleInputs | None = None, eval_out: str | None = None) -> Callable[[], str | None]:
    """Runs every check of `mode`'s inputs that needs nothing restored or compiled (one-line UsageError or
    ValueError); returns what runs the mode and gives the line to print (None: nothing to print).

    workdir None: sample or evaluate the config's shipped model (SHIPPED_MODES). eval_out: --mode=eval's output
    folder (default the workdir, or SHIPPED_EVAL_DIR without one)."""
    require_workdir(mode, workdir)
    if mode == "train":
        check_train(config, workdir)
        return lambda: train_run(config, workdir)
    if mode == "sample":
        request = request or SampleInputs(prompt=None, out=None)
        planned = check_sample(config, workdir, request)
        return lambda: sample(config, workdir, request, planned)
    if mode == "style_tune":
        style = style or StyleInputs(None, None, None)
        checked = check_style_tune(config, workdir, style)
        return lambda: style_tune(config, workdir, style.style_image, style.prompt, style.style_weights, checked)
    if mode == "eval":
        config, out = check_eval(config, workdir, eval_out)
        return lambda: json.dumps(evaluate(config, workdir, out), indent=2)
    raise UsageError(f"--mode={mode} is not one of train, sample, eval, style_tune.")


def require_workdir(mode: str, workdir: str | None) -> None:
    """--workdir may be left out only where a shipped model stands in for it (SHIPPED_MODES)."""
    if not workdir and mode not in SHIPPED_MODES:
        raise UsageError("--workdir is required: the run directory for checkpoints and samples.")


def check_workdir(workdir: str, *, trained: bool) -> None:
    """--workdir: for training, a folder that exists or can be made, and written; else a trained run's folder."""
    if paths.is_remote(workdir):
        return  # a bucket: checked when it is first read or written
    path = os.path.abspath(os.path.expanduser(workdir))
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"--workdir={workdir} is a file, not a folder: give the run's folder "
                         f"({'a new or existing one' if not trained else 'the workdir of a trained run'}).")
    if not trained:  # missing, or not a run: runs.load names the problem before anything is restored
        _check_writable_folder(workdir, "--workdir")


def _check_writable_folder(folder: str, flag: str) -> None:
    """A local folder (not a file: checked before) that exists and can be written, or can be made."""
    path = os.path.abspath(os.path.expanduser(folder))
    if os.path.isdir(path):
        if not os.access(path, os.W_OK | os.X_OK):
            raise UsageError(f"{flag}={folder} is not writable: give a folder you can write to.")
        return
    parent = os.path.dirname(path)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise UsageError(f"{flag}={folder} cannot be made: {parent} is a file, not a folder. Give a path in a "
                         f"folder.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{flag}={folder} cannot be made: {parent} is not writable. Give a folder you can "
                         f"write to.")


def check_train(config: ml_collections.ConfigDict, workdir: str) -> None:
    """--mode=train's checks before any data is built: the config, the workdir and the device mesh."""
    config_lib.validate(config)
    check_workdir(workdir, trained=False)
    train.check_mesh(config, sharding.make_mesh(config))


def train_run(config: ml_collections.ConfigDict, workdir: str) -> None:
    train.train_and_evaluate(config, workdir)


def shipped_name(config: ml_collections.ConfigDict | None, steps: int | None = None) -> str:
    """The shipped model that stands in for --workdir under `config` (None: the default one): its distilled student
    where one ships for `steps` (shipped.STUDENTS), else the teacher; one line for a config that ships none."""
    if config is None:
        return shipped.DEFAULT
    name = shipped.default_name(config, steps)
    if name is None:
        raise UsageError(f"--workdir is required for {config.task} size={config.size}: only configs/t2v.py (size tiny) "
                         f"ships trained weights; give a trained run with --workdir=DIR.")
    return name


def resolve_config(config: ml_collections.ConfigDict, workdir: str | None,
                   steps: int | None = None) -> ml_collections.ConfigDict:
    """The config that samples the run in workdir (`config` itself) or, without one, the shipped model for `steps`
    denoising steps (shipped.sampling_config: its model and training shape, `config`'s sampling keys; a distilled
    student's one call a step leaves no guidance to rescale, so sample.guidance_rescale is 0). Reads JSON only."""
    if workdir:
        return config
    name = shipped_name(config, steps)
    config = shipped.sampling_config(name, config)
    if distill.distilled_for(shipped.folder(name)) is not None:
        config.sample.guidance_rescale = 0.0
    return config


def resolve_run(config: ml_collections.ConfigDict | None, workdir: str | None, flag: str = "--workdir",
                steps: int | None = None) -> runs.Run:
    """The run that sampling, evaluation and the demo read: the newest checkpoint's EMA weights of the run in
    workdir (runs.load), or without workdir the shipped model of `config` for `steps` (shipped.load; config None:
    the default one). One-line errors name the flag, or say that no model ships."""
    if workdir:
        return runs.load(workdir, config, flag=flag)
    return shipped.load(shipped_name(config, steps), config)


def load_sampler(config: ml_collections.ConfigDict, workdir: str | None,
                 steps: int | None = None) -> tuple[sampling.TextToVideo, int]:
    """The text-to-video sampler of `resolve_run`'s weights, and their step."""
    run = resolve_run(config, workdir, steps=steps)
    return sampling.TextToVideo.from_run(run), run.step


def _weights_words(workdir: str | None, config: ml_collections.ConfigDict, step: int, steps: int) -> str:
    """How the output line names the weights: the run's checkpoint step, or the shipped model's."""
    if workdir:
        return f"checkpoint step {step}"
    name = shipped_name(config, steps)
    calls = "" if distill.distilled_for(shipped.folder(name)) is None else f", distilled: {steps} calls"
    return f"shipped model {name}, step {step}{calls}"


def _check_distilled_eval(config: ml_collections.ConfigDict, workdir: str | None) -> None:
    """Refuses, before anything is restored, an eval.steps or eval.guidance that the distilled run in workdir (or
    the shipped student resolve_config chose) has not learned; nothing to check for other runs."""
    e = config.eval
    distilled = distill.distilled_for(workdir or shipped.folder(shipped_name(config, e.steps)))
    if distilled is not None:
        try:
            distill.check_request(distilled, e.steps, e.guidance, config.sample.guidance_rescale)
        except ValueError as error:
            raise UsageError(str(error)) from None


def _check_output(out: str | None, config: ml_collections.ConfigDict) -> None:
    extensions = (".mp4", ".gif", ".png") if config.data.num_frames == 1 else (".mp4", ".gif")
    if not out or os.path.splitext(out)[1].lower() not in extensions:
        raise UsageError(f"--out={out!r}: give an output file ending in {' or '.join(extensions)}.")
    if os.path.isdir(out):
        raise UsageError(f"--out={out} is a folder: give a file name in it, e.g. --out={os.path.join(out, 'clip.mp4')}.")
    out_dir = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(out_dir) or not os.access(out_dir, os.W_OK):
        raise UsageError(f"--out={out}: folder {out_dir} does not exist or is not writable.")


@dataclasses.dataclass(frozen=True)
class SamplePlan:
    """What `check_sample` worked out from the inputs: the clip length, the prompt spans, the long-video layout and
    method, the application's inputs (read) and the SSR run's config of a cascade."""

    frames: int
    spans: list[tuple[int, str]]
    layout: sampling.LongVideo
    method: str
    story_trained: bool
    plan: Any  # inputs.Request
    ssr_config: ml_collections.ConfigDict | None
    config: ml_collections.ConfigDict  # what samples: resolve_config's


def check_sample(config: ml_collections.ConfigDict, workdir: str | None, request: SampleInputs) -> SamplePlan:
    """--mode=sample's checks, before any weights are restored or anything compiles; reads the input files.
    workdir None: the shipped model of `config` (resolve_config)."""
    prompt = request.prompt
    if prompt is None or not prompt.strip():
        raise UsageError('--mode=sample needs a non-empty --prompt="a red circle moving left".')
    if workdir:
        check_workdir(workdir, trained=True)
    config = resolve_config(config, workdir, config.sample.steps)
    _check_output(request.out, config)
    s = config.sample
    config_lib.validate_sample(config)
    config_lib.validate_model(config)
    window = config.data.num_frames
    if request.frames is not None and request.frames < 1:
        raise UsageError(f"--frames={request.frames} must be a positive number of frames; leave it out for the "
                         f"model's training length {window}.")
    frames = request.frames or window
    if frames < window:
        raise UsageError(f"--frames={frames} is shorter than the model's training length {window}: use "
                         f"--frames >= {window} (longer clips: config.sample.long_video).")
    config_lib.check_fits(f"--frames={frames}", 2, frames, config.data.resolution)  # guided: 2 clips a step
    if not 0 <= request.seed < 2 ** 63:
        raise UsageError(f"--seed={request.seed} must be in [0, 2**63).")
    try:
        spans = sampling.story_spans(prompt, request.prompt_at, frames)
    except ValueError as e:
        raise UsageError(str(e)) from None
    for start, text in spans:
        if len(text) > MAX_PROMPT_CHARS:
            which = "--prompt" if len(spans) == 1 else f"The prompt from frame {start}"
            raise UsageError(f"{which} has {len(text)} characters; keep it under {MAX_PROMPT_CHARS} "
                             f"(the text encoder reads only the first {config.text_max_length} tokens).")
    layout = sampling.LongVideo.from_config(s)
    story_trained = runs.trained_on_stories(workdir or shipped.folder(shipped_name(config, s.steps)))
    try:
        method = sampling.long_video_method(layout.method, len(spans), frames,
                                            config_lib.model_config(config).frame_multiple, story_trained, window)
    except ValueError as e:
        raise UsageError(str(e)) from None
    plan = inputs.plan(config, image=request.image, video=request.video, mask=request.mask,
                       style_weights=request.style_weights, frames=request.frames, prompt_spans=len(spans))
    if config.task == "ssr":
        raise UsageError("--config is an SSR model: sample with the base model's config and --ssr_workdir=<this run>.")
    if s.ssr_window_batch != -1 and request.ssr_workdir is None:
        raise UsageError(f"--config.sample.ssr_window_batch={s.ssr_window_batch} needs --ssr_workdir (the cascade); "
                         f"drop it or give the SSR run.")
    ssr_config = None
    if request.ssr_workdir is not None:
        ssr_config = ssr.check_cascade(config, request.ssr_workdir, frames)  # before anything compiles
        if s.ssr_window_batch != -1:
            ssr_config.ssr.window_batch = s.ssr_window_batch
    try:  # a distilled run (or shipped student) samples at the step count and guidance weights it learned
        distill.check_sampling(config, workdir or shipped.folder(shipped_name(config, s.steps)), request.ssr_workdir)
    except ValueError as e:
        raise UsageError(str(e)) from None
    return SamplePlan(frames=frames, spans=spans, layout=layout, method=method, story_trained=story_trained,
                      plan=plan, ssr_config=ssr_config, config=config)


def sample(config: ml_collections.ConfigDict, workdir: str | None, request: SampleInputs,
           checked: SamplePlan | None = None) -> str:
    """Samples one clip (text-to-video, long video or story, an application, or the cascade) to request.out;
    returns the line that says what was written. `checked`: what check_sample returned for these inputs."""
    checked = checked or check_sample(config, workdir, request)
    config = checked.config
    s, window = config.sample, config.data.num_frames
    frames, spans, layout, method = checked.frames, checked.spans, checked.layout, checked.method
    plan, ssr_config, story_trained = checked.plan, checked.ssr_config, checked.story_trained
    prompt = spans[0][1]
    t2v, step = load_sampler(config, workdir, s.steps)
    step = _weights_words(workdir, config, step, s.steps)
    edit.apply_style(t2v, plan)
    kwargs = dict(seed=request.seed, steps=s.steps, guidance=s.guidance, sampler=s.sampler)
    if plan.kind != "t2v":
        clip = edit.run(plan, t2v, prompt, **kwargs)
    elif frames == window and len(spans) == 1:
        clip = t2v([prompt], **kwargs)[0]
    else:
        clip = t2v.long_video(spans, frames, layout=layout, **kwargs)
    if ssr_config is not None:
        upsampler, ssr_step = ssr.SuperResolution.from_workdir(request.ssr_workdir, ssr_config, t2v.encoder, config)
        clip = upsampler(clip[None], spans=spans, seed=request.seed, steps=s.steps, sampler=s.sampler)[0]
        step = f"{step}, SSR checkpoint step {ssr_step}" + (
            f", SSR windows {upsampler.window_batch} at a time" if upsampler.window_batch else "")
    video_io.write_video(request.out, video_io.to_uint8(clip), s.fps)
    layout_words = ""
    if plan.kind == "t2v" and (frames > window or len(spans) > 1):
        per_frame = len(spans) > 1 and (method == "whole" or sampling.windows_read_frame_prompts(
            method, len(spans), story_trained))
        layout_words = (", the whole clip" if method == "whole" else ", MultiDiffusion windows") + (
            " with a prompt per frame" if per_frame else "")
    return f"Wrote {request.out} ({frames} frames at {clip.shape[1]}x{clip.shape[2]}{layout_words}, {step})."


def check_style_tune(config: ml_collections.ConfigDict, workdir: str,
                     style: StyleInputs) -> tuple[Any, list[str]]:
    """--mode=style_tune's checks; returns the style images and their captions (tuning.check_style_tune)."""
    check_workdir(workdir, trained=True)
    if style.style_weights and os.path.isdir(style.style_weights):
        raise UsageError(f"--style_weights={style.style_weights} is a folder: give the output file, ending in "
                         f".safetensors.")
    config_lib.validate_model(config)
    config_lib.validate_style(config)
    return tuning.check_style_tune(config, style.style_image, style.prompt, style.style_weights)


def style_tune(config: ml_collections.ConfigDict, workdir: str, style_image: str | None, prompt: str | None,
               style_weights: str | None, checked: tuple[Any, list[str]] | None = None) -> str:
    """Fine-tunes the spatial layers of the run in workdir on the style image(s); writes style_weights."""
    images, captions = checked or check_style_tune(config, workdir, StyleInputs(style_image, prompt, style_weights))
    t2v, step = load_sampler(config, workdir)
    tuning.style_tune(config, t2v.params, t2v.encoder, images, captions, style_weights,
                      source=f"{os.path.abspath(workdir)} step {step}", schedule=t2v.schedule)
    return (f"Wrote {style_weights} (spatial weights after {config.style.steps} steps on {style_image}, "
            f"{len(images)} image(s)); sample with --style_weights={style_weights} (config.sample.style_alpha: "
            f"lower keeps more of the base model, higher strengthens the style).")


def check_eval(config: ml_collections.ConfigDict, workdir: str | None,
               out: str | None = None) -> tuple[ml_collections.ConfigDict, str]:
    """--mode=eval's checks, before any weights are restored; returns the config that evaluates (resolve_config)
    and the folder the results go in: --out, else the workdir, else SHIPPED_EVAL_DIR."""
    if workdir:
        check_workdir(workdir, trained=True)
    config = resolve_config(config, workdir, config.eval.steps)
    if out is not None:
        if not out.strip():
            raise UsageError("--out is empty: give the folder for the evaluation's results, or leave it out.")
        if not paths.is_remote(out) and os.path.exists(os.path.expanduser(out)) and not os.path.isdir(
                os.path.expanduser(out)):
            raise UsageError(f"--out={out} is a file: --mode=eval writes eval.json and a GIF grid in a folder; give "
                             f"one, e.g. --out={SHIPPED_EVAL_DIR}.")
    out = out or workdir or SHIPPED_EVAL_DIR
    if not paths.is_remote(out) and out != workdir:
        _check_writable_folder(out, "--out")
    if config.eval.protocol == "shapes" and config.data.dataset != "shapes_world":
        raise UsageError(f"--mode=eval checks samples of the shapes world with its program checker; this run trains "
                         f"on data.dataset={config.data.dataset!r}, which it cannot check. Measure it against real "
                         f"video with --config.eval.protocol=videos --config.eval.data=DIR (or =ucf101), or sample "
                         f"with --mode=sample.")
    config_lib.validate_model(config)
    config_lib.validate_eval(config)
    _check_distilled_eval(config, workdir)
    if config.eval.protocol in config_lib.REAL_VIDEO_PROTOCOLS:
        evaluation.check_real_eval(config)  # eval.data's layout, the sizes, the I3D/C3D weights
    return config, out


def evaluate(config: ml_collections.ConfigDict, workdir: str | None, out: str | None = None) -> dict[str, Any]:
    """Samples the evaluation prompts (config.eval), checks them, writes eval.json under `out` (check_eval's
    default); returns the summary."""
    config, out = check_eval(config, workdir, out)
    t2v, step = load_sampler(config, workdir, config.eval.steps)
    result = evaluation.run_eval(t2v, config, out, step)
    summary = {"step": step, "results": out}
    if config.eval.protocol == "shapes":
        summary.update({k: result[k] for k in ("accuracy", "frechet") if k in result})
    else:
        summary.update({k: v for k, v in result.items() if k.startswith(("fvd", "frechet", "inception_score"))})
    return summary
