"""T5 v1.1 / flan-t5 / umt5 encoders as a frozen Flax NNX module: the paper-scale text features.

Weights come from a local Hugging Face folder (config.json, tokenizer files,
model.safetensors or shards with model.safetensors.index.json) and are read
with `safetensors`; transformers only supplies the tokenizer. Decoder tensors
in the checkpoint are ignored.

Every param declares logical axis names ("vocab", "embed", "heads", "mlp") where
it is made, as the STUNet's params do (`sharding.axes`: flax's `out_sharding`
metadata); `shard_params` maps them onto a mesh by this module's rules, so that
an XXL encoder can be fsdp-sharded instead of living on one device.

Example:
    encoder = T5TextEncoder.from_pretrained("/data/t5-v1_1-xxl", max_length=64,
                                            dtype=jnp.bfloat16)
    features, mask = encoder.encode(["a red circle moving left"])  # [1, 64, 4096]
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
import re
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding

from lumiere_jax import sharding
from lumiere_jax.sharding import partition_spec  # noqa: F401  (tests import it from here)
from lumiere_jax.text.minilm import _ACTIVATIONS, MiniLMTextEncoder, _safetensors_files, fill_from_safetensors

_ACT_FNS = {**_ACTIVATIONS, "silu": jax.nn.silu}
# t5 v1.1 and flan-t5 (model_type "t5") and mt5 share layer 0's position bias across layers;
# umt5 gives every layer its own.
_SHARED_BIAS_TYPES = ("t5", "mt5")
_PER_LAYER_BIAS_TYPES = ("umt5",)
# HF's UMT5Config defaults, for config.json files that leave a key out.
_UMT5_DEFAULTS = {"vocab_size": 250112, "d_ff": 1024, "num_layers": 8, "num_heads": 6,
                  "feed_forward_proj": "gated-gelu"}

# Logical axis -> mesh axis (or None: replicated). Mesh axes the mesh lacks are dropped,
# so these rules also fit a mesh with only "fsdp", or none of these names at all.
DEFAULT_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("vocab", None),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("mlp", "tensor"),
)


def _folder_hint() -> str:
    return (
        "Pass a local Hugging Face T5/umt5 folder holding config.json, tokenizer.json "
        "(or spiece.model) and model.safetensors (or shards with model.safetensors.index.json), "
        "e.g. --config.text_encoder=t5:/data/t5-v1_1-xxl."
    )


@dataclasses.dataclass(frozen=True)
class T5Config:
    """The T5 encoder hyperparameters, as found in a Hugging Face config.json (HF's defaults)."""

    vocab_size: int = 32128
    d_model: int = 512
    d_kv: int = 64
    d_ff: int = 2048
    num_layers: int = 6
    num_heads: int = 8
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    layer_norm_epsilon: float = 1e-6
    feed_forward_proj: str = "relu"  # "gated-gelu" for t5 v1.1, flan-t5 and umt5
    model_type: str = "t5"

    def __post_init__(self):
        if self.model_type not in _SHARED_BIAS_TYPES + _PER_LAYER_BIAS_TYPES:
            raise ValueError(
                f"model_type={self.model_type!r} is not a T5 encoder; use one of "
                f"{_SHARED_BIAS_TYPES + _PER_LAYER_BIAS_TYPES}."
            )
        parts = self.feed_forward_proj.split("-")
        if len(parts) > 2 or (len(parts) == 2 and parts[0] != "gated") or parts[-1] not in _ACT_FNS:
            raise ValueError(
                f"feed_forward_proj={self.feed_forward_proj!r} is not supported; use "
                f"'gated-<act>' or '<act>' with <act> one of {sorted(_ACT_FNS)}."
            )

    @property
    def gated(self) -> bool:
        return self.feed_forward_proj.startswith("gated-")

    @property
    def activation(self) -> str:
        # HF maps "gated-gelu" to the tanh approximation, which T5 v1.1 was trained with.
        act = self.feed_forward_proj.split("-")[-1]
        return "gelu_new" if self.feed_forward_proj == "gated-gelu" else act

    @property
    def per_layer_bias(self) -> bool:
        return self.model_type in _PER_LAYER_BIAS_TYPES

    @classmethod
    def from_json(cls, path: str) -> T5Config:
        """Reads a Hugging Face T5/umt5 config.json, ignoring keys this encoder does not use."""
        if not os.path.isfile(path):
            raise FileNotFoundError(f"T5 config not found: {path}. {_folder_hint()}")
        with open(path) as f:
            raw = json.load(f)
        if raw.get("model_type") in _PER_LAYER_BIAS_TYPES:
            raw = {**_UMT5_DEFAULTS, **raw}
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in names})


def relative_position_bucket(
    relative_position: np.ndarray, num_buckets: int = 32, max_distance: int = 128
) -> np.ndarray:
    """Bidirectional T5 bucket of each relative position (key minus query), as HF computes it.

    Half the buckets are for keys after the query. Within each half, distances
    below num_buckets // 4 get one bucket each, longer ones log-spaced buckets up
    to max_distance, and anything farther the last bucket. Computed with numpy in
    float32, the precision of the Mesh TensorFlow and PyTorch code, so that the
    buckets do not depend on the accelerator's log.
    """
    relative_position = np.asarray(relative_position, np.int64)
    half = num_buckets // 2
    buckets = (relative_position > 0).astype(np.int64) * half
    distance = np.abs(relative_position)
    max_exact = half // 2
    # Clamped below at max_exact only to avoid log(0); those distances take the exact branch.
    ratio = np.maximum(distance, max_exact).astype(np.float32) / np.float32(max_exact)
    log_ratio = np.log(ratio) / np.float32(math.log(max_distance / max_exact))
    large = max_exact + (log_ratio * np.float32(half - max_exact)).astype(np.int64)
    large = np.minimum(large, half - 1)
    return buckets + np.where(distance < max_exact, distance, large)


def _dense(n_in: int, n_out: int, axes: tuple[str, str], dtype, param_dtype, rngs) -> nnx.Linear:
    return nnx.Linear(n_in, n_out, use_bias=False, dtype=dtype, param_dtype=param_dtype,
                      kernel_init=nnx.initializers.lecun_normal(), kernel_metadata=sharding.axes(*axes),
                      rngs=rngs)


class T5LayerNorm(nnx.Module):
    """T5's RMSNorm: scale only, no mean subtraction and no bias; computed in float32."""

    def __init__(self, dim: int, epsilon: float, *, dtype: Any = jnp.float32):
        self.epsilon = epsilon
        self.dtype = dtype
        self.scale = nnx.Param(jnp.ones((dim,), jnp.float32), **sharding.axes("embed"))

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.astype(jnp.float32)
        x = x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + self.epsilon)
        return (self.scale[...].astype(jnp.float32) * x).astype(self.dtype)


class T5Attention(nnx.Module):
    """Bidirectional self-attention with T5's learned relative position bias and no 1/sqrt(d)."""

    def __init__(self, config: T5Config, has_relative_bias: bool, *, dtype: Any,
                 param_dtype: Any, rngs: nnx.Rngs):
        self.config = config
        d, inner = config.d_model, config.num_heads * config.d_kv
        # "heads" names the flattened [heads * d_kv] axis, heads-major, as HF stores it.
        self.q = _dense(d, inner, ("embed", "heads"), dtype, param_dtype, rngs)
        self.k = _dense(d, inner, ("embed", "heads"), dtype, param_dtype, rngs)
        self.v = _dense(d, inner, ("embed", "heads"), dtype, param_dtype, rngs)
        self.o = _dense(inner, d, ("heads", "embed"), dtype, param_dtype, rngs)
        self.relative_attention_bias = nnx.Embed(
            config.relative_attention_num_buckets, config.num_heads, dtype=jnp.float32,
            param_dtype=param_dtype, embedding_init=nnx.initializers.normal(d**-0.5),
            embedding_metadata=sharding.axes(None, "heads"), rngs=rngs,
        ) if has_relative_bias else None

    def position_bias(self, length: int) -> jax.Array:
        """The learned bias [1, H, L, L] (float32) for every query/key pair."""
        positions = np.arange(length)
        buckets = relative_position_bucket(
            positions[None, :] - positions[:, None],  # [Lq, Lk]: key minus query
            self.config.relative_attention_num_buckets,
            self.config.relative_attention_max_distance,
        )
        values = self.relative_attention_bias(jnp.asarray(buckets, jnp.int32))  # [L, L, H]
        return jnp.transpose(values, (2, 0, 1))[None].astype(jnp.float32)

    def __call__(self, x: jax.Array, mask: jax.Array, position_bias: jax.Array) -> jax.Array:
        n, length, _ = x.shape
        heads, d_kv = self.config.num_heads, self.config.d_kv
        split = lambda t: t.reshape(n, length, heads, d_kv)
        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))  # [N, L, H, Dk]
        # No 1/sqrt(d_kv): T5 folds it into the query init, so logits grow large; keep them
        # and the softmax in float32 even with a bfloat16 compute dtype.
        logits = jnp.einsum("nqhc,nkhc->nhqk", q, k, preferred_element_type=jnp.float32)
        logits = logits + position_bias
        logits = jnp.where(mask[:, None, None, :], logits, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)  # [N, H, L, L]
        attended = jnp.einsum("nhqk,nkhc->nqhc", probs, v).reshape(n, length, heads * d_kv)
        return self.o(attended)  # [N, L, D]


class T5FeedForward(nnx.Module):
    """T5's MLP: act(wi_0 x) * (wi_1 x) then wo when gated (v1.1, umt5), else wo(act(wi x))."""

    def __init__(self, config: T5Config, *, dtype: Any, param_dtype: Any, rngs: nnx.Rngs):
        d, ff = config.d_model, config.d_ff
        self.act = _ACT_FNS[config.activation]
        self.gated = config.gated
        if self.gated:
            self.wi_0 = _dense(d, ff, ("embed", "mlp"), dtype, param_dtype, rngs)
            self.wi_1 = _dense(d, ff, ("embed", "mlp"), dtype, param_dtype, rngs)
        else:
            self.wi = _dense(d, ff, ("embed", "mlp"), dtype, param_dtype, rngs)
        self.wo = _dense(ff, d, ("mlp", "embed"), dtype, param_dtype, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        hidden = self.act(self.wi_0(x)) * self.wi_1(x) if self.gated else self.act(self.wi(x))
        return self.wo(hidden)  # [N, L, D]


class T5Block(nnx.Module):
    """One pre-norm T5 encoder block: attention and MLP, each RMSNorm -> sublayer -> residual."""

    def __init__(self, config: T5Config, has_relative_bias: bool, *, dtype: Any,
                 param_dtype: Any, rngs: nnx.Rngs):
        eps = config.layer_norm_epsilon
        self.attention_norm = T5LayerNorm(config.d_model, eps, dtype=dtype)
        self.attention = T5Attention(config, has_relative_bias, dtype=dtype,
                                     param_dtype=param_dtype, rngs=rngs)
        self.ffn_norm = T5LayerNorm(config.d_model, eps, dtype=dtype)
        self.ffn = T5FeedForward(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x: jax.Array, mask: jax.Array, position_bias: jax.Array) -> jax.Array:
        x = x + self.attention(self.attention_norm(x), mask, position_bias)
        return x + self.ffn(self.ffn_norm(x))  # [N, L, D], float32 residual stream


class T5Encoder(nnx.Module):
    """The T5 encoder stack: token ids and padding mask to the final-normed hidden state.

    `dtype` is the matmul compute dtype (bfloat16 is fine); norms, softmax and
    the residual stream stay float32. `param_dtype` is how weights are stored.
    """

    def __init__(self, config: T5Config, *, dtype: Any = jnp.float32,
                 param_dtype: Any = jnp.float32, rngs: nnx.Rngs):
        self.config = config
        self.shared = nnx.Embed(config.vocab_size, config.d_model, dtype=dtype,
                                param_dtype=param_dtype, embedding_init=nnx.initializers.normal(1.0),
                                embedding_metadata=sharding.axes("vocab", "embed"), rngs=rngs)
        self.blocks = nnx.List([
            T5Block(config, has_relative_bias=config.per_layer_bias or i == 0, dtype=dtype,
                    param_dtype=param_dtype, rngs=rngs)
            for i in range(config.num_layers)
        ])
        self.final_norm = T5LayerNorm(config.d_model, config.layer_norm_epsilon)

    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array) -> jax.Array:
        """Maps int32 ids [N, L] and a bool mask [N, L] (True = real token) to float32 [N, L, D]."""
        x = self.shared(input_ids).astype(jnp.float32)  # [N, L, D]
        mask = attention_mask.astype(bool)
        bias = None
        for block in self.blocks:
            # T5: layer 0's bias serves every layer; umt5: each layer has its own.
            if block.attention.relative_attention_bias is not None:
                bias = block.attention.position_bias(input_ids.shape[1])  # [1, H, L, L]
            x = block(x, mask, bias)
        return self.final_norm(x)  # [N, L, D]


# Our per-block submodule paths and the Hugging Face names they come from.
_HF_BLOCK_NAMES = {
    ("attention_norm", "scale"): "layer.0.layer_norm.weight",
    ("attention", "q", "kernel"): "layer.0.SelfAttention.q.weight",
    ("attention", "k", "kernel"): "layer.0.SelfAttention.k.weight",
    ("attention", "v", "kernel"): "layer.0.SelfAttention.v.weight",
    ("attention", "o", "kernel"): "layer.0.SelfAttention.o.weight",
    ("attention", "relative_attention_bias", "embedding"):
        "layer.0.SelfAttention.relative_attention_bias.weight",
    ("ffn_norm", "scale"): "layer.1.layer_norm.weight",
    ("ffn", "wi", "kernel"): "layer.1.DenseReluDense.wi.weight",
    ("ffn", "wi_0", "kernel"): "layer.1.DenseReluDense.wi_0.weight",
    ("ffn", "wi_1", "kernel"): "layer.1.DenseReluDense.wi_1.weight",
    ("ffn", "wo", "kernel"): "layer.1.DenseReluDense.wo.weight",
}
_EMBEDDING_NAMES = ("shared.weight", "encoder.embed_tokens.weight")


def _hf_name(path: tuple[Any, ...], files: dict[str, str]) -> str:
    """The Hugging Face tensor name of an NNX param path."""
    if path == ("shared", "embedding"):
        return next((n for n in _EMBEDDING_NAMES if n in files), _EMBEDDING_NAMES[0])
    if path == ("final_norm", "scale"):
        return "encoder.final_layer_norm.weight"
    _, index, *rest = path
    return f"encoder.block.{index}.{_HF_BLOCK_NAMES[tuple(rest)]}"


def load_t5_weights(model: T5Encoder, folder: str) -> None:
    """Copies a Hugging Face T5/umt5 encoder checkpoint (one file or shards) into `model`.

    `model` may be abstract (built under `nnx.eval_shape`); every param is
    replaced by a host numpy array of its param dtype, ready for
    `jax.device_put` or `shard_params` (so an XXL model never sits whole on one
    device).

    Raises:
        FileNotFoundError: if the folder holds no safetensors checkpoint.
        ValueError: naming the missing tensors (and the folder), the first
            tensor whose shape does not match (and its file), or a checkpoint
            whose per-layer position biases contradict config.json's model_type.
    """
    if not any(os.path.isfile(os.path.join(folder, f))
               for f in ("model.safetensors", "model.safetensors.index.json")):
        raise FileNotFoundError(
            f"No model.safetensors or model.safetensors.index.json in {folder}. {_folder_hint()}"
        )
    files = _safetensors_files(folder)
    config = model.config
    if not config.per_layer_bias and config.num_layers > 1 and (
        "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight" in files
    ):
        raise ValueError(
            f"Checkpoint in {folder} has a relative position bias in every layer (umt5), but "
            f"config.json says model_type={config.model_type!r}; fix model_type to 'umt5'."
        )
    params = nnx.to_flat_state(nnx.state(model, nnx.Param))
    wanted = {path: _hf_name(path, files) for path, _ in params}
    fill_from_safetensors(
        params, wanted, files, folder, "T5 encoder",
        "Is it a T5/umt5 checkpoint matching config.json (model_type, feed_forward_proj)?",
        # Host arrays: an XXL encoder is never whole on one device before it is sharded.
        lambda value, dtype: np.ascontiguousarray(value).astype(dtype))


def shard_params(state: nnx.State, mesh: Mesh,
                 rules: Sequence[tuple[str, Any]] = DEFAULT_RULES) -> nnx.State:
    """Places every param of `state` on `mesh`, sharded by its declared logical axis names and `rules`.

    Host (numpy) params go straight to their shards, so a checkpoint never has
    to fit on one device. A param that declares no names (or not one per
    dimension) raises.
    """

    def put(variable: nnx.Variable) -> nnx.Variable:
        spec = sharding.declared_spec(variable, mesh, rules)
        return variable.replace(jax.device_put(variable.get_value(), NamedSharding(mesh, spec)))

    return jax.tree.map(put, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def load_t5_tokenizer(folder: str) -> Any:
    """Loads the folder's tokenizer with transformers (local files only, no hub)."""
    if not any(os.path.isfile(os.path.join(folder, f)) for f in ("tokenizer.json", "spiece.model")):
        raise FileNotFoundError(
            f"No tokenizer in {folder}: expected tokenizer.json or spiece.model (with "
            f"tokenizer_config.json). {_folder_hint()}"
        )
    if not os.path.isfile(os.path.join(folder, "tokenizer.json")) and (
        importlib.util.find_spec("sentencepiece") is None
    ):
        raise ImportError(
            f"{folder} has spiece.model but no tokenizer.json, and reading spiece.model needs "
            "the sentencepiece package: `pip install sentencepiece`, or save the tokenizer once "
            "with `AutoTokenizer.from_pretrained(folder).save_pretrained(folder)` where it is "
            "installed, which writes tokenizer.json."
        )
    from transformers import AutoTokenizer  # imported here: slow, and only needed to tokenize

    return AutoTokenizer.from_pretrained(folder, local_files_only=True)


class T5TextEncoder(MiniLMTextEncoder):
    """Frozen T5/umt5 encoder: captions to padded token features and masks, optionally sharded.

    Shares MiniLMTextEncoder's batching `encode()` (fixed batch shape, one compile).
    """

    name = "t5"

    def __init__(
        self,
        model: T5Encoder,
        tokenizer: Any,
        max_length: int,
        batch_size: int = 32,
        mesh: Mesh | None = None,
        rules: Sequence[tuple[str, Any]] = DEFAULT_RULES,
    ):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.batch_size = batch_size
        self.feature_dim = model.config.d_model
        graphdef, state = nnx.split(model)
        self._state = jax.device_put(state) if mesh is None else shard_params(state, mesh, rules)
        self._forward = jax.jit(lambda state, ids, mask: nnx.merge(graphdef, state)(ids, mask))

    @classmethod
    def from_pretrained(
        cls,
        path: str,
        max_length: int = 64,
        batch_size: int = 32,
        dtype: Any = jnp.float32,
        param_dtype: Any = None,
        mesh: Mesh | None = None,
        rules: Sequence[tuple[str, Any]] = DEFAULT_RULES,
    ) -> T5TextEncoder:
        """Builds the encoder from a local Hugging Face T5/umt5 folder.

        `param_dtype` defaults to `dtype` (bfloat16 halves an XXL encoder's
        memory). With `mesh`, params are sharded by `rules` (see `shard_params`).
        """
        folder = os.path.expanduser(os.fspath(path))
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"T5 encoder folder does not exist: {folder}. {_folder_hint()}")
        if max_length < 1:
            raise ValueError(f"max_length={max_length} leaves no room for a token; use >= 1.")
        config = T5Config.from_json(os.path.join(folder, "config.json"))
        tokenizer = load_t5_tokenizer(folder)
        param_dtype = dtype if param_dtype is None else param_dtype
        # Shapes only: a random init would cost minutes at XXL size and be overwritten at once.
        model = nnx.eval_shape(
            lambda: T5Encoder(config, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(0)))
        load_t5_weights(model, folder)
        encoder = cls(model, tokenizer, max_length, batch_size, mesh=mesh, rules=rules)
        # The text cache is keyed by name: different T5 folders must not share cached features.
        encoder.name = "t5_" + re.sub(r"\W", "_", os.path.basename(os.path.normpath(folder)))
        return encoder

    def tokenize(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Returns int32 input_ids [N, L] and bool attention_mask [N, L] with L = max_length."""
        batch = self.tokenizer(list(texts), padding="max_length", truncation=True,
                               max_length=self.max_length, return_tensors="np")
        ids = np.asarray(batch["input_ids"], np.int32).reshape(len(texts), self.max_length)
        return ids, np.asarray(batch["attention_mask"], bool).reshape(ids.shape)
