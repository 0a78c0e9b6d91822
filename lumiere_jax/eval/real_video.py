"""Real clips for `--mode=eval` on real video: the groups of a source, how clips are dealt to them, and the drawing.

Two sources, by `eval.protocol`:

  ucf101  a folder laid out as UCF-101 (one folder per class, named as in ucf101.CLASSES, video files in each);
          a class is a group, prompted by the table's sentence.
  videos  a folder or manifest of captioned videos, listed as data.videos is (videos.list_videos): the videos of
          one caption are a group, prompted by the caption.

Clips are dealt to the groups round-robin in a seeded order (`deal`), so every group gets as many as any other,
+-1: generated clips ask for each group's prompt that many times, and real clips are drawn that many times from
its files. A `ClipDrawer` takes a group's files in a seeded order, cycling; the k-th draw of a file takes the k-th
of its clips in a seeded order (every frame-aligned start where a whole clip at the model's fps fits). Drawing the
reference set first and the floor set next from one drawer gives them different files while a group has enough.
A file that does not decode, or is shorter than a clip, is skipped and named; the draw moves to the next file.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import logging
import multiprocessing
from typing import Callable, Sequence

import numpy as np
import tqdm

from lumiere_jax import paths
from lumiere_jax.data import decode, videos
from lumiere_jax.data import frames as frames_lib
from lumiere_jax.eval import ucf101

log = logging.getLogger("lumiere_jax")

EVAL_VIDEOS = videos.Kind("eval.data", "videos", videos.VIDEO_EXTENSIONS)
UCF101_LAYOUT = "one folder per class named as UCF-101's (e.g. UCF-101/ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi)"


@dataclasses.dataclass(frozen=True)
class Group:
    """Clips that share a prompt: a UCF-101 class, or the videos of one caption."""

    name: str  # the class folder, or the caption
    prompt: str
    files: tuple[str, ...]  # sorted


@dataclasses.dataclass(frozen=True)
class Geometry:
    """What a real clip is cut to: the model's frames (those the metrics read), side and rate, and how frames of
    another shape are fitted to its square (frames.fit_frames)."""

    num_frames: int
    resolution: int
    fps: float
    resize: str = "crop"


def groups_of(protocol: str, source: str) -> list[Group]:
    """The groups of eval.data under eval.protocol ("ucf101" or "videos"); one-line ValueError for a source that
    cannot serve."""
    if protocol == "ucf101":
        return ucf101_groups(source)
    if protocol == "videos":
        return caption_groups(source)
    raise ValueError(f"eval.protocol={protocol!r} reads no real video: use 'ucf101' or 'videos'.")


def ucf101_groups(root: str) -> list[Group]:
    """The class folders of a UCF-101 copy (all 101, or some of them) with their video files."""
    folder = paths.resolve(root)
    if not folder.exists():
        raise ValueError(f"eval.data={root} does not exist: give your local UCF-101 folder, {UCF101_LAYOUT}.")
    if not folder.is_dir():
        raise ValueError(f"eval.data={root} is a file: eval.protocol='ucf101' reads a folder, {UCF101_LAYOUT}.")
    names = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not names:
        raise ValueError(f"eval.data={root} holds no class folder: give the folder of UCF-101's class folders, "
                         f"{UCF101_LAYOUT}.")
    unknown = [n for n in names if n not in ucf101.CLASSES]
    if unknown:
        inner = folder / unknown[0]
        if len(unknown) == 1 and any((inner / c).is_dir() for c in ucf101.CLASSES):
            raise ValueError(f"eval.data={root} holds the class folders one level down: give "
                             f"--config.eval.data={inner}.")
        raise ValueError(f"eval.data={root}: {len(unknown)} folder(s) not named as a UCF-101 class "
                         f"({', '.join(unknown[:3])}{', ...' if len(unknown) > 3 else ''}): eval.protocol='ucf101' "
                         f"reads only the class names of lumiere_jax/eval/ucf101.py; move the others out, or score "
                         f"other footage with eval.protocol='videos'.")
    groups = []
    for name in names:
        files = tuple(sorted(paths.normalize(str(p)) for p in (folder / name).iterdir()
                             if p.name.lower().endswith(videos.VIDEO_EXTENSIONS) and not p.name.startswith(".")))
        if not files:
            raise ValueError(f"eval.data={root}: class folder {name}/ holds no video file "
                             f"({' '.join(videos.VIDEO_EXTENSIONS)}): restore its clips or move the folder out.")
        groups.append(Group(name, ucf101.CLASSES[name], files))
    return groups


def caption_groups(source: str) -> list[Group]:
    """The captioned videos of a folder or manifest (as data.videos lists them), one group per caption."""
    listing = videos.list_videos(source, EVAL_VIDEOS)
    by_caption: dict[str, list[str]] = {}
    for entry in listing.entries:
        by_caption.setdefault(entry.caption, []).append(entry.path)
    if not by_caption:
        why = (f"; {len(listing.skipped)} skipped, the first {listing.skipped[0]['reason'].replace('_', ' ')} "
               f"({listing.skipped[0]['path']})") if listing.skipped else ""
        raise ValueError(f"eval.data={source}: no captioned video{why}. Give a folder of videos with a NAME.txt "
                         f"caption beside each, or a captions.csv / captions.jsonl manifest.")
    return [Group(caption, caption, tuple(sorted(files))) for caption, files in by_caption.items()]


def deal(groups: Sequence[Group], count: int, seed: int) -> list[int]:
    """The group of each of `count` clips: round-robin over the groups in a seeded order, so every group gets
    count // len(groups) clips and the first count % len(groups) of that order one more."""
    order = np.random.default_rng(seed).permutation(len(groups))
    return [int(order[i % len(groups)]) for i in range(count)]


def _key(text: str) -> int:
    """A stable number for a name: seeds what a file or group draws, the same on every machine."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8", "surrogateescape")).digest()[:8], "big")


@dataclasses.dataclass(frozen=True)
class _FileTask:
    path: str
    uses: tuple[int, ...]  # which draws of this file: the k-th takes the k-th of its clips in a seeded order
    geometry: Geometry
    seed: int


def _read_file(task: _FileTask) -> tuple[str, dict[int, np.ndarray], str]:
    """Decodes one file and cuts the clips of its draws: (path, {draw: uint8 [T, R, R, 3]}, why it failed or "").
    Runs in worker processes too."""
    g = task.geometry
    side = {"short_side" if g.resize == "crop" else "long_side": g.resolution}
    try:
        video = decode.read_video(task.path, **side)
    except decode.DecodeError as e:
        return task.path, {}, str(e)
    except Exception as e:  # noqa: BLE001 - a bad file is skipped, never the end of an evaluation
        return task.path, {}, f"{task.path}: undecodable ({type(e).__name__})"
    starts, indices = videos.cut_clips(video.times, g.fps, g.num_frames, 1.0 / g.fps)
    if not starts:
        seconds = frames_lib.duration(video.times, g.fps)
        return task.path, {}, (f"{task.path}: shorter than one clip ({seconds:.2f} s; {g.num_frames} frames at "
                               f"{g.fps:g} fps = {g.num_frames / g.fps:g} s)")
    name = task.path.rsplit("/", 1)[-1]
    order = np.random.default_rng([task.seed, _key(name)]).permutation(len(starts))
    return task.path, {use: frames_lib.fit_frames(video.frames[indices[order[use % len(order)]]], g.resolution,
                                                  g.resize) for use in task.uses}, ""


class ClipDrawer:
    """Draws real clips of given groups; a group's files are taken in a seeded order, cycling, and later calls go
    on where earlier ones stopped. `workers` > 1 decodes in that many processes."""

    def __init__(self, groups: Sequence[Group], geometry: Geometry, seed: int, workers: int = 1):
        self.groups, self.geometry, self.seed, self.workers = list(groups), geometry, seed, workers
        self._order = [[g.files[i] for i in np.random.default_rng([seed, _key(g.name)]).permutation(len(g.files))]
                       for g in self.groups]
        self._taken = [0] * len(self.groups)  # draws made from each group
        self.uses: dict[str, int] = {}  # draws of each file so far
        self.skipped: dict[str, str] = {}  # file -> why it was skipped
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None

    def __enter__(self) -> ClipDrawer:
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)

    def _next_file(self, group: int) -> tuple[str, int]:
        """The group's next file that has not failed, and which draw of it this is."""
        files = [f for f in self._order[group] if f not in self.skipped]
        if not files:
            g = self.groups[group]
            first = next((self.skipped[f] for f in g.files if f in self.skipped), "")
            raise ValueError(f"eval.data: no readable clip in group {g.name!r} ({len(g.files)} files skipped; "
                             f"{first}): replace its files or move them out.")
        path = files[self._taken[group] % len(files)]
        self._taken[group] += 1
        use = self.uses.get(path, 0)
        self.uses[path] = use + 1
        return path, use

    def _map(self, tasks: list[_FileTask]) -> list[tuple[str, dict[int, np.ndarray], str]]:
        if self.workers <= 1 or len(tasks) <= 1:
            return [_read_file(t) for t in tasks]
        if self._pool is None:
            methods = multiprocessing.get_all_start_methods()
            # Not fork: jax (threads) is running in this process.
            context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
            self._pool = concurrent.futures.ProcessPoolExecutor(self.workers, mp_context=context)
        return list(self._pool.map(_read_file, tasks))

    def draw(self, group_ids: Sequence[int], consume: Callable[[np.ndarray], None], *, chunk: int = 64,
             desc: str = "real clips") -> list[str]:
        """Draws a clip for each group id, handing them to `consume` in chunks (uint8 [n, T, R, R, 3], in order);
        returns the file of each clip."""
        files: list[str] = []
        with tqdm.tqdm(total=len(group_ids), unit="clip", desc=desc, dynamic_ncols=True) as progress:
            for start in range(0, len(group_ids), chunk):
                slots = [(g, *self._next_file(g)) for g in group_ids[start:start + chunk]]
                clips: dict[int, np.ndarray] = {}
                while len(clips) < len(slots):
                    wanted: dict[str, list[int]] = {}
                    for i, (_, path, use) in enumerate(slots):
                        if i not in clips:
                            wanted.setdefault(path, []).append(use)
                    results = self._map([_FileTask(p, tuple(u), self.geometry, self.seed) for p, u in wanted.items()])
                    read = {path: (out, why) for path, out, why in results}
                    for i, (g, path, use) in enumerate(slots):
                        if i in clips:
                            continue
                        out, why = read[path]
                        if why:
                            if path not in self.skipped:
                                self.skipped[path] = why
                                log.warning("Skipped %s", why)
                            slots[i] = (g, *self._next_file(g))
                        else:
                            clips[i] = out[use]
                consume(np.stack([clips[i] for i in range(len(slots))]))
                files += [path for _, path, _ in slots]
                progress.update(len(slots))
        return files

    def summary(self) -> dict[str, object]:
        """What eval.json says of the real clips: files listed, read and skipped (with why), draws that re-used a
        file (another clip of it)."""
        listed = sum(len(g.files) for g in self.groups)
        return {"files": listed, "files_read": sum(1 for f in self.uses if f not in self.skipped),
                "skipped": [{"path": p, "why": w} for p, w in sorted(self.skipped.items())][:20],
                "num_skipped": len(self.skipped),
                "draws_reusing_a_file": int(sum(max(n - 1, 0) for f, n in self.uses.items() if f not in self.skipped))}
