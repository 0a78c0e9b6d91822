r"""Writes example inputs for the applications (Lumiere, Bar-Tal et al. 2024, Sec. 4) from the shapes world.

  python -m tools.app_inputs --out=app_inputs [--frames=8 --resolution=32]

writes, for a red circle moving right: first.png (its first frame, for image-to-video), in.mp4 and in.gif
(the clip, for inpainting and SDEdit), hole.png (white over the object's whole path, for inpainting),
still.png and region.png (a still frame and the region to animate, for cinemagraphs), and two styles the
training data never shows, for --mode=style_tune: style.png (a circle drawn as an outline) and
style_stripes.png (a filled circle over a striped background).
"""

from __future__ import annotations

import os

import imageio.v3 as iio
import numpy as np
from absl import app, flags

from lumiere_jax import video_io
from lumiere_jax.data import shapes

OUTLINE = 0.07  # rim width of the style, fraction of the frame side (~2 pixels at 32x32)

def path_box(clip: np.ndarray, margin: int = 2) -> np.ndarray:
    """bool [H, W]: the bounding box, plus a margin, of every pixel the object covers in a uint8 clip."""
    fg = np.abs(clip.astype(np.int32) - shapes.BACKGROUND.astype(np.int32)).sum(-1).max(0) > 30  # [H, W]
    ys, xs = np.nonzero(fg)
    box = np.zeros(fg.shape, bool)
    box[max(ys.min() - margin, 0):ys.max() + margin + 1, max(xs.min() - margin, 0):xs.max() + margin + 1] = True
    return box


def style_image(resolution: int, color: str = "red", shape: str = "circle", kind: str = "outline") -> np.ndarray:
    """uint8 [H, W, 3]: one large still shape drawn as an outline, or filled over stripes (`kind="stripes"`)."""
    spec = shapes.spec_from_attributes(color, shape, "still", "large")
    if kind == "stripes":
        return shapes.render_clip(spec, 1, resolution, background="stripes")[0]
    return shapes.render_clip(spec, 1, resolution, outline=OUTLINE)[0]


def main(argv) -> None:
    del argv
    out, t, res = flags.FLAGS.out, flags.FLAGS.frames, flags.FLAGS.resolution
    os.makedirs(out, exist_ok=True)
    clip = shapes.render_clip(shapes.spec_from_attributes("red", "circle", "right", "large", "slow"), t, res)
    white = lambda m: (m.astype(np.uint8) * 255)  # noqa: E731
    iio.imwrite(os.path.join(out, "first.png"), clip[0])
    video_io.write_video(os.path.join(out, "in.mp4"), clip, 8)
    video_io.write_video(os.path.join(out, "in.gif"), clip, 8)
    iio.imwrite(os.path.join(out, "hole.png"), white(path_box(clip)))
    iio.imwrite(os.path.join(out, "still.png"), clip[0])
    iio.imwrite(os.path.join(out, "region.png"), white(path_box(clip)))
    iio.imwrite(os.path.join(out, "style.png"), style_image(res))
    iio.imwrite(os.path.join(out, "style_stripes.png"), style_image(res, kind="stripes"))
    print(f"Wrote first.png, in.mp4, in.gif, hole.png, still.png, region.png, style.png, style_stripes.png "
          f"to {out}.")


if __name__ == "__main__":
    # Defined here, not at import: tools/app_bench.py imports this module's functions and has flags of its own.
    flags.DEFINE_string("out", "app_inputs", "Folder for the input files.")
    flags.DEFINE_integer("frames", 8, "Clip length (the model's data.num_frames).")
    flags.DEFINE_integer("resolution", 32, "Frame side (the model's data.resolution).")
    app.run(main)
