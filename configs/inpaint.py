r"""Video inpainting (Lumiere, Sec. 4): the conditional model fine-tuned on space-time holes alone.

configs/conditional.py fine-tunes one 7-channel model for image-to-video, inpainting and cinemagraphs on a
mixture of their masks; this file fine-tunes it on inpaint masks only (task="inpaint"), the rest as
there. From the tiny T2V run of configs/t2v.py:

  python -m lumiere_jax.main --config=configs/inpaint.py --workdir=runs/inpaint --config.init_from=runs/t2v
  # white mask pixels are filled (a PNG holds for every frame, an MP4/GIF gives one per frame); a prompt that
  # names another object replaces it
  python -m lumiere_jax.main --config=configs/inpaint.py --workdir=runs/inpaint --mode=sample \
      --video=in.mp4 --mask=hole.png --prompt="a blue square moving up" --out=inpaint.gif

A run of configs/conditional.py samples the same way. Variants as in configs/t2v.py (`size=smoke|tiny|small`).
"""

import ml_collections

from configs import conditional


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return conditional.get_config(arg, task="inpaint")
