"""Spatial (text-to-image) U-Net blocks; on video they run on every frame independently.

These are the layers that Lumiere takes from a pre-trained T2I model and keeps
frozen while it trains the temporal layers (`temporal.py`). Every block takes
video `[B, T, H, W, C]`: spatial ops fold frames into the batch, so a block's
result on one frame never depends on another frame.

When frames are sharded over a mesh (`sharding.frames_sharded(x)`), folding [B, T] into one dimension would
make XLA gather the clip (a merged dimension cannot keep a sharded minor part), so the blocks then run
on the 5-D array itself: convolutions as 3-D convolutions with a 1 x k x k kernel, group norm with
per-frame statistics, attention with two batch dimensions. Same weights, same results.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from lumiere_jax import sharding


def frames_to_batch(x: jax.Array) -> jax.Array:
    """[B, T, H, W, C] -> [B*T, H, W, C]."""
    return x.reshape((-1,) + x.shape[2:])


def batch_to_frames(x: jax.Array, num_frames: int) -> jax.Array:
    """[B*T, H, W, C] -> [B, T, H, W, C]."""
    return x.reshape((-1, num_frames) + x.shape[1:])


# Every parameter declares its logical axis names where it is made (sharding.axes: flax's `out_sharding`
# metadata); sharding.tree_shardings places it, its EMA and its optimizer moments on the mesh by them.

def linear(cin: int, cout: int, *, use_bias: bool = True, zero_init: bool = False, dtype=jnp.float32,
           rngs: nnx.Rngs) -> nnx.Linear:
    """Dense layer: kernel [in, out] named (embed_in, embed), so output channels shard; bias replicated."""
    init = {"kernel_init": nnx.initializers.zeros_init()} if zero_init else {}
    return nnx.Linear(cin, cout, use_bias=use_bias, dtype=dtype, rngs=rngs, **init,
                      kernel_metadata=sharding.axes(*sharding.DENSE_KERNEL),
                      bias_metadata=sharding.axes(*sharding.VECTOR))


def layer_norm(channels: int, rngs: nnx.Rngs) -> nnx.LayerNorm:
    """LayerNorm with replicated scale and bias."""
    return nnx.LayerNorm(channels, scale_metadata=sharding.axes(*sharding.VECTOR),
                         bias_metadata=sharding.axes(*sharding.VECTOR), rngs=rngs)


def group_norm(channels: int, rngs: nnx.Rngs) -> nnx.GroupNorm:
    """GroupNorm with up to 32 groups of at least 4 channels each; scale and bias replicated."""
    groups = next(g for g in (32, 16, 8, 4, 2, 1) if channels % g == 0 and channels >= 4 * g or g == 1)
    return nnx.GroupNorm(channels, num_groups=groups, epsilon=1e-5, rngs=rngs,
                         scale_metadata=sharding.axes(*sharding.VECTOR), bias_metadata=sharding.axes(*sharding.VECTOR))


class FrameConv(nnx.Module):
    """2D convolution applied to each frame."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, *, zero_init: bool = False,
                 dtype=jnp.float32, rngs: nnx.Rngs):
        init = nnx.initializers.zeros_init() if zero_init else nnx.initializers.lecun_normal()
        self.stride = stride
        self.conv = nnx.Conv(cin, cout, (kernel, kernel), strides=stride, padding="SAME", kernel_init=init,
                             dtype=dtype, kernel_metadata=sharding.axes(*sharding.CONV_KERNEL),
                             bias_metadata=sharding.axes(*sharding.VECTOR), rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        if not sharding.frames_sharded(x):
            return batch_to_frames(self.conv(frames_to_batch(x)), x.shape[1])
        # Frames sharded: a 3-D conv whose kernel spans one frame keeps every frame on its device.
        conv = self.conv
        x, kernel, bias = conv.promote_dtype((x, conv.kernel[...], conv.bias[...]), dtype=conv.dtype)
        y = jax.lax.conv_general_dilated(x, kernel[None], window_strides=(1, self.stride, self.stride),
                                         padding="SAME", dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))
        return y + bias


class FrameGroupNorm(nnx.Module):
    """GroupNorm whose statistics are taken per frame, as the T2I model takes them per image."""

    def __init__(self, channels: int, *, rngs: nnx.Rngs):
        self.norm = group_norm(channels, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        if not sharding.frames_sharded(x):
            return batch_to_frames(self.norm(frames_to_batch(x)), x.shape[1])
        # Frames sharded: the same statistics, taken over (H, W, channels of a group) of each frame.
        norm = self.norm
        x, scale, bias = norm.promote_dtype((x, norm.scale[...], norm.bias[...]), dtype=norm.dtype)
        group_size = x.shape[-1] // norm.num_groups
        groups = x.reshape(x.shape[:-1] + (norm.num_groups, group_size))
        groups = groups.astype(jnp.promote_types(groups.dtype, jnp.float32))
        mean = groups.mean(axis=(2, 3, 5))  # [B, T, G]
        var = jnp.maximum(0.0, jnp.square(groups).mean(axis=(2, 3, 5)) - jnp.square(mean))
        mean, var = (jnp.repeat(a, group_size, axis=-1)[:, :, None, None, :] for a in (mean, var))
        y = (x - mean) * (jax.lax.rsqrt(var + norm.epsilon) * scale) + bias  # flax's order of operations
        return y.astype(jnp.result_type(x, scale, bias))


def frame_groups_mean(per_frame: jax.Array, num_frames: int) -> jax.Array:
    """[B, T0, ...] -> [B, num_frames, ...]: the mean over each run of T0 / num_frames consecutive frames.

    Per-frame conditioning at a U-Net level whose frames were halved: each of its frames stands for that
    many input frames (a clip whose frames all share one caption gets that caption's vector back).
    """
    b, t0 = per_frame.shape[:2]
    if t0 % num_frames:
        raise ValueError(f"Per-frame conditioning of {t0} frames cannot be grouped into {num_frames} frames.")
    return per_frame.reshape((b, num_frames, t0 // num_frames) + per_frame.shape[2:]).mean(2)


class ResBlock(nnx.Module):
    """Residual conv block with FiLM conditioning on the timestep/text embedding."""

    def __init__(self, cin: int, cout: int, emb_dim: int, *, dtype=jnp.float32, rngs: nnx.Rngs):
        self.norm1 = FrameGroupNorm(cin, rngs=rngs)
        self.conv1 = FrameConv(cin, cout, dtype=dtype, rngs=rngs)
        self.emb_proj = linear(emb_dim, 2 * cout, dtype=dtype, rngs=rngs)
        self.norm2 = FrameGroupNorm(cout, rngs=rngs)
        # Zero init keeps a fresh block an identity map: deep U-Nets train more stably.
        self.conv2 = FrameConv(cout, cout, zero_init=True, dtype=dtype, rngs=rngs)
        self.skip = FrameConv(cin, cout, kernel=1, dtype=dtype, rngs=rngs) if cin != cout else None

    def __call__(self, x: jax.Array, emb: jax.Array) -> jax.Array:
        """x: [B, T, H, W, C]; emb: [B, E] for the clip, or [B, T0, E] per frame (T0 a multiple of T)."""
        h = self.conv1(nnx.silu(self.norm1(x)))
        proj = self.emb_proj(nnx.silu(frame_groups_mean(emb, x.shape[1]) if emb.ndim == 3 else emb))
        proj = proj[:, :, None, None, :] if emb.ndim == 3 else proj[:, None, None, None, :]
        scale, shift = jnp.split(proj, 2, axis=-1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(nnx.silu(h))
        skip = x if self.skip is None else self.skip(x)
        return skip + h


ATTENTION_IMPLEMENTATIONS = ("xla", "cudnn")  # the values of model.attention


def attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None = None,
              implementation: str = "xla") -> jax.Array:
    """Multi-head attention on [N, S, heads, d]; mask [N, S_kv] marks valid keys.

    More leading batch dimensions ([..., S, heads, d]) are mapped over rather than merged, so that a
    sharded one stays sharded. implementation: "xla" (any device and dtype) or "cudnn" (cuDNN's fused flash
    attention: NVIDIA GPUs, bfloat16/float16 only).
    """
    if q.ndim > 4:
        return jax.vmap(functools.partial(attention, implementation=implementation),
                        in_axes=(0, 0, 0, None if mask is None else 0))(q, k, v, mask)
    if mask is not None:
        mask = mask[:, None, None, :]  # [N, 1, 1, S_kv]
    return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation=implementation)


class SpatialAttention(nnx.Module):
    """Per-frame self-attention over H*W, then cross-attention from every pixel to the text tokens."""

    def __init__(self, channels: int, text_dim: int, num_heads: int, *, dtype=jnp.float32,
                 attention: str = "xla", rngs: nnx.Rngs):
        self.num_heads = num_heads
        self.attention = attention  # the implementation (ATTENTION_IMPLEMENTATIONS)
        self.norm = FrameGroupNorm(channels, rngs=rngs)
        self.qkv = linear(channels, 3 * channels, use_bias=False, dtype=dtype, rngs=rngs)
        self.out = linear(channels, channels, zero_init=True, dtype=dtype, rngs=rngs)
        self.cross_norm = layer_norm(channels, rngs)
        self.cross_q = linear(channels, channels, use_bias=False, dtype=dtype, rngs=rngs)
        self.cross_kv = linear(text_dim, 2 * channels, use_bias=False, dtype=dtype, rngs=rngs)
        self.cross_out = linear(channels, channels, zero_init=True, dtype=dtype, rngs=rngs)

    def _heads(self, x: jax.Array) -> jax.Array:
        return x.reshape(x.shape[:-1] + (self.num_heads, -1))

    def __call__(self, x: jax.Array, text: jax.Array, text_mask: jax.Array) -> jax.Array:
        """x: [B, T, H, W, C]; text [B, L, D] with mask [B, L] for the clip, or [B, T0, L, D] / [B, T0, L]
        per frame (T0 a multiple of T: a frame of a level whose frames were halved reads the tokens of all
        the input frames it stands for)."""
        b, t, h, w, c = x.shape
        # Self-attention: each frame attends within itself.
        frames = (b, t) if sharding.frames_sharded(x) else (b * t,)  # see the module docstring
        y = self.norm(x).reshape(frames + (h * w, c))
        q, k, v = jnp.split(self.qkv(y), 3, axis=-1)
        y = attention(self._heads(q), self._heads(k), self._heads(v),
                      implementation=self.attention).reshape(frames + (h * w, c))
        x = x + self.out(y).reshape(x.shape)
        if text.ndim == 4:  # per-frame captions: each frame's pixels attend to their own frames' tokens
            t0, length = text.shape[1:3]
            if t0 % t:
                raise ValueError(f"Per-frame text of {t0} frames does not group into this level's {t} frames.")
            text = text.reshape((b, t, (t0 // t) * length, text.shape[-1]))  # [B, t, s*L, D]
            text_mask = text_mask.reshape((b, t, (t0 // t) * length))
            y = self.cross_norm(x).reshape(b, t, h * w, c)
        else:  # queries from every pixel of every frame, keys from the clip's text
            y = self.cross_norm(x).reshape(b, t * h * w, c)
        k, v = jnp.split(self.cross_kv(text.astype(y.dtype)), 2, axis=-1)  # [B, (t,) L', C] each
        y = attention(self._heads(self.cross_q(y)), self._heads(k), self._heads(v), text_mask, self.attention)
        return x + self.cross_out(y.reshape(b, t * h * w, c)).reshape(x.shape)


class Downsample(nnx.Module):
    """Spatial 2x downsampling by a strided conv."""

    def __init__(self, channels: int, *, dtype=jnp.float32, rngs: nnx.Rngs):
        self.conv = FrameConv(channels, channels, stride=2, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.conv(x)


class Upsample(nnx.Module):
    """Spatial 2x upsampling: nearest neighbour, then a conv."""

    def __init__(self, channels: int, *, dtype=jnp.float32, rngs: nnx.Rngs):
        self.conv = FrameConv(channels, channels, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = jnp.repeat(jnp.repeat(x, 2, axis=2), 2, axis=3)  # [B, T, 2H, 2W, C]
        return self.conv(x)
