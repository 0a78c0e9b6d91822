r"""Stylized generation (SPEC section 3, StyleDrop-like): fine-tune only the spatial layers on one style image.

The spatial (T2I) weights of a trained T2V run are fine-tuned as a text-to-image model on the style image
with a caption that names the style; only those weights are saved. Sampling interpolates them into the
T2V model, W = a * W_style + (1 - a) * W_orig for spatial weights, temporal weights untouched. With the
tiny T2V run of configs/t2v.py and a style image of outlined shapes (tools/app_inputs.py writes one):

  python -m lumiere_jax.main --config=configs/style_gen.py --workdir=/tmp/t2v --mode=style_tune \
      --style_image=style.png --prompt="a red circle in outline style" --style_weights=/tmp/outline.safetensors
  python -m lumiere_jax.main --config=configs/t2v.py --workdir=/tmp/t2v --mode=sample \
      --prompt="a blue square moving up in outline style" --style_weights=/tmp/outline.safetensors \
      --style_alpha=0.7 --out=/tmp/styled.gif

Variants as in configs/t2v.py; the T2V run must be of the same size.
"""

import ml_collections

from configs import t2v
from lumiere_jax import config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = t2v.get_config(arg)
    with c.unlocked():
        c.style = ml_collections.ConfigDict()
        c.style.steps = 4 if c.size == "smoke" else 300
        c.style.batch_size = 2 if c.size == "smoke" else 8  # augmented copies of the style image per step
        c.style.learning_rate = 1e-4
        c.style.warmup_steps = 20
        c.style.max_shift = 0.15  # random translation of the style image, fraction of its side
        c.style.log_every = 1 if c.size == "smoke" else 25
    return config_lib.lock(c)
