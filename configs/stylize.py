r"""Video-to-video editing by SDEdit (Lumiere, Sec. 4) with a plain text-to-video run; nothing is trained.

The source clip is noised to the level `strength` (t0 in [0, 1]) and denoised with the new prompt: low
strength keeps the source, high strength follows the prompt. With the tiny T2V run of configs/t2v.py:

  python -m lumiere_jax.main --config=configs/stylize.py --workdir=runs/t2v --mode=sample \
      --video=in.mp4 --prompt="a blue circle moving left" --config.sample.strength=0.6 --out=edit.gif

configs/t2v.py works the same way; this file only names the default strength. Variants as in configs/t2v.py.
"""

import ml_collections

from configs import t2v
from lumiere_jax import config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = t2v.get_config(arg)
    with c.unlocked():
        c.sample.strength = 0.6  # the noise level t0 of SDEdit: --config.sample.strength=0.8 overrides it
    return config_lib.lock(c)
