"""On-disk cache of frozen text-encoder features, so training never runs the encoder.

Every caption's token features are computed once per (encoder, max_length) and
kept in a folder `text_<encoder>_L<max_length>/` under the cache directory; the
data pipeline gathers rows of it by index. Host memory does not grow with the
number of captions: missing captions are encoded in fixed-size chunks streamed
to disk, rows are read on demand with `os.pread` (nothing is mapped into or
kept in the process), and the caption -> row lookup is a sorted hash table on
disk.

Layout: `HEAD.json` names the current generation, a subfolder with
features.npy [S, L, D] (float16 by default), masks.npy [S, L] bool, the
captions as UTF-8 (captions.utf8 with offsets.npy [S + 1]) and the lookup
(hashes.npy: sorted 64-bit caption hashes, rows.npy: the row of each). Adding
captions writes a new generation and then replaces HEAD.json, so a crash or a
concurrent reader never sees half a cache; existing rows keep their index.

Example:
    cache = TextEmbeddingCache(encoder, "runs/text_cache", captions)
    features, mask = cache.lookup(batch_captions)  # [B, L, D], [B, L]
    rows = cache.index_of(batch_captions)          # or gather cache.features[rows]
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import weakref
from collections.abc import Iterable, Sequence
from typing import Any, Protocol, overload

import numpy as np

FORMAT = 2  # HEAD.json's "format"; other values are rebuilt, not read
HEAD = "HEAD.json"
CHUNK_SIZE = 512  # captions per encoder call and per write: bounds the float32 features held at once
_COPY_BYTES = 64 << 20  # bytes per read when a new generation copies the previous one's rows


class TextEncoder(Protocol):
    """What the cache needs from a text encoder (e.g. MiniLMTextEncoder)."""

    name: str
    feature_dim: int
    max_length: int

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Returns features [N, L, D] and a bool mask [N, L]."""
        ...


def caption_hashes(captions: Iterable[str]) -> np.ndarray:
    """Stable 64-bit hashes (BLAKE2b) of the captions' UTF-8 bytes, as uint64 [N]."""
    digests = b"".join(hashlib.blake2b(c.encode("utf-8"), digest_size=8).digest() for c in captions)
    return np.frombuffer(digests, "<u8").astype(np.uint64)


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


class NpyRows:
    """Rows of a C-order .npy file, read on demand with os.pread.

    Array-like: `shape`, `dtype`, `len()`, and indexing by an int, a slice or an
    int array along the first axis returns an ndarray. Only the requested rows
    are read; nothing is mapped, so the process holds none of the file and
    reader threads can share one instance.
    """

    def __init__(self, path: str, dtype: Any = None):
        """Opens `path`; rows come back as `dtype` (default: the stored dtype)."""
        self.path = path
        fd = os.open(path, os.O_RDONLY)
        self._finalizer = weakref.finalize(self, os.close, fd)
        self._fd = fd
        try:
            with open(fd, "rb", closefd=False) as f:
                f.seek(0)
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, fortran, stored = np.lib.format.read_array_header_1_0(f)
                else:
                    shape, fortran, stored = np.lib.format.read_array_header_2_0(f)
                self._offset = f.tell()
            if fortran or stored.hasobject or not shape:
                raise ValueError(f"expected a C-order array of at least one axis, got shape {shape} "
                                 f"dtype {stored} fortran_order={fortran}")
            self.stored_dtype = np.dtype(stored)
            self.dtype = np.dtype(dtype) if dtype is not None else self.stored_dtype
            self.shape: tuple[int, ...] = tuple(int(n) for n in shape)
            self._row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.stored_dtype.itemsize
            need = self._offset + self.shape[0] * self._row_bytes
            size = os.fstat(fd).st_size
            if size < need:
                raise ValueError(f"truncated: {size} bytes, the header needs {need}")
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self._finalizer()

    def __repr__(self) -> str:
        return f"NpyRows({self.path!r}, shape={self.shape}, dtype={self.dtype})"

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    @overload
    def __getitem__(self, key: int | np.integer) -> np.ndarray: ...
    @overload
    def __getitem__(self, key: slice | Sequence[int] | np.ndarray) -> np.ndarray: ...

    def __getitem__(self, key: Any) -> np.ndarray:
        n = self.shape[0]
        if isinstance(key, (int, np.integer)):
            return self._read(np.array([key]))[0]
        if isinstance(key, slice):
            start, stop, step = key.indices(n)
            if step == 1:
                return self._read_range(start, max(start, stop))
            return self._read(np.arange(start, stop, step))
        rows = np.asarray(key)
        if rows.dtype == bool or not np.issubdtype(rows.dtype, np.integer):
            raise IndexError(f"{self.path}: index rows with ints, an int array or a slice, not {rows.dtype}.")
        return self._read(rows.reshape(-1)).reshape(rows.shape + self.shape[1:])

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        out = self._read_range(0, self.shape[0])
        return out if dtype is None else out.astype(dtype)

    def _read(self, rows: np.ndarray) -> np.ndarray:
        n = self.shape[0]
        if rows.size and (rows.min() < -n or rows.max() >= n):
            raise IndexError(f"row index out of range for {n} rows of {self.path}")
        rows = np.where(rows < 0, rows + n, rows)
        out = np.empty((len(rows),) + self.shape[1:], self.stored_dtype)
        flat = out.reshape(len(rows), -1).view(np.uint8)
        for i, row in enumerate(rows):
            self._fill(flat[i], self._offset + int(row) * self._row_bytes)
        return out if self.dtype == self.stored_dtype else out.astype(self.dtype)

    def _read_range(self, start: int, stop: int) -> np.ndarray:
        out = np.empty((stop - start,) + self.shape[1:], self.stored_dtype)
        if out.size:
            self._fill(out.reshape(-1).view(np.uint8), self._offset + start * self._row_bytes)
        return out if self.dtype == self.stored_dtype else out.astype(self.dtype)

    def _fill(self, buffer: np.ndarray, offset: int) -> None:
        view = memoryview(buffer)
        while view.nbytes:
            got = os.preadv(self._fd, [view], offset)
            if got <= 0:
                raise ValueError(f"{self.path} ended early (truncated since it was opened?); delete it to rebuild.")
            view, offset = view[got:], offset + got


class _NpyWriter:
    """Streams rows into a new .npy file of a known shape, chunk by chunk, so no whole array is held."""

    def __init__(self, path: str, dtype: Any, shape: tuple[int, ...]):
        self.path, self.dtype, self.shape = path, np.dtype(dtype), shape
        self.rows = 0
        self._file = open(path, "wb")
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_2_0(self._file, header)

    def write(self, chunk: np.ndarray) -> None:
        if chunk.shape[1:] != self.shape[1:] or self.rows + len(chunk) > self.shape[0]:
            raise ValueError(f"{self.path}: rows of shape {chunk.shape} do not fit an array of shape {self.shape} "
                             f"after {self.rows} rows.")
        self._file.write(memoryview(np.ascontiguousarray(chunk, self.dtype)).cast("B"))
        self.rows += len(chunk)

    def finish(self) -> None:
        """Checks every row was written and syncs the file to disk (before any rename makes it current)."""
        if self.rows != self.shape[0]:
            raise ValueError(f"{self.path}: {self.rows} of {self.shape[0]} rows written.")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()

    def __enter__(self) -> _NpyWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()


def _save(path: str, array: np.ndarray) -> None:
    with _NpyWriter(path, array.dtype, array.shape) as writer:
        writer.write(array)
        writer.finish()


class _RawFile:
    """A read-only file read with os.pread; closed when the last reference goes."""

    def __init__(self, path: str):
        self.path = path
        fd = os.open(path, os.O_RDONLY)
        self._finalizer = weakref.finalize(self, os.close, fd)
        self.fd = fd
        self.size = os.fstat(fd).st_size

    def read(self, start: int, stop: int) -> bytes:
        out = b""
        while start + len(out) < stop:
            block = os.pread(self.fd, stop - start - len(out), start + len(out))
            if not block:
                raise ValueError(f"{self.path} ended early (truncated since it was opened?); delete it to rebuild.")
            out += block
        return out

    def close(self) -> None:
        self._finalizer()


class _Generation:
    """One immutable, complete version of a cache: its row data and caption lookup, opened for reading.

    Readers take the cache's current generation once per call, so `add` swapping in a new one (and the old
    one's files being deleted: open files stay readable) never mixes two versions.
    """

    def __init__(self, name: str | None, size: int, features: Any, masks: Any, hashes: np.ndarray,
                 rows: np.ndarray, offsets: np.ndarray, text: _RawFile | None):
        self.name, self.size = name, size
        self.features, self.masks = features, masks  # [S, L, D], [S, L]
        self.hashes, self.rows = hashes, rows  # [S] sorted caption hashes, and the row of each
        self.offsets, self.text = offsets, text  # [S + 1] byte offsets into captions.utf8

    @classmethod
    def empty(cls, length: int, dim: int, dtype: np.dtype) -> _Generation:
        return cls(None, 0, np.zeros((0, length, dim), dtype), np.zeros((0, length), bool),
                   np.zeros(0, np.uint64), np.zeros(0, np.int64), np.zeros(1, np.int64), None)

    def caption_bytes(self, row: int) -> bytes:
        return self._read(int(self.offsets[row]), int(self.offsets[row + 1]))

    def find(self, captions: Sequence[str]) -> np.ndarray:
        """Rows of captions as int64 [N], -1 where absent: hash, binary search, then compare the stored text."""
        found = np.full(len(captions), -1, np.int64)
        if not self.size or not len(captions):
            return found
        wanted = caption_hashes(captions)
        positions = np.searchsorted(self.hashes, wanted)
        first = np.minimum(positions, self.size - 1)
        hit = np.asarray(self.hashes[first]) == wanted
        rows = np.asarray(self.rows[first], np.int64)
        starts = np.asarray(self.offsets[rows], np.int64).tolist()
        stops = np.asarray(self.offsets[rows + 1], np.int64).tolist()
        for i in np.flatnonzero(hit).tolist():
            encoded = captions[i].encode("utf-8")
            if self._read(starts[i], stops[i]) == encoded:
                found[i] = rows[i]
                continue
            pos = int(positions[i]) + 1  # two captions with one hash: a later entry may be ours
            while pos < self.size and self.hashes[pos] == wanted[i]:
                row = int(self.rows[pos])
                if self.caption_bytes(row) == encoded:
                    found[i] = row
                    break
                pos += 1
        return found

    def _read(self, start: int, stop: int) -> bytes:
        return b"" if stop == start or self.text is None else self.text.read(start, stop)


class _Strings(Sequence[str]):
    """The cached captions in row order, decoded on access from the generation's captions.utf8."""

    def __init__(self, cache: TextEmbeddingCache):
        self._cache = cache

    def __len__(self) -> int:
        return len(self._cache)

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> list[str]: ...

    def __getitem__(self, i: int | slice) -> str | list[str]:
        generation = self._cache._generation
        if isinstance(i, slice):
            return [generation.caption_bytes(j).decode("utf-8") for j in range(*i.indices(generation.size))]
        n = generation.size
        if not -n <= i < n:
            raise IndexError(f"caption row {i} out of range for {n} rows")
        return generation.caption_bytes(i % n).decode("utf-8")


class TextEmbeddingCache:
    """Token features and masks for a set of strings, computed once and kept on disk.

    Attributes:
        path: the cache's folder; its name holds the encoder name and max_length.
        strings: the cached strings, in row order (a read-only sequence).
        features: [S, L, D] array-like in `dtype` (float16 by default), rows read on demand.
        masks: [S, L] bool array-like, rows read on demand.
    """

    def __init__(
        self,
        encoder: TextEncoder,
        cache_dir: str,
        captions: Sequence[str] = (),
        dtype: type[np.floating] = np.float16,
        chunk_size: int = CHUNK_SIZE,
    ):
        """Opens the cache for `encoder` if present, then encodes any missing captions, `chunk_size` at a time."""
        if np.dtype(dtype) not in (np.float16, np.float32):
            raise ValueError(f"dtype={dtype!r} is not supported; use np.float16 or np.float32.")
        if chunk_size < 1:
            raise ValueError(f"chunk_size={chunk_size} must be >= 1.")
        self.encoder = encoder
        self.dtype = np.dtype(dtype)
        self.chunk_size = chunk_size
        self.path = os.path.join(os.fspath(cache_dir), f"text_{encoder.name}_L{encoder.max_length}")
        self.strings: Sequence[str] = _Strings(self)
        self._generation = self._open()
        self.add(captions)

    @property
    def features(self) -> Any:
        """[S, L, D] rows in `dtype`, read from disk on indexing (an NpyRows; an empty ndarray before any row)."""
        return self._generation.features

    @property
    def masks(self) -> Any:
        """[S, L] bool rows, read from disk on indexing."""
        return self._generation.masks

    # -- reading ---------------------------------------------------------------------------------------------

    def _empty(self) -> _Generation:
        return _Generation.empty(self.encoder.max_length, self.encoder.feature_dim, self.dtype)

    def _read_head(self) -> dict[str, Any] | None:
        head = os.path.join(self.path, HEAD)
        try:
            with open(head) as f:
                data = json.load(f)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            if data.get("format") != FORMAT:
                return None  # another layout: rebuilt on the next add
            if not isinstance(data.get("generation"), str) or not isinstance(data.get("rows"), int):
                raise ValueError("no generation or rows")
            return data
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise ValueError(f"Text cache file {head} is unreadable ({_one_line(e)}); "
                             f"delete {self.path} to rebuild.") from e

    def _open(self) -> _Generation:
        """Opens the generation HEAD.json names; one deleted under us by a writer sends us back to HEAD.json."""
        for _ in range(5):
            head = self._read_head()
            if head is None:
                return self._empty()
            try:
                return self._open_generation(head["generation"], head["rows"])
            except FileNotFoundError:
                again = self._read_head()
                if again is None or again["generation"] == head["generation"]:
                    return self._empty()  # its files are gone: rebuilt on the next add
        raise ValueError(f"Text cache {self.path} kept changing while being opened; retry.")

    def _open_generation(self, name: str, rows: int) -> _Generation:
        folder = os.path.join(self.path, name)
        length, dim = self.encoder.max_length, self.encoder.feature_dim
        opened: list[NpyRows | _RawFile] = []
        current = folder
        try:
            current = os.path.join(folder, "features.npy")
            features = NpyRows(current, self.dtype)
            opened.append(features)
            if features.shape[1:] != (length, dim):
                # Another encoder build under the same name: recomputing beats serving features of the wrong size.
                features.close()
                return self._empty()
            current = os.path.join(folder, "masks.npy")
            masks = NpyRows(current, bool)
            opened.append(masks)
            lookup = {}
            for part in ("hashes", "rows", "offsets"):
                current = os.path.join(folder, part + ".npy")
                lookup[part] = np.load(current, mmap_mode="r", allow_pickle=False)
            current = os.path.join(folder, "captions.utf8")
            text = _RawFile(current)
            opened.append(text)
            hashes, order, offsets = lookup["hashes"], lookup["rows"], lookup["offsets"]
            if features.shape[0] != rows or masks.shape != (rows, length):
                current = os.path.join(folder, "features.npy" if features.shape[0] != rows else "masks.npy")
                raise ValueError(f"holds {len(features) if features.shape[0] != rows else masks.shape} rows, "
                                 f"HEAD.json says {rows}")
            if hashes.shape != (rows,) or order.shape != (rows,) or offsets.shape != (rows + 1,):
                current = os.path.join(folder, "hashes.npy")
                raise ValueError(f"the lookup arrays {hashes.shape}, {order.shape}, {offsets.shape} do not match "
                                 f"{rows} rows")
            if int(offsets[-1]) != text.size:
                raise ValueError(f"{text.size} bytes, offsets.npy says {int(offsets[-1])}")
        except FileNotFoundError:
            for part in opened:
                part.close()
            raise
        except (OSError, ValueError) as e:
            for part in opened:
                part.close()
            raise ValueError(f"Text cache file {current} is unreadable ({_one_line(e)}); "
                             f"delete {self.path} to rebuild.") from e
        return _Generation(name, rows, features, masks, hashes, order, offsets, text)

    def __len__(self) -> int:
        return self._generation.size

    def __contains__(self, caption: object) -> bool:
        return isinstance(caption, str) and bool(self._generation.find([caption])[0] >= 0)

    def index_of(self, captions: Sequence[str]) -> np.ndarray:
        """Rows of `captions` in `features`/`masks`, as int32 [N]; KeyError names a missing one."""
        return self._rows_of(self._generation, captions)

    def lookup(self, captions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Returns float32 features [N, L, D] and bool mask [N, L] for cached captions."""
        generation = self._generation
        rows = self._rows_of(generation, captions)
        return np.asarray(generation.features[rows], np.float32), np.asarray(generation.masks[rows], bool)

    def _rows_of(self, generation: _Generation, captions: Sequence[str]) -> np.ndarray:
        if isinstance(captions, str):
            raise TypeError("index_of() and lookup() take a sequence of strings, not a single string.")
        rows = generation.find(captions)
        missing = np.flatnonzero(rows < 0)
        if missing.size:
            raise KeyError(
                f"Caption {captions[int(missing[0])]!r} is not in the text cache {self.path}; "
                "pass it when building the cache or call add()."
            )
        return rows.astype(np.int32)

    # -- writing ---------------------------------------------------------------------------------------------

    def add(self, captions: Sequence[str]) -> None:
        """Encodes captions not yet cached, chunk by chunk, into a new generation that then becomes current."""
        if isinstance(captions, str):
            raise TypeError("add() takes a sequence of strings, not a single string.")
        base = self._generation
        unique = list(dict.fromkeys(captions))
        missing = [c for c, row in zip(unique, base.find(unique).tolist()) if row < 0]
        if not missing:
            return
        os.makedirs(self.path, exist_ok=True)
        # Build in a temporary folder, then rename it and point HEAD.json at it: a crash, or an exception from the
        # encoder, leaves the previous generation current and readable.
        tmp = tempfile.mkdtemp(prefix="tmp-", dir=self.path)
        name = "gen-" + os.path.basename(tmp)[len("tmp-"):]
        try:
            self._write_generation(base, tmp, missing)
            os.rename(tmp, os.path.join(self.path, name))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        rows = base.size + len(missing)
        fd, head_tmp = tempfile.mkstemp(prefix="HEAD-", suffix=".tmp", dir=self.path)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump({"format": FORMAT, "generation": name, "rows": rows,
                           "encoder": self.encoder.name, "max_length": self.encoder.max_length,
                           "feature_dim": self.encoder.feature_dim, "dtype": self.dtype.name}, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(head_tmp, os.path.join(self.path, HEAD))
        except BaseException:
            if os.path.exists(head_tmp):
                os.unlink(head_tmp)
            shutil.rmtree(os.path.join(self.path, name), ignore_errors=True)
            raise
        self._generation = self._open_generation(name, rows)
        if base.name is not None:
            # Readers that opened it keep their open files; new readers follow HEAD.json.
            shutil.rmtree(os.path.join(self.path, base.name), ignore_errors=True)

    def _write_generation(self, base: _Generation, folder: str, missing: list[str]) -> None:
        """Writes base's rows and then the missing captions' into folder, `chunk_size` captions at a time."""
        length, dim = self.encoder.max_length, self.encoder.feature_dim
        total = base.size + len(missing)
        with (_NpyWriter(os.path.join(folder, "features.npy"), self.dtype, (total, length, dim)) as features,
              _NpyWriter(os.path.join(folder, "masks.npy"), bool, (total, length)) as masks):
            step = max(1, _COPY_BYTES // (length * dim * self.dtype.itemsize))
            for start in range(0, base.size, step):
                features.write(base.features[start:start + step])
                masks.write(base.masks[start:start + step])
            for start in range(0, len(missing), self.chunk_size):
                texts = missing[start:start + self.chunk_size]
                chunk_features, chunk_masks = self.encoder.encode(texts)  # [n, L, D], [n, L]
                if chunk_features.shape != (len(texts), length, dim) or chunk_masks.shape != (len(texts), length):
                    raise ValueError(
                        f"Text encoder {self.encoder.name!r} returned features {chunk_features.shape} and mask "
                        f"{chunk_masks.shape} for {len(texts)} texts; expected ({len(texts)}, {length}, {dim}) "
                        f"and ({len(texts)}, {length}).")
                features.write(chunk_features)
                masks.write(chunk_masks.astype(bool))
            features.finish()
            masks.finish()
        self._write_captions(base, folder, missing)

    def _write_captions(self, base: _Generation, folder: str, missing: list[str]) -> None:
        """captions.utf8 and offsets.npy (base's bytes, then the new captions'), hashes.npy and rows.npy."""
        lengths = np.fromiter((len(c.encode("utf-8")) for c in missing), np.int64, len(missing))
        end = int(base.offsets[-1])
        offsets = np.concatenate([np.asarray(base.offsets, np.int64), end + np.cumsum(lengths)])
        with open(os.path.join(folder, "captions.utf8"), "wb") as f:
            for start in range(0, end, _COPY_BYTES):
                f.write(base.text.read(start, min(end, start + _COPY_BYTES)) if base.text else b"")
            for start in range(0, len(missing), self.chunk_size):
                f.write("".join(missing[start:start + self.chunk_size]).encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        by_row = np.empty(base.size + len(missing), np.uint64)
        by_row[np.asarray(base.rows, np.int64)] = base.hashes
        by_row[base.size:] = caption_hashes(missing)
        order = np.argsort(by_row, kind="stable")
        _save(os.path.join(folder, "offsets.npy"), offsets)
        _save(os.path.join(folder, "hashes.npy"), by_row[order])
        _save(os.path.join(folder, "rows.npy"), order.astype(np.int64))


# Captions the token statistics are taken from (evenly spaced over a larger cache): enough for a stable mean and
# spread per dimension, a bounded read however many captions a source holds.
STATISTICS_CAPTIONS = 8192


def token_statistics(features: Any, masks: Any, max_captions: int = STATISTICS_CAPTIONS,
                     chunk: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and standard deviation [D] of the real (unmasked) tokens of up to `max_captions`
    caption rows, evenly spaced over `features` [S, L, D] / `masks` [S, L] (a cache's rows, read in chunks so
    host memory stays flat). What `STUNet(text_norm="standardize")` shifts and scales the tokens by."""
    n = len(features)
    if n == 0:
        raise ValueError("No captions to take token statistics from: the text cache is empty.")
    rows = np.unique(np.linspace(0, n - 1, min(n, max_captions)).astype(np.int64))
    total, total_sq, count = np.zeros(features.shape[-1]), np.zeros(features.shape[-1]), 0
    for i in range(0, len(rows), chunk):
        x, m = np.asarray(features[rows[i:i + chunk]], np.float64), np.asarray(masks[rows[i:i + chunk]], bool)
        tokens = x[m]  # [N, D]
        total, total_sq, count = total + tokens.sum(0), total_sq + np.square(tokens).sum(0), count + len(tokens)
    mean = total / max(count, 1)
    std = np.sqrt(np.maximum(total_sq / max(count, 1) - np.square(mean), 0.0))
    return mean.astype(np.float32), std.astype(np.float32)
