"""Bad input, table-driven: every case exits non-zero with one line naming the problem and the fix.

No traceback, nothing built or compiled first, and a run's checkpoints are never changed.
"""

import hashlib
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LONG_PROMPT = "a red circle moving left " * 200
SMOKE = "--config=configs/t2v.py:size=smoke"

# (case id, arguments ({run}: a trained run's workdir, {tmp}: an empty folder), expected text in the line)
CASES = [
    ("no_config", ["--workdir={tmp}"], "--config is required"),
    ("no_workdir", [SMOKE], "--workdir is required"),
    ("missing_config_file", ["--config=configs/nope.py", "--workdir={tmp}"], "No such file"),
    ("unknown_variant_key", ["--config=configs/t2v.py:sise=tiny", "--workdir={tmp}"], "Unknown config variant key 'sise'"),
    ("unknown_size", ["--config=configs/t2v.py:size=huge", "--workdir={tmp}"], "size='huge' is not one of"),
    ("unknown_config_key", [SMOKE, "--workdir={tmp}", "--config.totl_steps=3"], 'Did you mean "total_steps"'),
    ("unknown_nested_key", [SMOKE, "--workdir={tmp}", "--config.model.chanels=3"], "unknown config key"),
    ("wrong_type", [SMOKE, "--workdir={tmp}", "--config.batch_size=abc"], "--config.batch_size=abc"),
    ("frames_not_halvable", [SMOKE, "--workdir={tmp}", "--config.data.num_frames=5"],
     "num_frames=5 cannot be halved 1 times"),
    ("resolution_not_halvable", [SMOKE, "--workdir={tmp}", "--config.data.resolution=15"],
     "data.resolution=15 cannot be halved"),
    ("zero_batch", [SMOKE, "--workdir={tmp}", "--config.batch_size=0"], "batch_size=0 must be at least 1"),
    ("dropout_out_of_range", [SMOKE, "--workdir={tmp}", "--config.data.text_dropout=1.5"],
     "text_dropout=1.5 must be in [0, 1)"),
    ("story_fraction_out_of_range", [SMOKE, "--workdir={tmp}", "--config.data.story_fraction=1.5"],
     "data.story_fraction=1.5 must be in [0, 1]"),
    ("story_changes_unknown", [SMOKE, "--workdir={tmp}", "--config.data.story_fraction=0.5",
                               "--config.data.story_changes=motion,colour"], "data.story_changes='motion,colour'"),
    ("story_fraction_for_an_app_model", ["--config=configs/conditional.py:size=smoke", "--workdir={tmp}",
                                         "--config.data.story_fraction=0.5"], "needs an unconditional task"),
    ("high_noise_fraction_out_of_range", [SMOKE, "--workdir={tmp}", "--config.diffusion.high_noise_fraction=2.0"],
     "diffusion.high_noise_fraction=2.0 must be in [0, 1]"),
    ("t_max_zero", [SMOKE, "--workdir={tmp}", "--config.diffusion.t_max=0"], "diffusion.t_max=0.0 must be in (0, 1]"),
    ("decay_start_past_decay_end", [SMOKE, "--workdir={tmp}", "--config.optim.decay_start=500",
                                    "--config.optim.decay_steps=100"], "optim.decay_start=500 must lie in"),
    ("bad_thresholding", [SMOKE, "--workdir={tmp}", "--config.sample.thresholding=soft"],
     "sample.thresholding='soft'"),
    ("bad_nan_policy", [SMOKE, "--workdir={tmp}", "--config.nan_policy=explode"], "nan_policy='explode'"),
    ("negative_window_batch_train", [SMOKE, "--workdir={tmp}", "--config.sample.window_batch=-1"],
     "sample.window_batch=-1 must be >= 0"),
    ("negative_window_batch_sample", [SMOKE, "--workdir={run}", "--mode=sample", "--prompt=a red circle",
                                      "--frames=8", "--config.sample.window_batch=-1", "--out={tmp}/x.gif"],
     "sample.window_batch=-1 must be >= 0"),
    ("cudnn_attention_on_cpu", [SMOKE, "--workdir={tmp}", "--config.model.attention=cudnn"],
     "model.attention='cudnn' runs on an NVIDIA GPU"),
    ("bad_text_pooling", [SMOKE, "--workdir={tmp}", "--config.model.text_pooling=max"], "text_pooling='max'"),
    ("bad_cpu_fusions", [SMOKE, "--workdir={tmp}", "--config.cpu_fusions=fast"], "cpu_fusions='fast'"),
    ("heads_do_not_divide", [SMOKE, "--workdir={tmp}", "--config.model.num_heads=3"],
     "must be divisible by model.num_heads=3"),
    ("mesh_does_not_divide", [SMOKE, "--workdir={tmp}", "--config.mesh.data=3"], "need a multiple of 3 devices, but there are 1"),
    ("unknown_text_encoder", [SMOKE, "--workdir={tmp}", "--config.text_encoder=bert"], "text_encoder='bert'"),
    ("missing_t5_folder", [SMOKE, "--workdir={tmp}", "--config.text_encoder=t5:/no/such/t5"], "/no/such/t5"),
    ("missing_minilm_folder", [SMOKE, "--workdir={tmp}", "--config.text_encoder_path=/no/such/minilm"],
     "/no/such/minilm"),
    ("stray_argument", [SMOKE, "--workdir={tmp}", "oops"], "Unexpected arguments ['oops']"),
    ("bad_mode", [SMOKE, "--workdir={tmp}", "--mode=bogus"], "--mode=bogus"),
    ("sample_flag_in_train_mode", [SMOKE, "--workdir={tmp}", "--image={tmp}/first.png", "--prompt=a red circle"],
     "--image is not read by --mode=train: it is for --mode=sample"),
    ("style_image_in_sample_mode", [SMOKE, "--workdir={run}", "--mode=sample", "--prompt=a red circle",
                                    "--out={tmp}/x.gif", "--style_image={tmp}/style.png"],
     "--style_image is not read by --mode=sample: it is for --mode=style_tune"),
    ("prompt_in_eval_mode", [SMOKE, "--workdir={run}", "--mode=eval", "--prompt=a red circle"],
     "--prompt is not read by --mode=eval: it is for --mode=sample or --mode=style_tune"),
    ("sample_without_checkpoint", [SMOKE, "--workdir={tmp}", "--mode=sample", "--prompt=a red circle",
                                   "--out={tmp}/x.mp4"], "No checkpoint in"),
    ("eval_without_checkpoint", [SMOKE, "--workdir={tmp}", "--mode=eval"], "No checkpoint in"),
    ("workdir_does_not_exist", [SMOKE, "--workdir=/no/such/run", "--mode=sample", "--prompt=a red circle",
                                "--out={tmp}/x.mp4"], "--workdir=/no/such/run does not exist"),
    ("empty_prompt", [SMOKE, "--workdir={run}", "--mode=sample", "--prompt=  ", "--out={tmp}/x.mp4"],
     "needs a non-empty --prompt"),
    ("enormous_prompt", [SMOKE, "--workdir={run}", "--mode=sample", f"--prompt={LONG_PROMPT}",
                         "--out={tmp}/x.mp4"], "keep it under 1000"),
    ("bad_out_extension", [SMOKE, "--workdir={run}", "--mode=sample", "--prompt=a red circle", "--out={tmp}/x.avi"],
     "ending in .mp4 or .gif"),
    ("unwritable_out", [SMOKE, "--workdir={run}", "--mode=sample", "--prompt=a red circle",
                        "--out=/no/such/dir/x.mp4"], "does not exist or is not writable"),
    ("frames_shorter_than_window", [SMOKE, "--workdir={run}", "--mode=sample", "--prompt=a red circle",
                                    "--out={tmp}/x.mp4", "--frames=2"], "--frames=2 is shorter"),
    ("bad_prompt_at", [SMOKE, "--workdir={run}", "--mode=sample", "--prompt=a red circle", "--out={tmp}/x.mp4",
                       "--frames=8", "--prompt_at=later a blue square"], "write FRAME:TEXT"),
    ("prompt_at_outside_clip", [SMOKE, "--workdir={run}", "--mode=sample", "--prompt=a red circle",
                                "--out={tmp}/x.mp4", "--frames=8", "--prompt_at=99:a blue square"],
     "outside the clip"),
    ("story_json_not_json", [SMOKE, "--workdir={run}", "--mode=sample", '--prompt=["a red circle", "a blue',
                             "--out={tmp}/x.mp4", "--frames=8"], "is not valid JSON"),
    ("story_json_with_prompt_at", [SMOKE, "--workdir={run}", "--mode=sample", '--prompt=["a red circle"]',
                                   "--out={tmp}/x.mp4", "--frames=8", "--prompt_at=4:a blue square"],
     "cannot take --prompt_at too"),
    ("story_json_span_outside_clip", [SMOKE, "--workdir={run}", "--mode=sample",
                                      '--prompt=[[0, "a red circle"], [9, "a blue square"]]', "--out={tmp}/x.mp4",
                                      "--frames=8"], "within the clip's 8 frames"),
    ("ssr_window_batch_without_cascade", [SMOKE, "--workdir={run}", "--mode=sample", "--prompt=a red circle",
                                          "--out={tmp}/x.mp4", "--config.sample.ssr_window_batch=1"],
     "--config.sample.ssr_window_batch=1 needs --ssr_workdir"),
    ("overlap_too_large", [SMOKE, "--workdir={run}", "--mode=sample", "--prompt=a red circle", "--out={tmp}/x.mp4",
                           "--frames=8", "--config.sample.overlap=4"], "sample.overlap=4 must be in [0, 4)"),
    ("overlap_as_a_flag", [SMOKE, "--workdir={run}", "--mode=sample", "--prompt=a red circle", "--out={tmp}/x.mp4",
                           "--overlap=2"], "--overlap is a config key: --config.sample.overlap=2"),
    ("guidance_as_a_flag", [SMOKE, "--workdir={run}", "--mode=eval", "--guidance=2"],
     "--guidance is a config key: --config.sample.guidance=2 (--mode=eval: --config.eval.guidance=2)"),
    ("whole_clip_story_odd_frames", [SMOKE, "--workdir={run}", "--mode=sample", "--prompt=a red circle",
                                     "--out={tmp}/x.mp4", "--frames=9", "--prompt_at=4:a blue square",
                                     "--config.sample.long_video=whole"], "multiple of 2 frames (e.g. 8 or 10)"),
    ("whole_clip_odd_frames", [SMOKE, "--workdir={run}", "--mode=sample", "--prompt=a red circle",
                               "--out={tmp}/x.mp4", "--frames=9", "--config.sample.long_video=whole"],
     "multiple of 2 frames (e.g. 8 or 10)"),
    ("zero_steps", [SMOKE, "--workdir={run}", "--mode=sample", "--prompt=a red circle", "--out={tmp}/x.mp4",
                    "--config.sample.steps=0"], "sample.steps=0 must be at least 1"),
    ("checkpoint_of_another_config", [SMOKE, "--workdir={run}", "--mode=sample", "--prompt=a red circle",
                                      "--out={tmp}/x.mp4", "--config.model.channels=16"],
     "params.conv_in.conv.bias is (8,) in the checkpoint but (16,) in the config"),
    ("train_on_checkpoint_of_another_config", [SMOKE, "--workdir={run}", "--config.model.channels=16",
                                               "--config.data.data_dir={tmp}/data"], "does not match this config"),
    # Found trying a trained run as a new user would: each sampled, or ended in a traceback, before.
    ("guidance_nan", [SMOKE, "--workdir={run}", "--mode=sample", "--prompt=a red circle", "--out={tmp}/x.mp4",
                      "--config.sample.guidance=nan"], "sample.guidance=nan must be a finite number"),
    ("frames_zero", [SMOKE, "--workdir={run}", "--mode=sample", "--prompt=a red circle", "--out={tmp}/x.mp4",
                     "--frames=0"], "--frames=0 must be a positive number of frames"),
    ("workdir_is_a_file", [SMOKE, "--workdir={run}/config.json"], "config.json is a file, not a folder"),
    ("workdir_under_a_file", [SMOKE, "--workdir={run}/config.json/run"], "config.json is a file, not a folder"),
]


def _tree_digest(folder: str) -> str:
    digest = hashlib.sha256()
    for base, dirs, files in sorted(os.walk(folder)):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(base, name)
            digest.update(path.encode())
            with open(path, "rb") as f:
                digest.update(f.read())
    return digest.hexdigest()


def _run(args):
    return subprocess.run([sys.executable, "-m", "lumiere_jax.main", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def _check_one_line(proc, message):
    assert proc.returncode != 0, proc.stdout[-1000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    assert message in errors[0], errors[0]


@pytest.fixture(scope="module")
def run_copy(trained_workdir, tmp_path_factory):
    """A copy of the trained smoke run, so the digest check sees only what these commands did."""
    copy = str(tmp_path_factory.mktemp("bad_input") / "run")
    shutil.copytree(trained_workdir, copy)
    return copy


def test_at_least_25_cases():
    assert len(CASES) >= 25


@pytest.mark.parametrize("case, args, message", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case, args, message, run_copy, tmp_path):
    before = _tree_digest(os.path.join(run_copy, "checkpoints"))
    args = [a.replace("{run}", run_copy).replace("{tmp}", str(tmp_path)) for a in args]
    _check_one_line(_run(args), message)
    assert _tree_digest(os.path.join(run_copy, "checkpoints")) == before
    assert not os.path.exists(tmp_path / "data")  # rejected before any dataset was built
    assert not os.path.exists(tmp_path / "x.mp4")


def test_corrupt_checkpoint_is_named_and_left_alone(trained_workdir, tmp_path):
    run = str(tmp_path / "run")
    shutil.copytree(trained_workdir, run)
    # Damage the newest checkpoint's array store.
    state_dir = os.path.join(run, "checkpoints", "4", "state")
    for base, _, files in os.walk(state_dir):
        for name in files:
            if name.startswith("manifest") or base.endswith("d"):
                with open(os.path.join(base, name), "r+b") as f:
                    f.truncate(7)
    before = _tree_digest(os.path.join(run, "checkpoints"))
    proc = _run([SMOKE, f"--workdir={run}", "--mode=sample", "--prompt=a red circle", f"--out={tmp_path}/x.mp4"])
    # orbax's tensorstore threads may print asyncio "Event loop is closed" tracebacks of their own while the
    # damaged files are read; the user-facing line must still be there once, and none of our code may crash.
    assert proc.returncode == 2
    # Those threads may also write mid-line, so the error line is found after leading whitespace.
    errors = [l.lstrip() for l in proc.stderr.splitlines() if l.lstrip().startswith("error:")]
    assert len(errors) == 1 and "checkpoints/4 is unreadable" in errors[0], proc.stderr[-3000:]
    assert "lumiere_jax" not in "".join(l for l in proc.stderr.splitlines() if l.strip().startswith("File "))
    assert "move that folder aside" in proc.stderr
    assert _tree_digest(os.path.join(run, "checkpoints")) == before
