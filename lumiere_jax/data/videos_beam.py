"""Preparing a video (or image) source on Apache Beam, for listings too large for one machine's processes.

    sources = videos.load_videos(data, prepare=videos_beam.preparer("runner=DirectRunner,direct_num_workers=2"))

The same listing, settings, builder config name and folder as the local preparation (videos.load_videos), and the
same records in the same order, splits and summary; only where the decoding runs differs. tfds's own Beam
support writes the array_record files (a builder whose _split_generators takes the pipeline): one element per
listed file, decoded on the workers by videos._prepare_video into its clips; a global combine of the usable files'
split hashes (videos.SplitStats) is the side input that routes each clip to its split by videos.split_of; each
file's outcome (clips, split, or why it was skipped) is written beside the data, and the summary is computed from
those with videos._metadata once the pipeline has run, as the local path computes it.

tfds writes no empty split, and which splits have clips is known only once everything is decoded. A listing of
two files or more with data.test_fraction > 0 is prepared with both; if one turns out empty (at most one usable
file), the pipeline is rerun to record every file's outcome, then, if any file gave a clip, with the splits that
have some.

apache_beam is imported only here, when a pipeline is built: the local path does not need it (pip extra "beam").
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
import uuid
from typing import Any, Iterator

import ml_collections
import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from lumiere_jax.data import videos

log = logging.getLogger("lumiere_jax")

WORK_PREFIX = ".beam-"  # the pipeline's listing and per-file outcomes, beside the prepared data while it runs
EMPTY_SPLIT_ERROR = "number of generated examples is 0"  # tfds's BeamWriter, on a split without examples
COUNTERS = "lumiere_videos"  # the Beam metrics namespace: files decoded, clips, files skipped


def _beam() -> Any:
    try:
        import apache_beam
    except ImportError as e:
        raise ImportError(f"preparing with --beam_pipeline_options needs Apache Beam ({e}): pip install -e '.[beam]'"
                          ) from None
    return apache_beam


def pipeline_options(options: str) -> Any:
    """Beam PipelineOptions from "key=value,key=value" (the format of tfds build's --beam_pipeline_options)."""
    beam = _beam()
    flags = [f"--{o.strip()}" for o in options.split(",") if o.strip()]
    return beam.options.pipeline_options.PipelineOptions(flags=flags)


def preparer(options: str) -> videos.Preparer:
    """A videos.load_videos `prepare` hook that prepares on Beam with these pipeline options."""
    parsed = pipeline_options(options)

    def prepare(builder: videos.LumiereVideoClips, listing: videos.Listing, settings: dict[str, Any],
                data: ml_collections.ConfigDict, skipped_path: str) -> None:
        prepare_with_beam(builder, listing, settings, data, skipped_path, parsed)

    return prepare


@dataclasses.dataclass(frozen=True)
class BeamPlan:
    """What the Beam builder runs: the listing (as a file the workers read), the splits it writes, and where the
    per-file outcomes go."""

    listing: videos.Listing
    settings: dict[str, Any]
    tasks: str  # JSON lines: {"index", "path", "name", "caption"} per listed file
    outcomes: str  # prefix of the JSON lines {"index", "starts", "reason", "detail", "split"} per listed file
    splits: tuple[str, ...]
    source: str  # data.videos (or data.images), for the error line
    skipped_path: str


class _Replan(Exception):
    """The splits that have clips differ from those the pipeline wrote: prepare again with these."""

    def __init__(self, splits: tuple[str, ...]):
        super().__init__(f"prepare again with splits {splits}")
        self.splits = splits


def prepare_with_beam(builder: videos.LumiereVideoClips, listing: videos.Listing, settings: dict[str, Any],
                      data: ml_collections.ConfigDict, skipped_path: str, options: Any) -> None:
    """Prepares `builder`'s config (same name, same data_dir) on Beam; a videos.Preparer.

    Raises ValueError, one line, when no listed file gives a training clip (as the local path does).
    """
    config_dir = epath.Path(skipped_path).parent
    config_dir.mkdir(parents=True, exist_ok=True)
    for stale in config_dir.glob(f"{WORK_PREFIX}*"):  # left by a preparation that was killed
        stale.rmtree(missing_ok=True)
    work = config_dir / f"{WORK_PREFIX}{uuid.uuid4().hex[:12]}"
    work.mkdir()
    try:
        tasks = work / "tasks.jsonl"
        tasks.write_text("".join(json.dumps({"index": i, "path": e.path, "name": e.name, "caption": e.caption})
                                 + "\n" for i, e in enumerate(listing.entries)))
        maybe_test = settings["test_fraction"] > 0 and len(listing.entries) >= 2
        splits: tuple[str, ...] = videos.SPLITS if maybe_test else ("train",)
        data_dir = os.path.expanduser(data.data_dir)
        source = videos.source_path(data, videos._kind_of({"settings": settings}))  # data.videos or data.images
        for attempt in range(3):  # at most: guessed splits, every outcome (no split), the splits with clips
            plan = BeamPlan(listing=listing, settings=settings, tasks=os.fspath(tasks),
                            outcomes=os.fspath(work / f"outcomes-{attempt}"), splits=splits, source=source,
                            skipped_path=skipped_path)
            beam_builder = LumiereVideoClipsBeam(plan=plan, config=builder.builder_config, data_dir=data_dir,
                                                 file_format="array_record")
            try:
                beam_builder.download_and_prepare(download_config=tfds.download.DownloadConfig(beam_options=options))
                return
            except _Replan as replan:
                splits = replan.splits
            except Exception as e:  # noqa: BLE001 - the runner wraps the writer's error in its own type
                if not splits or EMPTY_SPLIT_ERROR not in str(e):
                    raise
                log.info("%s: a split got no clip (at most one usable file); running again to record every "
                         "file's outcome, then to write the splits that have clips.", source)
                splits = ()
        raise RuntimeError(f"the Beam preparation of {source} did not settle on its splits: {splits}")
    finally:
        work.rmtree(missing_ok=True)


class LumiereVideoClipsBeam(videos.LumiereVideoClips, skip_registration=True):
    """videos.LumiereVideoClips written by an Apache Beam pipeline (same name, configs and files)."""

    name = "lumiere_video_clips"

    def __init__(self, *, plan: BeamPlan, **kwargs):
        self._beam_plan = plan
        super().__init__(**kwargs)

    def _split_generators(self, dl_manager: tfds.download.DownloadManager, pipeline: Any) -> dict[str, Any]:
        """Decodes every listed file once on the workers; each split's examples are its share of the clips."""
        del dl_manager  # Nothing to download.
        beam, plan = _beam(), self._beam_plan
        test_fraction = plan.settings["test_fraction"]
        decoded = (pipeline
                   | "ReadListing" >> beam.io.ReadFromText(plan.tasks)
                   | "ParseListing" >> beam.Map(json.loads)
                   | "SpreadFiles" >> beam.Reshuffle()  # one file per element, over all workers
                   | "Decode" >> beam.FlatMap(decode_file, settings=plan.settings)
                   | "OutcomesAndClips" >> beam.Partition(lambda element, n: 0 if element[0] == "file" else 1, 2))
        files = decoded[0] | "Outcomes" >> beam.Map(lambda element: element[1])
        stats = beam.pvalue.AsSingleton(
            files
            | "Usable" >> beam.Filter(lambda f: bool(f["starts"]))
            | "SplitHashes" >> beam.Map(lambda f: videos.SplitStats.of(f["unit"], f["index"], test_fraction))
            | "SplitStats" >> beam.CombineGlobally(videos.SplitStats.merge))
        _ = (files
             | "SplitOfFile" >> beam.Map(_with_split, stats=stats, test_fraction=test_fraction)
             | "OutcomeLines" >> beam.Map(json.dumps)
             | "WriteOutcomes" >> beam.io.WriteToText(plan.outcomes, file_name_suffix=".jsonl"))
        by_split = (decoded[1]
                    | "Clips" >> beam.Map(lambda element: element[1])
                    | "SplitOfClip" >> beam.Map(_route_clip, stats=stats, test_fraction=test_fraction)
                    | "BySplit" >> beam.Partition(lambda routed, n: videos.SPLITS.index(routed[0]), len(videos.SPLITS)))
        return {split: self._generate_examples(by_split[videos.SPLITS.index(split)], split) for split in plan.splits}

    def _generate_examples(self, clips: Any, split: str) -> Any:
        """The split's (key, example) PCollection."""
        return clips | f"{split.capitalize()}Examples" >> _beam().Map(lambda routed: routed[1])

    def _download_and_prepare(self, dl_manager: tfds.download.DownloadManager,
                              download_config: tfds.download.DownloadConfig) -> None:
        """Runs the pipeline, then computes the summary from the per-file outcomes as the local path does."""
        super()._download_and_prepare(dl_manager=dl_manager, download_config=download_config)
        plan = self._beam_plan
        results, splits = read_outcomes(plan.outcomes, len(plan.listing.entries))
        listing = plan.listing
        skipped = list(listing.skipped)
        skipped += [videos._skip(listing.entries[r.index].path, r.reason, r.detail) for r in results if r.reason]
        metadata = videos._metadata(listing, plan.settings, results, splits, skipped)
        videos._write_skipped(plan.skipped_path, skipped)
        if not metadata["clips"]["train"]:
            raise ValueError(videos._no_clip_line(plan.source, metadata, plan.skipped_path))
        with_clips = tuple(s for s in videos.SPLITS if metadata["clips"][s])
        if with_clips != plan.splits:
            raise _Replan(with_clips)
        self.info.metadata.update(metadata)


def decode_file(task: dict[str, Any], settings: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """One listed file -> ("file", its outcome) and ("clip", (index, unit, key, example)) per clip. Runs on the
    Beam workers, through the local path's own decoding (videos._prepare_video)."""
    beam = _beam()
    index = task["index"]
    with tempfile.TemporaryDirectory(prefix="lumiere-decode-") as tmp:
        out = os.path.join(tmp, "clips.npy")
        result = videos._prepare_video(videos.task_of(index, task["path"], out, settings))
        clips = np.load(out) if result.starts else None
    beam.metrics.Metrics.counter(COUNTERS, "files_decoded").inc()
    if result.reason:
        beam.metrics.Metrics.counter(COUNTERS, f"skipped_{result.reason}").inc()
    unit = videos._unit(task["name"], settings["seed"])  # the split hash
    yield "file", {"index": index, "unit": unit, "starts": list(result.starts), "reason": result.reason,
                   "detail": result.detail}
    if clips is None:
        return
    beam.metrics.Metrics.counter(COUNTERS, "clips").inc(len(result.starts))
    for k, (start, clip) in enumerate(zip(result.starts, clips)):
        yield "clip", (index, unit, videos.clip_key(index, k),
                       videos.clip_example(task["name"], task["caption"], start, clip))


def _with_split(outcome: dict[str, Any], stats: videos.SplitStats, test_fraction: float) -> dict[str, Any]:
    """A file's outcome as written: its split, if it gave clips."""
    split = videos.split_of(outcome["unit"], outcome["index"], stats, test_fraction) if outcome["starts"] else None
    return {k: v for k, v in outcome.items() if k != "unit"} | {"split": split}


def _route_clip(clip: tuple[int, float, int, dict[str, Any]], stats: videos.SplitStats,
                test_fraction: float) -> tuple[str, tuple[int, dict[str, Any]]]:
    """(split, (key, example)) of one clip."""
    index, unit, key, example = clip
    return videos.split_of(unit, index, stats, test_fraction), (key, example)


def read_outcomes(prefix: str, count: int) -> tuple[list[Any], dict[int, str]]:
    """The pipeline's per-file outcomes as the local path's (results in listing order, {index: split})."""
    rows = []
    for path in sorted(epath.Path(prefix).parent.glob(epath.Path(prefix).name + "*")):
        rows += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows.sort(key=lambda r: r["index"])
    if [r["index"] for r in rows] != list(range(count)):
        raise RuntimeError(f"the Beam pipeline recorded {len(rows)} outcomes for {count} listed files in {prefix}*.")
    results = [videos._Result(r["index"], r["starts"], r["reason"], r["detail"]) for r in rows]
    return results, {r["index"]: r["split"] for r in rows if r["split"]}
