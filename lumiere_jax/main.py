r"""Command line: `python -m lumiere_jax.main --config=configs/t2v.py --workdir=DIR [--mode=train|sample|eval]`.

  --mode=train   trains; re-running with the same --workdir resumes from its newest checkpoint.
  --mode=sample  --prompt="a red circle moving left" --out=clip.mp4 (or .gif): samples with the EMA weights.
  --mode=eval    samples the evaluation prompts, checks them with the program checker, writes eval.json.
  --mode=style_tune  fine-tunes the spatial layers on --style_image (configs/style_gen.py), writes --style_weights.
Applications (lumiere_jax/applications.py, SPEC section 3) are --mode=sample with --image, --video, --mask,
--strength or --style_weights; see configs/conditional.py, configs/stylize.py and configs/style_gen.py.
Config values are overridden as `--config.total_steps=100`; variants as `--config=configs/t2v.py:size=smoke`.
"""

from __future__ import annotations

import ast
import json
import logging as std_logging
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from lumiere_jax import host_memory

_CONFIG = config_flags.DEFINE_config_file("config", None, "Python config file, e.g. configs/t2v.py[:size=tiny].",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: checkpoints, samples, metrics.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "sample", "eval", "style_tune"], "What to do.")
_PROMPT = flags.DEFINE_string("prompt", None, "Text prompt for --mode=sample; or a story as a JSON list: of prompts, "
                              "one per equal time span ('[\"a red circle moving left\", \"a red circle moving "
                              "up\"]'), or of [frame, prompt] spans.")
_OUT = flags.DEFINE_string("out", None, "Output clip for --mode=sample: .mp4 or .gif.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")
_GUIDANCE = flags.DEFINE_float("guidance", None, "Classifier-free guidance scale (default: config.sample.guidance).")
_STEPS = flags.DEFINE_integer("steps", None, "Denoising steps (default: config.sample.steps).")
_SAMPLER = flags.DEFINE_enum("sampler", None, ["ddim", "ancestral"], "Sampler (default: config.sample.sampler).")
_VERBOSE = flags.DEFINE_bool("verbose", False, "Show libraries' INFO logs (orbax, jax).")
_FRAMES = flags.DEFINE_integer("frames", None, "Clip length for --mode=sample; longer than the training length "
                                "runs the model on the whole clip or on windows of the training length "
                                "(--long_video).")
_PROMPT_AT = flags.DEFINE_multi_string("prompt_at", [], "Story mode: FRAME:TEXT starts a new prompt at FRAME "
                                       "(repeatable); --prompt holds from frame 0.")
_OVERLAP = flags.DEFINE_integer("overlap", None, "Frames shared by neighbouring MultiDiffusion windows of a long "
                                 "clip (default: half the training length; the paper's SSR uses 2).")
_WINDOW_WEIGHTS = flags.DEFINE_enum("window_weights", "triangle", ["uniform", "triangle"],
                                    "Per-frame weight of each window in the MultiDiffusion average of a long clip: "
                                    "triangle trusts a window most in its middle; uniform is the paper's average.")
_SHIFT_WINDOWS = flags.DEFINE_bool("shift_windows", True, "Move the MultiDiffusion window grid of a long clip by "
                                   "a pseudo-random offset at every denoising step, so no frame pair is a window "
                                   "border at every step (--noshift_windows: fixed windows, as the paper).")
_WINDOW_NOISE = flags.DEFINE_enum("window_noise", "repeat", ["independent", "repeat"],
                                  "Initial noise of a long clip: repeat (every window starts from the first "
                                  "window's noise frames, shuffled; fewer jumps, docs/ssr.md) or independent "
                                  "per frame.")
_LONG_VIDEO = flags.DEFINE_enum("long_video", "auto", ["auto", "whole", "windows"],
                                "How a clip longer than the training length is sampled: whole (the model on all "
                                "frames at once; with --prompt_at, each frame its span's prompt), windows "
                                "(temporal MultiDiffusion; the --overlap, --window_weights and --shift_windows "
                                "flags; on a run trained on stories each window reads its own frames' prompts), "
                                "or auto: whole for one prompt, and for --prompt_at stories when the run trained "
                                "on stories (data.story_fraction > 0), windows otherwise (docs/ssr.md).")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "Multi-host: call jax.distributed.initialize() (it finds "
                                  "the coordinator itself on TPU VMs and under SLURM; elsewhere give the next flags).")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0, for --distributed.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes, for --distributed.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index, for --distributed.")
_DEBUG = flags.DEFINE_bool("debug", False, "Show full tracebacks for input errors.")
_SSR_WORKDIR = flags.DEFINE_string("ssr_workdir", None, "Cascade for --mode=sample: a configs/ssr.py run that "
                                   "upsamples the base clip (--steps/--sampler/--seed apply to both models).")
_SSR_WINDOW_BATCH = flags.DEFINE_integer("ssr_window_batch", None, "Cascade: SSR windows per model call (0: all at "
                                         "once; k: k at a time, memory flat in the clip's length); default: the "
                                         "SSR run's ssr.window_batch.")
_IMAGE = flags.DEFINE_string("image", None, "Image-to-video: the first frame (.png); with --mask, the still image "
                             "of a cinemagraph. Needs the conditional model (configs/conditional.py).")
_VIDEO = flags.DEFINE_string("video", None, "Source clip (.mp4/.gif): with --mask, inpainting (conditional "
                             "model); without, SDEdit editing (text-to-video model).")
_MASK = flags.DEFINE_string("mask", None, "Black/white mask (.png for every frame, or .mp4/.gif per frame): white "
                            "is filled (inpainting) or animated (cinemagraph).")
_STRENGTH = flags.DEFINE_float("strength", None, "SDEdit noise level t0 in [0, 1]: 0 keeps --video, 1 ignores it "
                               "(default: config.sdedit.strength or 0.6).")
_STYLE_IMAGE = flags.DEFINE_string("style_image", None, "--mode=style_tune: the style reference image (.png), or a "
                                   "folder of images with captions (a.png + a.txt; tools/style_feedback.py).")
_STYLE_WEIGHTS = flags.DEFINE_string("style_weights", None, "Spatial style weights (.safetensors): written by "
                                     "--mode=style_tune, interpolated into the model by --mode=sample.")
_STYLE_ALPHA = flags.DEFINE_float("style_alpha", None, "Style weight a in [0, 2]: W = a*W_style + (1-a)*W "
                                  "for spatial weights (default 1; the style grows convexly in a, and a > 1 "
                                  "extrapolates past the tune for a stronger style; docs/applications.md).")
_STYLE_START = flags.DEFINE_float("style_start", None, "Diffusion time in (0, 1] from which the style weights "
                                  "apply: the base weights run the noisier steps and lay out the motion "
                                  "(default 0.5; 1: every step).")

MAX_PROMPT_CHARS = 1000


class UsageError(ValueError):
    """A mistake in the command line or its inputs; reported as one line, without a traceback."""


def _load_for_sampling(config, workdir: str):
    """Restores the newest checkpoint's EMA weights and builds the text-to-video sampler."""
    from lumiere_jax import checkpointing, sampling

    if not os.path.isdir(workdir):
        raise UsageError(f"--workdir={workdir} does not exist: train there first with --mode=train.")
    ckpt = checkpointing.Checkpointer(workdir, read_only=True)
    if ckpt.latest_step() is None:
        raise UsageError(f"No checkpoint in {ckpt.directory}: train first with --mode=train --workdir={workdir}.")
    return sampling.load_text_to_video(config, workdir)


def _sample(config, workdir: str) -> None:
    from lumiere_jax import applications, sampling, video_io

    prompt, out = _PROMPT.value, _OUT.value
    if prompt is None or not prompt.strip():
        raise UsageError('--mode=sample needs a non-empty --prompt="a red circle moving left".')
    extensions = (".mp4", ".gif", ".png") if config.data.num_frames == 1 else (".mp4", ".gif")
    if not out or os.path.splitext(out)[1].lower() not in extensions:
        raise UsageError(f"--out={out!r}: give an output file ending in {' or '.join(extensions)}.")
    out_dir = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(out_dir) or not os.access(out_dir, os.W_OK):
        raise UsageError(f"--out={out}: folder {out_dir} does not exist or is not writable.")
    frames = _FRAMES.value or config.data.num_frames
    window = config.data.num_frames
    if frames < window:
        raise UsageError(f"--frames={frames} is shorter than the model's training length {window}: use "
                         f"--frames >= {window} (longer clips: --long_video).")
    try:
        spans = sampling.story_spans(prompt, _PROMPT_AT.value, frames)
    except ValueError as e:
        raise UsageError(str(e)) from None
    for start, text in spans:
        if len(text) > MAX_PROMPT_CHARS:
            which = "--prompt" if len(spans) == 1 else f"The prompt from frame {start}"
            raise UsageError(f"{which} has {len(text)} characters; keep it under {MAX_PROMPT_CHARS} "
                             f"(the text encoder reads only the first {config.text_max_length} tokens).")
    prompt = spans[0][1]
    overlap = sampling.long_video_overlap(window) if _OVERLAP.value is None else _OVERLAP.value
    if not 0 <= overlap < window:
        raise UsageError(f"--overlap={overlap} must be in [0, {window}) frames (the training length); the default "
                         f"is {sampling.long_video_overlap(window)}, the paper's SSR uses 2.")
    if config.sample.window_batch < 0:
        raise UsageError(f"--config.sample.window_batch={config.sample.window_batch} must be >= 0 (0: all windows "
                         f"of a long video in one model call; k: k at a time, for flat memory).")
    from lumiere_jax.state import model_config, trained_on_stories
    story_trained = trained_on_stories(workdir)
    try:
        method = sampling.long_video_method(_LONG_VIDEO.value, len(spans), frames, model_config(config).frame_multiple,
                                            story_trained, window)
    except ValueError as e:
        raise UsageError(str(e)) from None
    request = applications.plan(config, image=_IMAGE.value, video=_VIDEO.value, mask=_MASK.value,
                                strength=_STRENGTH.value, style_weights=_STYLE_WEIGHTS.value,
                                style_alpha=_STYLE_ALPHA.value, style_start=_STYLE_START.value,
                                frames=_FRAMES.value, prompt_spans=len(spans))
    if config.task == "ssr":
        raise UsageError("--config is an SSR model: sample with the base model's config and --ssr_workdir=<this run>.")
    if _SSR_WINDOW_BATCH.value is not None and (_SSR_WORKDIR.value is None or _SSR_WINDOW_BATCH.value < 0):
        raise UsageError(f"--ssr_window_batch={_SSR_WINDOW_BATCH.value} needs --ssr_workdir and a value >= 0 (0: all "
                         f"SSR windows in one model call; k: k at a time).")
    if _SSR_WORKDIR.value is not None:
        from lumiere_jax import ssr
        ssr_config = ssr.check_cascade(config, _SSR_WORKDIR.value, frames)  # before anything compiles
        if _SSR_WINDOW_BATCH.value is not None:
            ssr_config.ssr.window_batch = _SSR_WINDOW_BATCH.value
    t2v, step = _load_for_sampling(config, workdir)
    applications.apply_style(t2v, request)
    kwargs = dict(seed=_SEED.value, steps=config.sample.steps if _STEPS.value is None else _STEPS.value,
                  guidance=config.sample.guidance if _GUIDANCE.value is None else _GUIDANCE.value,
                  sampler=_SAMPLER.value or config.sample.sampler)
    if request.kind != "t2v":
        clip = applications.run(request, t2v, prompt, **kwargs)
    elif frames == window and len(spans) == 1:
        clip = t2v([prompt], **kwargs)[0]
    else:
        clip = t2v.long_video(spans, frames, overlap=overlap, window_weights=_WINDOW_WEIGHTS.value,
                              shift=_SHIFT_WINDOWS.value, noise=_WINDOW_NOISE.value, method=method,
                              window_batch=config.sample.window_batch, **kwargs)
    if _SSR_WORKDIR.value is not None:
        upsampler, ssr_step = ssr.SuperResolution.from_workdir(_SSR_WORKDIR.value, ssr_config, t2v.encoder, config)
        clip = upsampler(clip[None], spans=spans, seed=_SEED.value, steps=_STEPS.value, sampler=_SAMPLER.value)[0]
        step = f"{step}, SSR checkpoint step {ssr_step}" + (
            f", SSR windows {upsampler.window_batch} at a time" if upsampler.window_batch else "")
    video_io.write_video(out, video_io.to_uint8(clip), config.sample.fps)
    layout = ""
    if request.kind == "t2v" and (frames > window or len(spans) > 1):
        per_frame = len(spans) > 1 and (method == "whole" or sampling.windows_read_frame_prompts(
            method, len(spans), story_trained))
        layout = (", the whole clip" if method == "whole" else ", MultiDiffusion windows") + (
            " with a prompt per frame" if per_frame else "")
    print(f"Wrote {out} ({frames} frames at {clip.shape[1]}x{clip.shape[2]}{layout}, checkpoint step {step}).")


def _style_tune(config, workdir: str) -> None:
    from lumiere_jax import applications

    images, captions = applications.check_style_tune(config, _STYLE_IMAGE.value, _PROMPT.value,
                                                      _STYLE_WEIGHTS.value)
    t2v, step = _load_for_sampling(config, workdir)
    applications.style_tune(config, t2v.params, t2v.encoder, images, captions, _STYLE_WEIGHTS.value,
                            source=f"{os.path.abspath(workdir)} step {step}", schedule=t2v.schedule)
    print(f"Wrote {_STYLE_WEIGHTS.value} (spatial weights after {config.style.steps} steps on "
          f"{_STYLE_IMAGE.value}, {len(images)} image(s)); sample with --style_weights={_STYLE_WEIGHTS.value} "
          f"--style_alpha=1.0 (lower keeps more of the base model, higher strengthens the style).")


def _eval(config, workdir: str) -> None:
    from lumiere_jax import evaluate

    t2v, step = _load_for_sampling(config, workdir)
    if _STEPS.value is not None:
        config.eval.steps = _STEPS.value
    if _GUIDANCE.value is not None:
        config.eval.guidance = _GUIDANCE.value
    result = evaluate.run_eval(t2v, config, workdir, step)
    summary = {"step": step, "accuracy": result["accuracy"]}
    if "frechet" in result:
        summary["frechet"] = result["frechet"]
    print(json.dumps(summary, indent=2))


def _setup_logging() -> None:
    """Our progress lines on stderr; library INFO chatter (orbax logs every file it writes) only with --verbose."""
    handler = std_logging.StreamHandler()
    handler.setFormatter(std_logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    ours = std_logging.getLogger("lumiere_jax")
    ours.handlers[:] = [handler]
    ours.setLevel(std_logging.INFO)
    ours.propagate = False
    if not _VERBOSE.value:
        logging.set_verbosity(logging.WARNING)


# The flags each mode reads beyond --config, --workdir and the process flags; any other given is refused, so
# that, say, `--image=first.png` without --mode=sample does not silently train on the workdir instead.
MODE_FLAGS = {
    "train": (),
    "sample": ("prompt", "out", "seed", "guidance", "steps", "sampler", "frames", "prompt_at", "overlap",
               "window_weights", "shift_windows", "window_noise", "long_video", "ssr_workdir", "ssr_window_batch",
               "image", "video", "mask", "strength", "style_weights", "style_alpha", "style_start"),
    "eval": ("steps", "guidance"),
    "style_tune": ("style_image", "prompt", "style_weights"),
}


def _check_mode_flags(mode: str) -> None:
    """Refuses a flag that --mode does not read, naming the mode that does."""
    for name in sorted(set().union(*MODE_FLAGS.values()) - set(MODE_FLAGS[mode])):
        if flags.FLAGS[name].present:
            users = [m for m, names in MODE_FLAGS.items() if name in names]
            raise UsageError(f"--{name} is not read by --mode={mode}: it is for "
                             f"{' or '.join(f'--mode={m}' for m in users)} (add that, or drop --{name}).")


def main(argv) -> None:
    _setup_logging()
    if len(argv) > 1:
        raise UsageError(f"Unexpected arguments {argv[1:]}: flags are written --name=value.")
    _check_mode_flags(_MODE.value)
    config, workdir = _CONFIG.value, _WORKDIR.value
    if config is None:
        raise UsageError("--config is required, e.g. --config=configs/t2v.py.")
    if not workdir:
        raise UsageError("--workdir is required: the run directory for checkpoints and samples.")
    if _DISTRIBUTED.value:
        import jax
        jax.distributed.initialize(coordinator_address=_COORDINATOR.value, num_processes=_NUM_PROCESSES.value,
                                   process_id=_PROCESS_ID.value)
    if _MODE.value == "train":
        from lumiere_jax import train
        train.train_and_evaluate(config, workdir)
    elif _MODE.value == "sample":
        _sample(config, workdir)
    elif _MODE.value == "style_tune":
        _style_tune(config, workdir)
    else:
        _eval(config, workdir)


def _enable_compilation_cache() -> None:
    """Reuses compiled XLA programs across runs (a resume or a sample skips minutes of CPU compiles).

    Set through the environment, which jax reads at import: $JAX_COMPILATION_CACHE_DIR wins when set.
    """
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.expanduser("~/.cache/lumiere_jax/xla"))
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "2")


def _one_line(error: BaseException) -> str:
    """One informative line from an error whose text may carry a nested traceback (config-file errors)."""
    lines = [l.strip() for l in str(error).splitlines() if l.strip() and not l.startswith("Pass --help")]
    if isinstance(error, (AttributeError, KeyError)):
        # ml_collections nests repr()s: "'\\'totl_steps\\'\\nDid you mean ...'"; unwrap them.
        text = str(error)
        while len(text) > 1 and text[0] == text[-1] and text[0] in "'\"":
            text = ast.literal_eval(text)
        key, _, hint = text.partition("\n")
        return f"unknown config key {key}. {hint or 'See the config file for valid keys.'}"
    if isinstance(error, OSError) and any("No such file" in l for l in lines):
        return f"{lines[-1]}: give an existing config file, e.g. --config=configs/t2v.py."
    line = lines[-1] if lines else type(error).__name__
    for prefix in ("ValueError: ", "FileNotFoundError: ", "OSError: "):
        line = line.removeprefix(prefix)
    return line


def _parse_flags(argv: list[str]) -> list[str]:
    """Parses flags and loads the config file; any problem there is one line on stderr and exit code 2."""
    try:
        rest = flags.FLAGS(argv)
        if _CONFIG.value is not None:
            _CONFIG.value.keys()  # a config file that failed to load raises on first use: surface it here
        return rest
    except Exception as e:  # absl, ml_collections and the config file raise many types
        _exit_with(_one_line(e))


def _exit_with(message: str) -> None:
    """Prints the one-line error and exits 2 at once: background threads of orbax/tensorstore that an
    interpreter shutdown would wake print their own tracebacks, which would bury the line."""
    logging.flush()
    print(f"error: {message}", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(2)


def run() -> None:
    """Entry point: input errors print one line naming the problem and the fix, and exit 2."""
    host_memory.ensure_hugepage_malloc()  # may re-execute this process once (lumiere_jax/host_memory.py)
    _enable_compilation_cache()
    try:
        app.run(main, flags_parser=_parse_flags)
    except (UsageError, FileNotFoundError, ValueError) as e:
        if _DEBUG.present and _DEBUG.value:
            raise
        _exit_with(_one_line(e))


if __name__ == "__main__":
    run()
