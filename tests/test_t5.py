"""Tests for the Flax T5/umt5 encoder: PyTorch parity, weight loading, tokenizer path, sharding."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import AbstractMesh, PartitionSpec
from safetensors.numpy import load_file, save_file

from lumiere_jax.text.encoders import load_text_encoder
from lumiere_jax.text.t5 import (
    T5Config,
    T5Encoder,
    T5TextEncoder,
    load_t5_weights,
    DEFAULT_RULES as T5_RULES,
    partition_spec,
    relative_position_bucket,
)

REFERENCE_DIR = os.path.join(os.path.dirname(__file__), "reference")
REFERENCE = os.path.join(REFERENCE_DIR, "t5_reference.npz")
FOLDERS = {name: os.path.join(REFERENCE_DIR, f"{name}_tiny") for name in ("t5", "umt5")}
T5_DIR = FOLDERS["t5"]
# PyTorch float32 itself is up to 1.7e-5 from a float64 run on these random weights.
ATOL = 3e-5


@pytest.fixture(scope="module")
def reference():
    with np.load(REFERENCE) as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def t5_weights():
    return load_file(os.path.join(T5_DIR, "model.safetensors"))


def _abstract_model(folder):
    config = T5Config.from_json(os.path.join(folder, "config.json"))
    return nnx.eval_shape(lambda: T5Encoder(config, rngs=nnx.Rngs(0)))


def _loaded(folder, weights_folder=None):
    model = _abstract_model(folder)
    load_t5_weights(model, weights_folder or folder)
    return model


def _copy_folder_with(tmp_path, name, tensors):
    """The tiny t5 folder (config, tokenizer) with `tensors` as its model.safetensors."""
    folder = tmp_path / name
    shutil.copytree(T5_DIR, folder, ignore=shutil.ignore_patterns("*.safetensors"))
    save_file(tensors, str(folder / "model.safetensors"))
    return str(folder)


def test_relative_position_bucket_hand_checked_and_matches_pytorch(reference):
    # Defaults (32 buckets, max distance 128): 16 per direction, 8 exact, then log-spaced.
    # -15: 8 + int(log(15/8) / log(16) * 8) = 8 + 1; -16: 8 + 2 (an exact float32 boundary);
    # -127: 8 + 7; -128 and beyond clamp to 15; keys after the query add 16.
    relative = np.array([0, -1, 1, -7, -8, -15, -16, -127, -128, -1000, 1000, 16, 7])
    want = [0, 1, 17, 7, 8, 9, 10, 15, 15, 15, 31, 26, 23]
    np.testing.assert_array_equal(relative_position_bucket(relative), want)
    for num_buckets, max_distance in ((32, 128), (8, 12)):
        relative = reference["bucket_relative_position"]
        got = relative_position_bucket(relative, num_buckets, max_distance)
        np.testing.assert_array_equal(got, reference[f"buckets_{num_buckets}_{max_distance}"])


@pytest.mark.parametrize("name", ["t5", "umt5"])
def test_matches_pytorch_reference(reference, name):
    model = _loaded(FOLDERS[name])
    biased = [b.attention.relative_attention_bias is not None for b in model.blocks]
    # T5 shares layer 0's position bias; umt5 learns one per layer.
    assert biased == ([True] * 2 if name == "umt5" else [True, False, False])
    out = np.asarray(model(reference["input_ids"], reference["attention_mask"]))  # [3, 16, 32]
    assert out.dtype == np.float32 and out.shape == (3, 16, 32)
    want = reference[f"{name}_last_hidden_state"]
    np.testing.assert_allclose(out, want, atol=ATOL, rtol=0)
    # Without the padding mask the padded rows change, so the mask is really applied.
    unmasked = np.asarray(model(reference["input_ids"], np.ones((3, 16), bool)))
    assert np.abs(unmasked[1:] - want[1:]).max() > 1e-2


def test_sharded_checkpoint_matches_single_file(tmp_path, reference, t5_weights):
    # Shards named as T5EncoderModel exports may name them (embed_tokens, not shared),
    # plus a decoder tensor that the encoder must ignore.
    tensors = {("encoder.embed_tokens.weight" if k == "shared.weight" else k): v
               for k, v in t5_weights.items()}
    tensors["decoder.block.0.layer.0.layer_norm.weight"] = np.full((7,), 9.0, np.float32)
    names = sorted(tensors)
    shards = {
        "model-00001-of-00002.safetensors": names[::2],
        "model-00002-of-00002.safetensors": names[1::2],
    }
    weight_map = {}
    for shard, shard_names in shards.items():
        save_file({n: tensors[n] for n in shard_names}, str(tmp_path / shard))
        weight_map.update(dict.fromkeys(shard_names, shard))
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))

    ids, mask = reference["input_ids"], reference["attention_mask"]
    single = np.asarray(_loaded(T5_DIR)(ids, mask))
    sharded = np.asarray(_loaded(T5_DIR, str(tmp_path))(ids, mask))
    np.testing.assert_array_equal(sharded, single)

    os.remove(tmp_path / "model-00002-of-00002.safetensors")
    with pytest.raises(FileNotFoundError, match="model-00002-of-00002"):
        load_t5_weights(_abstract_model(T5_DIR), str(tmp_path))


def test_missing_tensor_names_key_and_folder(tmp_path, t5_weights):
    key = "encoder.block.1.layer.1.DenseReluDense.wi_1.weight"
    kept = {k: v for k, v in t5_weights.items() if k != key}
    folder = _copy_folder_with(tmp_path, "missing", kept)
    with pytest.raises(ValueError, match=key) as info:
        load_t5_weights(_abstract_model(folder), folder)
    assert folder in str(info.value)


def test_wrong_shape_names_key_shapes_and_file(tmp_path, t5_weights):
    key = "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
    bad = dict(t5_weights)
    bad[key] = t5_weights[key][:, :3]
    folder = _copy_folder_with(tmp_path, "bad_shape", bad)
    with pytest.raises(ValueError, match=key) as info:
        load_t5_weights(_abstract_model(folder), folder)
    assert "(8, 3)" in str(info.value) and "(8, 4)" in str(info.value)
    assert os.path.join(folder, "model.safetensors") in str(info.value)


def test_umt5_weights_with_t5_config_are_refused():
    with pytest.raises(ValueError, match="model_type='t5'.*'umt5'"):
        load_t5_weights(_abstract_model(T5_DIR), FOLDERS["umt5"])


def test_encode_end_to_end_and_through_load_text_encoder(reference):
    texts = [str(t) for t in reference["texts"]]
    encoder = load_text_encoder(f"t5:{T5_DIR}", max_length=8)
    assert isinstance(encoder, T5TextEncoder)
    assert (encoder.name, encoder.feature_dim, encoder.max_length) == ("t5_t5_tiny", 32, 8)  # per folder: cache key

    encoder = T5TextEncoder.from_pretrained(T5_DIR, max_length=8, batch_size=3)
    ids, mask = encoder.tokenize(texts)
    np.testing.assert_array_equal(ids, reference["text_input_ids"])  # truncated, </s>, <unk>
    # 4 texts with batch_size 3: one full chunk and one padded chunk.
    features, mask = encoder.encode(texts)
    assert features.dtype == np.float32 and features.shape == (4, 8, 32)
    assert mask.dtype == bool
    np.testing.assert_array_equal(mask, reference["text_attention_mask"])
    want = reference["t5_text_last_hidden_state"]
    np.testing.assert_allclose(features, want, atol=ATOL, rtol=0)
    with pytest.raises(TypeError, match="sequence of strings"):
        encoder.encode("a red circle")

    half = T5TextEncoder.from_pretrained(T5_DIR, max_length=8, batch_size=3, dtype=jnp.bfloat16)
    assert half._state["shared"]["embedding"].get_value().dtype == jnp.bfloat16
    features, _ = half.encode(texts)
    assert features.dtype == np.float32
    # These sharp random weights lose ~4% in bfloat16 (PyTorch's bfloat16 run: 3.2%).
    relative = np.linalg.norm(features - want) / np.linalg.norm(want)
    assert relative < 0.1, relative


def test_bad_folders_and_names_raise_with_path_and_fix(tmp_path):
    nowhere = str(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="nowhere.*text_encoder=t5:"):
        T5TextEncoder.from_pretrained(nowhere)

    folder = tmp_path / "partial"
    folder.mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        T5TextEncoder.from_pretrained(str(folder))
    shutil.copy(os.path.join(T5_DIR, "config.json"), folder)
    with pytest.raises(FileNotFoundError, match="tokenizer.json or spiece.model"):
        T5TextEncoder.from_pretrained(str(folder))
    if importlib.util.find_spec("sentencepiece") is None:
        (folder / "spiece.model").write_bytes(b"")
        with pytest.raises(ImportError, match="pip install sentencepiece"):
            T5TextEncoder.from_pretrained(str(folder))
        (folder / "spiece.model").unlink()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(T5_DIR, name), folder)
    with pytest.raises(FileNotFoundError, match="No model.safetensors.*partial"):
        T5TextEncoder.from_pretrained(str(folder))

    config = json.load(open(os.path.join(T5_DIR, "config.json")))
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "bert"}))
    with pytest.raises(ValueError, match="model_type='bert'"):
        T5TextEncoder.from_pretrained(str(folder))

    with pytest.raises(ValueError, match="'clip'.*minilm.*t5:"):
        load_text_encoder("clip")
    with pytest.raises(ValueError, match="t5:/"):
        load_text_encoder("t5")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_text_encoder(f"t5:{nowhere}")


def test_every_param_has_logical_axis_names():
    model = _abstract_model(FOLDERS["umt5"])
    params = nnx.to_flat_state(nnx.state(model, nnx.Param))
    assert len(params) == 1 + 2 * 10 + 1  # embedding, 2 blocks of 10, final norm
    for path, param in params:
        names = param.get_metadata().get("out_sharding")
        assert names is not None and len(names) == len(param.get_value().shape), path
        assert set(names) <= {"vocab", "embed", "heads", "mlp", None}, path
    mesh = AbstractMesh((2, 4), ("fsdp", "tensor"))
    assert partition_spec(("embed", "mlp"), (32, 48), mesh, T5_RULES) == PartitionSpec("fsdp", "tensor")
    # 6 is not divisible by 4, and the vocab rule maps to no mesh axis: both replicated.
    assert partition_spec(("embed", "mlp"), (32, 6), mesh, T5_RULES) == PartitionSpec("fsdp", None)
    assert partition_spec(("vocab", "embed"), (100, 32), mesh, T5_RULES) == PartitionSpec(None, "fsdp")
    # A mesh axis is used once per param; mesh axes the mesh lacks are dropped.
    rules = (("embed", ("fsdp", "data")), ("mlp", "fsdp"))
    assert partition_spec(("embed", "mlp"), (32, 48), mesh, rules) == PartitionSpec("fsdp", None)


def test_shard_params_on_four_fake_devices(tmp_path, reference):
    # A subprocess, because the fake device count must be set before jax starts.
    script = textwrap.dedent(f"""
        import jax, numpy as np
        from lumiere_jax.text.t5 import T5TextEncoder
        mesh = jax.make_mesh((2, 2), ("fsdp", "tensor"),
                             axis_types=(jax.sharding.AxisType.Auto,) * 2)
        encoder = T5TextEncoder.from_pretrained({T5_DIR!r}, max_length=8, batch_size=4, mesh=mesh)
        wi = encoder._state["blocks"][0]["ffn"]["wi_0"]["kernel"].get_value()
        assert len(wi.sharding.device_set) == 4 and wi.addressable_shards[0].data.shape == (16, 24)
        print("SPEC", wi.sharding.spec)
        features, _ = encoder.encode([str(t) for t in {list(reference["texts"])!r}])
        np.save({str(tmp_path / "sharded.npy")!r}, features)
    """)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4 --xla_backend_optimization_level=0",
               JAX_PLATFORMS="cpu")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, "-c", script], env=env, cwd=repo,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "SPEC P('fsdp', 'tensor')" in result.stdout
    features = np.load(tmp_path / "sharded.npy")
    np.testing.assert_allclose(features, reference["t5_text_last_hidden_state"], atol=ATOL, rtol=0)
