r"""The conditional (7-channel) model behind image-to-video, inpainting and cinemagraphs (Lumiere, Sec. 4).

It is the T2V STUNet plus 4 input channels, a masked video C and its mask M (1 = known), fine-tuned from a
T2V run: `init_from` copies the T2V EMA weights and the new channels' conv_in weights start at zero, so
step 0 is the T2V model. Fine-tuning draws masks from a mixture of the three applications' kinds
(lumiere_jax/conditioning/masked.py). On a 2-core CPU, from the tiny T2V run of configs/t2v.py:

  python -m lumiere_jax.main --config=configs/conditional.py --workdir=runs/cond \
      --config.init_from=runs/t2v
  # image-to-video: the image is frame 1
  python -m lumiere_jax.main --config=configs/conditional.py --workdir=runs/cond --mode=sample \
      --image=first.png --prompt="a red circle moving left" --out=i2v.gif
  # inpainting: white mask pixels are filled (a PNG holds for every frame, an MP4/GIF gives one per frame)
  python -m lumiere_jax.main --config=configs/conditional.py --workdir=runs/cond --mode=sample \
      --video=in.mp4 --mask=hole.png --prompt="a blue square moving up" --out=inpaint.gif
  # cinemagraph: only the white region of the mask moves
  python -m lumiere_jax.main --config=configs/conditional.py --workdir=runs/cond --mode=sample \
      --image=still.png --mask=region.png --prompt="a red circle moving right" --out=cinemagraph.gif

`tools/app_inputs.py` writes such inputs from the shapes world. Variants as in configs/t2v.py
(`size=smoke|tiny|small`; the T2V run must be of the same size). Training a single application instead
of the mixture: configs/i2v.py, configs/inpaint.py, configs/cinemagraph.py (`--config.task=i2v` etc.).
"""

import ml_collections

from configs import t2v
from lumiere_jax import config_lib
from lumiere_jax.conditioning import masked

# Fine-tuning steps per size: the T2V model already knows the world; the new channels learn to copy.
STEPS = {"smoke": 2, "tiny": 400, "small": 20_000}


def get_config(arg: str | None = None, task: str = "conditional") -> ml_collections.ConfigDict:
    """task: "conditional" (the mixture of mask kinds), or one application's kind (configs/i2v.py etc.)."""
    c = t2v.get_config(arg)
    with c.unlocked():
        c.task = task
        c.model.cond_channels = masked.COND_CHANNELS
        c.conditioning = masked.default_config()
        c.total_steps = STEPS[c.size]
        c.sample_every = 0  # periodic samples are text-to-video only
        c.optim.warmup_steps = min(c.optim.warmup_steps, 50)
        if c.size == "tiny":
            c.optim.learning_rate = 3e-4
            c.optim.decay_steps = 0
            c.checkpoint_every = 100
            c.log_every = 10
    return config_lib.lock(c)
