"""Bad input, drawn: command lines of flags and --config.* values, valid and invalid (NaN, inf, negative, zero,
huge, the wrong type, paths that are files, folders, missing or under a file), for every mode.

Each one either passes every input check or is refused with exactly one line (what main.py prints after `error: `)
and no traceback (an exception type main.py does not turn into that line), before anything compiles or any file is
written. The checks run in-process through main.py's own seam (parse_flags + check_inputs, what main() runs before
any weights are restored), so hundreds of command lines take seconds; a handful run end to end as processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from jax import monitoring
from jax._src import dispatch

from configs import t2v
from lumiere_jax import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = "--config=configs/t2v.py:size=smoke"
# The exceptions main.run() reports as one `error:` line; anything else would be a traceback.
ONE_LINE_ERRORS = (main.UsageError, ValueError, FileNotFoundError)


@pytest.fixture(scope="module")
def places(tmp_path_factory) -> dict[str, str]:
    """Paths of every kind: a run's folder (config.json, no weights: nothing is restored here), an empty folder,
    missing paths, a file and paths under it, a real PNG and GIF, a text file named .png, a folder named .gif."""
    base = tmp_path_factory.mktemp("property")
    run = base / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text(t2v.get_config("size=smoke").to_json_best_effort())
    (base / "empty").mkdir()
    (base / "afile").write_text("not a folder")
    (base / "out").mkdir()
    (base / "folder.gif").mkdir()
    (base / "fake.png").write_text("not an image")
    iio.imwrite(base / "first.png", np.full((16, 16, 3), 200, np.uint8))
    iio.imwrite(base / "clip.gif", np.full((4, 16, 16, 3), 90, np.uint8), duration=125, loop=0)
    b = str(base)
    return {"run": f"{b}/run", "empty": f"{b}/empty", "missing": f"{b}/missing/run", "file": f"{b}/afile",
            "under_file": f"{b}/afile/run", "new": f"{b}/out/new_run", "blank": "", "base": b,
            "png": f"{b}/first.png", "gif": f"{b}/clip.gif", "fake_png": f"{b}/fake.png",
            "folder_gif": f"{b}/folder.gif", "missing_png": f"{b}/nope.png", "out_gif": f"{b}/out/x.gif",
            "out_mp4": f"{b}/out/x.mp4", "out_avi": f"{b}/out/x.avi", "out_in_missing": f"{b}/nope/x.mp4",
            "out_under_file": f"{b}/afile/x.gif", "weights": f"{b}/out/style.safetensors"}


BASE = t2v.get_config("size=smoke")
# Numeric keys of every config: drawn as ints or floats of their own type, or as text that is neither.
KEYS = ["total_steps", "batch_size", "log_every", "checkpoint_every", "keep_checkpoints", "sample_every", "seed",
        "text_max_length", "data.num_frames", "data.resolution", "data.seed", "data.text_dropout", "data.fps",
        "data.clip_stride", "data.test_fraction", "data.max_bad_records", "data.prefetch", "data.num_threads",
        "data.story_fraction", "model.channels", "model.num_heads", "model.num_res_blocks", "model.temporal_kernel",
        "diffusion.shift", "diffusion.logsnr_min", "diffusion.t_max", "diffusion.high_noise_fraction",
        "optim.learning_rate", "optim.b1", "optim.ema_decay", "optim.grad_clip", "optim.warmup_steps",
        "optim.decay_steps", "sample.guidance", "sample.steps", "sample.strength", "sample.style_alpha",
        "sample.style_start", "sample.overlap", "sample.fps", "sample.window_batch", "eval.guidance", "eval.steps",
        "eval.num_clips", "eval.batch_size", "eval.seed"]
SPECIAL = ["nan", "inf", "-inf", "-1", "0", "1e30", "-1e30", "99999999999999999999", "2147483648", "abc", "",
           "True", "(1, 2)", "1e3", "0.5"]
WORDS = {"sample.sampler": ["ddim", "ddpm", "euler", ""], "data.dataset": ["shapes_world", "videos", "frames"],
         "data.resize": ["crop", "pad", "stretch"], "nan_policy": ["stop", "skip", "nan"],
         "sample.long_video": ["auto", "whole", "windows", "both"], "trainable": ["auto", "all", "temporal", "x"],
         "model.channel_mult": ["(1, 2)", "()", "(1, 0)", "(1, 2, 2)", "7"]}
PATH_KEYS = ["data.videos", "data.images"]
CONFIGS = {"style_tune": "--config=configs/style_gen.py:size=smoke"}
MODE_FLAGS = {
    "sample": {"frames": st.sampled_from(["0", "-1", "2", "4", "5", "8", "12", "1000000000000", "abc", "nan"]),
               "seed": st.sampled_from(["0", "-1", "7", "18446744073709551616", "x"]),
               "prompt_at": st.sampled_from(["2:a blue square", "99:x", "later x", ":", "-1:x"]),
               "image": st.sampled_from(["png", "fake_png", "missing_png", "folder_gif", "empty"]),
               "video": st.sampled_from(["gif", "png", "missing_png", "folder_gif"]),
               "mask": st.sampled_from(["png", "fake_png", "missing_png"]),
               "style_weights": st.sampled_from(["weights", "out_gif", "folder_gif", "missing_png"])},
    "style_tune": {"style_image": st.sampled_from(["png", "fake_png", "missing_png", "empty", "file", "folder_gif"]),
                   "style_weights": st.sampled_from(["weights", "out_gif", "folder_gif", "out_in_missing"])},
}
PATH_FLAGS = ("out", "image", "video", "mask", "style_image", "style_weights")
PROMPTS = st.one_of(st.just("a red circle moving left"), st.just("a blue square"), st.sampled_from(
    ["", "  ", "x" * 1200, '["a red circle", "a blue', '["a red circle", "a blue square"]', '[[0, "a"], [99, "b"]]']))


def _value(key: str) -> st.SearchStrategy[str]:
    """Values for --config.KEY: of its own type (valid or out of range), or anything in SPECIAL."""
    node = BASE
    for part in key.split("."):
        node = node[part]
    own = (st.integers(-3, 12) if isinstance(node, int) else
           st.floats(-2.0, 10.0).map(lambda v: f"{v:.3g}")).map(str)
    return st.one_of(own, own, st.sampled_from(SPECIAL))


@st.composite
def command_lines(draw) -> list:
    """A mode, a workdir, the mode's flags (mostly sensible, sometimes not, sometimes another mode's), and a few
    --config.* overrides. Paths are named by their kind (a key of `places`), filled in by _argv."""
    mode = draw(st.sampled_from(["sample", "train", "sample", "eval", "train", "style_tune", "sample", "bogus"]))
    workdir = draw(st.one_of(st.just("run" if mode in ("sample", "eval", "style_tune") else "new"), st.sampled_from(
        ["run", "empty", "missing", "file", "under_file", "new", "blank"])))
    args = [CONFIGS.get(mode, SMOKE), f"--mode={mode}", ("workdir", workdir)]
    if mode in ("sample", "style_tune") and draw(st.integers(0, 5)):
        args.append(f"--prompt={draw(PROMPTS)}")
    if mode == "sample" and draw(st.integers(0, 5)):
        args.append(("out", draw(st.one_of(st.just("out_gif"), st.sampled_from(
            ["out_mp4", "out_avi", "out_in_missing", "out_under_file", "folder_gif", "file", "blank"])))))
    if mode == "style_tune" and draw(st.integers(0, 5)):
        args += [("style_image", "png"), ("style_weights", "weights")]
    own = MODE_FLAGS.get(mode, {})
    for name in draw(st.lists(st.sampled_from(sorted(own)), max_size=3, unique=True)) if own else []:
        value = draw(own[name])
        args.append((name, value) if name in PATH_FLAGS else f"--{name}={value}")
    if not draw(st.integers(0, 9)):  # another mode's flag
        args.append(draw(st.sampled_from(["--frames=8", "--prompt=a", "--seed=1", ("image", "png"),
                                          ("style_image", "png")])))
    for key in draw(st.lists(st.sampled_from(KEYS + sorted(WORDS) + PATH_KEYS), max_size=3, unique=True)):
        if key in PATH_KEYS:
            args.append((f"config.{key}", draw(st.sampled_from(["empty", "file", "missing", "base", "png"]))))
        else:
            value = draw(st.sampled_from(WORDS[key]) if key in WORDS else _value(key))
            args.append(f"--config.{key}={value}")
    return args


def _argv(args, places) -> list[str]:
    return ["lumiere_jax.main"] + [a if isinstance(a, str) else f"--{a[0]}={places[a[1]]}" for a in args]


def _tree(folder: str) -> set[str]:
    return {os.path.join(d, f) for d, dirs, files in os.walk(folder) for f in dirs + files}


class _Compiles:
    """Counts XLA backend compiles while registered."""

    def __init__(self):
        self.count = 0

    def __call__(self, event: str, duration: float, **kwargs) -> None:
        if event == dispatch.BACKEND_COMPILE_EVENT:
            self.count += 1


@pytest.fixture
def compiles():
    listener = _Compiles()
    monitoring.register_event_duration_secs_listener(listener)
    yield listener
    monitoring.unregister_event_duration_listener(listener)


@pytest.fixture
def fresh_flags(monkeypatch):
    """main's flags, parsed anew for each command line (ml_collections reads the --config.* overrides from
    sys.argv and defines a flag for each) and left unparsed afterwards."""
    values = main.flags.FLAGS

    def reset():
        for name in [n for n in values if n.startswith("config.")]:
            delattr(values, name)
        values.unparse_flags()

    def parse(argv: list[str]) -> list[str]:
        reset()
        monkeypatch.setattr(sys, "argv", argv)
        return main.parse_flags(argv)

    yield parse
    reset()


def check_one(argv: list[str], parse) -> str | None:
    """The error line of a command line, or None when every input check passes."""
    try:
        main.check_inputs(parse(argv))
    except ONE_LINE_ERRORS as e:
        line = main._one_line(e)
        assert line and "\n" not in line and "Traceback" not in line, (argv, line)
        return line
    return None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(args=command_lines())
def test_every_command_line_passes_or_is_one_line_before_compiling(args, places, fresh_flags, compiles):
    argv = _argv(args, places)
    before, compiled = _tree(places["base"]), compiles.count
    check_one(argv, fresh_flags)  # any other exception fails the test: it would be a traceback
    assert compiles.count == compiled, argv  # nothing compiled
    assert _tree(places["base"]) == before, argv  # nothing written: no workdir, no output, no data


@pytest.mark.parametrize("args, message", [
    (["--mode=sample", "--workdir={run}", "--prompt=a red circle", "--out={out_gif}", "--config.sample.guidance=nan"],
     "sample.guidance=nan must be a finite number"),
    (["--mode=sample", "--workdir={run}", "--prompt=a red circle", "--out={out_gif}", "--config.sample.guidance=inf"],
     "sample.guidance=inf must be a finite number"),
    (["--mode=sample", "--workdir={run}", "--prompt=a red circle", "--out={out_gif}", "--frames=0"],
     "--frames=0 must be a positive number of frames"),
    (["--mode=sample", "--workdir={run}", "--prompt=a red circle", "--out={folder_gif}"], "is a folder"),
    (["--mode=sample", "--workdir={run}", "--prompt=a red circle", "--out={out_gif}", "--frames=1000000000000"],
     "GiB for its clips alone"),
    (["--workdir={file}"], "is a file, not a folder"),
    (["--workdir={under_file}"], "cannot be made"),
    (["--workdir={new}", "--config.log_every=0"], "log_every=0 must be at least 1"),
    (["--workdir={new}", "--config.optim.learning_rate=nan"], "optim.learning_rate=nan must be a finite number"),
    (["--workdir={new}", "--config.batch_size=1000000000"], "GiB for its clips alone"),
    (["--workdir={new}", "--config.data.seed=-1"], "data.seed=-1 must be in [0, 2**32)"),
    (["--workdir={new}", "--config.model.num_heads=0"], "model.num_heads=0 must be at least 1"),
    (["--mode=eval", "--workdir={run}", "--config.eval.steps=0"], "eval.steps=0 must be in [1, 100000]"),
    (["--mode=sample", "--workdir={file}", "--prompt=a", "--out={out_gif}"], "is a file, not a folder"),
])
def test_known_bad_inputs_in_process(args, message, places, fresh_flags, compiles):
    argv = ["lumiere_jax.main", SMOKE] + [a.format(**places) for a in args]
    line = check_one(argv, fresh_flags)
    assert line is not None and message in line, line
    assert compiles.count == 0


# End to end: the real process prints the one line and exits 2, having compiled nothing (JAX_LOG_COMPILES would
# log every compile) and written nothing.
@pytest.mark.parametrize("args, message", [
    (["--mode=sample", "--workdir={run}", "--prompt=a red circle", "--out={out_gif}", "--config.sample.guidance=nan"],
     "error: sample.guidance=nan must be a finite number."),
    (["--workdir={file}"], "error: --workdir="),
    (["--mode=sample", "--workdir={run}", "--prompt=a red circle", "--out={out_gif}", "--frames=0"],
     "error: --frames=0 must be a positive number of frames"),
    (["--workdir={new}", "--config.checkpoint_every=0"], "error: checkpoint_every=0 must be at least 1"),
])
def test_bad_input_end_to_end(args, message, places):
    before = _tree(places["base"])
    env = dict(os.environ, JAX_LOG_COMPILES="1")
    proc = subprocess.run([sys.executable, "-m", "lumiere_jax.main", SMOKE, *[a.format(**places) for a in args]],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "ompil" not in proc.stderr, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(message), proc.stderr[-2000:]
    assert _tree(places["base"]) == before
    assert json.loads(open(os.path.join(places["run"], "config.json")).read())["size"] == "smoke"
