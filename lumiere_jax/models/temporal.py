"""Temporal layers that inflate a T2I U-Net into the STUNet; each starts as the identity map.

Lumiere (Lumiere, Sec. 3.1) interleaves these with the frozen spatial blocks:
factorized space-time conv blocks at every level but the coarsest, stacked
temporal attention at the coarsest, and temporal down/up-sampling beside every
spatial resize. Module attribute names start with `temporal` so that optimizer
masks and the inflation code can tell them from the pre-trained spatial layers.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from lumiere_jax import sharding
from lumiere_jax.models import spatial


def _identity_kernel(kernel_size: int, channels: int) -> jax.Array:
    """A [k, C, C] temporal kernel whose centre tap is the identity: output frame t = input frame t."""
    kernel = jnp.zeros((kernel_size, channels, channels), jnp.float32)
    return kernel.at[kernel_size // 2].set(jnp.eye(channels))


class TemporalConv(nnx.Module):
    """1D convolution along frames, as one matmul per tap on [B, T, H, W, C].

    Written as a sum of shifted matmuls rather than a 3D conv: CPU and TPU both
    turn it into plain dots, and the zero padding at the clip's ends is the one
    place a frame-sharded version swaps in its neighbours' halo frames.
    """

    def __init__(self, channels: int, kernel_size: int = 3, stride: int = 1, *, identity_init: bool = True,
                 dtype=jnp.float32, rngs: nnx.Rngs):
        if kernel_size % 2 != 1:
            raise ValueError(f"temporal kernel_size must be odd, got {kernel_size}")
        self.stride = stride
        self.dtype = dtype
        if identity_init:
            kernel = _identity_kernel(kernel_size, channels)
        else:
            kernel = nnx.initializers.lecun_normal(in_axis=(0, 1), out_axis=2)(rngs.params(),
                                                                               (kernel_size, channels, channels))
        self.kernel = nnx.Param(kernel, **sharding.axes(*sharding.TEMPORAL_KERNEL))  # [k, in, out]
        self.bias = nnx.Param(jnp.zeros((channels,), jnp.float32), **sharding.axes(*sharding.VECTOR))

    def __call__(self, x: jax.Array) -> jax.Array:
        pad = self.kernel.shape[0] // 2
        # Frames sharded over the mesh: each device convolves its own frames plus its neighbours' halo.
        kernel, bias = self.kernel.value.astype(self.dtype), self.bias.value.astype(self.dtype)
        out = sharding.temporal_halo_conv(x, self._conv_padded, kernel, bias, halo=pad, stride=self.stride)
        if out is None:
            out = self._conv_padded(jnp.pad(x, ((0, 0), (pad, pad), (0, 0), (0, 0), (0, 0))), kernel, bias)
        return out

    def _conv_padded(self, xp: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
        """[B, T + k - 1, H, W, C] (padded along time) -> [B, T / stride, H, W, C]."""
        k = kernel.shape[0]
        t = xp.shape[1] - (k - 1)
        out = sum(jnp.einsum("bthwc,cd->bthwd", xp[:, j:j + t:self.stride].astype(self.dtype), kernel[j])
                  for j in range(k))
        return out + bias


class TemporalConvBlock(nnx.Module):
    """Factorized space-time conv (2D spatial conv, then 1D temporal conv), residual, zero-init projection."""

    def __init__(self, channels: int, kernel_size: int = 3, *, dtype=jnp.float32, rngs: nnx.Rngs):
        self.norm = spatial.FrameGroupNorm(channels, rngs=rngs)
        self.spatial_conv = spatial.FrameConv(channels, channels, dtype=dtype, rngs=rngs)
        self.time_conv = TemporalConv(channels, kernel_size, identity_init=False, dtype=dtype, rngs=rngs)
        # The projection starts at zero, so the whole block starts as the identity map.
        self.proj = spatial.linear(channels, channels, zero_init=True, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = nnx.silu(self.spatial_conv(nnx.silu(self.norm(x))))
        h = nnx.silu(self.time_conv(h))
        return x + self.proj(h)


def frame_positions(num_frames: int, dim: int) -> jax.Array:
    """Sinusoidal encoding of frame index, [T, dim]."""
    half = dim // 2
    freqs = jnp.exp(-math.log(10_000.0) * jnp.arange(half) / max(half - 1, 1))
    angles = jnp.arange(num_frames)[:, None] * freqs[None, :]
    enc = jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)
    return jnp.pad(enc, ((0, 0), (0, dim - 2 * half)))


class TemporalAttention(nnx.Module):
    """Self-attention across frames at each pixel, then an MLP; both residual with zero-init outputs."""

    def __init__(self, channels: int, num_heads: int, *, dtype=jnp.float32, attention: str = "xla",
                 rngs: nnx.Rngs):
        self.num_heads = num_heads
        self.attention = attention  # the implementation (spatial.ATTENTION_IMPLEMENTATIONS)
        self.norm = spatial.layer_norm(channels, rngs)
        self.qkv = spatial.linear(channels, 3 * channels, use_bias=False, dtype=dtype, rngs=rngs)
        self.out = spatial.linear(channels, channels, zero_init=True, dtype=dtype, rngs=rngs)
        self.mlp_norm = spatial.layer_norm(channels, rngs)
        self.mlp_in = spatial.linear(channels, 4 * channels, dtype=dtype, rngs=rngs)
        self.mlp_out = spatial.linear(4 * channels, channels, zero_init=True, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        b, t, h, w, c = x.shape
        # Attention needs every frame of a pixel: with frames sharded, move that mesh axis onto height
        # (one all-to-all) rather than gathering the clip.
        x = sharding.constrain(x, ("batch", None, "frames", None, None))
        # Merged into one batch dimension on purpose, unlike the spatial blocks on a frame-sharded mesh:
        # keeping [B, H, W, T, C] unmerged, with batch on `data` and height on `frames`, gave wrong weight
        # gradients from XLA's SPMD partitioner (jax 0.10.2, CPU; tests/test_sharding.py caught it). This
        # runs at the coarsest level only, where re-sharding the merged array costs little.
        y = jnp.moveaxis(x, 1, 3).reshape(b * h * w, t, c)  # [B*H*W, T, C]
        z = self.norm(y) + frame_positions(t, c).astype(y.dtype)
        q, k, v = (a.reshape(b * h * w, t, self.num_heads, -1) for a in jnp.split(self.qkv(z), 3, axis=-1))
        y = y + self.out(spatial.attention(q, k, v, implementation=self.attention).reshape(b * h * w, t, c))
        y = y + self.mlp_out(nnx.gelu(self.mlp_in(self.mlp_norm(y))))
        return sharding.constrain(jnp.moveaxis(y.reshape(b, h, w, t, c), 3, 1))


class TemporalAttentionStack(nnx.Module):
    """Several temporal attention blocks in a row (the paper stacks them at the coarsest level)."""

    def __init__(self, channels: int, num_heads: int, depth: int, *, dtype=jnp.float32, attention: str = "xla",
                 rngs: nnx.Rngs):
        self.blocks = nnx.List([TemporalAttention(channels, num_heads, dtype=dtype, attention=attention, rngs=rngs)
                                for _ in range(depth)])

    def __call__(self, x: jax.Array) -> jax.Array:
        for block in self.blocks:
            x = block(x)
        return x


class TemporalDownsample(nnx.Module):
    """Halve the frame count: identity-initialized temporal conv with stride 2 (keeps even frames at init)."""

    def __init__(self, channels: int, kernel_size: int = 3, *, dtype=jnp.float32, rngs: nnx.Rngs):
        self.conv = TemporalConv(channels, kernel_size, stride=2, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.conv(x)  # [B, T/2, H, W, C]


class TemporalUpsample(nnx.Module):
    """Double the frame count: duplicate every frame, then an identity-initialized temporal conv."""

    def __init__(self, channels: int, kernel_size: int = 3, *, dtype=jnp.float32, rngs: nnx.Rngs):
        self.conv = TemporalConv(channels, kernel_size, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.conv(jnp.repeat(x, 2, axis=1))  # [B, 2T, H, W, C]
