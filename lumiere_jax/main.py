r"""Command line: `python -m lumiere_jax.main --config=configs/t2v.py --workdir=DIR [--mode=train|sample|eval]`.

  --mode=train       trains; re-running with the same --workdir resumes from its newest checkpoint.
  --mode=sample      --prompt="a red circle moving left" --out=clip.mp4 (or .gif): samples with the EMA weights;
                     --image, --video, --mask and --style_weights run the applications (docs/applications.md).
  --mode=eval        samples the evaluation prompts, checks them with the program checker, writes eval.json
                     (in --workdir, or in the folder --out).
  --mode=style_tune  fine-tunes the spatial layers on --style_image (configs/style_gen.py), writes --style_weights.

Flags are the inputs and outputs; everything about how to train or sample is a config key, overridden as
`--config.sample.guidance=2` or `--config.total_steps=100`, variants as `--config=configs/t2v.py:size=smoke`.
Without --workdir, --mode=sample and --mode=eval of configs/t2v.py (size tiny) use the trained weights that ship
with the package (lumiere_jax/shipped.py). What each mode does lives in lumiere_jax/commands.py.
"""

from __future__ import annotations

import ast
import os
import sys
from typing import Callable, Sequence

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from lumiere_jax import host_memory, supervise

if __name__ == "__main__":
    # glibc reads its tunables only when a process starts: re-execute (once) before jax and the library load.
    host_memory.ensure_hugepage_malloc()
    # Reuse compiled XLA programs across runs (a resume or a sample skips minutes of CPU compiles). Set through
    # the environment, which jax reads at import: $JAX_COMPILATION_CACHE_DIR wins when set.
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.expanduser("~/.cache/lumiere_jax/xla"))
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "2")
    # A --distributed process runs as the child of a parent that turns a lost coordinator, which jax's runtime ends
    # from C++, into one line (lumiere_jax/supervise.py); the parent exits here with the child's code.
    supervise.maybe_supervise(sys.argv)

import jax  # noqa: E402  (after the re-execution above)

from lumiere_jax import commands, config_lib, console, peers  # noqa: E402
from lumiere_jax.commands import UsageError  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Python config file, e.g. configs/t2v.py[:size=tiny].",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: checkpoints, samples, metrics. --mode=sample and "
                               "--mode=eval without it use the weights shipped for the config (configs/t2v.py).")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "sample", "eval", "style_tune"], "What to do.")
_PROMPT = flags.DEFINE_string("prompt", None, "Text prompt for --mode=sample; or a story as a JSON list: of prompts, "
                              "one per equal time span ('[\"a red circle moving left\", \"a red circle moving "
                              "up\"]'), or of [frame, prompt] spans. --mode=style_tune: the style's caption.")
_PROMPT_AT = flags.DEFINE_multi_string("prompt_at", [], "Story mode: FRAME:TEXT starts a new prompt at FRAME "
                                       "(repeatable); --prompt holds from frame 0.")
_OUT = flags.DEFINE_string("out", None, "Output clip for --mode=sample: .mp4 or .gif. --mode=eval: the folder for "
                           "eval.json and the GIF grid (default --workdir, or eval_shipped without one).")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")
_FRAMES = flags.DEFINE_integer("frames", None, "Clip length for --mode=sample; longer than the training length "
                                "runs the model on the whole clip or on windows of it (config.sample.long_video).")
_IMAGE = flags.DEFINE_string("image", None, "Image-to-video: the first frame (.png); with --mask, the still image "
                             "of a cinemagraph. Needs the conditional model (configs/conditional.py).")
_VIDEO = flags.DEFINE_string("video", None, "Source clip (.mp4/.gif): with --mask, inpainting (conditional "
                             "model); without, SDEdit editing (text-to-video model; config.sample.strength).")
_MASK = flags.DEFINE_string("mask", None, "Black/white mask (.png for every frame, or .mp4/.gif per frame): white "
                            "is filled (inpainting) or animated (cinemagraph).")
_SSR_WORKDIR = flags.DEFINE_string("ssr_workdir", None, "Cascade for --mode=sample: a configs/ssr.py run that "
                                   "upsamples the base clip (config.sample's steps and sampler apply to both).")
_STYLE_IMAGE = flags.DEFINE_string("style_image", None, "--mode=style_tune: the style reference image (.png), or a "
                                   "folder of images with captions (a.png + a.txt; tools/style_feedback.py).")
_STYLE_WEIGHTS = flags.DEFINE_string("style_weights", None, "Spatial style weights (.safetensors): written by "
                                     "--mode=style_tune, interpolated into the model by --mode=sample "
                                     "(config.sample.style_alpha, style_start).")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "Multi-host: call jax.distributed.initialize() (it finds "
                                  "the coordinator itself on TPU VMs and under SLURM; elsewhere give the next flags).")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0, for --distributed.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes, for --distributed.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index, for --distributed.")
_VERBOSE = flags.DEFINE_bool("verbose", False, "Show libraries' INFO logs (orbax, jax).")
_DEBUG = flags.DEFINE_bool("debug", False, "Show full tracebacks for input errors.")

# The flags each mode reads beyond --config, --workdir and the process flags; any other given is refused, so
# that, say, `--image=first.png` without --mode=sample does not silently train on the workdir instead.
MODE_FLAGS = {
    "train": (),
    "sample": ("prompt", "prompt_at", "out", "seed", "frames", "image", "video", "mask", "ssr_workdir",
               "style_weights"),
    "eval": ("out",),
    "style_tune": ("style_image", "prompt", "style_weights"),
}


# Options that were flags and are config keys now: a command line that still gives one is told the key.
CONFIG_KEY_FLAGS = {"guidance": "sample.guidance", "steps": "sample.steps", "sampler": "sample.sampler",
                    "overlap": "sample.overlap", "window_weights": "sample.window_weights",
                    "shift_windows": "sample.shift_windows", "noshift_windows": "sample.shift_windows",
                    "window_noise": "sample.window_noise", "long_video": "sample.long_video",
                    "ssr_window_batch": "sample.ssr_window_batch", "strength": "sample.strength",
                    "style_alpha": "sample.style_alpha", "style_start": "sample.style_start"}


def _moved_flag(argv: list[str]) -> str | None:
    """The one-line hint for the first flag of argv that is a config key now, or None."""
    for arg in argv[1:]:
        name, _, value = arg.lstrip("-").partition("=")
        if arg.startswith("--") and name in CONFIG_KEY_FLAGS:
            key = CONFIG_KEY_FLAGS[name]
            value = value or ("False" if name.startswith("no") else "True")
            hint = f"--{name} is a config key: --config.{key}={value}"
            if name in ("guidance", "steps"):
                hint += f" (--mode=eval: --config.eval.{name}={value})"
            return hint + "."
    return None


def _check_mode_flags(mode: str) -> None:
    """Refuses a flag that --mode does not read, naming the mode that does."""
    for name in sorted(set().union(*MODE_FLAGS.values()) - set(MODE_FLAGS[mode])):
        if flags.FLAGS[name].present:
            users = [m for m, names in MODE_FLAGS.items() if name in names]
            raise UsageError(f"--{name} is not read by --mode={mode}: it is for "
                             f"{' or '.join(f'--mode={m}' for m in users)} (add that, or drop --{name}).")


def _check_command_line(argv: Sequence[str]) -> tuple[ml_collections.ConfigDict, str | None]:
    """The checks of the parsed flags themselves: no stray arguments, the mode's flags, --config and --workdir
    (None: the shipped model, for commands.SHIPPED_MODES)."""
    if len(argv) > 1:
        raise UsageError(f"Unexpected arguments {list(argv[1:])}: flags are written --name=value.")
    _check_mode_flags(_MODE.value)
    config, workdir = _CONFIG.value, _WORKDIR.value or None
    if config is None:
        raise UsageError("--config is required, e.g. --config=configs/t2v.py.")
    commands.require_workdir(_MODE.value, workdir)
    return config, workdir


def _check_mode(config: ml_collections.ConfigDict, workdir: str | None) -> Callable[[], str | None]:
    """--mode's input checks (commands.check): what runs it, once nothing is left to refuse."""
    return commands.check(_MODE.value, config, workdir, commands.SampleInputs(
        prompt=_PROMPT.value, out=_OUT.value, seed=_SEED.value, frames=_FRAMES.value,
        prompt_at=tuple(_PROMPT_AT.value), image=_IMAGE.value, video=_VIDEO.value, mask=_MASK.value,
        style_weights=_STYLE_WEIGHTS.value, ssr_workdir=_SSR_WORKDIR.value),
        commands.StyleInputs(_STYLE_IMAGE.value, _PROMPT.value, _STYLE_WEIGHTS.value), eval_out=_OUT.value)


def check_inputs(argv: Sequence[str]) -> Callable[[], str | None]:
    """Every check of a command line whose flags are parsed (`parse_flags`) that needs nothing restored or
    compiled; raises the one-line errors (UsageError, ValueError, FileNotFoundError) and returns what runs the
    mode. The seam that tests call in-process, without a process per command line."""
    return _check_mode(*_check_command_line(argv))


def main(argv) -> None:
    console.setup_logging(_VERBOSE.value)
    config, workdir = _check_command_line(argv)
    if _DISTRIBUTED.value:
        if "distributed" in config:
            config_lib.validate_distributed(config)
        # Processes watch each other: a lost one ends the others with a line naming it (lumiere_jax/peers.py).
        peers.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value, peers.peer_timeout(config))
    output = _check_mode(config, workdir)()  # every input refused before anything is restored or compiles
    if output is not None:
        print(output)
    peers.finished()


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


def parse_flags(argv: list[str]) -> list[str]:
    """Parses flags and loads the config file; returns the arguments left. Any problem there is a UsageError with
    the one line to print."""
    try:
        rest = flags.FLAGS(argv)
        if _CONFIG.value is not None:
            _CONFIG.value.keys()  # a config file that failed to load raises on first use: surface it here
        return rest
    except Exception as e:  # absl, ml_collections and the config file raise many types
        raise UsageError(_moved_flag(argv) or _one_line(e)) from e


def _parse_flags(argv: list[str]) -> list[str]:
    """parse_flags for app.run: any problem is one line on stderr and exit code 2."""
    try:
        return parse_flags(argv)
    except UsageError as e:
        _exit_with(str(e))


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
    try:
        app.run(main, flags_parser=_parse_flags)
    except (UsageError, FileNotFoundError, ValueError) as e:
        if peers.runtime_failure(e):  # jax raises some failed collectives as ValueError: was a process lost?
            peers.wait_for_verdict()
        if _DEBUG.present and _DEBUG.value:
            raise
        _exit_with(_one_line(e))
    except jax.errors.JaxRuntimeError:
        peers.wait_for_verdict()  # a collective that failed because a process died: the watchdog's line, exit 3
        raise


if __name__ == "__main__":
    run()
