r"""Where the train step's time goes: the same step under config variants and model patches, in one process.

  python benchmarks/bench_variants.py                        # configs/t2v.py size=tiny, its batch (8)
  python benchmarks/bench_variants.py --variants=base,bf16 --steps=5

Each variant changes one thing against `base` and reports step time, XLA FLOPs and planned memory, as a
ratio to base (interleaved timing rounds, so a shared machine's drift hits all alike). Patches replace a
model function for this process only; the model files are not changed. Variants:

  base                 configs/t2v.py as is, compiled as the trainer compiles it (lumiere_jax.compile_options)
  xla_defaults         the same step under XLA's default compiler options (cpu_fusions=default)
  bf16                 model.dtype=bfloat16 (params stay f32; compute in bf16)
  bf16_ynn_fusions     bf16 with the CPU option that float32 gets (all YNNPACK fusion kinds)
  no_spatial_attn      every SpatialAttention (self and cross) an identity: the share of spatial attention
  no_temporal          model.temporal=False (the T2I U-Net): the share of every temporal layer
  temporal_conv_as_conv  TemporalConv as one lax.conv (k x 1 kernel over [T, H*W]) instead of k einsums
  remat_resblocks      jax.checkpoint around every ResBlock: memory saved vs time paid
Writes benchmarks/results/variants_<platform>.json.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402
import contextlib  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
from flax import nnx  # noqa: E402

import bench_common as bc  # noqa: E402
from configs import t2v  # noqa: E402
from lumiere_jax.models import spatial, temporal  # noqa: E402
from lumiere_jax.diffusion.schedule import schedule_from  # noqa: E402
from lumiere_jax.state import init_model, init_state, make_optimizer  # noqa: E402
from lumiere_jax import compile_options  # noqa: E402
from lumiere_jax.train import jit_train_step  # noqa: E402
from lumiere_jax import host_memory  # noqa: E402

MIB = 2 ** 20


@contextlib.contextmanager
def patched(obj, name, value):
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


def _conv_padded_as_conv(self, xp, kernel, bias):
    """TemporalConv._conv_padded as one convolution: time is a spatial axis of a k x 1 kernel."""
    b, tp, h, w, c = xp.shape
    y = jax.lax.conv_general_dilated(xp.reshape(b, tp, h * w, c).astype(kernel.dtype), kernel[:, None],
                                     (self.stride, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return (y + bias).reshape(b, -1, h, w, c)


def _remat_resblock_call():
    original = spatial.ResBlock.__call__

    def call(self, x, emb):
        graphdef, state = nnx.split(self)

        @jax.checkpoint
        def run(state, x, emb):
            return original(nnx.merge(graphdef, state), x, emb)

        return run(state, x, emb)

    return call


def variant_setup(name: str, config):
    """(config changes applied in place, patch context) for a variant."""
    if name == "xla_defaults":
        config.cpu_fusions = "default"
    elif name == "bf16":
        config.model.dtype = "bfloat16"
    elif name == "bf16_ynn_fusions":
        config.model.dtype = "bfloat16"
        return patched(compile_options, "train_step_options", lambda dtype, platform=None, cpu_fusions="all": {
            compile_options.YNN_FUSION_OPTION: compile_options.YNN_ALL_FUSIONS})
    elif name == "no_spatial_attn":
        return patched(spatial.SpatialAttention, "__call__", lambda self, x, text, mask: x)
    elif name == "no_temporal":
        config.model.temporal = False
    elif name == "temporal_conv_as_conv":
        return patched(temporal.TemporalConv, "_conv_padded", _conv_padded_as_conv)
    elif name == "remat_resblocks":
        return patched(spatial.ResBlock, "__call__", _remat_resblock_call())
    elif name != "base":
        raise ValueError(f"Unknown variant {name!r}.")
    return contextlib.nullcontext()


def build(name: str, size: str, batch: int | None):
    config = t2v.get_config(f"size={size}")
    if batch:
        config.batch_size = batch
    ctx = variant_setup(name, config)
    with ctx:
        graphdef, params = init_model(config, 0)
        tx = make_optimizer(config)
        state = init_state(params, tx)
        data, null_text, null_mask = bc.fake_batch(config)
        t0 = time.perf_counter()
        compiled = jit_train_step(graphdef, tx, schedule_from(config), config,
                                  donate_argnums=(0,)).lower(state, data, null_text, null_mask).compile()
        compile_s = time.perf_counter() - t0
    m = compiled.memory_analysis()
    holder = {"state": state}

    def step():
        holder["state"], metrics = compiled(holder["state"], data, null_text, null_mask)
        return metrics["loss"]

    return {"step": step, "flops": bc.flops_of(compiled), "temp_mib": m.temp_size_in_bytes / MIB,
            "compile_s": compile_s, "batch": config.batch_size}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="tiny")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--variants", default="base,xla_defaults,bf16,bf16_ynn_fusions,no_spatial_attn,no_temporal,"
                                         "temporal_conv_as_conv,remat_resblocks")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=2, help="steps per variant per round")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    print(f"machine: {bc.machine()}", flush=True)
    names = args.variants.split(",")
    built = {}
    for name in names:
        built[name] = build(name, args.size, args.batch)
        jax.block_until_ready(built[name]["step"]())  # warm-up
        print(f"{name}: compiled in {built[name]['compile_s']:.0f}s, {built[name]['flops'] / 1e9:.2f} GFLOP/step",
              flush=True)
    times = {n: [] for n in names}
    for r in range(args.rounds):
        for n in names:
            times[n] += bc.time_call(built[n]["step"], args.steps, warmup=0)
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{n} {bc.median(t) * 1e3:.0f} ms"
                                                          for n, t in times.items()), flush=True)
    base = names[0]
    b_s, b_f, b_m = bc.median(times[base]), built[base]["flops"], built[base]["temp_mib"]
    rows, records = [], []
    for n in names:
        s = bc.median(times[n])
        v = built[n]
        records.append({"variant": n, "step_s": s, "step_s_all": times[n], "gflops": v["flops"] / 1e9,
                        "temp_mib": v["temp_mib"], "time_vs_base": s / b_s, "compile_s": v["compile_s"]})
        rows.append([n, f"{s * 1e3:.0f}", f"{s / b_s:.2f}", f"{v['flops'] / 1e9:.2f}", f"{v['flops'] / b_f:.2f}",
                     f"{v['temp_mib']:.0f}", f"{v['temp_mib'] / b_m:.2f}"])
    table = bc.print_table(f"Train-step variants, t2v {args.size}, batch {built[base]['batch']}, on {bc.machine()}",
                           ["variant", "ms/step", "time vs base", "GFLOP/step", "FLOPs vs base", "temp MiB",
                            "memory vs base"], rows)
    bc.write_json(args.out or f"variants_{jax.devices()[0].platform}",
                  {"machine": bc.machine(), "size": args.size, "results": records, "table": table})


if __name__ == "__main__":
    host_memory.ensure_hugepage_malloc()  # timed runs get the trainer's allocator setting
    main()
