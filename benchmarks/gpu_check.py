r"""The GPU check's stages, one per process (benchmarks/gpu.sh runs them, each under its own time limit).

  python benchmarks/gpu_check.py --stage=devices    --out=DIR   # what jax sees, package versions, a bf16 matmul
  python benchmarks/gpu_check.py --stage=train_step --out=DIR   # size=small bf16 train step, xla and cudnn attention
  python benchmarks/gpu_check.py --stage=sampler    --out=DIR   # clips/s: teacher at its steps, 8 DDIM steps
  python benchmarks/gpu_check.py --stage=peers      --out=DIR   # the PyTorch peers' step against ours, same GPU
  python benchmarks/gpu_check.py --stage=summary    --out=DIR   # reads the stages' files, prints a summary
  ... --smoke                                                      # size=smoke on the CPU: a dry run

Each stage writes DIR/gpu_<stage>.json and rewrites it as soon as a figure is measured, so a stage stopped by
its time limit leaves what it had done (`status` says where it was). Every file names the device, the versions
of jax, jaxlib, flax and torch, the config, and whether it is a GPU run or a CPU smoke dry run.

The stages build the model and a synthetic batch directly (as benchmarks/bench_train.py does), never the data
pipeline, so they need only jax, flax, optax, numpy and ml_collections; the peers need torch, diffusers and
imagen-pytorch, and run in a process without jax work, at the batch of our fastest step in gpu_train_step.json,
against that step's time. The package imports modules for data, checkpoints and logging at import time; any
of those that is not installed (or fails to import) is replaced by a placeholder module that the measured code
never calls, and the files list them under `placeholder_modules`. GPU_CHECK_HIDE=a,b treats installed modules
as missing; GPU_CHECK_HIDE=bare hides the ones a bare CUDA image lacks (BARE_IMAGE_LACKS; the smoke dry run
does, so that it imports what a GPU run will).

FLOP utilization = XLA's cost-analysis FLOPs of the compiled step with xla attention (a cuDNN fused attention
is a custom call that the cost analysis does not count, so both variants are divided by the same count) /
step time / the card's dense bf16 peak (NVIDIA datasheets: H100 and H200 SXM 989 TFLOP/s), with the peak and
its source in the file. On CPU the peak is a measured f32 matmul, as in bench_train.py. A step whose XLA
memory plan exceeds the GPU is recompiled at a batch that fits, before it runs (the file says so).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.abc
import importlib.metadata
import importlib.util
import json
import math
import os
import platform as _platform
import statistics
import subprocess
import sys
import time
import traceback
import types
from typing import Any, Callable

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
for _p in (BENCH, ROOT):
    if _p not in sys.path:
        sys.path.insert(0, _p)

STAGES = ("devices", "train_step", "sampler", "peers")
GOAL_UTILIZATION = 0.5  # the train step's target share of the bf16 peak
# What the measured code needs; without any of these a stage cannot run and says so.
ESSENTIAL = ("jax", "jaxlib", "numpy", "flax", "optax", "ml_collections")
# Imported by the package at import time for data, checkpoints, video files and logging; never called here.
PLACEHOLDER_OK = ("grain", "tensorflow_datasets", "array_record", "av", "tensorboardX", "imageio", "imageio_ffmpeg",
                  "PIL", "tqdm", "scipy", "safetensors", "tokenizers", "orbax", "etils", "absl")
# The modules the project's packages provide that a bare CUDA image may lack (the smoke dry run hides them).
BARE_IMAGE_LACKS = ("grain", "tensorflow_datasets", "array_record", "av", "tensorboardX", "imageio_ffmpeg")
DISTRIBUTIONS = ("jax", "jaxlib", "jax-cuda12-plugin", "jax-cuda12-pjrt", "jax-cuda13-plugin", "jax-cuda13-pjrt",
                 "flax", "optax", "orbax-checkpoint", "ml-collections", "numpy", "grain", "tensorflow-datasets",
                 "array-record", "av", "tensorboardX", "imageio", "transformers", "torch", "torchvision",
                 "diffusers", "imagen-pytorch")
# configs/t2v.py's clip shapes (frames, resolution, text tokens and width, batch, compute dtype as this check runs
# it), for the peers stage where ml_collections is missing; tests/test_gpu_check.py keeps them equal.
PEER_SHAPES = {"small": dict(frames=16, resolution=64, text_len=24, text_dim=384, batch=32, dtype="bfloat16"),
               "smoke": dict(frames=4, resolution=16, text_len=24, text_dim=384, batch=2, dtype="bfloat16")}
# Temporaries XLA:CPU plans for the bf16 train step, GiB a clip (size=small at batch 32: 108.6 GiB): the first
# batch tried on a GPU is the config's, halved until this fits (check_fits then checks the GPU's own plan).
PLAN_GIB_PER_CLIP = {"small": 3.4}
SMOKE_LABEL = "CPU smoke dry run (size=smoke on the CPU): checks the script; these are not GPU figures"
GPU_LABEL = "GPU run"


# ------------------------------------------------------------------------------------------------ placeholders

class _PlaceholderMeta(type):
    """Classes standing in for a missing module's attributes: any attribute is another placeholder, calling one
    gives an instance, subclassing works (a dataclass subclass built with unknown keywords too)."""

    def __getattr__(cls, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _placeholder(f"{cls.__name__}.{name}")

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if cls.__dict__.get("_placeholder") and len(args) == 1 and not kwargs and callable(args[0]):
            return args[0]  # used as a decorator
        try:
            return super().__call__(*args, **kwargs)
        except TypeError:  # a subclass whose __init__ does not know a keyword the real base class takes
            obj = object.__new__(cls)
            for k, v in kwargs.items():
                object.__setattr__(obj, k, v)
            return obj

    def __getitem__(cls, item: Any) -> Any:
        return cls

    def __or__(cls, other: Any) -> Any:
        return cls

    __ror__ = __or__


class _Placeholder(metaclass=_PlaceholderMeta):
    _placeholder = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _placeholder(name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if len(args) == 1 and not kwargs and callable(args[0]):
            return args[0]
        return _placeholder("result")()


def _placeholder(name: str) -> type:
    return _PlaceholderMeta(name, (_Placeholder,), {"_placeholder": True})


class _PlaceholderModule(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _placeholder(f"{self.__name__}.{name}")


class _PlaceholderFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, tops: set[str]):
        self.tops = tops

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname.split(".")[0] in self.tops:
            return importlib.util.spec_from_loader(fullname, self, is_package=True)
        return None

    def create_module(self, spec: Any) -> types.ModuleType:
        return _PlaceholderModule(spec.name)

    def exec_module(self, module: types.ModuleType) -> None:
        pass


def install_placeholders(hide: tuple[str, ...] = (), modules: tuple[str, ...] = PLACEHOLDER_OK) -> dict[str, str]:
    """Puts a placeholder in place of every one of `modules` that is missing, fails to import, or is in `hide`;
    returns {module: why}. Must run before the package is imported."""
    why: dict[str, str] = {top: "hidden (GPU_CHECK_HIDE)" for top in modules if top in hide}
    finder = _PlaceholderFinder(set(why))
    if why:
        sys.meta_path.insert(0, finder)  # first: another package importing a hidden module gets the placeholder
    for top in modules:
        if top in why:
            continue
        if importlib.util.find_spec(top) is None:
            why[top] = "not installed"
        else:
            try:
                importlib.import_module(top)
            except Exception as e:  # noqa: BLE001 - any import failure: the module is replaced
                why[top] = f"import failed: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
                for name in [m for m in sys.modules if m == top or m.startswith(top + ".")]:
                    del sys.modules[name]
    finder.tops.update(why)
    if why and finder not in sys.meta_path:
        sys.meta_path.insert(0, finder)
    return why


def missing_essentials() -> list[str]:
    return [m for m in ESSENTIAL if importlib.util.find_spec(m) is None]


# ------------------------------------------------------------------------------------------------ records

def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": _platform.python_version()}
    for d in DISTRIBUTIONS:
        try:
            out[d] = importlib.metadata.version(d)
        except importlib.metadata.PackageNotFoundError:
            if d in ("jax", "jaxlib", "flax", "optax", "numpy", "torch", "diffusers", "imagen-pytorch",
                     "ml-collections"):
                out[d] = None  # the ones a reader looks for are listed even when absent
    return out


class Record:
    """One stage's JSON file, rewritten whole (atomically) at every `write`."""

    def __init__(self, out_dir: str, stage: str, smoke: bool, placeholders: dict[str, str]):
        os.makedirs(out_dir, exist_ok=True)
        self.path = os.path.join(out_dir, f"gpu_{stage}.json")
        self.data: dict[str, Any] = {
            "stage": stage, "label": SMOKE_LABEL if smoke else GPU_LABEL, "smoke": smoke, "status": "started",
            "device": None, "versions": versions(), "placeholder_modules": placeholders,
            "env": {k: v for k, v in os.environ.items() if k.startswith(("XLA_", "JAX_", "TF_GPU", "NVIDIA_VISIBLE",
                                                                         "CUDA_VISIBLE"))},
            "started_unix": round(time.time(), 1)}
        self.write()

    def __setitem__(self, key: str, value: Any) -> None:
        self.data[key] = value

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def status(self, text: str) -> None:
        """What the stage is doing now (written at once: a stage stopped by its limit shows where it was)."""
        print(f"[{self.data['stage']}] {text}", flush=True)
        self.data["status"] = text
        self.write()

    def write(self) -> None:
        self.data["elapsed_s"] = round(time.time() - self.data["started_unix"], 2)
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.data, f, indent=2, default=_jsonable)
        os.replace(tmp, self.path)


def _jsonable(x: Any) -> Any:
    if hasattr(x, "item"):
        return x.item()
    return str(x)


def error_text(e: BaseException) -> str:
    lines = [l for l in str(e).splitlines() if l.strip()]
    return f"{type(e).__name__}: {lines[0][:500] if lines else ''}"


def device_info() -> dict[str, Any]:
    import jax
    import bench_common as bc
    devs = jax.devices()
    d = devs[0]
    info = {"platform": d.platform, "kind": d.device_kind, "count": len(devs), "machine": bc.machine()}
    try:
        stats = d.memory_stats() or {}
        if "bytes_limit" in stats:
            info["memory_gib"] = round(stats["bytes_limit"] / 2 ** 30, 1)
    except Exception:  # noqa: BLE001 - CPU devices have no memory stats
        pass
    return info


def nvidia_smi() -> str | None:
    try:
        run = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
        return run.stdout.strip() or run.stderr.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        return None


def peak_flops() -> tuple[float, str]:
    """The card's dense bf16 peak (vendor datasheet), or on CPU a measured f32 matmul (bench_common)."""
    import jax
    import bench_common as bc
    d = jax.devices()[0]
    try:
        peak, how = bc.device_peak()
    except ValueError:
        peak, how = matmul_flops(8192, "bfloat16"), f"no datasheet peak known for {d.device_kind}: measured bf16 matmul"
    if d.platform == "gpu":
        how += " (NVIDIA datasheets: H100/H200 SXM 989 TFLOP/s dense bf16, 1,979 with sparsity)"
    return peak, how


def matmul_flops(n: int, dtype: str, repeats: int = 10) -> float:
    """Best FLOP/s of an n x n x n matmul in `dtype` on the default device (random data)."""
    import jax
    import jax.numpy as jnp
    import bench_common as bc
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32).astype(dtype)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32).astype(dtype)
    f = jax.jit(jnp.matmul)
    return 2.0 * n ** 3 / min(bc.time_call(lambda: f(a, b), repeats, warmup=2))


class Clock:
    """The stage's own deadline (a little inside the limit gpu.sh sets), to skip work that cannot finish."""

    def __init__(self, budget_s: float):
        self.end = time.time() + budget_s

    def left(self) -> float:
        return self.end - time.time()


# ------------------------------------------------------------------------------------------------ stages

def stage_devices(args: argparse.Namespace, rec: Record, clock: Clock) -> int:
    rec["packages_missing"] = {m: "needed: the stages cannot run" for m in missing_essentials()}
    for m in ("torch", "diffusers", "imagen_pytorch"):
        if importlib.util.find_spec(m) is None:
            rec["packages_missing"][m] = "peers stage: that peer is skipped"
    if "jax" in rec["packages_missing"]:
        rec.status("cannot run: jax is not installed")
        return 2
    import jax
    rec["device"] = device_info()
    rec["devices"] = [str(d) for d in jax.devices()]
    rec["default_backend"] = jax.default_backend()
    rec["gpu_seen"] = jax.default_backend() == "gpu"
    rec["nvidia_smi"] = nvidia_smi()
    try:
        from jax._src.lib import cuda_versions  # present in CUDA builds only
        rec["cudnn_version"] = cuda_versions.cudnn_get_version() if cuda_versions else None
    except Exception:  # noqa: BLE001
        rec["cudnn_version"] = None
    rec.status("measuring a bf16 matmul")
    n = 8192 if rec["gpu_seen"] else 512
    rec["matmul_bf16"] = {"n": n, "tflop_per_s": matmul_flops(n, "bfloat16") / 1e12}
    rec.status("done")
    if not rec["gpu_seen"] and not args.smoke:
        print(f"[devices] jax sees no GPU (backend {jax.default_backend()}): {rec['devices']}", flush=True)
        return 3
    return 0


def t2v_config(size: str, attention: str = "xla"):
    from configs import t2v
    config = t2v.get_config(f"size={size}")
    config.model.dtype = "bfloat16"
    config.model.attention = attention
    return config


def config_record(config, batch: int) -> dict[str, Any]:
    m = config.model
    return {"size": config.size, "batch": batch, "frames": config.data.num_frames,
            "resolution": config.data.resolution, "dtype": m.dtype, "channels": m.channels,
            "channel_mult": list(m.channel_mult), "num_res_blocks": m.num_res_blocks,
            "attention_levels": list(m.attention_levels), "num_heads": m.num_heads, "text_len": config.text_max_length,
            "remat": m.remat}


def attentions(args: argparse.Namespace) -> list[str]:
    return [a for a in args.attention.split(",") if a]


def cost_flops(stage: Any) -> float | None:
    """XLA's cost-analysis FLOPs of a lowered or compiled program (None when it gives none)."""
    try:
        cost = stage.cost_analysis()
    except Exception:  # noqa: BLE001 - not every backend implements it
        return None
    if isinstance(cost, (list, tuple)):
        cost = {"flops": sum(c.get("flops", 0.0) for c in cost)}
    flops = float((cost or {}).get("flops", 0.0))
    return flops if flops > 0 else None


def stage_train_step(args: argparse.Namespace, rec: Record, clock: Clock) -> int:
    import jax
    import bench_common as bc
    from lumiere_jax.diffusion.schedule import schedule_from
    from lumiere_jax.state import init_model, init_state, make_optimizer
    from lumiere_jax.train import jit_train_step

    rec["device"] = device_info()
    gpu = jax.default_backend() == "gpu"
    size = "smoke" if args.smoke else args.size
    base = t2v_config(size)
    batch = args.batch or base.batch_size
    limit = bytes_limit()
    if gpu and not args.batch and size in PLAN_GIB_PER_CLIP and limit:
        while batch > 1 and batch * PLAN_GIB_PER_CLIP[size] * 2 ** 30 > 0.9 * limit:
            batch //= 2
        if batch != base.batch_size:
            rec["batch_note"] = (f"batch {base.batch_size} -> {batch}: XLA:CPU plans {PLAN_GIB_PER_CLIP[size]} GiB of "
                                 f"temporaries a clip for this step, the GPU's allocator has {limit / 2 ** 30:.1f} GiB")
    rec["config"] = config_record(base, batch)
    rec.status("measuring the peak")
    peak, peak_how = peak_flops()
    rec["peak_flops"], rec["peak_source"] = peak, peak_how
    rec["goal_utilization"] = GOAL_UTILIZATION
    rec["flops_note"] = ("utilization divides every variant by the FLOPs of the xla-attention step (a cuDNN fused "
                         "attention is a custom call that XLA's cost analysis does not count)")
    variants: dict[str, Any] = {}
    rec["variants"] = variants
    ref_flops: float | None = None
    todo = attentions(args)
    while todo:
        attention = todo.pop(0)
        if attention == "cudnn" and not gpu:
            variants[attention] = {"skipped": "cuDNN attention runs on an NVIDIA GPU only"}
            rec.write()
            continue
        if variants and clock.left() < 30:
            variants[attention] = {"skipped": f"{clock.left():.0f} s left in the stage's time"}
            rec.write()
            continue
        v: dict[str, Any] = {"attention": attention, "batch": batch}
        variants[attention] = v
        try:
            config = t2v_config(size, attention)
            config.batch_size = batch
            rec.status(f"building the model ({attention})")
            graphdef, params = init_model(config, 0)
            tx = make_optimizer(config)
            state = init_state(params, tx)
            step_args = bc.fake_batch(config, batch)
            v["params_M"] = sum(x.size for x in jax.tree.leaves(params)) / 1e6
            rec.status(f"compiling the train step ({attention})")
            t0 = time.perf_counter()
            lowered = jit_train_step(graphdef, tx, schedule_from(config), config,
                                     donate_argnums=(0,)).lower(state, *step_args)
            compiled = lowered.compile()
            v["compile_s"] = time.perf_counter() - t0
            v["flops_compiled"] = cost_flops(compiled)
            v["flops_lowered"] = cost_flops(lowered)
            check_fits(compiled, batch, v)
            if attention == "xla" or ref_flops is None:
                ref_flops, rec["flops_source"] = step_flops(v["flops_compiled"], v["flops_lowered"], attention)
            rec["flops_per_step"] = ref_flops
            rec.status(f"timing the train step ({attention})")
            timing = time_train_steps(compiled, state, step_args, min(args.seconds, max(clock.left() - 10, 2)))
            v.update(timing)
            step_s = timing["step_s"]
            v["clips_per_s"] = batch / step_s
            if ref_flops:
                v["tflop_per_s"] = ref_flops / step_s / 1e12
                v["utilization"] = ref_flops / step_s / peak
                if gpu:
                    v["meets_goal"] = v["utilization"] >= GOAL_UTILIZATION
            print(f"[train_step] {attention}: {step_s * 1e3:.2f} ms/step, {batch / step_s:.1f} clips/s"
                  + (f", {100 * v['utilization']:.1f}% of peak" if ref_flops else ""), flush=True)
        except Exception as e:  # noqa: BLE001 - recorded, then the next variant
            traceback.print_exc()
            v["error"] = error_text(e)
            if out_of_memory(e) and batch > 1 and clock.left() > 60:  # unattended: try again at a smaller batch
                batch = e.fits if isinstance(e, PlannedOutOfMemory) else batch // 2
                rec["config"]["batch"] = batch
                rec["batch_halved"] = f"{attention}: {v['error']}"
                ref_flops = ref_flops * batch / v["batch"] if ref_flops else None  # linear in the batch (AdamW's share
                # is tiny)
                todo.insert(0, attention)
        rec.write()
    done = {k: v for k, v in variants.items() if "step_s" in v}
    if "xla" in done and "cudnn" in done:  # in clips/s: a variant retried at half the batch still compares
        rec["cudnn_speedup"] = done["cudnn"]["clips_per_s"] / done["xla"]["clips_per_s"]
    if done:
        best = max(done, key=lambda k: done[k]["clips_per_s"])
        rec["best"] = {"attention": best, **{k: done[best].get(k) for k in ("batch", "step_s", "clips_per_s",
                                                                             "utilization", "meets_goal")}}
    rec.status("done")
    return 0 if done and not any("error" in v for v in variants.values()) else 1


def step_flops(compiled: float | None, lowered: float | None, attention: str) -> tuple[float | None, str]:
    """The step's FLOPs: XLA's count for the compiled step (as bench_train.py), unless it is far below the count
    for the program as written (lowered), as when a backend leaves library calls (GEMMs, convolutions) uncounted."""
    if compiled and (not lowered or compiled >= 0.8 * lowered):
        return compiled, f"cost analysis of the compiled step, model.attention={attention}"
    if lowered:
        return lowered, (f"cost analysis of the lowered step (model.attention={attention}): the compiled step's "
                         f"count ({compiled}) was under 80% of it")
    return None, "no cost analysis"


def bytes_limit() -> int | None:
    """What the device's allocator may hand out (None on CPU; GPU_CHECK_BYTES_LIMIT sets one, for a dry run)."""
    import jax
    if os.environ.get("GPU_CHECK_BYTES_LIMIT"):
        return int(float(os.environ["GPU_CHECK_BYTES_LIMIT"]))
    try:
        return (jax.devices()[0].memory_stats() or {}).get("bytes_limit")
    except Exception:  # noqa: BLE001 - CPU devices have no memory stats
        return None


class PlannedOutOfMemory(RuntimeError):
    """XLA's memory plan for the compiled step is larger than the device; `fits` is a batch that would fit."""

    def __init__(self, message: str, fits: int):
        super().__init__(message)
        self.fits = fits


def check_fits(compiled: Any, batch: int, v: dict[str, Any]) -> None:
    """Records XLA's memory plan of the step; raises PlannedOutOfMemory, before the step runs, if it exceeds what
    the device's allocator may hand out (a step that would fail, or crawl, is recompiled at a batch that fits)."""
    try:
        mem = compiled.memory_analysis()
        args = mem.argument_size_in_bytes + mem.output_size_in_bytes - mem.alias_size_in_bytes
        temp = mem.temp_size_in_bytes
    except Exception:  # noqa: BLE001 - not every backend plans
        return
    v["temp_gib"], v["args_gib"] = temp / 2 ** 30, args / 2 ** 30
    limit = bytes_limit()
    if not limit or args + temp <= limit:
        return
    fits = batch
    while fits > 1 and args + temp * fits / batch > 0.95 * limit:
        fits //= 2
    raise PlannedOutOfMemory(f"RESOURCE_EXHAUSTED (XLA's plan): the step needs {(args + temp) / 2 ** 30:.1f} GiB, the "
                             f"device's allocator has {limit / 2 ** 30:.1f} GiB; batch {fits} would fit", fits)


def out_of_memory(e: BaseException) -> bool:
    text = str(e)
    return "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower()


def time_train_steps(compiled, state, step_args, seconds: float) -> dict[str, Any]:
    """Two warm-up steps, then windows of steps dispatched back to back (one wait per window), for about
    `seconds`: the median window's time per step."""
    import jax
    import numpy as np
    holder = {"state": state}

    def steps(n: int) -> float:
        t0 = time.perf_counter()
        metrics = None
        for _ in range(n):
            holder["state"], metrics = compiled(holder["state"], *step_args)
        jax.block_until_ready(metrics)
        return time.perf_counter() - t0

    first = steps(1)
    warm = steps(1)
    per_window = max(1, min(50, int(min(0.5, seconds / 3) / max(warm, 1e-4))))
    windows = []
    t_end = time.perf_counter() + seconds
    while len(windows) < 3 or (time.perf_counter() < t_end and len(windows) < 20):
        windows.append(steps(per_window) / per_window)
        if len(windows) >= 3 and time.perf_counter() > t_end:
            break
    _, metrics = compiled(holder["state"], *step_args)
    loss = float(np.asarray(metrics["loss"]))
    return {"step_s": statistics.median(windows), "step_s_windows": [round(w, 7) for w in windows],
            "steps_per_window": per_window,
            "first_step_s": first, "loss": loss, "loss_finite": math.isfinite(loss)}


def stage_sampler(args: argparse.Namespace, rec: Record, clock: Clock) -> int:
    import jax
    import numpy as np
    import bench_common as bc
    from lumiere_jax import sampling
    from lumiere_jax.diffusion.schedule import schedule_from
    from lumiere_jax.state import init_model

    rec["device"] = device_info()
    gpu = jax.default_backend() == "gpu"
    size = "smoke" if args.smoke else args.size
    base = t2v_config(size)
    batch = args.sample_batch or (2 if args.smoke else 16)
    teacher_steps = base.sample.steps
    rec["config"] = {**config_record(base, batch), "sampler": base.sample.sampler}
    rec["student"] = "not trained yet"
    rec["note"] = (f"teacher: the config's {teacher_steps} DDIM steps at guidance {base.sample.guidance:g} (each step "
                   f"one call on the doubled batch: 2 denoiser evaluations per clip); 8_steps: the same weights at "
                   f"8 DDIM steps and guidance 1, one evaluation per clip per step: the cost an 8-step student with "
                   f"distilled guidance would have, not its quality. Random weights: speed does not depend on them.")
    cases = [("teacher", teacher_steps, float(base.sample.guidance)), ("8_steps", args.student_steps, 1.0)]
    atts = attentions(args)  # the other attentions' cheap case first: the teacher is what a time limit cuts
    order = [(atts[0], c) for c in cases] + [(a, c) for a in atts[1:] for c in reversed(cases)]
    results: list[dict[str, Any]] = []
    rec["results"] = results
    models: dict[str, Any] = {}
    data, null_text, null_mask = bc.fake_batch(base, batch)
    prompts = sampling.Prompts(data["text"], data["text_mask"], null_text, null_mask)
    shape = (base.data.num_frames, base.data.resolution, base.data.resolution, base.model.out_channels)
    schedule = schedule_from(base)
    for attention, (name, steps, guidance) in order:
        r: dict[str, Any] = {"case": name, "attention": attention, "steps": steps, "guidance": guidance,
                             "batch": batch,
                             "denoiser_evaluations_per_clip": steps * (1 if guidance == 1.0 else 2),
                             "model_calls_per_batch": steps}
        if attention == "cudnn" and not gpu:
            results.append({**r, "skipped": "cuDNN attention runs on an NVIDIA GPU only"})
            rec.write()
            continue
        if results and clock.left() < 20:
            results.append({**r, "skipped": f"{clock.left():.0f} s left in the stage's time"})
            rec.write()
            continue
        results.append(r)
        try:
            if attention not in models:
                rec.status(f"building the model ({attention})")
                models[attention] = init_model(t2v_config(size, attention), 0)
            graphdef, params = models[attention]
            options = sampling.SamplerOptions(steps=steps, guidance=guidance, sampler=base.sample.sampler)

            def run():
                return sampling.generate(graphdef, params, prompts, jax.random.key(0), shape=shape,
                                         schedule=schedule, options=options)

            rec.status(f"compiling and running the sampler: {name}, {attention}")
            t0 = time.perf_counter()
            clips = jax.block_until_ready(run())
            r["compile_and_first_s"] = time.perf_counter() - t0
            r["finite"] = bool(np.isfinite(np.asarray(clips, np.float32)).all())
            rec.status(f"timing the sampler: {name}, {attention}")
            times: list[float] = []
            t_end = time.perf_counter() + min(args.seconds, max(clock.left() - 5, 1))
            while len(times) < 2 or (time.perf_counter() < t_end and len(times) < 5):
                times.append(bc.time_call(run, 1, warmup=0)[0])
            s = statistics.median(times)
            r.update({"seconds_per_batch": s, "seconds_all": [round(t, 6) for t in times], "clips_per_s": batch / s,
                      "s_per_clip": s / batch, "s_per_step": s / steps})
            print(f"[sampler] {name} ({steps} steps, guidance {guidance:g}, {attention}): {batch / s:.2f} clips/s",
                  flush=True)
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            r["error"] = error_text(e)
        rec.write()
    done = [r for r in results if "clips_per_s" in r]
    for att in {r["attention"] for r in done}:
        by = {r["case"]: r for r in done if r["attention"] == att}
        if "teacher" in by and "8_steps" in by:
            rec[f"speedup_8_steps_{att}"] = by["8_steps"]["clips_per_s"] / by["teacher"]["clips_per_s"]
    rec.status("done")
    return 0 if done and not any("error" in r for r in results) else 1


def ours_from_train_step(out_dir: str) -> dict[str, Any] | None:
    """Our fastest train step in this run's gpu_train_step.json (attention, batch, step time), if measured."""
    t = load(out_dir, "train_step")
    if not t or not t.get("best"):
        return None
    best = t["best"]
    v = t["variants"][best["attention"]]
    return {"model": f"lumiere_jax STUNet (jax.jit, attention={best['attention']})", "params": v["params_M"] * 1e6,
            "batch": v["batch"], "step_s": v["step_s"], "clips_per_s": v["clips_per_s"],
            "from": "gpu_train_step.json (this run, same device)"}


def stage_peers(args: argparse.Namespace, rec: Record, clock: Clock) -> int:
    """The peers' train step in PyTorch, at the batch and clip size of our fastest step in gpu_train_step.json,
    against that step's time. In a process without jax, so that torch has the whole GPU."""
    rec["device"] = None
    if importlib.util.find_spec("torch") is None:
        rec["skipped"] = "torch is not installed"
        rec.status("skipped: torch is not installed")
        return 0
    import warnings
    import torch
    import bench_peers as bp
    warnings.filterwarnings("ignore")  # the peers' deprecation notices
    gpu = not args.smoke
    if gpu and not torch.cuda.is_available():
        rec["skipped"] = f"torch {torch.__version__} sees no CUDA device"
        rec.status("skipped: " + rec["skipped"])
        return 1
    device = "cuda" if gpu else "cpu"
    torch.manual_seed(0)
    if gpu:
        torch.backends.cudnn.benchmark = True  # the peers' usual setting on a GPU
        rec["device"] = {"platform": "gpu", "kind": torch.cuda.get_device_name(0), "count": torch.cuda.device_count(),
                         "machine": f"torch {torch.__version__}, CUDA {torch.version.cuda}"}
    else:
        torch.set_num_threads(os.cpu_count() or 1)
        rec["device"] = {"platform": "cpu", "kind": "cpu", "count": 1,
                         "machine": f"{os.cpu_count()}-core CPU, torch {torch.__version__}"}
    size = "smoke" if args.smoke else args.size
    peer_size = "tiny" if args.smoke else args.size
    if "ml_collections" in rec["placeholder_modules"]:
        shapes = dict(PEER_SHAPES[size], size=size, shapes_from="PEER_SHAPES (no ml_collections)")
    else:
        config = t2v_config(size)
        shapes = {"size": size, "frames": config.data.num_frames, "resolution": config.data.resolution,
                  "text_len": config.text_max_length, "text_dim": config.model.text_dim,
                  "batch": config.batch_size, "dtype": config.model.dtype}
    ours = ours_from_train_step(args.out)
    batch = args.peers_batch or (ours["batch"] if ours else shapes["batch"])
    frames, res = shapes["frames"], shapes["resolution"]
    rec["config"] = dict(shapes, batch=batch)
    rec["ours"] = ours or "not measured: gpu_train_step.json has no step time"
    rec["peer_configs"] = {k: {kk: list(vv) if isinstance(vv, tuple) else vv for kk, vv in v.items()}
                           for k, v in bp.PEERS[peer_size].items()}
    if args.smoke:
        rec["note"] = "smoke: the peers' size=tiny configs at size=smoke clip shapes; parameter counts not matched"
    rec["step"] = ("forward, MSE loss, backward, AdamW, eager PyTorch under bf16 autocast from float32 weights; "
                   "ours (jitted, bf16 compute, float32 weights) also updates the EMA")
    models: dict[str, tuple[int, int, Callable[[], float]]] = {}  # name -> (params, batch, step)
    errors: dict[str, str] = {}
    rec["errors"] = errors
    peers = [("diffusers UNet3DConditionModel", "diffusers", bp.diffusers_step),
             ("imagen-pytorch Unet3D", "imagen_pytorch", bp.imagen_step)]
    for name, module, build in peers:
        if importlib.util.find_spec(module) is None:
            errors[name] = f"skipped: {module} is not installed"
            rec.write()
            continue
        b = batch
        while True:
            try:
                rec.status(f"building and warming up {name} (batch {b})")
                model, step = build(bp.PEERS[peer_size]["diffusers" if module == "diffusers" else "imagen"], b,
                                    frames, res, shapes["text_len"], shapes["text_dim"], device, shapes["dtype"])
                t0 = time.perf_counter()
                step()
                models[name] = (bp.count(model), b, step)
                print(f"[peers] {name}: {bp.count(model) / 1e6:.2f}M parameters, batch {b}, first step "
                      f"{time.perf_counter() - t0:.1f} s", flush=True)
                break
            except Exception as e:  # noqa: BLE001
                traceback.print_exc()
                errors[name] = error_text(e)
                model = step = None
                if gpu:
                    torch.cuda.empty_cache()
                if out_of_memory(e) and b > 1 and clock.left() > 20:
                    b //= 2  # the peer at half the batch; compared per clip
                    continue
                break
        rec.write()
    times: dict[str, list[float]] = {name: [] for name in models}
    rounds, round_s = 0, 0.0
    while models and rounds < args.rounds:
        if rounds and clock.left() < 1.5 * round_s:
            break
        t_round = time.perf_counter()
        for name, (_, _, fn) in models.items():
            fn()  # not timed: the first step after another model's
            for _ in range(args.steps):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
        round_s = time.perf_counter() - t_round
        rounds += 1
        results = []
        for name, ts in times.items():
            n, b, _ = models[name]
            med = statistics.median(ts)
            results.append({"model": name, "params": n, "batch": b, "step_s": med,
                            "step_s_all": [round(t, 6) for t in ts], "clips_per_s": b / med,
                            "ours_speedup": ours["clips_per_s"] / (b / med) if ours else None})
        rec["results"] = results
        rec["rounds_done"], rec["steps_per_round"] = rounds, args.steps
        rec.status(f"round {rounds}/{args.rounds}: " + ", ".join(
            f"{k.split()[0]} {statistics.median(v) * 1e3:.1f} ms" for k, v in times.items()))
    failed = [n for n, e in errors.items() if n not in models and not e.startswith("skipped")]
    if not models and not failed:
        rec["skipped"] = "; ".join(errors.values())
        rec.status("skipped: no peer is installed")
        return 0
    rec.status("done")
    return 0 if models and not failed else 1


# ------------------------------------------------------------------------------------------------ summary

def load(out_dir: str, stage: str) -> dict[str, Any] | None:
    try:
        with open(os.path.join(out_dir, f"gpu_{stage}.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def flops_text(x: float | None) -> str:
    if not x:
        return "? FLOP"
    for unit, scale in (("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6)):
        if x >= scale:
            return f"{x / scale:.3g} {unit}"
    return f"{x:.3g} FLOP"


def summary(args: argparse.Namespace) -> int:
    """Reads the stages' files and gpu.sh's exit codes (--status name=rc:seconds,...); prints and writes
    gpu_summary.json."""
    statuses = {}
    for item in filter(None, args.status.split(",")):
        name, _, rest = item.partition("=")
        rc, _, secs = rest.partition(":")
        try:
            seconds = float(secs)
        except ValueError:
            seconds = float("nan")
        statuses[name] = {"rc": int(rc) if rc.lstrip("-").isdigit() else rc, "seconds": seconds}
    files = {s: load(args.out, s) for s in STAGES}
    dev = next((f["device"] for f in files.values() if f and f.get("device")), None)
    lines = []
    label = next((f["label"] for f in files.values() if f), SMOKE_LABEL if args.smoke else GPU_LABEL)
    v = next((f["versions"] for f in files.values() if f), versions())
    lines.append(f"GPU check: {label}")
    lines.append(f"device: {dev['kind'] + ' x' + str(dev['count']) if dev else 'unknown'}; jax {v.get('jax')}, "
                 f"jaxlib {v.get('jaxlib')}, flax {v.get('flax')}, torch {v.get('torch')}")
    for s in STAGES:
        st = statuses.get(s, {})
        rc = st.get("rc")
        word = {0: "ok", 124: "TIMED OUT", 137: "KILLED", None: "not run"}.get(rc, f"exit {rc}")
        if isinstance(rc, str):
            word = rc
        f = files.get(s)
        secs = st.get("seconds")
        secs = f"{secs:6.0f} s" if isinstance(secs, float) and math.isfinite(secs) else "       -"
        lines.append(f"  {s:<11} {word:<10} {secs}   {'' if f is None else 'last status: ' + str(f.get('status'))}")
    out: dict[str, Any] = {"label": label, "device": dev, "versions": v, "stages": statuses}
    t = files.get("train_step")
    if t and t.get("config"):
        cfg = t.get("config", {})
        peak = t.get("peak_flops")
        lines.append(f"train step, size={cfg.get('size')} {cfg.get('dtype')} batch {cfg.get('batch')}, "
                     f"{flops_text(t.get('flops_per_step'))} a step, peak {flops_text(peak)}/s "
                     f"(goal {100 * GOAL_UTILIZATION:.0f}% on a GPU):")
        for att, r in (t.get("variants") or {}).items():
            if "step_s" in r:
                util = f", {100 * r['utilization']:.1f}% of peak" if r.get("utilization") is not None else ""
                lines.append(f"  {att:<6} {r['step_s'] * 1e3:9.2f} ms/step  {r['clips_per_s']:8.2f} clips/s{util}")
            else:
                lines.append(f"  {att:<6} {r.get('skipped') or r.get('error') or 'not finished'}")
        out["train_step"] = {k: t.get(k) for k in ("best", "cudnn_speedup", "peak_flops", "flops_per_step")}
    s = files.get("sampler")
    if s and s.get("config"):
        lines.append(f"sampler, batch {s.get('config', {}).get('batch')} (student: {s.get('student')}):")
        for r in s.get("results") or []:
            what = (f"{r['clips_per_s']:8.2f} clips/s  {r['s_per_clip'] * 1e3:8.1f} ms/clip" if "clips_per_s" in r
                    else r.get("skipped") or r.get("error") or "not finished")
            lines.append(f"  {r['case']:<8} {r['steps']:>3} steps, guidance {r['guidance']:g}, {r['attention']:<5} "
                         f"{r['denoiser_evaluations_per_clip']:>4} evals/clip: {what}")
        out["sampler"] = [{k: r.get(k) for k in ("case", "attention", "steps", "guidance", "clips_per_s")}
                          for r in s.get("results") or []]
    p = files.get("peers")
    if p:
        if p.get("skipped"):
            lines.append(f"peers: skipped ({p['skipped']})")
        ours = p.get("ours")
        if p.get("results") is not None or ours:
            lines.append("peers (train step, same device; ours from gpu_train_step.json)"
                         + (f"; {p['note']}:" if p.get("note") else ":"))
        for r in ([ours] if isinstance(ours, dict) else []) + (p.get("results") or []):
            speed = f"  ours faster by {r['ours_speedup']:.2f}x" if r.get("ours_speedup") else ""
            lines.append(f"  {r['model']:<48} {r['params'] / 1e6:6.2f}M  batch {r['batch']:>3}  "
                         f"{r['step_s'] * 1e3:9.2f} ms/step  {r['clips_per_s']:8.2f} clips/s{speed}")
        for name, e in (p.get("errors") or {}).items():
            if not any(r["model"] == name for r in p.get("results") or []):
                lines.append(f"  {name}: {e}")
        out["peers"] = p.get("results")
    text = "\n".join(lines)
    print(text, flush=True)
    out["text"] = text
    with open(os.path.join(args.out, "gpu_summary.json"), "w") as f:
        json.dump(out, f, indent=2, default=_jsonable)
    return 0


# ------------------------------------------------------------------------------------------------ main

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stage", required=True, choices=STAGES + ("summary",))
    p.add_argument("--out", required=True, help="folder for gpu_<stage>.json")
    p.add_argument("--smoke", action="store_true", help="size=smoke, on whatever jax has (the CPU): a dry run")
    p.add_argument("--budget_s", type=float, default=300.0, help="the stage's time; work that cannot finish is skipped")
    p.add_argument("--size", default="small", help="configs/t2v.py size (GPU runs)")
    p.add_argument("--attention", default="xla,cudnn", help="model.attention implementations to time")
    p.add_argument("--batch", type=int, default=0, help="train-step batch (default: the config's)")
    p.add_argument("--sample_batch", type=int, default=0, help="clips per sampler call (default 16; smoke 2)")
    p.add_argument("--peers_batch", type=int, default=0, help="peers' batch (default: the config's)")
    p.add_argument("--student_steps", type=int, default=8)
    p.add_argument("--seconds", type=float, default=6.0, help="timing time per measured figure")
    p.add_argument("--rounds", type=int, default=3, help="peers: interleaved timing rounds")
    p.add_argument("--steps", type=int, default=3, help="peers: steps per model per round")
    p.add_argument("--status", default="", help="summary: gpu.sh's stage=rc:seconds,...")
    args = p.parse_args(argv)
    if args.stage == "summary":
        return summary(args)
    hide = tuple(m for m in os.environ.get("GPU_CHECK_HIDE", "").split(",") if m)
    hide = tuple(m for h in hide for m in (BARE_IMAGE_LACKS if h == "bare" else (h,)))
    # The peers need no config object: without ml_collections they take the clip shapes from PEER_SHAPES.
    placeholders = install_placeholders(hide, PLACEHOLDER_OK + (("ml_collections",) if args.stage == "peers" else ()))
    rec = Record(args.out, args.stage, args.smoke, placeholders)
    clock = Clock(args.budget_s - 5)
    missing = [m for m in missing_essentials() if m not in placeholders]
    if missing and args.stage != "devices":
        rec.status(f"cannot run: {', '.join(missing)} not installed (carry them as wheels: benchmarks/gpu_wheels.sh)")
        return 2
    stage = {"devices": stage_devices, "train_step": stage_train_step, "sampler": stage_sampler,
             "peers": stage_peers}[args.stage]
    try:
        return stage(args, rec, clock)
    except Exception as e:  # noqa: BLE001 - the file says what went wrong
        traceback.print_exc()
        rec["error"] = error_text(e)
        rec.status(f"failed: {rec['error']}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
