"""tools/style_feedback.py: which samples a feedback round keeps (app_metrics.select_feedback), and the folder it
writes for --style_image.

The tool is run as a subprocess: its absl flags would clash with other tools' in the test process.
"""

import json
import os
import subprocess
import sys

import imageio.v3 as iio
import numpy as np

from configs import t2v as t2v_config
from lumiere_jax.applications import edit
from lumiere_jax.applications import inputs as app_inputs
from lumiere_jax.eval import app_metrics
from lumiere_jax.data import shapes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _candidate(color, shape, style, found_shape=None):
    return {"color": color, "shape": shape, "style": style, "found_color": color,
            "found_shape": found_shape or shape}


def test_select_keeps_styled_samples_of_the_prompted_content_spread_over_shapes():
    candidates = [
        _candidate("red", "circle", 9.0),
        _candidate("red", "circle", 8.0),  # the same content again
        _candidate("blue", "square", 10.0, found_shape="circle"),  # the checker found another shape
        _candidate("green", "triangle", 1.0),  # too little style
        _candidate("blue", "square", 3.0),
        _candidate("green", "triangle", 2.5),
        _candidate("yellow", "circle", 7.0),
    ]
    # One per shape first (the yellow circle's stripes beat the square's, but squares come before a 2nd circle).
    assert app_metrics.select_feedback(candidates, keep=3, min_style=2.0) == [0, 4, 5]
    assert app_metrics.select_feedback(candidates, keep=4, min_style=2.0) == [0, 4, 5, 6]
    assert app_metrics.select_feedback(candidates, keep=10, min_style=2.0) == [0, 4, 5, 6]
    assert app_metrics.select_feedback(candidates, keep=10, min_style=5.0) == [0, 6]
    assert app_metrics.select_feedback(candidates, keep=10, min_style=0.5) == [0, 4, 5, 6]  # one green triangle
    wrong_colour = dict(candidates[0], found_color="blue")
    assert app_metrics.select_feedback([wrong_colour], keep=1, min_style=0.0) == []


def test_cli_writes_the_reference_and_kept_samples_as_a_captioned_folder(trained_workdir, tmp_path):
    from test_applications import _sampler

    config = t2v_config.get_config("size=smoke")
    res = config.data.resolution
    t2v = _sampler(config, trained_workdir)
    style = str(tmp_path / "round1.safetensors")
    edit.save_style_weights(style, edit.spatial_weights(t2v.params), {})
    reference = shapes.render_clip(shapes.spec_from_attributes("red", "circle", "still"), 1, 2 * res,
                                   background="stripes")[0]
    iio.imwrite(tmp_path / "style.png", reference)  # twice the model's size: the tool resizes it
    out = tmp_path / "round2"
    out.mkdir()
    (out / "sample_99.png").write_bytes(b"an earlier round's sample")
    caption = "a large red circle on a striped background"
    result = subprocess.run([sys.executable, "-m", "tools.style_feedback", f"--t2v={trained_workdir}", "--size=smoke",
                             f"--style_weights={style}", f"--reference={tmp_path}/style.png", f"--caption={caption}",
                             f"--out={out}", "--seeds=1", "--steps=2", "--min_style=0", "--keep=30"],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    scores = json.loads((out / "scores.json").read_text())
    candidates, kept = scores["candidates"], scores["kept"]
    assert len(candidates) == len(shapes.COLORS) * len(shapes.SHAPES)
    assert kept == app_metrics.select_feedback(candidates, keep=30, min_style=0.0)
    assert not (out / "sample_99.png").exists()
    images, captions = app_inputs.read_style_images(str(out), None, res)
    assert len(images) == 1 + len(kept)
    assert captions == [caption] + [candidates[i]["prompt"] for i in kept]
    assert all(c["prompt"] == f"a large {c['color']} {c['shape']} on a striped background" for c in candidates)
    np.testing.assert_array_equal(images[0], app_inputs.read_image(str(tmp_path / "style.png"), res))
    assert f"Tune the next round with --style_image={out}" in result.stdout
    # A folder with images of the user's is refused before anything samples: they would join the tune.
    iio.imwrite(out / "mine.png", reference)
    result = subprocess.run([sys.executable, "-m", "tools.style_feedback", f"--t2v={trained_workdir}", "--size=smoke",
                             f"--style_weights={style}", f"--reference={tmp_path}/style.png", f"--caption={caption}",
                             f"--out={out}"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode != 0 and "holds other images (mine.png)" in result.stderr, result.stderr[-2000:]
    assert (out / "reference.png").exists()
