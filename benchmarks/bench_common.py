"""Pieces every benchmark shares: the machine's name, the device peak, timing, fake batches, tables, JSON."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
# Vendor dense bf16 peaks (no sparsity), FLOP/s, matched on jax's device_kind in this order (the PCIe and NVL
# cards before the SXM ones, whose device_kind reads e.g. "NVIDIA H100 80GB HBM3").
GPU_BF16_PEAK = {"H100 PCIe": 756e12, "H100 NVL": 835e12, "H200 NVL": 835e12, "H100": 989e12, "H200": 989e12,
                 "A100": 312e12, "L4": 121e12, "V100": 125e12}
# The 1-minute load average when the benchmark started (this module's import): whether other jobs shared the
# CPU, which the figures of a CPU run depend on.
_LOAD_AT_START = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def machine() -> str:
    """One line naming the machine: CPU model and cores, or the accelerator."""
    dev = jax.devices()[0]
    if dev.platform == "cpu":
        model = platform.processor() or "CPU"
        try:
            with open("/proc/cpuinfo") as f:
                model = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
        except (OSError, StopIteration):
            pass
        return (f"{os.cpu_count()}-core {model} (CPU, jax {jax.__version__}; 1-min load average "
                f"{_LOAD_AT_START:.1f} at start)")
    return f"{jax.device_count()}x {dev.device_kind} ({dev.platform}, jax {jax.__version__})"


def time_call(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> list[float]:
    """Wall seconds of `repeats` calls of fn (each blocked until its results are ready), after warmup."""
    for _ in range(warmup):
        jax.block_until_ready(fn())
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        out.append(time.perf_counter() - t0)
    return out


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def measured_matmul_peak(n: int = 2048, repeats: int = 5) -> float:
    """Best f32 FLOP/s of an n x n matmul on the default device: the CPU's attainable peak, measured now."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    f = jax.jit(jnp.matmul)
    return 2.0 * n ** 3 / min(time_call(lambda: f(a, b), repeats))


def device_peak() -> tuple[float, str]:
    """(peak FLOP/s, how it was obtained): vendor bf16 dense peak on GPUs, a measured f32 matmul on CPU."""
    dev = jax.devices()[0]
    if dev.platform == "gpu":
        for key, peak in GPU_BF16_PEAK.items():
            if key in dev.device_kind:
                return peak, f"vendor bf16 dense peak of {dev.device_kind}"
        raise ValueError(f"No bf16 peak known for GPU {dev.device_kind!r}: add it to GPU_BF16_PEAK.")
    return measured_matmul_peak(), "measured f32 2048x2048 matmul, this run"


def flops_of(compiled: Any) -> float:
    """XLA's cost-analysis FLOPs of a compiled program (dict or per-computation list, by jax version)."""
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
        return float(sum(c.get("flops", 0.0) for c in cost))
    return float(cost.get("flops", 0.0))


def fake_batch(config: Any, batch_size: int | None = None, num_frames: int | None = None,
               seed: int = 0) -> tuple[dict[str, jax.Array], jax.Array, jax.Array]:
    """A training batch of the config's shapes (random clips and text features), plus the null caption."""
    b = batch_size or config.batch_size
    t = num_frames or config.data.num_frames
    r = config.data.resolution
    length, dim = config.text_max_length, config.model.text_dim
    k1, k2 = jax.random.split(jax.random.key(seed))
    batch = {"video": jax.random.uniform(k1, (b, t, r, r, config.model.in_channels), jnp.float32, -1.0, 1.0),
             "text": jax.random.normal(k2, (b, length, dim), jnp.float32),
             "text_mask": jnp.ones((b, length), bool)}
    null_mask = jnp.arange(length)[None, :] < 2  # the empty caption still has its [CLS] and [SEP] tokens
    return batch, jnp.zeros((1, length, dim), jnp.float32), null_mask


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Prints (and returns) a Markdown table."""
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def write_json(name: str, payload: dict[str, Any]) -> str:
    """Writes benchmarks/results/<name>.json; returns its path."""
    os.makedirs(RESULTS_DIR, exist_ok=True)
    path = os.path.join(RESULTS_DIR, name + ".json")
    with open(path, "w") as f:
        json.dump(payload, f, indent=2, default=_jsonable)
    print(f"wrote {path}", flush=True)
    return path


def _jsonable(x: Any) -> Any:
    if isinstance(x, (np.generic,)):
        return x.item()
    return str(x)
