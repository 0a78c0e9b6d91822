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
import safetensors.numpy

from configs import conditional, t2v
from lumiere_jax import video_io
from lumiere_jax.applications import inputs as app_inputs
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
    ("image_not_square_under_resize_error", [COND, *SAMPLE, "--image={in}/wide.png", "--config.sample.resize=error"],
     "is 24x16 pixels; --config.sample.resize=error takes square inputs only"),
    ("image_is_a_clip", [COND, *SAMPLE, "--image={in}/clip.gif"], "has 4 frames; --image takes one image"),
    ("image_unsupported_type", [COND, *SAMPLE, "--image={in}/first.bmp"], "unsupported file type .bmp"),
    ("video_too_short", [COND, *SAMPLE, "--video={in}/short.gif", "--mask={in}/hole.png"],
     "has 2 frames but the model makes 4-frame clips"),
    ("video_too_short_at_model_fps", [T2V, *SAMPLE, "--video={in}/short30.mp4"],  # 10 frames at 30 fps: 0.33 s
     "has 10 frames but the model makes 4-frame clips at 8 fps (0.50 s): it lasts 0.33 s (30 fps)"),
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
    ("style_weights_truncated", [T2V, "--workdir={run}", "--mode=sample", "--prompt=a red circle",
                                 "--out={tmp}/x.gif", "--style_weights={in}/truncated.safetensors"], "cannot be read"),
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
    iio.imwrite(d / "short30.mp4", np.zeros((10, 18, 32, 3), np.uint8), fps=30, codec="libx264", plugin="pyav")
    for name in ("corrupt.png", "corrupt.mp4", "corrupt.safetensors"):
        (d / name).write_bytes(b"not really a file of this type")
    safetensors.numpy.save_file({"w": np.zeros((64, 64), np.float32)}, str(d / "whole.safetensors"))
    whole = (d / "whole.safetensors").read_bytes()
    (d / "truncated.safetensors").write_bytes(whole[:len(whole) // 2])  # a copy cut short: valid header
    return str(d)


@pytest.mark.parametrize("name", ["corrupt.safetensors", "truncated.safetensors"])
def test_unreadable_style_weights_are_found_by_the_plan(inputs, name):
    """inputs.plan, which the CLI runs before it restores a run, reads the file's header and extent: a damaged file
    is one line there, not after the restore."""
    config = t2v.get_config("size=smoke")
    with pytest.raises(app_inputs.InputError, match=f"--style_weights=.*{name} cannot be read"):
        app_inputs.plan(config, style_weights=os.path.join(inputs, name))
    assert app_inputs.plan(config, style_weights=os.path.join(inputs, "whole.safetensors")).style_weights


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


# Inputs of any size, aspect and frame rate, read in-process through plan() as the CLI calls it (T = 4 frames of
# 16x16 at 8 fps, the smoke size).

T, R, FPS = 4, 16, 8


def _config(module=t2v, resize="crop"):
    c = module.get_config("size=smoke")
    assert (c.data.num_frames, c.data.resolution, c.data.fps) == (T, R, FPS)
    c.sample.resize = resize
    return c


def _write_mp4(path, frames, fps=30):
    iio.imwrite(path, frames, fps=fps, codec="libx264", plugin="pyav")
    return str(path)


def test_wide_mp4_at_30_fps_becomes_the_models_clip_at_its_frame_rate(tmp_path, caplog):
    """A 160x90 (16:9) MP4 at 30 fps: frame i has brightness 8 i, so the clip's brightness names the frames picked,
    the last shown at or before each of the model's frame times k / 8 s."""
    video = np.stack([np.full((90, 160, 3), 8 * i, np.uint8) for i in range(30)])  # 1 s
    path = _write_mp4(tmp_path / "in.mp4", video)
    with caplog.at_level("INFO", logger="lumiere_jax"):
        request = app_inputs.plan(_config(), video=path)
    assert request.kind == "sdedit" and request.video.shape == (T, R, R, 3)
    picked = np.round((request.video.mean((1, 2, 3)) + 1) * 127.5 / 8).astype(int)
    np.testing.assert_array_equal(picked, [int(k * 30 / FPS) for k in range(T)])  # [0, 3, 7, 11]
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("--video=")]
    assert lines == [f"--video={path} (160x90, 30 fps) has 30 frames: trimmed to the first 4 at 8 fps (0.50 s of "
                     f"1.00 s); resized 160x90 -> 16x16 (short side resized, centre square kept)."]


def test_gif_frame_durations_are_its_frame_times(tmp_path):
    """A 16 fps GIF (60 ms frames: GIFs count centiseconds; 9 of them last 0.54 s) gives every other frame at 8 fps;
    one at 8 fps (120 ms frames) is taken at the model's rate, frame for frame."""
    video = np.stack([np.full((R, R, 3), 20 * i, np.uint8) for i in range(9)])
    for fps, expected in ((16, [0, 2, 4, 6]), (8, [0, 1, 2, 3])):
        video_io.write_video(str(tmp_path / f"{fps}.gif"), video, fps)
        clip = app_inputs.read_clip(str(tmp_path / f"{fps}.gif"), T, R, fps=FPS)
        np.testing.assert_array_equal(np.round((clip[:, 0, 0, 0] + 1) * 127.5 / 20), expected)


def _bands(long, short, landscape=True):
    """An image long x short (landscape: wide) whose outer quarters of the long side are red, the middle green."""
    image = np.zeros((short, long, 3), np.uint8)
    image[..., 0] = 255
    image[:, long // 4:3 * long // 4] = (0, 255, 0)
    return image if landscape else image.transpose(1, 0, 2)


@pytest.mark.parametrize("landscape", [True, False], ids=["landscape", "portrait"])
def test_crop_keeps_the_centre_square_and_pad_adds_black_borders(tmp_path, landscape):
    iio.imwrite(tmp_path / "in.png", _bands(64, 32, landscape))
    path = str(tmp_path / "in.png")
    cropped = app_inputs.read_image(path, R, mode="crop")  # the centre square: the green middle half
    assert cropped.shape == (R, R, 3)
    np.testing.assert_allclose(cropped[2:-2, 2:-2], np.broadcast_to([-1.0, 1.0, -1.0], (R - 4, R - 4, 3)), atol=0.05)
    padded = app_inputs.read_image(path, R, mode="pad")  # the whole image, 16x8, with black borders
    if not landscape:
        padded = padded.transpose(1, 0, 2)  # the same checks along the other axis
    np.testing.assert_array_equal(padded[:4], -1.0)
    np.testing.assert_array_equal(padded[12:], -1.0)
    np.testing.assert_allclose(padded[4:12, 1:3], np.broadcast_to([1.0, -1.0, -1.0], (8, 2, 3)), atol=0.05)
    np.testing.assert_allclose(padded[4:12, 6:10], np.broadcast_to([-1.0, 1.0, -1.0], (8, 4, 3)), atol=0.05)
    with pytest.raises(app_inputs.InputError, match="is 32x64 pixels|is 64x32 pixels"):
        app_inputs.read_image(path, R, mode="error")
    config = _config(conditional, resize="pad")  # plan() reads config.sample.resize
    np.testing.assert_array_equal(app_inputs.plan(config, image=path).cond[0, ..., :3],
                                  padded if landscape else padded.transpose(1, 0, 2))


@pytest.mark.parametrize("resize", ["crop", "pad"])
@pytest.mark.parametrize("mask_kind", ["image", "video"])
def test_a_mask_lands_where_its_videos_region_lands(tmp_path, resize, mask_kind):
    """Inpainting a 160x90 MP4 at 30 fps whose white box moves 6 pixels a frame: a mask of the same size (one image
    of the first frame's box, or a 30 fps mask video following the box) is fitted with the video's geometry and, as
    a video, picks the video's frames; the hole lies on the box in every frame of the clip."""
    boxes = np.zeros((30, 90, 160), np.uint8)
    for i in range(30):
        boxes[i, 30:60, 36 + 6 * i:52 + 6 * i] = 255
    video = _write_mp4(tmp_path / "in.mp4", np.repeat(boxes[..., None], 3, -1))
    if mask_kind == "image":
        iio.imwrite(tmp_path / "mask.png", boxes[0])
        mask = str(tmp_path / "mask.png")
    else:
        mask = _write_mp4(tmp_path / "mask.mp4", np.repeat(boxes[..., None], 3, -1))
    request = app_inputs.plan(_config(conditional, resize), video=video, mask=mask)
    clip, hole = request.cond[..., :3], request.cond[..., 3] == 0  # C is 0 in the hole
    source = app_inputs.read_clip(video, T, R, mode=resize, fps=FPS)  # the box, where the video puts it
    box = source.mean(-1) > 0
    for k in range(T if mask_kind == "video" else 1):
        ys, xs = np.nonzero(hole[k])
        by, bx = np.nonzero(box[k])
        assert abs(xs.mean() - bx.mean()) < 0.6 and abs(ys.mean() - by.mean()) < 0.6, (k, xs, bx)
        assert (box[k] == hole[k]).mean() > 0.95
    if mask_kind == "video":  # the box moves about 1 pixel of the clip per frame of the 30 fps video
        assert np.nonzero(hole[-1])[1].mean() - np.nonzero(hole[0])[1].mean() > 9 if resize == "crop" else 5
    np.testing.assert_array_equal(clip[~hole], source[~hole])


def test_mask_video_frame_counts(tmp_path):
    """A mask video has the video's frames (picked as the video's) or the clip's; others are refused, one line."""
    video = _write_mp4(tmp_path / "in.mp4", np.zeros((30, 18, 32, 3), np.uint8))
    white = np.full((7, 18, 32, 3), 255, np.uint8)
    mask = _write_mp4(tmp_path / "mask.mp4", white)
    with pytest.raises(app_inputs.InputError, match=r"has 7 frames; give one mask image, a mask video of 4 frames "
                                                    r"\(the clip's\) or of 30 \(the video's\)\.$"):
        app_inputs.plan(_config(conditional), video=video, mask=mask)
    mask = _write_mp4(tmp_path / "mask4.mp4", white[:T])
    assert app_inputs.plan(_config(conditional), video=video, mask=mask).cond[..., 3].max() == 0  # all filled
    mask = _write_mp4(tmp_path / "mask40.mp4", np.full((40, 18, 32, 3), 255, np.uint8))
    with pytest.raises(app_inputs.InputError, match="has at least 31 frames; give one mask image"):
        app_inputs.plan(_config(conditional), video=video, mask=mask)


def test_too_short_at_the_models_frame_rate(tmp_path):
    """Enough frames, too little time: 6 frames at 30 fps last 0.2 s; 4 frames at 8 fps need 0.5 s."""
    path = _write_mp4(tmp_path / "in.mp4", np.zeros((6, 18, 32, 3), np.uint8))
    with pytest.raises(app_inputs.InputError) as error:
        app_inputs.plan(_config(), video=path)
    assert str(error.value) == (f"--video={path} has 6 frames but the model makes 4-frame clips at 8 fps (0.50 s): "
                                f"it lasts 0.20 s (30 fps); give at least 0.50 s of video (longer videos are "
                                f"trimmed).")


def test_a_mask_whose_region_the_crop_drops_is_refused(tmp_path):
    """Cinemagraph of a wide image whose white region is in the left quarter: crop keeps the centre, pad all."""
    iio.imwrite(tmp_path / "wide.png", _bands(64, 32))
    region = np.zeros((32, 64), np.uint8)
    region[8:24, 2:12] = 255
    iio.imwrite(tmp_path / "region.png", region)
    files = dict(image=str(tmp_path / "wide.png"), mask=str(tmp_path / "region.png"))
    with pytest.raises(app_inputs.InputError, match="white region lies outside the centre square"):
        app_inputs.plan(_config(conditional), **files)
    request = app_inputs.plan(_config(conditional, resize="pad"), **files)
    assert request.kind == "cinemagraph" and (request.cond[1:, 6:10, 0:3, 3] == 0).all()  # the left edge animates
