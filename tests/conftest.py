"""Shared fixtures: the smoke config, one small dataset and one trained smoke run per test session."""

import os

# Compiled programs are reused across the tests' processes (CLI subprocesses included).
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(os.path.dirname(__file__), "..", ".pytest_cache", "jax"))

# The tests' programs are tiny, so compiling them dominates: LLVM's optimizations cost more than they save.
# (Subprocesses that set their own XLA_FLAGS, such as the fake-mesh workers, add the option themselves.)
if "--xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)

from configs import t2v  # noqa: E402


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("tfds"))


def moving_colours(num_frames: int, height: int, width: int, phase: float) -> np.ndarray:
    """A smooth clip of moving colour waves, uint8 [T, H, W, 3]: video files for the video-source tests."""
    t = np.arange(num_frames)[:, None, None]
    y, x = np.mgrid[:height, :width]
    red = 127 + 120 * np.sin(0.2 * x[None] + 0.3 * t + phase)
    green = 127 + 120 * np.cos(0.15 * y[None] - 0.2 * t)
    blue = np.broadcast_to(60 + 40 * np.sin(0.1 * (x + y))[None], red.shape)
    return np.stack([red, green, blue], -1).astype(np.uint8)


def smoke_config(data_dir: str, config_file=t2v, **overrides):
    """`config_file` (a configs/ module, default configs/t2v.py) at size=smoke with its data under data_dir and
    `a__b=value` style overrides."""
    c = config_file.get_config("size=smoke")
    c.data.data_dir = data_dir
    for key, value in overrides.items():
        node = c
        *path, last = key.split("__")
        for p in path:
            node = node[p]
        node[last] = value
    return c


@pytest.fixture(scope="session")
def trained_workdir(tmp_path_factory, data_dir) -> str:
    """A smoke run trained for 4 steps (checkpoints at 2 and 4); tests only read it."""
    from lumiere_jax import train
    workdir = str(tmp_path_factory.mktemp("smoke_run"))
    train.train_and_evaluate(smoke_config(data_dir), workdir)
    return workdir
