"""The on-disk text cache: computed once, read back exactly, extended in place of nothing, never half-written."""

import hashlib
import os

import numpy as np
import pytest

from lumiere_jax.text import cache as cache_lib
from lumiere_jax.text.cache import NpyRows, TextEmbeddingCache


class CountingEncoder:
    """A stand-in encoder whose features identify the text, and that counts what it encodes."""

    name = "fake"
    feature_dim = 3
    max_length = 4

    def __init__(self):
        self.encoded: list[str] = []

    def encode(self, texts):
        self.encoded.extend(texts)
        lengths = np.array([len(t) for t in texts], np.float32)
        features = np.broadcast_to(lengths[:, None, None], (len(texts), 4, 3)).copy()
        mask = np.arange(4)[None] < np.minimum(lengths, 4)[:, None]
        return features, mask


class HashEncoder:
    """Features drawn from a seed that the text's hash gives, so every caption has its own; records each call."""

    name = "hash"
    feature_dim = 8
    max_length = 5

    def __init__(self, fail_on_call: int | None = None):
        self.calls: list[list[str]] = []
        self.fail_on_call = fail_on_call

    def encode(self, texts):
        self.calls.append(list(texts))
        if self.fail_on_call is not None and len(self.calls) == self.fail_on_call:
            raise RuntimeError("encoder interrupted")
        return reference(texts)


def reference(texts):
    features, masks = [], []
    for t in texts:
        seed = int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little")
        rng = np.random.default_rng(seed)
        features.append(rng.normal(size=(5, 8)).astype(np.float32))
        masks.append(np.arange(5) < 1 + len(t) % 5)
    return np.stack(features), np.stack(masks)


CAPTIONS = ["", "a red circle", "a blue square moves left", "naïve café ☕", "two\nlines", "tabs\tand  spaces"] + [
    f"a green triangle number {i}" for i in range(20)]


def test_cache_computes_once_reloads_and_extends(tmp_path):
    fake = CountingEncoder()
    cache = TextEmbeddingCache(fake, str(tmp_path), ["a", "bb", "a", "ccc"])
    assert fake.encoded == ["a", "bb", "ccc"]
    assert os.path.basename(cache.path) == "text_fake_L4" and os.path.isdir(cache.path)
    features, mask = cache.lookup(["ccc", "a"])
    assert features.dtype == np.float32 and features.shape == (2, 4, 3)
    np.testing.assert_array_equal(features[:, 0, 0], [3.0, 1.0])
    np.testing.assert_array_equal(mask, [[True, True, True, False], [True, False, False, False]])

    fresh = CountingEncoder()
    reloaded = TextEmbeddingCache(fresh, str(tmp_path), ["bb", "a"])
    assert fresh.encoded == []
    np.testing.assert_array_equal(reloaded.lookup(["ccc"])[0], cache.lookup(["ccc"])[0])

    extended = TextEmbeddingCache(fresh, str(tmp_path), ["a", "dddd", "ee"])
    assert fresh.encoded == ["dddd", "ee"]
    rows = extended.index_of(["ee", "a", "dddd"])
    assert rows.dtype == np.int32
    np.testing.assert_array_equal(extended.features[rows][:, 0, 0], [2.0, 1.0, 4.0])
    # One generation and its HEAD.json: no temporary folder, and the replaced generation is gone.
    entries = sorted(os.listdir(extended.path))
    assert len(entries) == 2 and entries[0] == "HEAD.json" and entries[1].startswith("gen-")
    # A reader opened before the extension still reads its own generation.
    np.testing.assert_array_equal(reloaded.lookup(["bb"])[0][:, 0, 0], [2.0])

    again = CountingEncoder()
    assert len(TextEmbeddingCache(again, str(tmp_path))) == 5 and again.encoded == []


def test_cache_lookup_names_missing_caption(tmp_path):
    cache = TextEmbeddingCache(CountingEncoder(), str(tmp_path), ["a red circle"], dtype=np.float32)
    with pytest.raises(KeyError, match="a blue square"):
        cache.lookup(["a red circle", "a blue square"])
    with pytest.raises(KeyError, match="a blue square"):
        cache.index_of(["a blue square"])
    assert "a blue square" not in cache and "a red circle" in cache


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_features_equal_the_encoders_output_after_reopen(tmp_path, dtype):
    TextEmbeddingCache(HashEncoder(), str(tmp_path), CAPTIONS, dtype=dtype)
    encoder = HashEncoder()
    cache = TextEmbeddingCache(encoder, str(tmp_path), dtype=dtype)
    assert encoder.calls == [] and len(cache) == len(CAPTIONS) and list(cache.strings) == CAPTIONS
    queried = CAPTIONS[::-1] + CAPTIONS[:3]  # any order, repeats allowed
    want_features, want_masks = reference(queried)
    features, masks = cache.lookup(queried)
    np.testing.assert_array_equal(features, want_features.astype(dtype).astype(np.float32))
    np.testing.assert_array_equal(masks, want_masks)
    rows = cache.index_of(queried)
    assert cache.features[rows].dtype == dtype and cache.features[rows].shape == (len(queried), 5, 8)
    np.testing.assert_array_equal(cache.features[rows[3]], want_features[3].astype(dtype))
    np.testing.assert_array_equal(cache.masks[rows.reshape(-1, 1)][:, 0], want_masks)


def test_adding_captions_later_keeps_old_rows(tmp_path):
    encoder = HashEncoder()
    cache = TextEmbeddingCache(encoder, str(tmp_path), CAPTIONS[:10], chunk_size=3)
    rows_before = cache.index_of(CAPTIONS[:10])
    features_before = cache.features[rows_before]
    encoder.calls.clear()
    cache.add(CAPTIONS[5:] + ["one more"])
    assert [t for call in encoder.calls for t in call] == CAPTIONS[10:] + ["one more"]
    np.testing.assert_array_equal(cache.index_of(CAPTIONS[:10]), rows_before)
    np.testing.assert_array_equal(cache.features[rows_before], features_before)
    fresh = HashEncoder()
    reopened = TextEmbeddingCache(fresh, str(tmp_path))
    assert fresh.calls == [] and len(reopened) == len(CAPTIONS) + 1
    np.testing.assert_array_equal(reopened.index_of(CAPTIONS[:10]), rows_before)
    np.testing.assert_array_equal(reopened.lookup(CAPTIONS + ["one more"])[0],
                                  reference(CAPTIONS + ["one more"])[0].astype(np.float16).astype(np.float32))


def test_encodes_in_chunks_of_at_most_chunk_size(tmp_path):
    encoder = HashEncoder()
    TextEmbeddingCache(encoder, str(tmp_path), CAPTIONS, chunk_size=7)
    assert [len(c) for c in encoder.calls] == [7, 7, 7, 5]
    assert [t for c in encoder.calls for t in c] == CAPTIONS
    encoder.calls.clear()
    TextEmbeddingCache(encoder, str(tmp_path), CAPTIONS + ["x", "y"], chunk_size=7)
    assert encoder.calls == [["x", "y"]]


def test_reading_rows_reads_only_those_rows(tmp_path, monkeypatch):
    cache = TextEmbeddingCache(HashEncoder(), str(tmp_path), CAPTIONS)
    assert isinstance(cache.features, NpyRows) and not isinstance(cache.features, np.ndarray)
    assert cache.features.shape == (len(CAPTIONS), 5, 8) and cache.masks.shape == (len(CAPTIONS), 5)
    read: list[int] = []
    preadv = os.preadv

    def counting_preadv(fd, buffers, offset):
        got = preadv(fd, buffers, offset)
        read.append(got)
        return got

    monkeypatch.setattr(cache_lib.os, "preadv", counting_preadv)
    cache.features[np.array([3, 17, 3])]
    assert sum(read) == 3 * 5 * 8 * 2  # three float16 rows, nothing else


def test_interrupted_write_leaves_the_previous_cache_readable(tmp_path):
    TextEmbeddingCache(HashEncoder(), str(tmp_path), CAPTIONS[:6])
    failing = HashEncoder(fail_on_call=2)
    with pytest.raises(RuntimeError, match="encoder interrupted"):
        TextEmbeddingCache(failing, str(tmp_path), CAPTIONS, chunk_size=4)
    assert len(failing.calls) == 2
    encoder = HashEncoder()
    cache = TextEmbeddingCache(encoder, str(tmp_path))
    assert len(cache) == 6 and encoder.calls == []
    np.testing.assert_array_equal(cache.lookup(CAPTIONS[:6])[1], reference(CAPTIONS[:6])[1])
    assert sorted(os.listdir(cache.path))[0] == "HEAD.json" and len(os.listdir(cache.path)) == 2  # no tmp-* left


def test_unreadable_files_give_one_line_naming_the_file_and_the_fix(tmp_path):
    cache = TextEmbeddingCache(HashEncoder(), str(tmp_path), CAPTIONS)
    features_path = cache.features.path
    with open(features_path, "r+b") as f:
        f.truncate(os.path.getsize(features_path) - 10)
    with pytest.raises(ValueError) as info:
        TextEmbeddingCache(HashEncoder(), str(tmp_path))
    message = str(info.value)
    assert "\n" not in message and features_path in message and f"delete {cache.path} to rebuild" in message

    head = os.path.join(cache.path, "HEAD.json")
    with open(head, "w") as f:
        f.write("{not json")
    with pytest.raises(ValueError) as info:
        TextEmbeddingCache(HashEncoder(), str(tmp_path))
    message = str(info.value)
    assert "\n" not in message and head in message and "to rebuild" in message


def test_stale_npz_and_other_encoder_builds_are_rebuilt_not_read(tmp_path):
    with open(tmp_path / "text_hash_L5.npz", "wb") as f:  # the single-file layout of older versions
        f.write(b"not the current layout")
    encoder = HashEncoder()
    cache = TextEmbeddingCache(encoder, str(tmp_path), CAPTIONS[:3])
    assert len(encoder.calls) == 1 and len(cache) == 3

    class WiderEncoder(HashEncoder):  # same name and max_length, other feature size
        feature_dim = 16

        def encode(self, texts):
            self.calls.append(list(texts))
            return np.ones((len(texts), 5, 16), np.float32), np.ones((len(texts), 5), bool)

    wider = WiderEncoder()
    rebuilt = TextEmbeddingCache(wider, str(tmp_path), CAPTIONS[:3])
    assert wider.calls == [CAPTIONS[:3]] and rebuilt.features.shape == (3, 5, 16)


def test_captions_with_one_hash_are_told_apart(tmp_path, monkeypatch):
    monkeypatch.setattr(cache_lib, "caption_hashes", lambda captions: np.zeros(len(list(captions)), np.uint64))
    cache = TextEmbeddingCache(HashEncoder(), str(tmp_path), CAPTIONS)
    np.testing.assert_array_equal(cache.index_of(CAPTIONS[::-1]), np.arange(len(CAPTIONS))[::-1])
    assert "absent" not in cache


def test_encoder_output_of_the_wrong_shape_is_refused(tmp_path):
    class Short(HashEncoder):
        def encode(self, texts):
            return super().encode(texts[:-1])

    with pytest.raises(ValueError, match=r"returned features \(1, 5, 8\)"):
        TextEmbeddingCache(Short(), str(tmp_path), ["a", "b"])
    assert len(TextEmbeddingCache(HashEncoder(), str(tmp_path))) == 0
