r"""Command line: `python -m lumiere_jax.main --config=configs/t2v.py --workdir=DIR [--mode=train|sample|eval]`.

  --mode=train   trains; re-running with the same --workdir resumes from its newest checkpoint.
  --mode=sample  --prompt="a red circle moving left" --out=clip.mp4 (or .gif): samples with the EMA weights.
  --mode=eval    samples the evaluation prompts, checks them with the program checker, writes eval.json.
Config values are overridden as `--config.total_steps=100`; variants as `--config=configs/t2v.py:size=smoke`.
"""

from __future__ import annotations

import json
import logging as std_logging
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Python config file, e.g. configs/t2v.py[:size=tiny].",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: checkpoints, samples, metrics.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "sample", "eval"], "What to do.")
_PROMPT = flags.DEFINE_string("prompt", None, "Text prompt for --mode=sample.")
_OUT = flags.DEFINE_string("out", None, "Output clip for --mode=sample: .mp4 or .gif.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")
_GUIDANCE = flags.DEFINE_float("guidance", None, "Classifier-free guidance scale (default: config.sample.guidance).")
_STEPS = flags.DEFINE_integer("steps", None, "Denoising steps (default: config.sample.steps).")
_SAMPLER = flags.DEFINE_enum("sampler", None, ["ddim", "ancestral"], "Sampler (default: config.sample.sampler).")
_VERBOSE = flags.DEFINE_bool("verbose", False, "Show libraries' INFO logs (orbax, jax).")
_DEBUG = flags.DEFINE_bool("debug", False, "Show full tracebacks for input errors.")

MAX_PROMPT_CHARS = 1000


class UsageError(ValueError):
    """A mistake in the command line or its inputs; reported as one line, without a traceback."""


def _load_for_sampling(config, workdir: str):
    """Restores the newest checkpoint's EMA weights and builds the text-to-video sampler."""
    import jax
    from lumiere_jax import checkpointing, sampling
    from lumiere_jax.state import abstract_graphdef_and_state, schedule_from
    from lumiere_jax.text.encoders import load_text_encoder

    if not os.path.isdir(workdir):
        raise UsageError(f"--workdir={workdir} does not exist: train there first with --mode=train.")
    ckpt = checkpointing.Checkpointer(workdir, read_only=True)
    if ckpt.latest_step() is None:
        raise UsageError(f"No checkpoint in {ckpt.directory}: train first with --mode=train --workdir={workdir}.")
    graphdef, abstract = abstract_graphdef_and_state(config)
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    state, _ = ckpt.restore(checkpointing.with_shardings(abstract, sharding))
    encoder = load_text_encoder(config.text_encoder, config.text_encoder_path, config.text_max_length)
    t2v = sampling.TextToVideo(graphdef, state.ema, encoder, schedule_from(config),
                               num_frames=config.data.num_frames, resolution=config.data.resolution,
                               channels=config.model.out_channels)
    return t2v, int(state.step)


def _sample(config, workdir: str) -> None:
    from lumiere_jax import video_io

    prompt, out = _PROMPT.value, _OUT.value
    if prompt is None or not prompt.strip():
        raise UsageError('--mode=sample needs a non-empty --prompt="a red circle moving left".')
    if len(prompt) > MAX_PROMPT_CHARS:
        raise UsageError(f"--prompt has {len(prompt)} characters; keep it under {MAX_PROMPT_CHARS} "
                         f"(the text encoder reads only the first {config.text_max_length} tokens).")
    if not out or os.path.splitext(out)[1].lower() not in (".mp4", ".gif"):
        raise UsageError(f"--out={out!r}: give an output file ending in .mp4 or .gif.")
    out_dir = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(out_dir) or not os.access(out_dir, os.W_OK):
        raise UsageError(f"--out={out}: folder {out_dir} does not exist or is not writable.")
    t2v, step = _load_for_sampling(config, workdir)
    clips = t2v([prompt], seed=_SEED.value, steps=_STEPS.value or config.sample.steps,
                guidance=config.sample.guidance if _GUIDANCE.value is None else _GUIDANCE.value,
                sampler=_SAMPLER.value or config.sample.sampler)
    video_io.write_video(out, video_io.to_uint8(clips[0]), config.sample.fps)
    print(f"Wrote {out} ({config.data.num_frames} frames at {config.data.resolution}x{config.data.resolution}, "
          f"checkpoint step {step}).")


def _eval(config, workdir: str) -> None:
    from lumiere_jax import evaluate

    t2v, step = _load_for_sampling(config, workdir)
    if _STEPS.value:
        config.eval.steps = _STEPS.value
    if _GUIDANCE.value is not None:
        config.eval.guidance = _GUIDANCE.value
    result = evaluate.run_eval(t2v, config, workdir, step)
    print(json.dumps({"step": step, "accuracy": result["accuracy"]}, indent=2))


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


def main(argv) -> None:
    _setup_logging()
    if len(argv) > 1:
        raise UsageError(f"Unexpected arguments {argv[1:]}: flags are written --name=value.")
    config, workdir = _CONFIG.value, _WORKDIR.value
    if config is None:
        raise UsageError("--config is required, e.g. --config=configs/t2v.py.")
    if not workdir:
        raise UsageError("--workdir is required: the run directory for checkpoints and samples.")
    if _MODE.value == "train":
        from lumiere_jax import train
        train.train_and_evaluate(config, workdir)
    elif _MODE.value == "sample":
        _sample(config, workdir)
    else:
        _eval(config, workdir)


def _enable_compilation_cache() -> None:
    """Reuses compiled XLA programs across runs (a resume or a sample skips minutes of CPU compiles).

    $JAX_COMPILATION_CACHE_DIR wins when set; otherwise ~/.cache/lumiere_jax/xla.
    """
    import jax
    if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        jax.config.update("jax_compilation_cache_dir", os.path.expanduser("~/.cache/lumiere_jax/xla"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 2.0)


def run() -> None:
    """Entry point: input errors print one line naming the problem and the fix, and exit 2."""
    _enable_compilation_cache()
    try:
        app.run(main)
    except (UsageError, FileNotFoundError, ValueError) as e:
        if _DEBUG.present and _DEBUG.value:
            raise
        logging.flush()
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    run()
