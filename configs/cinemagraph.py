r"""Cinemagraphs (Lumiere, Sec. 4): the conditional model fine-tuned on still images with a region to animate.

configs/conditional.py fine-tunes one 7-channel model for image-to-video, inpainting and cinemagraphs on a
mixture of their masks; this file fine-tunes it on cinemagraph masks only (task="cinemagraph"), the rest as
there. From the tiny T2V run of configs/t2v.py:

  python -m lumiere_jax.main --config=configs/cinemagraph.py --workdir=runs/cinemagraph \
      --config.init_from=runs/t2v
  # only the white region of the mask moves; the rest stays the still image
  python -m lumiere_jax.main --config=configs/cinemagraph.py --workdir=runs/cinemagraph --mode=sample \
      --image=still.png --mask=region.png --prompt="a red circle moving right" --out=cinemagraph.gif

A run of configs/conditional.py samples the same way. Variants as in configs/t2v.py (`size=smoke|tiny|small`).
"""

import ml_collections

from configs import conditional


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return conditional.get_config(arg, task="cinemagraph")
