"""Bad application inputs, table-driven: each exits 2 with one line naming the problem and the fix.

Inputs are checked before any model is loaded or compiled, so most rows need no trained run ({tmp}/run does
not exist); the one that reads style weights into a model uses the trained smoke run ({run}).
"""

import os
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest

from lumiere_jax import video_io
from lumiere_jax.data import shapes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
T2V = "--config=configs/t2v.py:size=smoke"
COND = "--config=configs/conditional.py:size=smoke"
STYLE = "--config=configs/style_gen.py:size=smoke"
SAMPLE = ["--workdir={tmp}/run", "--mode=sample", "--prompt=a red circle moving left", "--out={tmp}/x.gif"]

# (case id, arguments ({in}: the input files below, {tmp}: an empty folder, {run}: a trained T2V smoke run),
#  expected text in the error line)
CASES = [
    ("image_missing", [COND, *SAMPLE, "--image=/no/such/first.png"], "--image=/no/such/first.png does not exist"),
    ("image_corrupt", [COND, *SAMPLE, "--image={in}/corrupt.png"], "cannot be decoded"),
    ("image_not_square", [COND, *SAMPLE, "--image={in}/wide.png"], "is 24x16 pixels; the model makes square"),
    ("image_is_a_clip", [COND, *SAMPLE, "--image={in}/clip.gif"], "has 4 frames; --image takes one image"),
    ("image_unsupported_type", [COND, *SAMPLE, "--image={in}/first.bmp"], "unsupported file type .bmp"),
    ("video_too_short", [COND, *SAMPLE, "--video={in}/short.gif", "--mask={in}/hole.png"],
     "has 2 frames but the model makes 4-frame clips"),
    ("video_corrupt", [T2V, *SAMPLE, "--video={in}/corrupt.mp4"], "cannot be decoded"),
    ("mask_not_binary", [COND, *SAMPLE, "--video={in}/clip.gif", "--mask={in}/grey.png"], "is not binary"),
    ("mask_wrong_size", [COND, *SAMPLE, "--video={in}/clip.gif", "--mask={in}/small_mask.png"],
     "is 8x8 pixels but the input it masks is 16x16"),
    ("mask_wrong_frames", [COND, *SAMPLE, "--video={in}/clip.gif", "--mask={in}/mask3.gif"],
     "has 3 frames; give one mask image or a mask video of 4 frames"),
    ("cinemagraph_mask_video", [COND, *SAMPLE, "--image={in}/first.png", "--mask={in}/clip.gif"],
     "has 4 frames; give one mask image."),
    ("mask_empty", [COND, *SAMPLE, "--image={in}/first.png", "--mask={in}/black.png"], "has no white pixels"),
    ("mask_alone", [COND, *SAMPLE, "--mask={in}/hole.png"], "--mask needs --video"),
    ("image_and_video", [COND, *SAMPLE, "--image={in}/first.png", "--video={in}/clip.gif"], "not both"),
    ("i2v_on_t2v_model", [T2V, *SAMPLE, "--image={in}/first.png"], "needs the conditional model"),
    ("sdedit_on_conditional_model", [COND, *SAMPLE, "--video={in}/clip.gif"], "SDEdit, which runs on a text-to"),
    ("strength_out_of_range", [T2V, *SAMPLE, "--video={in}/clip.gif", "--config.sample.strength=1.5"],
     "sample.strength=1.5 must be in [0, 1]"),
    ("strength_as_a_flag", [COND, *SAMPLE, "--video={in}/clip.gif", "--strength=0.5"],
     "--strength is a config key: --config.sample.strength=0.5"),
    ("frames_with_image", [COND, *SAMPLE, "--image={in}/first.png", "--frames=8"], "drop --frames"),
    ("style_alpha_as_a_flag", [T2V, *SAMPLE, "--style_alpha=0.5"],
     "--style_alpha is a config key: --config.sample.style_alpha=0.5"),
    ("style_start_zero", [T2V, *SAMPLE, "--style_weights={in}/corrupt.safetensors", "--config.sample.style_start=0"],
     "sample.style_start=0.0 must be in (0, 1]"),
    ("style_alpha_out_of_range", [T2V, *SAMPLE, "--style_weights={in}/corrupt.safetensors",
                                  "--config.sample.style_alpha=2.5"], "sample.style_alpha=2.5 must be in [0, 2]"),
    ("style_weights_missing", [T2V, *SAMPLE, "--style_weights=/no/such.safetensors"],
     "does not exist: make it with --mode=style_tune"),
    ("style_weights_corrupt", [T2V, "--workdir={run}", "--mode=sample", "--prompt=a red circle",
                               "--out={tmp}/x.gif", "--style_weights={in}/corrupt.safetensors"], "cannot be read"),
    ("style_tune_needs_style_config", [T2V, "--workdir={tmp}/run", "--mode=style_tune",
                                       "--style_image={in}/first.png"], "use --config=configs/style_gen.py"),
    ("style_tune_no_image", [STYLE, "--workdir={tmp}/run", "--mode=style_tune", "--prompt=outline style",
                             "--style_weights={tmp}/s.safetensors"], "needs --style_image"),
    ("style_tune_no_caption", [STYLE, "--workdir={tmp}/run", "--mode=style_tune", "--style_image={in}/first.png",
                               "--style_weights={tmp}/s.safetensors"], "needs --prompt naming the style"),
    ("style_tune_bad_output", [STYLE, "--workdir={tmp}/run", "--mode=style_tune", "--style_image={in}/first.png",
                               "--prompt=outline style", "--style_weights={tmp}/s.pt"], "ending in .safetensors"),
    ("style_tune_image_missing", [STYLE, "--workdir={tmp}/run", "--mode=style_tune", "--style_image=/no/s.png",
                                  "--prompt=outline style", "--style_weights={tmp}/s.safetensors"],
     "--style_image=/no/s.png does not exist"),
    ("style_tune_prior_fraction", [STYLE, "--workdir={tmp}/run", "--mode=style_tune", "--style_image={in}/first.png",
                                   "--prompt=outline style", "--style_weights={tmp}/s.safetensors",
                                   "--config.style.prior_fraction=1.0"], "prior_fraction=1.0 must be in [0, 1)"),
    ("style_tune_empty_folder", [STYLE, "--workdir={tmp}/run", "--mode=style_tune", "--style_image={tmp}",
                                 "--prompt=outline style", "--style_weights={tmp}/s.safetensors"],
     "is a folder without .png/.jpg images"),
]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Valid and broken input files at the smoke size (4 frames of 16x16)."""
    d = tmp_path_factory.mktemp("app_inputs")
    clip = shapes.render_clip(shapes.spec_from_attributes("red", "circle", "right"), 4, 16)
    iio.imwrite(d / "first.png", clip[0])
    iio.imwrite(d / "first.bmp", clip[0])
    iio.imwrite(d / "wide.png", np.zeros((16, 24, 3), np.uint8))
    video_io.write_video(str(d / "clip.gif"), clip, 8)
    video_io.write_video(str(d / "short.gif"), clip[:2], 8)
    hole = np.zeros((16, 16), np.uint8)
    hole[4:10, 4:12] = 255
    iio.imwrite(d / "hole.png", hole)
    iio.imwrite(d / "grey.png", np.full((16, 16), 128, np.uint8))
    iio.imwrite(d / "small_mask.png", hole[::2, ::2])
    iio.imwrite(d / "black.png", np.zeros((16, 16), np.uint8))
    moving = np.stack([np.roll(hole, i, axis=1) for i in range(3)])  # distinct frames: GIF keeps all three
    video_io.write_video(str(d / "mask3.gif"), np.repeat(moving[..., None], 3, -1), 8)
    for name in ("corrupt.png", "corrupt.mp4", "corrupt.safetensors"):
        (d / name).write_bytes(b"not really a file of this type")
    return str(d)


def test_at_least_20_cases():
    assert len(CASES) >= 20


@pytest.mark.parametrize("case, args, message", CASES, ids=[c[0] for c in CASES])
def test_bad_app_input(case, args, message, inputs, tmp_path, request):
    run = request.getfixturevalue("trained_workdir") if any("{run}" in a for a in args) else ""
    args = [a.replace("{in}", inputs).replace("{tmp}", str(tmp_path)).replace("{run}", run) for a in args]
    proc = subprocess.run([sys.executable, "-m", "lumiere_jax.main", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2, proc.stdout[-1000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    assert message in errors[0], errors[0]
    assert not os.path.exists(tmp_path / "x.gif") and not os.path.exists(tmp_path / "s.safetensors")
