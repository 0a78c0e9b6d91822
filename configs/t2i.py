r"""Text-to-image: the STUNet's spatial U-Net alone (temporal path off), trained on single frames.

This is the pre-trained model that Lumiere inflates (Lumiere, Sec. 3.1). Train it, then inflate it into
the video model and train only the temporal layers:

  python -m lumiere_jax.main --config=configs/t2i.py --workdir=runs/t2i
  python -m lumiere_jax.main --config=configs/t2i.py --workdir=runs/t2i --mode=sample \
      --prompt="a red circle" --out=image.png
  python -m lumiere_jax.main --config=configs/t2v.py --workdir=runs/t2v --config.init_from=runs/t2i

With a T2I run as init_from, only the temporal layers train (`trainable="auto"`); `--config.trainable=all`
fine-tunes the inflated spatial weights too.

Variants as in configs/t2v.py (`size=smoke|tiny|small`): the same spatial architecture, so
its weights drop into the STUNet of the same size.
"""

import ml_collections

from configs import t2v
from lumiere_jax import config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = t2v.get_config(arg)
    with c.unlocked():
        c.task = "t2i"
        c.model.temporal = False
        c.data.num_frames = 1  # single frames of the shapes world, captions and all
        c.batch_size *= 8  # as many frames per step as the video model sees
        c.sample.fps = 1
    return config_lib.lock(c)
