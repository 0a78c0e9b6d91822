r"""Command line: prepares the captioned videos (or images) that config.data names, once, before training.

  python -m lumiere_jax.prepare --config=configs/t2v.py --config.data.dataset=videos --config.data.videos=PATH
  python -m lumiere_jax.prepare --config=configs/t2v.py --config.data.dataset=videos --config.data.videos=PATH \
      --beam_pipeline_options="runner=DirectRunner,direct_num_workers=2,direct_running_mode=multi_processing"

Without --beam_pipeline_options the files are decoded in config.data.prepare_workers local processes; with them,
on Apache Beam (DirectRunner here; Dataflow, Flink or Spark on a cluster: docs/data.md#preparing-at-scale). Either
way the clips land where the trainer looks for them (config.data.data_dir, in a folder named by the listing and the
settings), so a training run with the same config and overrides reuses them. Prints each source's summary line.
"""

from __future__ import annotations

import sys

import ml_collections
from absl import app, flags
from ml_collections import config_flags

from lumiere_jax import config_lib, console
from lumiere_jax.data import videos, videos_beam

_CONFIG = config_flags.DEFINE_config_file("config", None, "Python config file, as for lumiere_jax.main, e.g. "
                                          "configs/t2v.py.", lock_config=True)
_BEAM = flags.DEFINE_string("beam_pipeline_options", None, "Prepare on Apache Beam with these pipeline options, "
                            "key=value,... (as tfds build takes them), e.g. 'runner=DirectRunner,direct_num_workers=2,"
                            "direct_running_mode=multi_processing'; without it, config.data.prepare_workers local "
                            "processes decode.")


def file_sources(data: ml_collections.ConfigDict) -> list[videos.Kind]:
    """The file sources that config.data names: data.videos for dataset=videos, data.images for dataset=images or
    the image share of a data.mixture."""
    kinds = [videos.VIDEOS] if data.dataset == "videos" else []
    if data.dataset == "images" or data.get("mixture"):
        kinds.append(videos.IMAGES)
    return kinds


def prepare(config: ml_collections.ConfigDict, beam_pipeline_options: str | None = None) -> list[str]:
    """Prepares (or finds prepared) every file source of config.data; returns their summary lines.

    Raises ValueError, one line, for a config without file sources or a source without a usable clip.
    """
    config_lib.validate_data(config)
    kinds = file_sources(config.data)
    if not kinds:
        raise ValueError(f"data.dataset={config.data.dataset!r} is rendered, not prepared from files "
                         f"(launch/build_data.py builds it ahead of a launch): give --config.data.dataset=videos "
                         f"--config.data.videos=PATH.")
    prepare_hook = videos_beam.preparer(beam_pipeline_options) if beam_pipeline_options else None
    return [videos.load_videos(config.data, kind, prepare=prepare_hook)["train"].summary for kind in kinds]


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise ValueError(f"Unexpected arguments {argv[1:]}: flags are written --name=value.")
    if _CONFIG.value is None:
        raise ValueError("--config is required, e.g. --config=configs/t2v.py.")
    console.setup_logging()
    for line in prepare(_CONFIG.value, _BEAM.value):
        print(line)


def _exit_with(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def _parse_flags(argv: list[str]) -> list[str]:
    """Parses flags and loads the config file; a problem there is one line on stderr and exit code 2."""
    try:
        rest = flags.FLAGS(argv)
        if _CONFIG.value is not None:
            _CONFIG.value.keys()  # a config file that failed to load raises on first use: surface it here
        return rest
    except Exception as e:  # noqa: BLE001 - absl, ml_collections and the config file raise many types
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        _exit_with(lines[-1] if lines else type(e).__name__)
    return []


def run() -> None:
    """Entry point: input errors print one line naming the problem and the fix, and exit 2."""
    try:
        app.run(main, flags_parser=_parse_flags)
    except (ValueError, FileNotFoundError, ImportError) as e:
        _exit_with(str(e))


if __name__ == "__main__":
    run()
