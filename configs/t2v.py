r"""Text-to-video: the STUNet base model on the captioned-shapes world.

Train on a 2-core CPU (the default, `size=tiny`), then sample and evaluate:

  python -m lumiere_jax.main --config=configs/t2v.py --workdir=runs/t2v
  python -m lumiere_jax.main --config=configs/t2v.py --workdir=runs/t2v --mode=sample \
      --prompt="a red circle moving left" --out=clip.mp4
  python -m lumiere_jax.main --config=configs/t2v.py --workdir=runs/t2v --mode=eval

Variants: `configs/t2v.py:size=smoke` (seconds; what the tests run), `size=tiny`
(CPU default: 8 frames at 32x32), `size=small` (16 frames at 64x64, a GPU or
TPU host), `size=lumiere` (paper scale: 80 frames at 128x128, 16 fps, T5-XXL
features, bf16, remat, sharded over data x fsdp x frames on a TPU slice; it needs
--config.text_encoder=t5:/path/to/t5-v1_1-xxl). Single values:
`--config.total_steps=3000 --config.batch_size=32`.
"""

import ml_collections

from lumiere_jax import config_lib

SIZES = {
    # name: (frames, resolution, channels, channel_mult, attention_levels, batch, steps)
    "smoke": (4, 16, 8, (1, 2), (1,), 2, 4),
    "tiny": (8, 32, 16, (1, 2, 4), (2,), 8, 6600),
    "small": (16, 64, 64, (1, 2, 4, 4), (2, 3), 32, 100_000),
    # Paper scale (Lumiere, Sec. 3.1): 80 frames (5 s at 16 fps) at 128x128, T5-XXL text features.
    "lumiere": (80, 128, 256, (1, 2, 3, 4), (2, 3), 256, 500_000),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Returns the locked config; `arg` is `key=value,...` with key `size`."""
    args = config_lib.parse_arg(arg, size="tiny")
    if args.size not in SIZES:
        raise ValueError(f"configs/t2v.py: size={args.size!r} is not one of {sorted(SIZES)}.")
    frames, res, ch, mult, attn, batch, steps = SIZES[args.size]

    c = config_lib.base_config()
    c.task = "t2v"
    c.size = args.size
    c.total_steps = steps
    c.batch_size = batch
    c.data.num_frames = frames
    c.data.resolution = res
    c.model.channels = ch
    c.model.channel_mult = mult
    c.model.attention_levels = attn
    c.model.num_heads = 4 if ch >= 32 else 2
    if args.size == "smoke":
        c.data.num_train = 32
        c.data.num_test = 8
        c.checkpoint_every = 2
        c.log_every = 1
        c.sample_every = 0
        c.sample.steps = 4
        c.eval.steps = 4
        c.eval.num_clips = 4
        c.model.temporal_attention_depth = 1
    if args.size in ("smoke", "tiny"):
        # The frozen MiniLM features standardized per dimension by the training captions' statistics.
        c.model.text_norm = "standardize"
    if args.size == "tiny":
        # Sized for one hour on a 2-core CPU (docs/training.md). Two phases: every clip at the highest noise
        # levels, where only the caption decides where the object is and where it goes, until the direction words
        # are learned; then half the batch over all levels under a decaying rate, for the shapes' detail.
        c.diffusion.high_noise_fraction = 1.0
        c.diffusion.high_noise_until = 4800
        c.diffusion.high_noise_fraction_after = 0.5
        c.optim.decay_start = 4800
        c.optim.decay_steps = 6600
        c.optim.ema_decay = 0.995  # a short run wants a short EMA window
        c.sample_every = 2200
        c.sample.steps = 25
        c.eval.steps = 25
        # Measured over scales and rules (docs/training.md): 2 sharpens the shapes; from 2.5 on, plain clipping
        # lets the guided high-noise prediction wash the clip out white, which guidance rescale prevents.
        c.sample.guidance = 2.0
        c.sample.guidance_rescale = 0.7
        c.eval.guidance = 2.0
        c.eval.batch_size = 30
    if args.size == "lumiere":
        c.data.num_train = 10_000_000  # the shapes world at paper scale; point data at real video for research
        c.model.num_res_blocks = 3
        c.model.num_heads = 8
        c.model.temporal_attention_depth = 4
        c.model.text_dim = 4096  # T5-XXL
        c.model.dtype = "bfloat16"
        c.model.remat = "block"
        c.text_encoder = "t5"
        c.text_encoder_path = "~/models/t5-v1_1-xxl"  # a local Hugging Face folder; nothing is downloaded
        c.text_max_length = 128
        c.sample.fps = 16
        c.data.fps = 16.0  # clips of real footage are resampled to the paper's rate
        c.sample_every = 5000
        c.checkpoint_every = 1000
        c.log_every = 100
        c.optim.learning_rate = 1e-4
        c.optim.warmup_steps = 10_000
        c.optim.ema_decay = 0.9999
        # The paper's evaluation (Sec. 5): zero-shot UCF-101, 10,000 generated clips against 10,000 real ones, the
        # first 16 frames of each (FVD and C3D's IS read 16); give --config.eval.data (a local UCF-101 copy) and
        # --config.eval.i3d_weights (docs/evaluation.md).
        c.eval.protocol = "ucf101"
        c.eval.num_clips = 10_000
        c.eval.num_real = 10_000
        c.eval.frames = 16
        # A v5p-256 slice, say: 8-way frame parallelism (10 frames per device), fsdp over 16, data the rest.
        c.mesh.data = -1
        c.mesh.fsdp = 16
        c.mesh.frames = 8
    if args.size == "small":
        c.data.num_train = 100_000
        c.model.num_res_blocks = 2
        c.model.dtype = "bfloat16"
    return config_lib.lock(c)
