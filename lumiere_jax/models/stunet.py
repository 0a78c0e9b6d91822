"""Space-Time U-Net (STUNet): makes every frame of a clip in one pass, resizing in space and time.

Layout per level l of `channel_mult` (Lumiere, Sec. 3.1):
  down:  [ResBlock (+ SpatialAttention)] x num_res_blocks, each followed by a
         TemporalConvBlock (all levels but the coarsest) or a
         TemporalAttentionStack (coarsest); then spatial Downsample and
         TemporalDownsample (all levels but the coarsest).
  middle: ResBlock, SpatialAttention, TemporalAttentionStack, ResBlock.
  up:    mirror image; TemporalUpsample comes before each spatial Upsample.
With `temporal=False` the same constructor builds the text-to-image U-Net: the
spatial layers get the same names and shapes, so its weights drop into the
STUNet unchanged (inflation), and every temporal layer starts as the identity.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from lumiere_jax import sharding
from lumiere_jax.models import spatial, temporal

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


TEXT_NORMS = ("none", "standardize")
# A guidance weight w is embedded as the time w / GUIDANCE_SCALE would be (STUNetConfig.guidance_embedding).
GUIDANCE_SCALE = 10.0


@dataclasses.dataclass(frozen=True)
class STUNetConfig:
    """Architecture of the STUNet (or of its T2I U-Net when `temporal` is False)."""

    in_channels: int = 3
    out_channels: int = 3
    channels: int = 32
    channel_mult: Sequence[int] = (1, 2, 4)
    num_res_blocks: int = 1
    attention_levels: Sequence[int] = (1, 2)  # spatial self+cross attention at these levels
    num_heads: int = 4
    text_dim: int = 384
    # How the caption enters the conditioning vector that every ResBlock's FiLM reads (cross-attention always
    # sees every token): "mean", the mask-weighted mean of the tokens; "attention", that mean plus an
    # attention pool over the tokens (TextAttentionPool: the pooled caption can weight its words).
    text_pooling: str = "mean"
    # The frozen encoder's token features as every text path reads them: "none", as the encoder gives them;
    # "standardize", each feature dimension shifted and scaled by the training captions' token statistics
    # (TextStandardize: frozen buffers the trainer fills at a fresh start, saved with the weights).
    text_norm: str = "none"
    temporal: bool = True
    temporal_kernel: int = 3
    temporal_attention_depth: int = 2
    # Conditioning on an image/video: this many channels are concatenated to the noisy input
    # (SSR: the upsampled low-res clip, 3; applications: masked video + mask, 4). Their conv_in
    # weights start at zero when fine-tuning from a model without them (lumiere_jax/inflate.py).
    cond_channels: int = 0
    # Noise-conditioning augmentation (Imagen Video): embed the conditioning input's noise level too.
    cond_noise_level: bool = False
    # A distilled student (lumiere_jax/distill.py): the classifier-free guidance weight is an input, embedded like
    # the time through a zero-initialized output, so one call gives the guided prediction (Meng et al. 2023) and a
    # student made from a trained model starts as that model's conditional prediction.
    guidance_embedding: bool = False
    dtype: str = "float32"
    # Rematerialization: "none", or "block" to recompute each (ResBlock, attention, temporal) block in the
    # backward pass instead of keeping its activations (paper-scale clips do not fit otherwise).
    remat: str = "none"
    # Attention kernels (jax.nn.dot_product_attention): "xla" on any device, or "cudnn", cuDNN's fused flash
    # attention on an NVIDIA GPU for a bfloat16/float16 model. Weights and results are the same either way.
    attention: str = "xla"

    def __post_init__(self):
        if self.text_pooling not in ("mean", "attention"):
            raise ValueError(f"model.text_pooling={self.text_pooling!r} must be 'mean' or 'attention'.")
        if self.text_norm not in TEXT_NORMS:
            raise ValueError(f"model.text_norm={self.text_norm!r} must be one of {TEXT_NORMS}.")
        if self.attention not in spatial.ATTENTION_IMPLEMENTATIONS:
            raise ValueError(f"model.attention={self.attention!r} must be one of "
                             f"{spatial.ATTENTION_IMPLEMENTATIONS}.")

    @classmethod
    def from_config(cls, cfg: Any) -> "STUNetConfig":
        """Builds from an ml_collections ConfigDict (or any mapping) with the same keys."""
        values = dict(cfg.items()) if hasattr(cfg, "items") else dict(cfg)
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"Unknown model config keys {sorted(unknown)}; valid keys are "
                             f"{[f.name for f in dataclasses.fields(cls)]}.")
        for key in ("channel_mult", "attention_levels"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)

    @property
    def num_temporal_downsamples(self) -> int:
        return len(self.channel_mult) - 1 if self.temporal else 0

    @property
    def frame_multiple(self) -> int:
        """Clip lengths the U-Net takes are multiples of this: 2 ** its temporal downsamples."""
        return 2 ** self.num_temporal_downsamples


def check_frames(num_frames: int, cfg: STUNetConfig) -> None:
    """Raises a clear error if the U-Net cannot halve `num_frames` as often as it needs to."""
    factor = cfg.frame_multiple
    if num_frames < 1 or num_frames % factor:
        lower = max(factor, num_frames // factor * factor)
        raise ValueError(
            f"num_frames={num_frames} cannot be halved {cfg.num_temporal_downsamples} times by this STUNet "
            f"(channel_mult={tuple(cfg.channel_mult)}): use a multiple of {factor}, e.g. {lower} or "
            f"{lower + factor}.")


def timestep_embedding(t: jax.Array, dim: int, max_period: float = 10_000.0) -> jax.Array:
    """Sinusoidal embedding of the continuous diffusion time t in [0, 1], [B, dim]."""
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    angles = 1000.0 * t.astype(jnp.float32)[:, None] * freqs[None, :]
    return jnp.concatenate([jnp.cos(angles), jnp.sin(angles)], axis=-1)


class TextAttentionPool(nnx.Module):
    """Attention pooling of the caption's tokens into one vector (Imagen pools its T5 tokens by attention).

    One query per head, from the caption's mean token plus a learned offset, attends over the layer-normed
    tokens; the mean pool weights every word alike, so a word that changes the clip but little of the mean
    (a direction among its phrasings, docs/training.md) can be weighted up. The output projection starts at
    zero: added to a mean-pooled model, the pool first changes nothing.
    """

    def __init__(self, text_dim: int, out_dim: int, num_heads: int, *, dtype=jnp.float32, attention: str = "xla",
                 rngs: nnx.Rngs):
        if out_dim % num_heads:
            raise ValueError(f"TextAttentionPool: out_dim={out_dim} must be divisible by num_heads={num_heads}.")
        self.num_heads = num_heads
        self.attention = attention  # the implementation (spatial.ATTENTION_IMPLEMENTATIONS)
        self.norm = spatial.layer_norm(text_dim, rngs)
        self.query = nnx.Param(jnp.zeros((out_dim,), jnp.float32), **sharding.axes(*sharding.VECTOR))
        self.q = spatial.linear(text_dim, out_dim, use_bias=False, dtype=dtype, rngs=rngs)
        self.kv = spatial.linear(text_dim, 2 * out_dim, use_bias=False, dtype=dtype, rngs=rngs)
        self.out = spatial.linear(out_dim, out_dim, zero_init=True, dtype=dtype, rngs=rngs)

    def __call__(self, text: jax.Array, text_mask: jax.Array, pooled: jax.Array) -> jax.Array:
        """text: [B, L, Dt]; text_mask: [B, L]; pooled: [B, Dt], the tokens' masked mean -> [B, out_dim]."""
        def heads(x: jax.Array) -> jax.Array:
            return x.reshape(x.shape[:-1] + (self.num_heads, -1))

        q = self.q(self.norm(pooled)) + self.query.value.astype(text.dtype)  # [B, E]
        k, v = jnp.split(self.kv(self.norm(text)), 2, axis=-1)  # [B, L, E] each
        y = spatial.attention(heads(q[:, None]), heads(k), heads(v), text_mask,
                              self.attention)  # [B, 1, heads, E/heads]
        return self.out(y.reshape(text.shape[0], -1))


class Level(nnx.Module):
    """The blocks of one U-Net level on one path (down or up)."""

    def __init__(self, cins: Sequence[int], cout: int, emb_dim: int, cfg: STUNetConfig, *, attention: bool,
                 coarsest: bool, rngs: nnx.Rngs):
        dtype = _DTYPES[cfg.dtype]
        if cfg.remat not in ("none", "block"):
            raise ValueError(f"model.remat={cfg.remat!r} must be 'none' or 'block'.")
        self.remat = cfg.remat == "block"
        self.res = nnx.List([spatial.ResBlock(cin, cout, emb_dim, dtype=dtype, rngs=rngs)
                             for cin in cins])
        self.attn = nnx.List([spatial.SpatialAttention(cout, cfg.text_dim, cfg.num_heads, dtype=dtype,
                                                       attention=cfg.attention, rngs=rngs)
                              for _ in cins]) if attention else None
        if not cfg.temporal:
            self.temporal_blocks = None
        elif coarsest:
            self.temporal_blocks = nnx.List([
                temporal.TemporalAttentionStack(cout, cfg.num_heads, cfg.temporal_attention_depth, dtype=dtype,
                                                attention=cfg.attention, rngs=rngs) for _ in cins])
        else:
            self.temporal_blocks = nnx.List([
                temporal.TemporalConvBlock(cout, cfg.temporal_kernel, dtype=dtype, rngs=rngs) for _ in cins])

    def block(self, i: int, x: jax.Array, emb: jax.Array, text: jax.Array, text_mask: jax.Array,
              images: bool = False) -> jax.Array:
        """Runs the i-th (ResBlock, attention, temporal block) triple, rematerialized if configured; with
        images=True the temporal block is bypassed (frames are independent images)."""
        if self.remat:
            return nnx.remat(Level._block, static_argnums=(1, 6))(self, i, x, emb, text, text_mask, images)
        return self._block(i, x, emb, text, text_mask, images)

    def _block(self, i: int, x: jax.Array, emb: jax.Array, text: jax.Array, text_mask: jax.Array,
               images: bool = False) -> jax.Array:
        x = self.res[i](x, emb)
        if self.attn is not None:
            x = self.attn[i](x, text, text_mask)
        if self.temporal_blocks is not None and not images:
            x = self.temporal_blocks[i](x)
        return sharding.constrain(x)


class TextStandardize(nnx.Module):
    """(tokens - shift) * scale per feature dimension, padding tokens kept at zero; shift and scale are frozen.

    A frozen sentence encoder's token features share one large common direction (MiniLM's captions "a red circle
    moving left" and "... right" mean-pool to cosine 0.965), and the words that tell captions apart live in small
    differences on top of it. A linear layer that must grow a large gain along such a small direction learns it
    slowly under Adam; standardizing each dimension by the training captions' token mean and spread (whitening
    the features' diagonal, as BERT-whitening does for sentence embeddings) hands the model those differences at
    unit scale. The statistics are buffers, not learned: `set_text_statistics` fills them from the text cache when
    a run starts fresh; they never get a gradient (stop_gradient here, and the optimizer freezes them).
    """

    def __init__(self, dim: int):
        self.shift = nnx.Param(jnp.zeros((dim,), jnp.float32), **sharding.axes(*sharding.VECTOR))
        self.scale = nnx.Param(jnp.ones((dim,), jnp.float32), **sharding.axes(*sharding.VECTOR))

    def __call__(self, text: jax.Array, text_mask: jax.Array) -> jax.Array:
        shift, scale = (jax.lax.stop_gradient(v.value).astype(text.dtype) for v in (self.shift, self.scale))
        return (text - shift) * scale * text_mask[..., None].astype(text.dtype)


class STUNet(nnx.Module):
    """Predicts the diffusion target for a noisy clip [B, T, H, W, C] given time and text."""

    def __init__(self, cfg: STUNetConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        dtype = _DTYPES[cfg.dtype]
        ch = [cfg.channels * m for m in cfg.channel_mult]
        emb_dim = 4 * cfg.channels
        num_levels = len(ch)
        self.time_in = spatial.linear(cfg.channels, emb_dim, dtype=dtype, rngs=rngs)
        self.time_out = spatial.linear(emb_dim, emb_dim, dtype=dtype, rngs=rngs)
        self.text_norm = TextStandardize(cfg.text_dim) if cfg.text_norm == "standardize" else None
        self.text_pool = spatial.linear(cfg.text_dim, emb_dim, dtype=dtype, rngs=rngs)
        self.text_attn_pool = (TextAttentionPool(cfg.text_dim, emb_dim, cfg.num_heads, dtype=dtype,
                                                 attention=cfg.attention, rngs=rngs)
                               if cfg.text_pooling == "attention" else None)
        self.conv_in = spatial.FrameConv(cfg.in_channels + cfg.cond_channels, ch[0], dtype=dtype, rngs=rngs)
        if cfg.cond_noise_level:
            # Zero-init output: a model fine-tuned into noise conditioning starts where it was.
            self.cond_level_in = spatial.linear(cfg.channels, emb_dim, dtype=dtype, rngs=rngs)
            self.cond_level_out = spatial.linear(emb_dim, emb_dim, zero_init=True, dtype=dtype, rngs=rngs)
        if cfg.guidance_embedding:
            self.guidance_in = spatial.linear(cfg.channels, emb_dim, dtype=dtype, rngs=rngs)
            self.guidance_out = spatial.linear(emb_dim, emb_dim, zero_init=True, dtype=dtype, rngs=rngs)

        skips = [ch[0]]
        down, downsample, temporal_down = [], [], []
        cin = ch[0]
        for level, cout in enumerate(ch):
            coarsest = level == num_levels - 1
            cins = [cin] + [cout] * (cfg.num_res_blocks - 1)
            down.append(Level(cins, cout, emb_dim, cfg, attention=level in cfg.attention_levels, coarsest=coarsest,
                              rngs=rngs))
            skips += [cout] * cfg.num_res_blocks
            cin = cout
            if not coarsest:
                downsample.append(spatial.Downsample(cout, dtype=dtype, rngs=rngs))
                if cfg.temporal:
                    temporal_down.append(temporal.TemporalDownsample(cout, cfg.temporal_kernel, dtype=dtype,
                                                                     rngs=rngs))
                skips.append(cout)
        self.down = nnx.List(down)
        self.downsample = nnx.List(downsample)
        self.temporal_down = nnx.List(temporal_down)

        self.mid_res1 = spatial.ResBlock(cin, cin, emb_dim, dtype=dtype, rngs=rngs)
        self.mid_attn = spatial.SpatialAttention(cin, cfg.text_dim, cfg.num_heads, dtype=dtype,
                                                 attention=cfg.attention, rngs=rngs)
        self.temporal_mid = (temporal.TemporalAttentionStack(cin, cfg.num_heads, cfg.temporal_attention_depth,
                                                             dtype=dtype, attention=cfg.attention, rngs=rngs)
                             if cfg.temporal else None)
        self.mid_res2 = spatial.ResBlock(cin, cin, emb_dim, dtype=dtype, rngs=rngs)

        up, upsample, temporal_up = [], [], []
        for level in reversed(range(num_levels)):
            cout = ch[level]
            cins = []
            for _ in range(cfg.num_res_blocks + 1):
                cins.append(cin + skips.pop())
                cin = cout
            up.append(Level(cins, cout, emb_dim, cfg, attention=level in cfg.attention_levels,
                            coarsest=level == num_levels - 1, rngs=rngs))
            if level > 0:
                if cfg.temporal:
                    temporal_up.append(temporal.TemporalUpsample(cout, cfg.temporal_kernel, dtype=dtype, rngs=rngs))
                upsample.append(spatial.Upsample(cout, dtype=dtype, rngs=rngs))
        self.up = nnx.List(up)
        self.upsample = nnx.List(upsample)
        self.temporal_up = nnx.List(temporal_up)

        self.norm_out = spatial.FrameGroupNorm(ch[0], rngs=rngs)
        self.conv_out = spatial.FrameConv(ch[0], cfg.out_channels, zero_init=True, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array, t: jax.Array, text: jax.Array, text_mask: jax.Array,
                 cond: jax.Array | None = None, cond_level: jax.Array | None = None,
                 images: bool = False, guidance: jax.Array | None = None) -> jax.Array:
        """x: [B, T, H, W, Cin]; t: [B] in [0, 1]; text: [B, L, Dt]; text_mask: [B, L] -> [B, T, H, W, Cout].

        Captions that change over time: text [B, T, L, Dt] and text_mask [B, T, L], one caption per frame. Each
        frame's conditioning vector then pools its own caption, and its spatial cross-attention reads its own
        tokens (at a level whose frames were halved, those of every input frame it stands for); a clip whose
        frames all share one caption gives the clip-level result.
        cond: [B, T, H, W, cond_channels], concatenated to x on channels (when cfg.cond_channels > 0);
        cond_level: [B] in [0, 1], the noise level of augmented conditioning (when cfg.cond_noise_level).
        images: a static flag: x holds independent images ([B, T, ...], usually T = 1) and every temporal layer
        (convs, attention, temporal down- and upsampling) is bypassed, so the spatial path alone runs, exactly
        as the T2I U-Net of the same weights does. Joint image-video training (data.mixture) uses it.
        guidance: [B], the classifier-free guidance weight whose guided prediction to give (when
        cfg.guidance_embedding; 1: the conditional prediction).
        """
        cfg = self.cfg
        temporal_on = cfg.temporal and not images
        if temporal_on:
            check_frames(x.shape[1], cfg)
        if (cond is None) != (cfg.cond_channels == 0):
            raise ValueError(f"This STUNet has cond_channels={cfg.cond_channels}, but cond was "
                             f"{'not given' if cond is None else 'given'}.")
        if (cond_level is None) == cfg.cond_noise_level:
            raise ValueError(f"This STUNet has cond_noise_level={cfg.cond_noise_level}, but cond_level was "
                             f"{'not given' if cond_level is None else 'given'}.")
        if (guidance is None) == cfg.guidance_embedding:
            raise ValueError(f"This STUNet has guidance_embedding={cfg.guidance_embedding}, but guidance was "
                             f"{'not given' if guidance is None else 'given'}.")
        if cond is not None:
            if cond.shape[:-1] != x.shape[:-1] or cond.shape[-1] != cfg.cond_channels:
                raise ValueError(f"cond has shape {cond.shape}; expected {x.shape[:-1] + (cfg.cond_channels,)}.")
            x = jnp.concatenate([x, cond.astype(x.dtype)], axis=-1)
        per_frame = text.ndim == 4
        if text.ndim not in (3, 4) or text_mask.shape != text.shape[:-1] or (per_frame and
                                                                             text.shape[1] != x.shape[1]):
            raise ValueError(f"text {text.shape} / text_mask {text_mask.shape} must be [B, L, D] / [B, L] (one "
                             f"caption per clip) or [B, T, L, D] / [B, T, L] with T = {x.shape[1]} frames.")
        dtype = _DTYPES[cfg.dtype]
        text = text.astype(dtype)
        if self.text_norm is not None:
            text = self.text_norm(text, text_mask)
        # Conditioning vector: time, plus the mask-weighted mean of the text tokens (as Imagen adds pooled text).
        m = text_mask.astype(dtype)[..., None]
        pooled = (text * m).sum(-2) / jnp.maximum(m.sum(-2), 1.0)  # [B, (T,) Dt]
        emb = self.time_out(nnx.silu(self.time_in(timestep_embedding(t, cfg.channels).astype(dtype))))
        emb = (emb[:, None] if per_frame else emb) + self.text_pool(pooled)  # [B, (T,) E]; ResBlocks take either
        if self.text_attn_pool is not None:
            flat = text.shape[:-2]  # the attention pool reads one caption at a time
            emb = emb + self.text_attn_pool(
                text.reshape((-1,) + text.shape[-2:]), text_mask.reshape((-1, text.shape[-2])),
                pooled.reshape((-1, pooled.shape[-1]))).reshape(flat + (-1,))
        if cond_level is not None:
            level = timestep_embedding(cond_level, cfg.channels).astype(dtype)
            level = self.cond_level_out(nnx.silu(self.cond_level_in(level)))
            emb = emb + (level[:, None] if per_frame else level)
        if guidance is not None:
            # Scaled so that the guidance weights in use (1 to about 10) span what the times [0, 1] do.
            g = timestep_embedding(guidance / GUIDANCE_SCALE, cfg.channels).astype(dtype)
            g = self.guidance_out(nnx.silu(self.guidance_in(g)))
            emb = emb + (g[:, None] if per_frame else g)

        h = sharding.constrain(self.conv_in(sharding.constrain(x.astype(dtype))))  # [B, T, H, W, C0]
        hs = [h]
        for level, blocks in enumerate(self.down):
            for i in range(cfg.num_res_blocks):
                h = blocks.block(i, h, emb, text, text_mask, images)
                hs.append(h)
            if level < len(self.downsample):
                h = self.downsample[level](h)  # [B, T, H/2, W/2, C]
                if temporal_on:
                    h = self.temporal_down[level](h)  # [B, T/2, H/2, W/2, C]
                h = sharding.constrain(h)
                hs.append(h)

        h = self.mid_res1(h, emb)
        h = self.mid_attn(h, text, text_mask)
        if self.temporal_mid is not None and not images:
            h = self.temporal_mid(h)
        h = self.mid_res2(h, emb)

        for j, blocks in enumerate(self.up):
            for i in range(cfg.num_res_blocks + 1):
                h = blocks.block(i, jnp.concatenate([h, hs.pop()], axis=-1), emb, text, text_mask, images)
            if j < len(self.upsample):
                if temporal_on:
                    h = self.temporal_up[j](h)  # [B, 2T, H, W, C]
                h = sharding.constrain(self.upsample[j](h))  # [B, 2T, 2H, 2W, C]

        out = self.conv_out(nnx.silu(self.norm_out(h)))
        return out.astype(jnp.float32)


def is_temporal_path(path: Sequence[Any]) -> bool:
    """True for parameters of the temporal (inflation) layers, by attribute name."""
    return any(str(p).startswith("temporal") for p in path)


def temporal_filter(path, _value) -> bool:
    """nnx filter selecting the temporal layers' variables."""
    return is_temporal_path(path)


def spatial_filter(path, value) -> bool:
    """nnx filter selecting the T2I (spatial) layers' variables."""
    return not is_temporal_path(path)
