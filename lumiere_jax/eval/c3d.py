r"""C3D (Tran et al. 2015, arXiv 1412.0767) in Flax NNX, as the UCF-101 Inception Score reads clips, and the score.

The IS that video generation papers report on UCF-101 (TGAN, TGANv2, StyleGAN-V, Make-A-Video, Lumiere) is that of
the C3D which TGANv2 (Saito et al. 2020, pfnet-research/tgan2) fine-tuned on UCF-101's 101 classes: 16 frames,
each resized to 128x171, in BGR order on a 0-255 scale, minus the mean clip of its training data, centre-cropped
to 112x112 (rows 8-119, columns 30-141). No weights ship with the project and none are downloaded: give
`--config.eval.is_classifier=PATH`, an .npz (or .safetensors) holding tgan2's C3D arrays under their Chainer
names and its mean clip under `mean`:

  conv1a/W [out, in, 3, 3, 3], conv1a/b [out], ... conv5b/W, conv5b/b   (conv1a, conv2a, conv3a, conv3b, conv4a,
  fc6/W [out, in], fc6/b, fc7/W, fc7/b, fc8/W, fc8/b                      conv4b, conv5a, conv5b)
  mean [1, 3, 16, 128, 171] or [3, 16, 128, 171]   (BGR, 0-255, as its mean file holds it)

e.g. `w = dict(np.load(c3d_file)); w["mean"] = np.load(mean_file)["mean"]; np.savez("c3d_ucf101_is.npz", **w)`.
Layer widths and the number of classes are read from the file (the tests use a narrow C3D of random weights).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import safetensors.numpy
from flax import nnx

CONVS = ("conv1a", "conv2a", "conv3a", "conv3b", "conv4a", "conv4b", "conv5a", "conv5b")
FCS = ("fc6", "fc7", "fc8")
POOL_AFTER = {"conv1a": (1, 2, 2), "conv2a": (2, 2, 2), "conv3b": (2, 2, 2), "conv4b": (2, 2, 2),
              "conv5b": (2, 2, 2)}
NUM_FRAMES = 16  # the clip length C3D reads
RESIZE = (128, 171)  # (height, width) each frame is resized to
CROP = 112
CROP_AT = (8, 30)  # the crop's top-left corner in the resized frame
POOLED = 1 * 4 * 4  # (T, H, W) after pool5 on 16 x 112 x 112


class C3D(nnx.Module):
    """Eight 3x3x3 convolutions with max pools, then fc6, fc7 and the fc8 logits; widths as the weights have them.

    Input: [B, 16, 112, 112, 3] preprocessed (`preprocess`); output: logits [B, num_classes].
    """

    def __init__(self, widths: tuple[int, ...], fc: tuple[int, int, int], *, rngs: nnx.Rngs):
        for name, cin, cout in zip(CONVS, (3,) + widths[:-1], widths):
            setattr(self, name, nnx.Conv(cin, cout, (3, 3, 3), padding="SAME", rngs=rngs))
        for name, cin, cout in zip(FCS, (widths[-1] * POOLED,) + fc[:-1], fc):
            setattr(self, name, nnx.Linear(cin, cout, rngs=rngs))

    def __call__(self, x: jax.Array) -> jax.Array:
        for name in CONVS:
            x = jax.nn.relu(getattr(self, name)(x))
            if name in POOL_AFTER:
                if name == "conv5b":  # Chainer pools with cover_all: 7x7 -> 4x4, as padding by one does (x >= 0)
                    x = jnp.pad(x, ((0, 0), (0, 0), (0, 1), (0, 1), (0, 0)))
                window = (1, *POOL_AFTER[name], 1)
                x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, window, window, "VALID")
        x = jnp.transpose(x, (0, 4, 1, 2, 3)).reshape(x.shape[0], -1)  # [B, C*T*H*W], Chainer's flattening order
        x = jax.nn.relu(self.fc6(x))
        x = jax.nn.relu(self.fc7(x))
        return self.fc8(x)


def preprocess(clips_uint8: jax.Array, mean: jax.Array) -> jax.Array:
    """uint8 clips [B, T >= 16, H, W, 3] (RGB) -> C3D's input [B, 16, 112, 112, 3]: the first 16 frames resized to
    128x171, BGR on a 0-255 scale minus `mean` [16, 128, 171, 3], centre-cropped."""
    x = clips_uint8[:, :NUM_FRAMES].astype(jnp.float32)
    b, t, _, _, c = x.shape
    x = jax.image.resize(x, (b, t, *RESIZE, c), "bilinear")
    x = x[..., ::-1] - mean
    top, left = CROP_AT
    return x[:, :, top:top + CROP, left:left + CROP]


def read_weights(path: str) -> dict[str, np.ndarray]:
    """Name -> array of an .npz or .safetensors file."""
    path = os.path.expanduser(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"eval.is_classifier={path} is not a file: give converted C3D weights with their mean "
                                f"clip (.npz; see lumiere_jax/eval/c3d.py), or leave it empty (IS is then reported as "
                                f"unavailable).")
    if path.endswith(".safetensors"):
        return dict(safetensors.numpy.load_file(path))
    if path.endswith(".npz"):
        with np.load(path) as f:
            return {k: f[k] for k in f.files}
    raise ValueError(f"eval.is_classifier={path}: expected a .npz or .safetensors file.")


def _mean_clip(mean: np.ndarray, path: str) -> np.ndarray:
    """The mean clip [16, 128, 171, 3] (BGR) from its Chainer layout [1, 3, 16, 128, 171] or [3, 16, 128, 171]."""
    m = np.asarray(mean, np.float32)
    if m.ndim == 5 and m.shape[0] == 1:
        m = m[0]
    if m.shape != (3, NUM_FRAMES, *RESIZE):
        raise ValueError(f"{path}: 'mean' has shape {mean.shape}, expected (1, 3, {NUM_FRAMES}, {RESIZE[0]}, "
                         f"{RESIZE[1]}) or (3, {NUM_FRAMES}, {RESIZE[0]}, {RESIZE[1]}): the mean clip of C3D's data.")
    return np.transpose(m, (1, 2, 3, 0))


def check_weights(path: str) -> dict[str, np.ndarray]:
    """The arrays of `path`, checked by name and shape (widths as the file has them) without building anything, so
    a bad file is refused before any compile; one-line errors name the first missing or misshapen array."""
    weights = read_weights(path)
    wanted = [f"{n}/{p}" for n in CONVS + FCS for p in ("W", "b")] + ["mean"]
    missing = [n for n in wanted if n not in weights]
    if missing:
        raise ValueError(f"eval.is_classifier={path} does not hold C3D weights: missing {len(missing)} arrays "
                         f"{missing[:5]}; names must be conv1a/W, conv1a/b, ..., fc8/b and mean "
                         f"(lumiere_jax/eval/c3d.py).")
    expected, cin = {}, 3
    for name in CONVS + FCS:
        cout = int(weights[f"{name}/W"].shape[0])
        if name == FCS[0]:
            cin *= POOLED
        expected[f"{name}/W"] = (cout, cin, 3, 3, 3) if name in CONVS else (cout, cin)
        expected[f"{name}/b"] = (cout,)
        cin = cout
    for name, want in expected.items():
        if weights[name].shape != want:
            raise ValueError(f"eval.is_classifier={path}: {name} has shape {weights[name].shape}, expected {want} "
                             f"after the widths before it (Chainer layout, as tgan2's C3D file holds it).")
    _mean_clip(weights["mean"], path)
    return weights


def load_c3d(path: str) -> tuple[C3D, np.ndarray]:
    """The C3D of `path` and its mean clip [16, 128, 171, 3]; one-line errors as check_weights."""
    weights = check_weights(path)
    widths = tuple(int(weights[f"{n}/W"].shape[0]) for n in CONVS)
    fc = tuple(int(weights[f"{n}/W"].shape[0]) for n in FCS)
    graphdef, state = nnx.split(nnx.eval_shape(lambda: C3D(widths, fc, rngs=nnx.Rngs(0))))
    values = []
    for p, leaf in nnx.to_flat_state(state):
        layer, kind = str(getattr(p[0], "key", p[0])), str(getattr(p[-1], "key", p[-1]))
        array = np.asarray(weights[f"{layer}/{'W' if kind == 'kernel' else 'b'}"], np.float32)
        if kind == "kernel":  # Chainer's [out, in, kT, kH, kW] / [out, in] -> NNX's [kT, kH, kW, in, out] / [in, out]
            array = array.T if array.ndim == 2 else array.transpose(2, 3, 4, 1, 0)
        values.append((p, leaf.replace(jnp.asarray(array))))
    return nnx.merge(graphdef, nnx.from_flat_state(values)), _mean_clip(weights["mean"], path)


class C3DClassifier:
    """Class probabilities [N, num_classes] of uint8 clips [N, T >= 16, H, W, 3], jitted, in batches."""

    def __init__(self, path: str, batch_size: int = 16):
        model, mean = load_c3d(path)
        graphdef, self.params = nnx.split(model)
        self.mean, self.batch_size = jnp.asarray(mean), batch_size
        self._apply = jax.jit(lambda p, x, m: jax.nn.softmax(nnx.merge(graphdef, p)(preprocess(x, m)), axis=-1))

    def probabilities(self, clips_uint8: np.ndarray) -> np.ndarray:
        if clips_uint8.shape[1] < NUM_FRAMES:
            raise ValueError(f"C3D reads {NUM_FRAMES} frames; these clips have {clips_uint8.shape[1]}.")
        out, n = [], len(clips_uint8)
        for start in range(0, n, self.batch_size):
            chunk = np.asarray(clips_uint8[start:start + self.batch_size])
            k = len(chunk)
            if k < self.batch_size and n > self.batch_size:  # pad: one compiled shape
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], self.batch_size - k, 0)])
            out.append(np.asarray(self._apply(self.params, jnp.asarray(chunk), self.mean))[:k])
        return np.concatenate(out).astype(np.float64)


def inception_score(probabilities: Any) -> float:
    """exp(E_x KL(p(y|x) || p(y))) over class probabilities [N, C]: 1 when every clip gets the same distribution,
    C when each is sure of its class and the classes are used equally. One score over the whole set."""
    p = np.asarray(probabilities, np.float64)
    marginal = p.mean(axis=0, keepdims=True)
    eps = 1e-12
    kl = np.sum(p * (np.log(p + eps) - np.log(marginal + eps)), axis=1)
    return float(np.exp(kl.mean()))
