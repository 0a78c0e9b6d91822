r"""Builds the training data (the shapes world, or a folder of videos) and its text cache once, before a launch.

The trainer builds both on first use, but on a cluster every process would
then build the same files into the same folder at once. Run this once (CPU is
enough) with the config and overrides the trainer will get; unknown flags
(--workdir, --distributed, --mode...) are ignored, so the trainer's command
line can be passed as is:

  JAX_PLATFORMS=cpu python launch/build_data.py --config=configs/t2v.py:size=small \
      --config.data.data_dir=/shared/lumiere_data
"""

import sys

from absl import flags
from ml_collections import config_flags

from lumiere_jax import train

_CONFIG = config_flags.DEFINE_config_file("config", None, "Python config file, as for lumiere_jax.main.",
                                          lock_config=True)

if __name__ == "__main__":
    flags.FLAGS(sys.argv, known_only=True)
    if _CONFIG.value is None:
        sys.exit("error: --config is required, e.g. --config=configs/t2v.py:size=small.")
    config = _CONFIG.value
    train.load_data(config, extra_captions=config.sample.prompts)
    print(f"Dataset and text cache ready under {config.data.data_dir}.")
