r"""Frechet distance in feature-net space: real vs real near zero, growing as quality drops.

  python -m lumiere_jax.eval.feature_net --config=configs/feature_net.py --workdir=runs/feature_net
  python benchmarks/bench_frechet.py --feature_net=runs/feature_net --run=runs/t2v_tiny

Every row compares a set of --num clips with the same reference: the last 128 clips of the test split of
configs/t2v.py (size=tiny by default). Rows: the first --num real test clips (disjoint from the reference),
the same clips with Gaussian pixel noise, and clips generated from the evaluation prompts by a random-init
STUNet (step 0) and by the EMA weights of each checkpoint in --run. Generated rows also show the program
checker's accuracy. Writes benchmarks/results/frechet.json.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

import bench_common as bc  # noqa: E402
from configs import t2v as t2v_config  # noqa: E402
from lumiere_jax import checkpointing, evaluate, sampling, video_io  # noqa: E402
from lumiere_jax.diffusion.schedule import schedule_from  # noqa: E402
from lumiere_jax.eval import feature_net, frechet  # noqa: E402
from lumiere_jax.state import abstract_graphdef_and_state, init_model  # noqa: E402
from lumiere_jax.text.encoders import load_text_encoder  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--feature_net", required=True, help="workdir of a trained feature net")
    p.add_argument("--run", default="", help="a configs/t2v.py workdir; every checkpoint in it is sampled")
    p.add_argument("--config", default="size=tiny", help="configs/t2v.py variant of --run")
    p.add_argument("--num", type=int, default=60, help="clips per compared set")
    p.add_argument("--steps", type=int, default=25, help="denoising steps of generated clips")
    p.add_argument("--guidance", type=float, default=3.0)
    p.add_argument("--checkpoints", default="", help="comma-separated steps of --run to sample (default: all)")
    p.add_argument("--out", default="frechet", help="results JSON name")
    p.add_argument("--skip", default="", help="comma-separated rows to leave out: real, noise, random_init")
    args = p.parse_args()
    config = t2v_config.get_config(args.config)
    net = feature_net.FeatureNet.load(args.feature_net)
    real = feature_net.load_split(config.data, "test")["video"]
    n = args.num
    if len(real) < n + 128:
        raise ValueError(f"The test split has {len(real)} clips; --num={n} needs {n + 128} (num + 128 reference).")
    reference = net.features(feature_net.to_float(real[-128:]))

    def score(clips_uint8: np.ndarray) -> float:
        return frechet.frechet_distance_features(net.features(feature_net.to_float(clips_uint8)), reference)

    rows, records = [], []

    def add(name: str, clips_uint8: np.ndarray, accuracy: float | None = None, seconds: float | None = None):
        fd = score(clips_uint8)
        records.append({"set": name, "num": len(clips_uint8), "frechet": fd, "checker_all_accuracy": accuracy,
                        "sampling_s": seconds})
        rows.append([name, len(clips_uint8), f"{fd:.3f}", "" if accuracy is None else f"{accuracy:.2f}"])
        print(f"{name}: FD {fd:.3f}", flush=True)
        save()  # after every row: sampling a checkpoint takes minutes on a CPU

    def save(table: str = "") -> None:
        bc.write_json(args.out, {"machine": bc.machine(), "feature_net": os.path.abspath(args.feature_net),
                                 "run": args.run, "num": n, "steps": args.steps, "guidance": args.guidance,
                                 "results": records, "table": table})

    skip = set(filter(None, args.skip.split(",")))
    if "real" not in skip:
        add("real test clips (disjoint from the reference)", real[:n])
    rng = np.random.default_rng(0)
    for std in () if "noise" in skip else (0.1, 0.3):
        noisy = feature_net.to_float(real[:n]) + std * rng.normal(size=real[:n].shape)
        add(f"real + pixel noise std {std}", video_io.to_uint8(noisy.astype(np.float32)))

    encoder = load_text_encoder(config.text_encoder, config.text_encoder_path, config.text_max_length)
    expected = evaluate.eval_prompts(n, config.eval.seed)
    models = [] if "random_init" in skip else [("random-init STUNet (step 0)", init_model(config, config.seed))]
    if args.run:
        graphdef, abstract = abstract_graphdef_and_state(config, args.run)
        ckpt = checkpointing.Checkpointer(args.run, read_only=True)
        sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        wanted = [int(x) for x in args.checkpoints.split(",") if x] or sorted(ckpt.manager.all_steps())
        for step in wanted:
            state, _ = ckpt.restore(checkpointing.with_shardings(abstract, sharding), step)
            models.append((f"trained STUNet, step {step} (EMA)", (graphdef, state.ema)))
    for name, (graphdef, params) in models:
        t2v = sampling.TextToVideo(graphdef, params, encoder, schedule_from(config),
                                   num_frames=config.data.num_frames, resolution=config.data.resolution,
                                   channels=config.model.out_channels)
        t0 = time.perf_counter()
        clips = video_io.to_uint8(t2v([x["prompt"] for x in expected], seed=config.eval.seed, steps=args.steps,
                                      guidance=args.guidance, batch_size=config.eval.batch_size))
        seconds = time.perf_counter() - t0
        accuracy = evaluate.score_clips(clips, expected)["accuracy"]["all"]
        add(name, clips, accuracy, seconds)

    table = bc.print_table(f"Frechet distance in feature-net space to 128 real test clips ({args.config}, "
                           f"{args.steps} DDIM steps, guidance {args.guidance}; {bc.machine()})",
                           ["compared set", "clips", "Frechet distance", "checker accuracy (all attributes)"],
                           rows)
    save(table)


if __name__ == "__main__":
    main()
