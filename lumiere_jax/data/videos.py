"""A folder (or manifest) of captioned video files as the model's clips: listed, decoded once, stored, read back.

    sources = load_videos(config.data)   # data.dataset="videos", data.videos=PATH
    example = sources["train"][0]        # {"video": uint8 [T, R, R, 3], "caption": str, "source": str, "start": s}

Listing: data.videos is a folder, searched recursively for VIDEO_EXTENSIONS (sorted), or a .csv / .jsonl
manifest. A video's caption is the first of: its row in a manifest (`captions.csv` with `path,caption` columns, or
`captions.jsonl` with one {"path": ..., "caption": ...} per line; in the folder or given as data.videos; paths are
relative to the manifest's folder), then a sidecar `NAME.txt` beside it. Whitespace in captions is collapsed.

Preparation, once: every listed video is decoded at about the final size (decode.read_video) in
data.prepare_workers processes, resampled to data.fps by presentation time, cut into clips of data.num_frames
frames every data.clip_stride seconds (0: back to back) and fitted to the square data.resolution
(frames.fit_frames, data.resize). The clips are written as array_record by a tfds builder whose config name is a
hash of the listing (every video's path, size, mtime and caption, and every skipped file) and of the preprocessing
settings: a change of either prepares again, nothing else does. Whole videos are held out as the test split, by a
hash of their path (and data.seed).

Images (data.images, kind=IMAGES: IMAGE_EXTENSIONS, listed and captioned the same way) go through the same path
as single-frame clips [1, R, R, 3]: the text-to-image model's data, or the image share of a data.mixture.

Bad files never stop a build: each is skipped, counted by reason (REASONS) and named with its reason in
`skipped.jsonl` beside the prepared data. A source with no usable clip is one ValueError line.
"""

from __future__ import annotations

import collections
import concurrent.futures
import csv
import dataclasses
import glob
import hashlib
import json
import logging
import math
import multiprocessing
import os
import posixpath
import shutil
import tempfile
import threading
import time
from typing import Any, Callable, Iterable, Iterator, NamedTuple, Sequence

import ml_collections
import numpy as np
import tensorflow_datasets as tfds
import tqdm
from array_record.python import array_record_module  # what tfds reads the prepared shards with
from etils import epath
from tensorflow_datasets.core.data_sources import base as tfds_sources

from lumiere_jax import paths
from lumiere_jax.data import decode
from lumiere_jax.data import frames as frames_lib

log = logging.getLogger("lumiere_jax")

FORMAT_VERSION = 1  # bump when the preparation's output changes for the same inputs and settings
VIDEO_EXTENSIONS = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".gif")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
MANIFESTS = ("captions.csv", "captions.jsonl")  # looked for in a data.videos folder, in this order
SPLITS = ("train", "test")
SKIPPED_FILE = "skipped.jsonl"
LISTING_FILE = "listing.json"  # beside skipped.jsonl: the listing that was prepared, to say what changed since



@dataclasses.dataclass(frozen=True)
class Kind:
    """What a source's files are: the config key naming it, the word for them, the extensions listed."""

    key: str
    noun: str
    extensions: tuple[str, ...]


VIDEOS = Kind("data.videos", "videos", VIDEO_EXTENSIONS)
IMAGES = Kind("data.images", "images", IMAGE_EXTENSIONS)  # single-frame clips (num_frames 1), decoded the same way

# Why a file was skipped -> how the summary and the error line say it.
REASONS = {
    "missing_caption": "without a caption (no manifest row, no NAME.txt beside it)",
    "empty_caption": "with an empty caption",
    "caption_not_utf8": "with a caption that is not UTF-8",
    "duplicate_path": "listed twice",
    "missing_file": "listed but missing",
    "unsupported_extension": "of an unsupported type",
    "empty_file": "empty (0 bytes)",
    "undecodable": "undecodable",
    "no_video_stream": "without a video stream",
    "no_frames": "without frames",
    "too_short": "shorter than one clip",
}


# ------------------------------------------------------------------------------------------------------ listing


@dataclasses.dataclass(frozen=True)
class Entry:
    """A listed video: its file, its caption and what identifies its content for the cache."""

    path: str  # absolute, normalized
    name: str  # relative to the listing's root: what records and the split hash use
    caption: str
    size: int
    mtime_ns: int


@dataclasses.dataclass
class Listing:
    root: str  # the folder, or the manifest's folder
    manifest: str | None  # the manifest that gave captions, if any
    entries: list[Entry]
    skipped: list[dict[str, str]]  # {"path", "reason", "detail"}, reason a key of REASONS


def list_videos(videos: str, kind: Kind = VIDEOS) -> Listing:
    """The captioned videos (or images, for kind=IMAGES) of a folder or manifest, and the files skipped while
    listing them (with reasons).

    Raises ValueError (naming the file, the line and the fix) on a malformed manifest.
    """
    given = paths.resolve(videos)  # a local folder or file, or a gs:// URL
    path = paths.normalize(os.fspath(given))
    if given.is_dir():
        root = path
        manifest = next((os.path.join(path, m) for m in MANIFESTS if (given / m).is_file()), None)
        scanned = _scan(given, kind.extensions)
    elif given.is_file() and path.lower().endswith((".csv", ".jsonl")):
        root, manifest, scanned = os.path.dirname(path), path, []
    elif given.exists():
        raise ValueError(f"{kind.key}={videos} is neither a folder of {kind.noun} nor a .csv / .jsonl captions "
                         f"manifest: give the folder, or a captions.csv (path,caption) or captions.jsonl file.")
    else:
        raise ValueError(f"{kind.key}={videos} does not exist: give a folder of {kind.noun} or a captions.csv / "
                         f"captions.jsonl manifest.")

    skipped: list[dict[str, str]] = []
    listed: dict[str, tuple[str | None, str]] = {}  # path -> (caption or None, where it came from)
    order: list[str] = []
    if manifest:
        rows = _read_csv(manifest) if manifest.lower().endswith(".csv") else _read_jsonl(manifest)
        where = os.path.basename(manifest)
        for line, raw, caption in rows:
            full = paths.normalize(os.path.join(root, os.path.expanduser(raw))) if raw.strip() else ""
            detail = f"{where} line {line}"
            if not full or full in listed:
                skipped.append(_skip(full or raw, "duplicate_path" if full else "missing_file",
                                     detail + (": listed before" if full else ": empty path")))
                continue
            listed[full] = (caption, detail)
            if not full.lower().endswith(kind.extensions):
                skipped.append(_skip(full, "unsupported_extension",
                                     f"{detail}: not one of {' '.join(kind.extensions)}"))
            elif not epath.Path(full).is_file():
                skipped.append(_skip(full, "missing_file", f"{detail}: no such file"))
            else:
                order.append(full)
    if scanned:  # a folder: its videos (sorted) and the manifest's rows outside it
        order = sorted(set(scanned) | set(order))

    entries = []
    for full in order:
        if full in listed:
            caption, where = listed[full]
            reason = _caption_problem(caption)
        else:
            caption, where, reason = _sidecar(full)
        if reason:
            skipped.append(_skip(full, reason, where))
            continue
        try:
            size, mtime_ns = _size_and_mtime(full)
        except OSError as e:  # a dangling link, or gone since
            skipped.append(_skip(full, "missing_file", f"{type(e).__name__}: {e.strerror or e}"))
            continue
        entries.append(Entry(path=full, name=posixpath.relpath(full, root), caption=_clean(caption),
                             size=size, mtime_ns=mtime_ns))
    return Listing(root=root, manifest=manifest, entries=entries, skipped=skipped)


def _scan(folder: epath.Path, extensions: tuple[str, ...]) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in folder.walk():
        dirnames.sort()
        found += [os.path.join(os.fspath(dirpath), f) for f in filenames if f.lower().endswith(extensions)]
    return sorted(paths.normalize(f) for f in found)


def _size_and_mtime(path: str) -> tuple[int, int]:
    """A file's size and modification time (ns): the cache key's view of its content."""
    if paths.is_remote(path):
        st = epath.Path(path).stat()
        return int(st.length), int(st.mtime * 1e9)
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


def _skip(path: str, reason: str, detail: str = "") -> dict[str, str]:
    assert reason in REASONS, reason
    return {"path": path, "reason": reason, "detail": detail}


def _clean(caption: str) -> str:
    return " ".join(caption.split())


def _not_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a byte that was not UTF-8, kept as a lone surrogate (surrogateescape)
        return True
    return False


def _caption_problem(caption: str | None) -> str | None:
    if caption is None:
        return "missing_caption"
    if _not_utf8(caption):
        return "caption_not_utf8"
    if not _clean(caption):
        return "empty_caption"
    return None


def _sidecar(video: str) -> tuple[str | None, str, str | None]:
    """(caption, where, problem) from NAME.txt beside the video."""
    txt = os.path.splitext(video)[0] + ".txt"
    where = os.path.basename(txt)
    if not epath.Path(txt).is_file():
        return None, f"no {where} beside it and no manifest row", "missing_caption"
    raw = epath.Path(txt).read_bytes()
    try:
        caption = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        return None, f"{where}: byte {e.start} is not UTF-8", "caption_not_utf8"
    return caption, where, _caption_problem(caption)


def _manifest_text(manifest: str) -> str:
    # Bytes that are not UTF-8 survive as lone surrogates: only the cells holding them are skipped.
    return epath.Path(manifest).read_bytes().decode("utf-8-sig", "surrogateescape")


def _read_csv(manifest: str) -> list[tuple[int, str, str | None]]:
    """(line, path, caption or None) per row of a CSV whose header names `path` and `caption` columns."""
    fix = "the first line must name the columns, e.g. 'path,caption' (other columns are ignored)"
    reader = csv.reader(_manifest_text(manifest).splitlines(keepends=True))
    rows = []
    try:
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{manifest} line 1: the manifest is empty: {fix}.")
        names = [h.strip().lower() for h in header]
        for column in ("path", "caption"):
            if column not in names:
                raise ValueError(f"{manifest} line 1: no '{column}' column in the header {header}: {fix}.")
        p, c = names.index("path"), names.index("caption")
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue  # blank line
            rows.append((reader.line_num, row[p] if p < len(row) else "", row[c] if c < len(row) else None))
    except csv.Error as e:
        raise ValueError(f"{manifest} line {reader.line_num}: not valid CSV ({e}): quote cells that hold commas, "
                         f"quotes or line breaks (\"a, b\"; a quote inside is doubled: \"\").") from None
    return rows


def _read_jsonl(manifest: str) -> list[tuple[int, str, str | None]]:
    """(line, path, caption or None) per line of a JSON lines manifest."""
    example = '{"path": "clips/a.mp4", "caption": "a dog runs"}'
    rows = []
    for line, text in enumerate(_manifest_text(manifest).split("\n"), start=1):
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{manifest} line {line}: not JSON ({e.msg} at column {e.colno}): each line must be one "
                             f"object, e.g. {example}.") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("path"), str):
            raise ValueError(f"{manifest} line {line}: no \"path\" string in {text.strip()[:80]}: each line must be "
                             f"one object, e.g. {example}.")
        caption = obj.get("caption")
        if caption is not None and not isinstance(caption, str):
            raise ValueError(f"{manifest} line {line}: \"caption\" is a {type(caption).__name__}, not a string: "
                             f"each line must be one object, e.g. {example}.")
        rows.append((line, obj["path"], caption))
    return rows


# ------------------------------------------------------------------------------------------------ preparation


def settings_of(data: ml_collections.ConfigDict, kind: Kind = VIDEOS) -> dict[str, Any]:
    """The preprocessing settings the prepared clips depend on (the cache key with the listing). Images give
    single-frame clips whatever data.num_frames is."""
    return {"kind": kind.noun, "num_frames": 1 if kind is IMAGES else int(data.num_frames),
            "resolution": int(data.resolution), "fps": float(data.fps),
            "clip_stride": float(data.clip_stride), "resize": str(data.resize),
            "test_fraction": float(data.test_fraction), "seed": int(data.seed), "format": FORMAT_VERSION}


def source_path(data: ml_collections.ConfigDict, kind: Kind = VIDEOS) -> str:
    """The folder or manifest that config.data names for `kind` (data.videos or data.images)."""
    return data.images if kind is IMAGES else data.videos


def _kind_of(meta: dict[str, Any]) -> Kind:
    return IMAGES if meta["settings"].get("kind") == IMAGES.noun else VIDEOS


def config_name(listing: Listing, settings: dict[str, Any]) -> str:
    """The builder config's name: a hash of the listing and the settings; any change to them prepares anew."""
    key = {"settings": settings,
           "videos": [[e.path, e.size, e.mtime_ns, e.caption] for e in listing.entries],
           "skipped": [[s["path"], s["reason"]] for s in listing.skipped]}
    blob = json.dumps(key, sort_keys=True, ensure_ascii=True).encode("ascii")
    return "v" + hashlib.sha256(blob).hexdigest()[:16]


def _unit(name: str, seed: int) -> float:
    """A stable number in [0, 1) for a video's path: the split hash."""
    digest = hashlib.sha256(f"{seed}\0{name}".encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


class SplitStats(NamedTuple):
    """What the split rule needs of the usable videos as a whole: how many, the lowest- and highest-hashing ones
    and how many hash below test_fraction. Merges in any grouping, so a Beam combine computes it too."""

    count: int
    lowest: tuple[float, int]  # (unit, index): the first index wins a tie
    highest: tuple[float, int]  # (unit, -index): the first index wins a tie
    below: int

    @classmethod
    def of(cls, unit: float, index: int, test_fraction: float) -> SplitStats:
        return cls(1, (unit, index), (unit, -index), int(unit < test_fraction))

    @classmethod
    def merge(cls, parts: Iterable[SplitStats]) -> SplitStats:
        count, lowest, highest, below = 0, (math.inf, 0), (-math.inf, 0), 0
        for p in parts:
            count, below = count + p.count, below + p.below
            lowest, highest = min(lowest, tuple(p.lowest)), max(highest, tuple(p.highest))
        return cls(count, lowest, highest, below)


def split_of(unit: float, index: int, stats: SplitStats, test_fraction: float) -> str:
    """The split of one usable video (its split hash `unit`, its place `index`) among all of them (`stats`)."""
    if stats.count < 2:
        return "train"
    test = unit < test_fraction
    if test_fraction > 0:
        if not stats.below and (unit, index) == tuple(stats.lowest):
            test = True  # none hashes below: the lowest is held out
        if stats.below == stats.count and (unit, -index) == tuple(stats.highest):
            test = False  # all do: the highest trains
    return "test" if test else "train"


def assign_splits(names: Sequence[str], test_fraction: float, seed: int) -> list[str]:
    """"test" for the videos whose path hashes below test_fraction, else "train"; a single video trains; with two
    videos or more and test_fraction > 0, at least one of each."""
    units = [_unit(n, seed) for n in names]
    stats = SplitStats.merge(SplitStats.of(u, i, test_fraction) for i, u in enumerate(units))
    return [split_of(u, i, stats, test_fraction) for i, u in enumerate(units)]


def cut_clips(times: np.ndarray, fps: float, num_frames: int, stride: float) -> tuple[list[float], np.ndarray]:
    """(starts, indices [N, num_frames]): the clips of a video whose frames show at `times`, resampled to `fps`,
    `stride` seconds apart (0: back to back)."""
    times = np.asarray(times, np.float64)
    starts, indices = [], []
    for start in frames_lib.clip_starts(frames_lib.duration(times, fps), num_frames, fps, stride or num_frames / fps):
        try:
            indices.append(frames_lib.resample_indices(times, fps, num_frames, start=float(times[0]) + start))
        except ValueError:  # the last start, a rounding error past the end
            break
        starts.append(start)
    return starts, np.asarray(indices, np.int64).reshape(len(starts), num_frames)


@dataclasses.dataclass(frozen=True)
class _Task:
    index: int
    path: str
    out: str  # .npy the clips go to
    num_frames: int
    resolution: int
    fps: float
    clip_stride: float
    resize: str


def task_of(index: int, path: str, out: str, settings: dict[str, Any]) -> _Task:
    """The decoding task of listed file `index`, its clips written to `out` (.npy)."""
    return _Task(index, path, out, settings["num_frames"], settings["resolution"], settings["fps"],
                 settings["clip_stride"], settings["resize"])


@dataclasses.dataclass(frozen=True)
class _Result:
    index: int
    starts: list[float]
    reason: str | None = None
    detail: str = ""


def _prepare_video(task: _Task) -> _Result:
    """Decodes one video, writes its clips [N, T, R, R, 3] to task.out; a bad file is a _Result with a reason.
    Runs in the worker processes (or in-process with one worker)."""
    try:
        # Decoded at about the final size: the short side for crop, the long side for pad.
        side = {"short_side" if task.resize == "crop" else "long_side": task.resolution}
        video = decode.read_video(task.path, **side)
    except decode.DecodeError as e:
        return _Result(task.index, [], "missing_file" if e.reason == "missing" else e.reason, str(e))
    except Exception as e:  # noqa: BLE001 - a bad file never stops a build
        return _Result(task.index, [], "undecodable", f"{type(e).__name__}: {e}")
    try:
        starts, indices = cut_clips(video.times, task.fps, task.num_frames, task.clip_stride)
        if not starts:
            return _Result(task.index, [], "too_short",
                           f"{frames_lib.duration(video.times, task.fps):.2f} s ({len(video.times)} frames); a clip is "
                           f"{task.num_frames / task.fps:g} s")
        used = np.unique(indices)  # fit each needed frame once (clips may overlap; a lower fps skips frames)
        fitted = frames_lib.fit_frames(video.frames[used], task.resolution, task.resize)
        clips = fitted[np.searchsorted(used, indices)]  # [N, T, R, R, 3]
    except Exception as e:  # noqa: BLE001
        return _Result(task.index, [], "undecodable", f"{type(e).__name__}: {e}")
    np.save(task.out, np.ascontiguousarray(clips, dtype=np.uint8))
    return _Result(task.index, starts)


def _decode_all(tasks: list[_Task], workers: int, progress: tqdm.tqdm) -> list[_Result]:
    """Every task's result, in task order whatever the number of workers."""
    results: list[_Result] = []
    clips, t0 = 0, time.perf_counter()

    def advance(result: _Result):
        nonlocal clips
        results.append(result)
        clips += len(result.starts)
        progress.update(1)
        progress.set_postfix(clips=clips, clips_per_s=f"{clips / max(time.perf_counter() - t0, 1e-9):.1f}")

    if workers <= 1 or len(tasks) <= 1:
        for task in tasks:
            advance(_prepare_video(task))
        return results
    methods = multiprocessing.get_all_start_methods()
    # Not fork: jax (threads) may be imported in this process already.
    context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    with concurrent.futures.ProcessPoolExecutor(min(workers, len(tasks)), mp_context=context) as pool:
        try:
            for result in pool.map(_prepare_video, tasks):  # ordered
                advance(result)
        except concurrent.futures.BrokenExecutor as e:
            # FFmpeg crashed a worker (no Python exception to catch): which file, is known only in-process.
            after = tasks[len(results)].path
            raise RuntimeError(f"a video-decoding worker died ({e}) at or after {after}: prepare with "
                               f"data.prepare_workers=1 to see which file crashes FFmpeg, and move it away.") from None
    return results


# ---------------------------------------------------------------------------------------------------- builder


@dataclasses.dataclass(kw_only=True)
class VideoClipsConfig(tfds.core.BuilderConfig):
    """Clip geometry; the name (config_name) is a hash of the listing and every preprocessing setting."""

    num_frames: int = 8
    resolution: int = 32


@dataclasses.dataclass
class _Plan:
    """What the builder writes: the decoded clips (one .npy per video) and the split of each video."""

    listing: Listing
    spool: str
    results: list[_Result]
    splits: dict[int, str]  # entry index -> split, for the videos with clips
    metadata: dict[str, Any]


class LumiereVideoClips(tfds.core.GeneratorBasedBuilder):
    """Captioned clips cut from a folder of video files (data.videos)."""

    VERSION = tfds.core.Version("1.0.0")
    code_path = epath.Path(__file__)  # as in shapes_tfds: no importlib_resources lookup
    RELEASE_NOTES = {"1.0.0": "First release."}
    BUILDER_CONFIGS = [VideoClipsConfig(name="default")]

    def __init__(self, *, plan: _Plan | None = None, **kwargs):
        self._plan = plan
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        cfg = self.builder_config
        frame_shape = (cfg.num_frames, cfg.resolution, cfg.resolution, 3)
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict({
                "video": tfds.features.Tensor(shape=frame_shape, dtype=np.uint8,
                                              encoding=tfds.features.Encoding.BYTES),
                "caption": tfds.features.Text(),
                "source": tfds.features.Text(),  # the video's path, relative to data.videos
                "start": tfds.features.Tensor(shape=(), dtype=np.float32),  # seconds into it
            }),
            disable_shuffling=True,  # records in listing order; grain shuffles by index
            metadata=tfds.core.MetadataDict(),  # the preparation's summary, written with the data
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        del dl_manager  # Nothing to download.
        if self._plan is None:
            raise RuntimeError("LumiereVideoClips prepares only through videos.load_videos.")
        self.info.metadata.update(self._plan.metadata)
        # tfds writes no empty split: a split without clips is left out (load_videos opens it as empty).
        return {split: self._generate_examples(split) for split in SPLITS if self._plan.metadata["clips"][split]}

    def _generate_examples(self, split: str) -> Iterator[tuple[int, dict[str, Any]]]:
        plan = self._plan
        for result in plan.results:
            if plan.splits.get(result.index) != split:
                continue
            entry = plan.listing.entries[result.index]
            clips = np.load(os.path.join(plan.spool, f"{result.index:07d}.npy"))
            for k, (start, clip) in enumerate(zip(result.starts, clips)):
                yield clip_key(result.index, k), clip_example(entry.name, entry.caption, start, clip)


CLIP_KEY_SPAN = 2 ** 32  # room for a video's clips in the record keys


def clip_key(index: int, clip: int) -> int:
    """A record's key: its video's place in the listing, then the clip's place in the video. tfds orders
    unshuffled records by key, so every preparation path (local or Beam) writes them in listing order."""
    return index * CLIP_KEY_SPAN + clip


def clip_example(name: str, caption: str, start: float, clip: np.ndarray) -> dict[str, Any]:
    """One record: a clip [T, R, R, 3] of the listed file `name` (relative to the listing's root)."""
    return {"video": clip, "caption": caption, "source": _text(name), "start": np.float32(start)}


def _text(path: str) -> str:
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


class DamagedDataError(ValueError):
    """Prepared data that can no longer be read as it was written (a shard deleted, truncated or overwritten since
    it was prepared, or more damaged records than data.max_bad_records): one line naming the shard and the fix."""


@dataclasses.dataclass(frozen=True)
class Shard:
    """One prepared array_record file of a split: its path, the split's first record in it, how many, its size."""

    path: str
    first: int
    count: int
    size: int | None  # bytes when the source was opened (None: a remote file, not checked on each read)


class VideoSource:
    """Random-access clips of one split (like shapes_tfds.ShapesWorldSource); an empty split has length 0.

    Reading checks the prepared files: a shard deleted or resized since the source was opened, or one that no
    longer opens, stops the run (DamagedDataError, naming the shard and the folder to delete); a record that fails
    its checksum or is missing while its shard still opens is skipped, counted in `bad_records`, and the next
    readable record is read in its place (the same one on every read, so a resumed run reads the same batches).
    """

    def __init__(self, source: Any | None, captions: Sequence[str], config_name: str = "", directory: str = "",
                 summary: str = ""):
        self._source = source
        self._captions = list(captions)
        self.config_name = config_name  # the builder config: a hash of the listing and the settings
        self.directory = directory  # where the prepared data and skipped.jsonl are
        self.summary = summary  # the preparation's summary line, as load_videos logs it
        self._shards = _shards_of(source)
        self._bad: dict[int, str] = {}  # record -> why it was skipped (one line)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return 0 if self._source is None else len(self._source)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if self._source is None:
            raise IndexError(f"index {index} of an empty video source.")
        return self._read(int(index))

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        if self._source is None:
            if len(indices):
                raise IndexError("an empty video source has no records.")
            return []
        return [self._read(int(i)) for i in indices]

    def captions(self) -> list[str]:
        """Distinct captions of the split, in first-seen order (read from the preparation's summary)."""
        return list(self._captions)

    @property
    def bad_records(self) -> dict[int, str]:
        """The damaged records skipped so far: record index -> why (a copy)."""
        with self._lock:
            return dict(self._bad)

    def __repr__(self) -> str:
        return f"VideoSource({self.config_name}, {len(self)} clips)"

    def fix(self) -> str:
        """What to do about damaged prepared data: delete the preparation's folder, so the next run prepares it."""
        folder = os.path.dirname(self.directory) if self.directory else "the prepared folder under data.data_dir"
        return (f"delete {folder} and run the same command again: it prepares the source again (checkpoints are "
                f"kept)")

    def _read(self, index: int) -> dict[str, Any]:
        """Record `index`, or the next readable one after it when it is damaged."""
        n = len(self)
        for k in range(n):
            i = (index + k) % n
            if i in self._bad:
                continue
            shard = self._shard_of(i)
            if shard is not None:
                self._check_shard(shard, i)
            try:
                return self._decode(self._source[i])
            except Exception as e:  # noqa: BLE001 - array_record and tfds raise RuntimeError/ValueError for damage
                self._skip(i, shard, e)
        raise DamagedDataError(f"no record of the prepared data in {self.directory} is readable: {self.fix()}.")

    def _shard_of(self, index: int) -> Shard | None:
        for shard in self._shards:
            if shard.first <= index < shard.first + shard.count:
                return shard
        return None

    def _check_shard(self, shard: Shard, index: int) -> None:
        """Raises DamagedDataError when the shard's file is gone or has another size than when it was opened."""
        if shard.size is None:
            return
        try:
            size = os.stat(shard.path).st_size
        except OSError:
            raise DamagedDataError(f"prepared shard {shard.path} was deleted (reading record {index}): "
                                   f"{self.fix()}.") from None
        if size != shard.size:
            raise DamagedDataError(f"prepared shard {shard.path} changed size since the run opened it ({shard.size} "
                                   f"-> {size} bytes; reading record {index}): {self.fix()}.")

    def _skip(self, index: int, shard: Shard | None, error: Exception) -> None:
        """A record failed to read: stop when its whole shard no longer opens, else count it as skipped."""
        why = _first_line(error)
        where = shard.path if shard is not None else self.directory
        if shard is not None:
            problem = _open_problem(shard.path)
            if problem:
                raise DamagedDataError(f"prepared shard {shard.path} is unreadable ({problem}; reading record "
                                       f"{index}): {self.fix()}.") from None
        with self._lock:
            new = index not in self._bad
            self._bad[index] = f"record {index} of {where} ({why})"
            count = len(self._bad)
        if new:
            log.warning("Skipped damaged record %d of %s (%s): %d skipped so far; the next readable record is read "
                        "in its place.", index, where, why, count)

    @staticmethod
    def _decode(example: dict[str, Any] | None) -> dict[str, Any]:
        if not isinstance(example, dict):  # a record tfds could not deserialize
            raise ValueError(f"record is {type(example).__name__}, not a clip")
        example = dict(example)
        for key in ("caption", "source"):
            if isinstance(example[key], bytes):
                example[key] = example[key].decode("utf-8")
        example["start"] = float(example["start"])
        return example


def _shards_of(source: Any | None) -> list[Shard]:
    """The array_record files of a tfds data source's split, with the records each holds and its size now."""
    if source is None or not hasattr(source, "dataset_info"):
        return []
    shards, first = [], 0
    for instruction in tfds_sources.file_instructions(source.dataset_info, source.split):
        path = os.fspath(instruction.filename)
        size = None
        if not paths.is_remote(path):
            try:
                size = os.stat(path).st_size
            except OSError:
                size = -1  # gone already: the first read of it says so
        shards.append(Shard(path=path, first=first, count=int(instruction.take), size=size))
        first += int(instruction.take)
    return shards


def _open_problem(path: str) -> str | None:
    """Why an array_record file does not open (footer, index, size), or None when it opens."""
    try:
        reader = array_record_module.ArrayRecordReader(path)
        reader.num_records()
        reader.close()
    except Exception as e:  # noqa: BLE001
        return _first_line(e)
    return None


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:200]


# ------------------------------------------------------------------------------------------------ entry point


# What prepares a builder's clips from a listing: (builder, listing, settings, data, skipped_path) -> None.
# _prepare decodes in data.prepare_workers local processes; videos_beam.preparer on an Apache Beam runner.
Preparer = Callable[["LumiereVideoClips", Listing, dict[str, Any], ml_collections.ConfigDict, str], None]


def load_videos(data: ml_collections.ConfigDict, kind: Kind = VIDEOS,
                prepare: Preparer | None = None) -> dict[str, VideoSource]:
    """Prepares (once, cached) and opens the video source of config.data (data.videos; data.images for
    kind=IMAGES, as single-frame clips); returns {"train": ..., "test": ...}. `prepare` replaces the local
    preparation (videos_beam.preparer: on Apache Beam); the records and the summary are the same either way.

    Raises ValueError, one line, on a malformed manifest or when no listed file gives a clip.
    """
    listing = list_videos(source_path(data, kind), kind)
    settings = settings_of(data, kind)
    name = config_name(listing, settings)
    data_dir = os.fspath(paths.resolve(data.data_dir))
    config = VideoClipsConfig(name=name, num_frames=settings["num_frames"], resolution=settings["resolution"],
                              description=f"clips of {listing.manifest or listing.root}")
    builder = LumiereVideoClips(config=config, data_dir=data_dir, file_format="array_record")
    directory = os.fspath(builder.data_path)
    skipped_path = os.path.join(os.path.dirname(directory), SKIPPED_FILE)  # beside the version folder
    reused = builder.is_prepared()
    listing_path = os.path.join(os.path.dirname(directory), LISTING_FILE)
    if not reused:
        change = _change_line(source_path(data, kind), kind, listing, settings, os.path.dirname(directory),
                              os.path.basename(directory))
        if change:
            log.info("%s", change)
        (prepare or _prepare)(builder, listing, settings, data, skipped_path)
        builder = LumiereVideoClips(config=config, data_dir=data_dir, file_format="array_record")  # as written
    if not epath.Path(listing_path).exists():  # what the next start compares a changed source with
        _write_listing(listing_path, listing, settings)
    meta = dict(builder.info.metadata)
    if not epath.Path(skipped_path).exists():  # deleted since: the summary keeps it
        _write_skipped(skipped_path, meta["skipped"])
    summary = _summary(source_path(data, kind), meta, skipped_path) + (" (prepared before: reused)" if reused else "")
    log.info("%s", summary)
    return {split: VideoSource(builder.as_data_source(split) if meta["clips"][split] else None,
                               meta["captions"][split], config_name=name, directory=directory, summary=summary)
            for split in SPLITS}


def _prepare(builder: LumiereVideoClips, listing: Listing, settings: dict[str, Any],
             data: ml_collections.ConfigDict, skipped_path: str) -> None:
    config_dir = os.path.dirname(skipped_path)
    epath.Path(config_dir).mkdir(parents=True, exist_ok=True)
    if paths.is_remote(config_dir):  # data_dir in a bucket: the decoded clips wait on local disk
        spool = tempfile.mkdtemp(prefix=".decoded-")
    else:
        for stale in glob.glob(os.path.join(config_dir, ".decoded-*")):  # left by a preparation that was killed
            shutil.rmtree(stale, ignore_errors=True)
        spool = tempfile.mkdtemp(prefix=".decoded-", dir=config_dir)
    try:
        tasks = [task_of(i, e.path, os.path.join(spool, f"{i:07d}.npy"), settings)
                 for i, e in enumerate(listing.entries)]
        with tqdm.tqdm(total=len(tasks), unit="video", desc="Preparing videos", dynamic_ncols=True) as progress:
            results = _decode_all(tasks, int(data.prepare_workers), progress)
        skipped = list(listing.skipped)
        skipped += [_skip(listing.entries[r.index].path, r.reason, r.detail) for r in results if r.reason]
        usable = [r.index for r in results if r.starts]
        splits = dict(zip(usable, assign_splits([listing.entries[i].name for i in usable],
                                                settings["test_fraction"], settings["seed"])))
        metadata = _metadata(listing, settings, results, splits, skipped)
        _write_skipped(skipped_path, skipped)
        if not metadata["clips"]["train"]:
            raise ValueError(_no_clip_line(source_path(data, _kind_of(metadata)), metadata, skipped_path))
        builder._plan = _Plan(listing=listing, spool=spool, results=results, splits=splits, metadata=metadata)
        builder.download_and_prepare()
        builder._plan = None
    finally:
        shutil.rmtree(spool, ignore_errors=True)


def _metadata(listing: Listing, settings: dict[str, Any], results: list[_Result], splits: dict[int, str],
              skipped: list[dict[str, str]]) -> dict[str, Any]:
    clips = {s: 0 for s in SPLITS}
    videos = {s: 0 for s in SPLITS}
    captions: dict[str, dict[str, None]] = {s: {} for s in SPLITS}
    for r in results:
        if r.starts:
            split = splits[r.index]
            clips[split] += len(r.starts)
            videos[split] += 1
            captions[split].setdefault(listing.entries[r.index].caption, None)
    return {"videos": listing.manifest or listing.root, "settings": settings, "read": len(results),
            "clips": clips, "videos_used": videos, "captions": {s: list(c) for s, c in captions.items()},
            "skipped": [{k: _text(v) for k, v in s.items()} for s in skipped]}


def _listing_record(listing: Listing, settings: dict[str, Any]) -> dict[str, Any]:
    """What listing.json keeps of a prepared listing: each file's size, mtime and a hash of its caption, and each
    skipped file's reason; enough to say what changed when the source is prepared again."""
    files = {e.name: [e.size, e.mtime_ns, hashlib.sha256(e.caption.encode("utf-8", "surrogateescape")).hexdigest()[:16]]
             for e in listing.entries}
    for s in listing.skipped:
        name = posixpath.relpath(s["path"], listing.root) if s["path"].startswith(listing.root + "/") else s["path"]
        files.setdefault(_text(name), ["skipped", s["reason"]])
    return {"settings": settings, "files": files}


def _write_listing(path: str, listing: Listing, settings: dict[str, Any]) -> None:
    tmp = epath.Path(path + ".tmp")
    tmp.write_text(json.dumps(_listing_record(listing, settings), ensure_ascii=False), encoding="utf-8")
    tmp.replace(path)


def _change_line(videos: str, kind: Kind, listing: Listing, settings: dict[str, Any], config_dir: str,
                 version: str) -> str | None:
    """The one log line that says why a source prepared before is prepared again: how many files were added,
    removed, changed or recaptioned (and which settings changed), against the newest complete earlier preparation
    of the same source (preferring one of the same settings); None when there is none. That preparation is left
    where it is: it stays whole while the new one is written, and usable until it is deleted."""
    where, here = listing.manifest or listing.root, epath.Path(config_dir)
    earlier = []  # (same settings, mtime, folder, its settings)
    try:
        folders = [f for f in here.parent.iterdir() if f.name != here.name and f.is_dir()]
    except OSError:
        return None
    for folder in folders:
        try:  # written by tfds with the data: only a complete preparation has it
            meta = json.loads((folder / version / "metadata.json").read_text())
            stamp = (folder / version / "metadata.json").stat().mtime
        except (OSError, ValueError):
            continue
        old = meta.get("settings") if isinstance(meta, dict) else None
        if meta.get("videos") == where and isinstance(old, dict) and old.get("kind") == settings["kind"]:
            earlier.append((old == settings, stamp, folder, old))
    if not earlier:
        return None
    _, _, folder, old = max(earlier, key=lambda e: e[:2])
    try:
        before = json.loads((folder / LISTING_FILE).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        before = None  # prepared before listing.json was kept: what changed is not known
    files = []
    if before is not None:
        now = _listing_record(listing, settings)["files"]
        counts = {"added": sum(n not in before for n in now), "removed": sum(n not in now for n in before),
                  "changed": sum(n in before and before[n][:2] != now[n][:2] for n in now),
                  "recaptioned": sum(n in before and before[n][:2] == now[n][:2] and before[n] != now[n]
                                     for n in now)}
        files = [f"{c} {'file' if c == 1 else 'files'} {what}" for what, c in counts.items() if c]
    changed_settings = [f"{k} {old.get(k)} -> {v}" for k, v in settings.items() if old.get(k) != v]
    what = "was prepared with other settings" if changed_settings and not files else "changed since it was prepared"
    detail = ", ".join(files + changed_settings)
    return (f"{kind.key}={videos} {what}{f' ({detail})' if detail else ''}: preparing again; the earlier "
            f"preparation stays in {folder} until you delete it.")


def _write_skipped(path: str, skipped: list[dict[str, str]]) -> None:
    """skipped.jsonl, one {"path", "reason", "detail"} a line; through epath, so a gs:// data_dir works too."""
    tmp = epath.Path(path + ".tmp")
    tmp.write_text("".join(json.dumps({k: _text(v) for k, v in s.items()}, ensure_ascii=False) + "\n"
                           for s in skipped), encoding="utf-8")
    tmp.replace(path)


def _reasons(meta: dict[str, Any]) -> str:
    counts = collections.Counter(s["reason"] for s in meta["skipped"])
    parts = []
    for reason, label in REASONS.items():
        if counts[reason]:
            if reason == "too_short":
                st = meta["settings"]
                label += (f" ({st['num_frames']} frames at {st['fps']:g} fps = "
                          f"{st['num_frames'] / st['fps']:g} s)")
            parts.append(f"{counts[reason]} {label}")
    return ", ".join(parts)


def _no_clip_line(videos: str, meta: dict[str, Any], skipped_path: str) -> str:
    clips = sum(meta["clips"].values())
    kind = _kind_of(meta)
    head = f"{kind.key}={videos}: no usable clip" if not clips else \
        f"{kind.key}={videos}: no usable training clip ({clips} test clips)"
    if not meta["read"] and not meta["skipped"]:
        return (f"{head}: no {'/'.join(kind.extensions)} file found; give a folder of captioned {kind.noun} or a "
                f"captions.csv / captions.jsonl manifest.")
    return (f"{head}: {meta['read']} {kind.noun} read, {clips} clips; skipped: {_reasons(meta) or 'none'}. "
            f"See {skipped_path}.")


def _summary(videos: str, meta: dict[str, Any], skipped_path: str) -> str:
    c, v = meta["clips"], meta["videos_used"]
    kind = _kind_of(meta)
    line = (f"{kind.key}={videos}: {meta['read']} {kind.noun} read, {c['train'] + c['test']} clips written "
            f"({c['train']} train / {c['test']} test, from {v['train']} / {v['test']} {kind.noun}); ")
    if meta["skipped"]:
        return line + f"{len(meta['skipped'])} files skipped: {_reasons(meta)}; listed in {skipped_path}."
    return line + f"no file skipped ({skipped_path})."
