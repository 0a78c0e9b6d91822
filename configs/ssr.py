r"""Spatial super-resolution (SSR): a STUNet that upsamples clips, conditioned on the low-res clip (Lumiere, Sec. 3.2).

The model sees the noisy high-res clip plus the low-res clip (box-downsampled, bicubically upsampled back,
noise-augmented at a random level; Imagen Video) on 3 extra input channels, and the augmentation level
through a zero-init embedding. It generates the detail that bicubic upsampling misses, which the sampler adds to
the upsampled clip (ssr.residual_scale; 0: it generates the clip itself). Long clips are upsampled on overlapping
windows of `ssr.window` frames reconciled by temporal MultiDiffusion (lumiere_jax/ssr.py).

Train on a 2-core CPU (`size=tiny`: 32 -> 64 px, 8 frames), then run the cascade base -> SSR:

  python -m lumiere_jax.main --config=configs/ssr.py --workdir=runs/ssr
  python -m lumiere_jax.main --config=configs/t2v.py --workdir=runs/t2v --mode=sample \
      --ssr_workdir=runs/ssr --prompt="a red circle moving left" --frames=32 --out=clip64.gif

The SSR run's `ssr.low_resolution` must equal the base run's `data.resolution` (t2v tiny: 32).
Variants: `size=smoke` (16 -> 32 px, 4 frames; what the tests run, cascades the t2v smoke model),
`size=tiny` (CPU default), `size=lumiere` (the paper's 128 -> 1024 on 16-frame windows; an 80-frame
clip is 6 windows with overlap 2; built abstractly in the tests, needs a TPU/GPU pod to train).
"""

import ml_collections

from lumiere_jax import config_lib

SIZES = {
    # name: (window frames, low res, high res, channels, channel_mult, attention_levels, batch, steps)
    "smoke": (4, 16, 32, 8, (1, 2), (1,), 2, 4),
    "tiny": (8, 32, 64, 16, (1, 2, 4), (2,), 4, 1000),
    # No spatial self-attention at 1024 px (as Imagen's SR models); temporal attention at the coarsest level.
    "lumiere": (16, 128, 1024, 128, (1, 2, 4, 4, 8), (), 64, 500_000),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Returns the locked config; `arg` is `key=value,...` with key `size`."""
    args = config_lib.parse_arg(arg, size="tiny")
    if args.size not in SIZES:
        raise ValueError(f"configs/ssr.py: size={args.size!r} is not one of {sorted(SIZES)}.")
    frames, low, high, ch, mult, attn, batch, steps = SIZES[args.size]

    c = config_lib.base_config()
    c.task = "ssr"
    c.size = args.size
    c.total_steps = steps
    c.batch_size = batch
    # Training clips are high-res windows of the shapes world; the conditioner makes the low-res input.
    c.data.num_frames = frames
    c.data.resolution = high
    c.model.channels = ch
    c.model.channel_mult = mult
    c.model.attention_levels = attn
    c.model.num_heads = 4 if ch >= 32 else 2
    c.model.cond_channels = 3  # the upsampled low-res clip
    c.model.cond_noise_level = True  # the model is told how noisy that clip is
    # Text matters little next to the low-res clip: no guidance halves the sampler's model calls.
    c.sample.guidance = 1.0

    c.ssr = ml_collections.ConfigDict()
    c.ssr.low_resolution = low  # must divide data.resolution (box downsampling)
    # Bicubic up(x_lr) as the model's input and as the base its output is added to: the model generates the detail
    # that bicubic upsampling misses, (x - up(x_lr)) / residual_scale (conditioning/low_res.py); 0: the clip itself.
    c.ssr.upsample = "bicubic"
    c.ssr.residual_scale = 0.5
    c.ssr.aug_level_max = 0.5  # training: augmentation time t_aug ~ U[0, this] per clip (0 = clean)
    c.ssr.sample_aug_level = 0.1  # sampling: fixed t_aug of the given low-res clip
    c.ssr.window = frames  # MultiDiffusion window at sampling: the training length
    c.ssr.overlap = 2  # frames shared by neighbouring windows (the paper's 2)
    c.ssr.window_batch = 0  # windows per model call at sampling; 0 = all at once (memory grows with length)

    if args.size == "smoke":
        c.data.num_train = 32
        c.data.num_test = 8
        c.checkpoint_every = 2
        c.log_every = 1
        c.sample_every = 0
        c.sample.steps = 4
        c.eval.steps = 4
        c.model.temporal_attention_depth = 1
    if args.size == "tiny":
        c.data.num_train = 2000  # 64 px clips: 2000 x 8 frames is ~200 MB of array_record
        c.optim.ema_decay = 0.995
        c.optim.decay_steps = 1000
        c.sample_every = 0
        c.sample.steps = 25
    if args.size == "lumiere":
        c.data.num_train = 100_000
        c.model.num_res_blocks = 2
        c.model.num_heads = 8
        c.model.dtype = "bfloat16"
        c.optim.learning_rate = 1e-4
        c.ssr.window_batch = 1  # one 16 x 1024 x 1024 window per model call keeps the sampler's memory flat
    return config_lib.lock(c)
