r"""Stylized generation (Lumiere, Sec. 4.1, StyleDrop-like): fine-tune only the spatial layers on one style image.

The spatial (T2I) weights of a trained T2V run are fine-tuned on the style image with a caption that names
the style: by default the image is a still clip that goes through the whole STUNet with the temporal layers
frozen (`style.frames`; 1 tunes the spatial layers alone as a text-to-image model). Only the spatial weights
are saved. Sampling interpolates them into the T2V model, W = a * W_style + (1 - a) * W_orig for spatial
weights, temporal weights untouched. With the tiny T2V run of configs/t2v.py and a style image of a shape
over a striped background, a background the training data never has (tools/app_inputs.py writes it, and
style.png with an outlined shape):

  python -m lumiere_jax.main --config=configs/style_gen.py --workdir=runs/t2v_tiny --mode=style_tune \
      --style_image=style_stripes.png --prompt="a large red circle on a striped background" \
      --style_weights=stripes.safetensors
  python -m lumiere_jax.main --config=configs/t2v.py --workdir=runs/t2v_tiny --mode=sample \
      --prompt="a large blue square moving up on a striped background" --style_weights=stripes.safetensors \
      --config.sample.style_alpha=1.0 --out=styled.gif

Sampling runs the style weights at the steps with diffusion time t <= config.sample.style_start (default 0.5): the base
weights lay out the motion, colour and shape over the noisier steps, the style weights paint the rest.

--prompt may hold several phrasings of the style image separated by "|". Half of each batch is the base
model's own images for plain prompts (prior preservation), which keeps other content from turning into the
style image's red circle.

Variants as in configs/t2v.py; the T2V run must be of the same size.
"""

import itertools

import ml_collections

from configs import t2v
from lumiere_jax import config_lib
from lumiere_jax.data import shapes


def _prior_prompts(num: int) -> tuple[str, ...]:
    """Plain prompts of the shapes world (every colour, shape and size, no style words) for prior images."""
    combos = itertools.product(shapes.SIZES, shapes.SHAPES, shapes.COLORS)
    return tuple(shapes.prompt_for(color, shape, "still", size) for size, shape, color in combos)[:num]


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = t2v.get_config(arg)
    with c.unlocked():
        c.style = ml_collections.ConfigDict()
        c.style.steps = 4 if c.size == "smoke" else 800
        c.style.batch_size = 2 if c.size == "smoke" else 8  # augmented copies of the style image per step
        c.style.learning_rate = 1e-3
        c.style.warmup_steps = 20
        c.style.max_shift = 0.15  # random translation of the style image, fraction of its side
        c.style.log_every = 1 if c.size == "smoke" else 25
        # k > 1 (default: the shortest clip the STUNet takes): the style image as a still clip of k frames
        # through the whole STUNet, only the spatial layers trainable, prior images the model's own clips.
        # 1: the T2I view (spatial layers alone, single images), as Lumiere tunes its T2I model; on the tiny
        # motion model the style then barely survives the temporal layers (docs/applications.md).
        c.style.frames = 2 ** (len(c.model.channel_mult) - 1)
        # A regex over spatial weight names: only those train ("": all spatial weights, the default). On the
        # tiny motion model all spatial weights give 3x the stripes of the full-resolution level alone
        # (f"^(conv_in|conv_out|norm_out|down/0|up/{len(c.model.channel_mult) - 1})/"), and sampling keeps
        # the motion by running them only at the low-noise steps (sample.style_start, default 0.5;
        # docs/applications.md).
        c.style.layers = ""
        # Prior preservation: this share of each batch is the base model's own images for prompts without
        # the style words (0 turns it off); they are drawn once, before tuning, with prior_steps DDIM steps.
        c.style.prior_fraction = 0.5
        c.style.prior_steps = 4 if c.size == "smoke" else 25
        c.style.prior_prompts = _prior_prompts(4 if c.size == "smoke" else 48)
    return config_lib.lock(c)
