r"""Peak host memory of the text cache: building it for N distinct captions, then reading batches like the pipeline.

Two designs, each case in a fresh process whose peak RSS (VmHWM) is read from /proc/self/status at its end:

- in_memory: the single-file layout of earlier versions, reimplemented here as the baseline (`InMemoryTextCache`):
  every missing caption encoded in one call, all features [S, L, D] float16 and masks kept in RAM, saved as one
  .npz; reading loads the whole file and gathers rows from RAM.
- on_disk: `lumiere_jax.text.cache.TextEmbeddingCache`: captions encoded 512 at a time and streamed to .npy files;
  reading takes each batch's rows with os.pread and finds rows through the on-disk hash table.

Captions are generated ("a <colour> <object> <verb> <place>, number N"), all distinct, as in a folder of captioned
videos, and encoded by the project's MiniLM with configs/t2v.py's text_max_length. Reading gathers `--batches`
random batches of `--batch_size` captions (caption -> row -> float32 features and mask, as ToModelInputs does) in a
process that never loads the encoder's weights. Two alternatives that the design rejected are measured too:
reading the on_disk files through np.load(mmap_mode="r") (the pages it touches stay in the process's RSS) and
writing them through np.lib.format.open_memmap (every written page stays mapped until the end); the latter with a
stand-in encoder of MiniLM's output shape, since only the storage path differs.

    python benchmarks/text_cache_memory.py --captions=10000,100000 --out=text_cache_memory_cpu

Writes benchmarks/results/<out>.json with the machine.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

COLOURS = ("red", "green", "blue", "yellow", "purple", "orange", "white", "black")
OBJECTS = ("ball", "cube", "dog", "car", "bird", "kite", "boat", "robot")
VERBS = ("rolls across", "jumps over", "drifts through", "spins in", "races along", "rests in")
PLACES = ("a park", "the desert", "a kitchen", "the sea", "a forest", "a city street", "the snow")


def captions(n: int) -> list[str]:
    """n distinct captions, the same for a given n in every process."""
    out = []
    for i in range(n):
        c, o, v, p = (COLOURS[i % 8], OBJECTS[(i // 8) % 8], VERBS[(i // 64) % 6], PLACES[(i // 384) % 7])
        out.append(f"a {c} {o} {v} {p}, number {i}")
    return out


def memory() -> dict[str, float]:
    """VmHWM (peak RSS), VmRSS, RssAnon and RssFile of this process, MiB."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) / 1024
    return out


class EncoderSpec:
    """The shape of an encoder without its weights: enough to open a complete cache, which never encodes."""

    def __init__(self, name: str, max_length: int, feature_dim: int):
        self.name, self.max_length, self.feature_dim = name, max_length, feature_dim

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        raise AssertionError(f"the cache asked to encode {len(texts)} captions on reopening")


class RandomEncoder(EncoderSpec):
    """A stand-in of MiniLM's output shape (random float32 features): for measuring storage paths only."""

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(len(texts))
        return (rng.standard_normal((len(texts), self.max_length, self.feature_dim), np.float32),
                np.ones((len(texts), self.max_length), bool))


class InMemoryTextCache:
    """Baseline: the text cache as earlier versions kept it, every feature in RAM and one .npz on disk.

    Behaviour as it was: missing captions encoded in a single `encoder.encode` call, features concatenated in RAM
    (float16), the whole file rewritten (write then rename) on every addition, loaded whole on opening.
    """

    def __init__(self, encoder: Any, cache_dir: str, captions: Sequence[str] = (), dtype: Any = np.float16):
        self.encoder, self.dtype = encoder, np.dtype(dtype)
        self.path = os.path.join(cache_dir, f"text_{encoder.name}_L{encoder.max_length}.npz")
        length, dim = encoder.max_length, encoder.feature_dim
        self.strings: list[str] = []
        self.features = np.zeros((0, length, dim), self.dtype)
        self.masks = np.zeros((0, length), bool)
        if os.path.isfile(self.path):
            with np.load(self.path) as data:
                strings, features, masks = data["strings"], data["features"], data["masks"]
            self.strings = [str(s) for s in strings]
            self.features = features.astype(self.dtype)
            self.masks = masks.astype(bool)
        self._rows = {s: i for i, s in enumerate(self.strings)}
        missing = [s for s in dict.fromkeys(captions) if s not in self._rows]
        if missing:
            features, masks = encoder.encode(missing)
            self.features = np.concatenate([self.features, features.astype(self.dtype)])
            self.masks = np.concatenate([self.masks, masks.astype(bool)])
            for s in missing:
                self._rows[s] = len(self.strings)
                self.strings.append(s)
            fd, tmp = tempfile.mkstemp(dir=cache_dir, suffix=".npz.tmp")
            with os.fdopen(fd, "wb") as f:
                np.savez(f, strings=np.array(self.strings, dtype=str), features=self.features, masks=self.masks)
            os.replace(tmp, self.path)

    def lookup(self, captions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        rows = np.array([self._rows[c] for c in captions], np.int32)
        return self.features[rows].astype(np.float32), self.masks[rows]


def run_case(case: str, n: int, folder: str, batches: int, batch_size: int, name: str,
             max_length: int) -> dict[str, Any]:
    """One measurement, in this (fresh) process; reading never imports jax or the encoder."""
    from lumiere_jax.text.cache import TextEmbeddingCache

    texts = captions(n)
    result: dict[str, Any] = {"case": case, "captions": n}
    if case.startswith("build"):
        if case == "build_memmap_write":
            encoder: Any = RandomEncoder(name, max_length, 384)
        else:
            from lumiere_jax.text.encoders import load_text_encoder
            encoder = load_text_encoder(name, "", max_length)
            encoder.encode(texts[:encoder.batch_size])  # compile before timing
        result["setup"] = memory()
        start = time.perf_counter()
        if case == "build_in_memory":
            InMemoryTextCache(encoder, folder, texts)
        elif case == "build_on_disk":
            TextEmbeddingCache(encoder, folder, texts)
        else:
            memmap_write(encoder, folder, texts)
        result["seconds"] = time.perf_counter() - start
        result["captions_per_s"] = n / result["seconds"]
    else:
        spec = EncoderSpec(name, max_length, 384)
        result["setup"] = memory()
        start = time.perf_counter()
        if case == "read_in_memory":
            cache: Any = InMemoryTextCache(spec, folder)
            lookup = cache.lookup
        elif case == "read_on_disk":
            cache = TextEmbeddingCache(spec, folder)
            lookup = cache.lookup
        else:  # read_memmap: the on_disk files, mapped
            disk = TextEmbeddingCache(spec, folder)
            features = np.load(disk.features.path, mmap_mode="r")
            masks = np.load(disk.masks.path, mmap_mode="r")

            def lookup(batch: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
                rows = disk.index_of(batch)
                return features[rows].astype(np.float32), np.asarray(masks[rows])
        result["open_seconds"] = time.perf_counter() - start
        rng = np.random.default_rng(0)
        start = time.perf_counter()
        for _ in range(batches):
            batch = [texts[i] for i in rng.integers(0, n, batch_size)]
            features_batch, mask_batch = lookup(batch)
            assert features_batch.shape == (batch_size, max_length, 384) and mask_batch.shape == (batch_size,
                                                                                                 max_length)
        result["ms_per_batch"] = 1000 * (time.perf_counter() - start) / batches
    result["end"] = memory()
    result["peak_mb"] = result["end"]["VmHWM"]
    result["peak_above_setup_mb"] = result["peak_mb"] - result["setup"]["VmRSS"]
    return result


def memmap_write(encoder: Any, folder: str, texts: Sequence[str], chunk: int = 512) -> None:
    """The rejected writer: chunks encoded into one np.lib.format.open_memmap (features only)."""
    out = np.lib.format.open_memmap(os.path.join(folder, "features.npy"), "w+", np.float16,
                                    (len(texts), encoder.max_length, encoder.feature_dim))
    for start in range(0, len(texts), chunk):
        out[start:start + chunk] = encoder.encode(texts[start:start + chunk])[0]
    out.flush()


def text_config() -> tuple[int, str]:
    """configs/t2v.py's tiny text_max_length and text_encoder."""
    from configs import t2v
    config = t2v.get_config("size=tiny")
    return config.text_max_length, config.text_encoder


def child(case: str, n: int, folder: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), f"--case={case}", f"--captions={n}", f"--dir={folder}",
           f"--batches={args.batches}", f"--batch_size={args.batch_size}", f"--encoder={args.encoder}",
           f"--max_length={args.max_length}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{case} at {n} captions failed:\n{proc.stderr[-4000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"{case:20s} {n:>7,d} captions: peak {result['peak_mb']:8.1f} MiB "
          f"(+{result['peak_above_setup_mb']:.1f} over setup)", flush=True)
    return result


def ram_gib() -> float:
    with open("/proc/meminfo") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("MemTotal")) / 2 ** 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captions", default="10000,100000", help="comma-separated caption counts")
    parser.add_argument("--batches", type=int, default=2000, help="random batches gathered when reading")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--out", default="text_cache_memory_cpu")
    parser.add_argument("--case", default="", help=argparse.SUPPRESS)
    parser.add_argument("--dir", default="", help=argparse.SUPPRESS)
    parser.add_argument("--encoder", default="", help=argparse.SUPPRESS)
    parser.add_argument("--max_length", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    from lumiere_jax import host_memory
    host_memory.ensure_hugepage_malloc()  # as the trainer runs
    if args.case:
        print(json.dumps(run_case(args.case, int(args.captions), args.dir, args.batches, args.batch_size,
                                  args.encoder, args.max_length)))
        return

    import bench_common as bc
    max_length, name = text_config()
    args.encoder, args.max_length = name, max_length
    runs = []
    for n in [int(c) for c in args.captions.split(",")]:
        with tempfile.TemporaryDirectory() as tmp:
            folders = {d: os.path.join(tmp, d) for d in ("in_memory", "on_disk", "memmap_write")}
            for folder in folders.values():
                os.makedirs(folder)
            for design in ("in_memory", "on_disk"):
                build = child(f"build_{design}", n, folders[design], args)
                read = child(f"read_{design}", n, folders[design], args)
                size = sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(folders[design])
                           for f in files)
                runs.append({"design": design, "captions": n, "build": build, "read": read, "disk_mb": size / 2 ** 20})
            runs.append({"design": "on_disk_memmap_read", "captions": n, "alternative": True,
                         "read": child("read_memmap", n, folders["on_disk"], args)})
            runs.append({"design": "memmap_write", "captions": n, "alternative": True,
                         "build": child("build_memmap_write", n, folders["memmap_write"], args)})
    rows = []
    for r in runs:
        build, read = r.get("build"), r.get("read")
        rows.append([r["design"], f"{r['captions']:,}",
                     f"{build['peak_mb']:.0f}" if build else "-", f"{read['peak_mb']:.0f}" if read else "-",
                     f"{build['captions_per_s']:.0f}" if build and r["design"] != "memmap_write" else "-",
                     f"{read['ms_per_batch']:.2f}" if read else "-"])
    bc.print_table(f"Text cache: peak host memory (MiB) for N distinct captions, {name}, L={max_length}",
                   ["design", "captions", "build peak", "read peak", "encode captions/s", "ms per batch"], rows)
    bc.write_json(args.out, {
        "machine": bc.machine(), "cores": os.cpu_count(), "ram_gib": ram_gib(),
        "command": "python benchmarks/text_cache_memory.py " + " ".join(sys.argv[1:]),
        "encoder": name, "text_max_length": max_length, "feature_dim": 384, "dtype": "float16",
        "batches": args.batches, "batch_size": args.batch_size, "chunk_size": 512,
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""), "runs": runs})


if __name__ == "__main__":
    main()
