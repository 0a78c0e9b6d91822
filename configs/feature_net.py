r"""The feature network for Frechet distances on the shapes world: a small (2+1)D-conv video classifier.

Train it once (10 to 20 minutes on a 2-core CPU at `size=tiny`), then point evaluation at it:

  python -m lumiere_jax.eval.feature_net --config=configs/feature_net.py --workdir=runs/feature_net
  python -m lumiere_jax.main --config=configs/t2v.py --workdir=runs/t2v --mode=eval \
      --config.eval.feature_net=runs/feature_net

It learns which colours, shapes and motions a clip shows (multi-label, the dataset's attribute records);
its penultimate layer is the feature space of the Frechet distance, as I3D's is for FVD. Measured at
size=tiny (700 steps, 18 minutes on a shared 2-core CPU), held-out accuracy on single-object clips:
colour 1.00, shape 0.50, motion 0.69 (chance: 0.13, 0.33, 0.20). The loss was still falling at 700
steps: a longer run (--config.train.steps=3000) should give sharper shape and motion features.

Variants: `size=smoke` (seconds; what the tests run, on the smoke data), `size=tiny` (8 frames at 32x32,
the clip size of configs/t2v.py's tiny), `size=small` (16 frames at 64x64, configs/t2v.py's small).
The data keys must equal those of the text-to-video config it evaluates: same frames and resolution.
"""

import ml_collections

from lumiere_jax import config_lib

SIZES = {
    # name: (frames, resolution, num_train, num_test, channels, feature_dim, steps, batch)
    "smoke": (4, 16, 32, 8, (8, 16), 16, 4, 4),
    "tiny": (8, 32, 20_000, 256, (16, 32, 64), 64, 700, 16),
    "small": (16, 64, 100_000, 256, (16, 32, 64, 128), 128, 3000, 32),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Returns the locked config; `arg` is `key=value,...` with key `size`."""
    args = config_lib.parse_arg(arg, size="tiny")
    if args.size not in SIZES:
        raise ValueError(f"configs/feature_net.py: size={args.size!r} is not one of {sorted(SIZES)}.")
    frames, res, num_train, num_test, channels, feature_dim, steps, batch = SIZES[args.size]
    c = ml_collections.ConfigDict()
    c.size = args.size
    c.seed = 0

    # Data: the shapes-world dataset of configs/t2v.py with the same size (its train split).
    c.data = ml_collections.ConfigDict()
    c.data.data_dir = "~/tensorflow_datasets"
    c.data.num_frames = frames
    c.data.resolution = res
    c.data.num_train = num_train
    c.data.num_test = num_test
    c.data.seed = 0
    c.data.max_train_clips = 6000  # read into memory once; a short training sees each a few times
    c.data.noise_std = 0.05  # Gaussian noise added to training clips, so generated clips are not out of range

    # Network (lumiere_jax/eval/feature_net.py: FeatureNetConfig).
    c.model = ml_collections.ConfigDict()
    c.model.channels = channels  # (2+1)D-conv stages; each after the first halves time and space
    c.model.feature_dim = feature_dim  # the Frechet feature space

    # Training.
    c.train = ml_collections.ConfigDict()
    c.train.steps = steps
    c.train.batch_size = batch
    c.train.learning_rate = 3e-3
    c.train.warmup_steps = min(50, steps)
    c.train.weight_decay = 1e-4
    c.train.log_every = 50 if steps > 50 else 1
    return config_lib.lock(c)
