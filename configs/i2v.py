r"""Image-to-video (Lumiere, Sec. 4): the conditional model fine-tuned on first-frame masks alone.

configs/conditional.py fine-tunes one 7-channel model for image-to-video, inpainting and cinemagraphs on a
mixture of their masks; this file fine-tunes it on i2v masks only (task="i2v"), the rest as
there. From the tiny T2V run of configs/t2v.py:

  python -m lumiere_jax.main --config=configs/i2v.py --workdir=runs/i2v --config.init_from=runs/t2v
  python -m lumiere_jax.main --config=configs/i2v.py --workdir=runs/i2v --mode=sample \
      --image=first.png --prompt="a red circle moving left" --out=i2v.gif

A run of configs/conditional.py samples the same way. Variants as in configs/t2v.py (`size=smoke|tiny|small`).
"""

import ml_collections

from configs import conditional


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return conditional.get_config(arg, task="i2v")
