r"""Our STUNet train step against peers' video U-Nets, same clip size, matched parameter count, one process.

Peers, built from configs (no downloads): diffusers' UNet3DConditionModel (the ModelScope text-to-video
U-Net) and imagen-pytorch's Unet3D (with space-time downsampling, temporal_strides=2, as in Lumiere).
They live in their own environment, never in setup.py:

  python -m venv peervenv && peervenv/bin/pip install -e . -r benchmarks/requirements-peers.txt
  peervenv/bin/python benchmarks/bench_peers.py                  # tiny: batch 8, 8 frames at 32x32

On a GPU the peers run on the GPU that jax uses, in the config's compute dtype (autocast for bfloat16, from
float32 weights, as ours): install a CUDA jax (`pip install -U "jax[cuda12]"`) into the same venv; the PyPI
torch build carries CUDA.

Each model runs a full training step (forward, MSE loss, backward, AdamW update); ours is the jitted
lumiere_jax.train step, which also updates the EMA. Models are timed in interleaved rounds, so load drift
on a shared machine hits all alike, and the table gives each one's median and its ratio to ours.
Writes benchmarks/results/peers_<platform>.json.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import jax  # noqa: E402
import torch  # noqa: E402

import bench_common as bc  # noqa: E402
from configs import t2v  # noqa: E402
from lumiere_jax.diffusion.schedule import schedule_from  # noqa: E402
from lumiere_jax.state import init_model, init_state, make_optimizer  # noqa: E402
from lumiere_jax.train import jit_train_step  # noqa: E402
from lumiere_jax import host_memory  # noqa: E402

# Peer configurations whose parameter counts match configs/t2v.py sizes within ~20% (printed when run).
PEERS = {
    "tiny": {
        "diffusers": dict(block_out_channels=(16, 32, 48), layers_per_block=1, norm_num_groups=8,
                          attention_head_dim=8, cross_attention_dim=384,
                          down_block_types=("DownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D"),
                          up_block_types=("CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "UpBlock3D")),
        "imagen": dict(dim=16, dim_mults=(1, 2, 5), num_resnet_blocks=1, layer_attns=(False, False, True),
                       layer_cross_attns=(False, False, True), attn_heads=2, attn_dim_head=16,
                       temporal_strides=(2, 2, 1), text_embed_dim=384, max_text_len=24,
                       attn_pool_num_latents=8, init_cross_embed=False),
    },
    # Ours: 47.13M (channels 64 x (1, 2, 4, 4), 2 ResBlocks a level, attention at the two coarsest levels,
    # 4 heads of 64). diffusers 49.32M (1.05x), imagen-pytorch 44.44M (0.94x): the same widths and heads.
    "small": {
        "diffusers": dict(block_out_channels=(64, 128, 256, 256), layers_per_block=1, norm_num_groups=32,
                          attention_head_dim=64, cross_attention_dim=384,
                          down_block_types=("DownBlock3D", "DownBlock3D", "CrossAttnDownBlock3D",
                                            "CrossAttnDownBlock3D"),
                          up_block_types=("CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "UpBlock3D", "UpBlock3D")),
        "imagen": dict(dim=64, dim_mults=(1, 2, 4, 4), num_resnet_blocks=(2, 2, 3, 4),
                       layer_attns=(False, False, True, True), layer_cross_attns=(False, False, True, True),
                       attn_heads=4, attn_dim_head=64, temporal_strides=(2, 2, 2, 1), text_embed_dim=384,
                       max_text_len=24, attn_pool_num_latents=8, init_cross_embed=False),
    },
}


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def torch_step(model: torch.nn.Module, predict, x: torch.Tensor, device: str, dtype: str):
    """A training step (forward, MSE loss, backward, AdamW) of a peer on `device`; dtype "bfloat16" runs the
    forward and backward under autocast, as ours computes in bfloat16 with float32 weights."""
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
            loss = torch.mean((predict(model).float() - x) ** 2)
        loss.backward()
        opt.step()
        return loss.item()  # waits for the device

    return model, step


def diffusers_step(cfg: dict, batch: int, frames: int, res: int, text_len: int, text_dim: int, device: str,
                   dtype: str):
    from diffusers import UNet3DConditionModel
    model = UNet3DConditionModel(sample_size=res, in_channels=3, out_channels=3, **cfg)
    x = torch.randn(batch, 3, frames, res, res, device=device)  # [B, C, T, H, W]
    text = torch.randn(batch, text_len, text_dim, device=device)
    t = torch.randint(0, 1000, (batch,), device=device)
    return torch_step(model, lambda m: m(x, t, encoder_hidden_states=text).sample, x, device, dtype)


def import_imagen_unet3d():
    """imagen-pytorch's Unet3D, imported without the hub.

    Its module computes a default argument (T5's width) by fetching google/t5-v1_1-base's config from the
    hub at import; no download is allowed here and we pass text_embed_dim ourselves, so a local stand-in
    T5 config (t5-v1_1-base's d_model, 768) answers that one look-up.
    """
    import transformers
    original = transformers.T5Config.from_pretrained
    transformers.T5Config.from_pretrained = classmethod(lambda cls, *a, **k: cls(d_model=768))
    try:
        from imagen_pytorch.imagen_video import Unet3D
    finally:
        transformers.T5Config.from_pretrained = original
    return Unet3D


def imagen_step(cfg: dict, batch: int, frames: int, res: int, text_len: int, text_dim: int, device: str,
                dtype: str):
    Unet3D = import_imagen_unet3d()
    model = Unet3D(channels=3, **cfg)
    x = torch.randn(batch, 3, frames, res, res, device=device)
    text = torch.randn(batch, text_len, text_dim, device=device)
    mask = torch.ones(batch, text_len, dtype=torch.bool, device=device)
    t = torch.rand(batch, device=device)
    return torch_step(model, lambda m: m(x, t, text_embeds=text, text_mask=mask), x, device, dtype)


def ours_step(config, batch: int):
    config.batch_size = batch
    graphdef, params = init_model(config, 0)
    tx = make_optimizer(config)
    holder = {"state": init_state(params, tx)}
    data, null_text, null_mask = bc.fake_batch(config, batch)
    compiled = jit_train_step(graphdef, tx, schedule_from(config), config,  # as the trainer compiles it
                              donate_argnums=(0,)).lower(holder["state"], data, null_text, null_mask).compile()

    def step():
        holder["state"], metrics = compiled(holder["state"], data, null_text, null_mask)
        return float(metrics["loss"])

    return sum(x.size for x in jax.tree.leaves(params)), step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="tiny", choices=sorted(PEERS))
    p.add_argument("--batch", type=int, default=None, help="default: the config's batch size")
    p.add_argument("--rounds", type=int, default=4, help="interleaved timing rounds")
    p.add_argument("--steps", type=int, default=3, help="steps per model per round")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count())
    config = t2v.get_config(f"size={args.size}")
    batch = args.batch or config.batch_size
    frames, res = config.data.num_frames, config.data.resolution
    text_len, text_dim = config.text_max_length, config.model.text_dim
    platform = jax.devices()[0].platform
    # The peers run where ours runs: on the GPU that jax uses (torch's CUDA build needed), else on the CPU.
    device = "cuda" if platform == "gpu" else "cpu"
    if platform not in ("cpu", "gpu") or (device == "cuda" and not torch.cuda.is_available()):
        raise SystemExit(f"jax runs on {platform} but torch sees no CUDA device: install a CUDA build of torch "
                         f"beside a CUDA jax (or run both on CPU with JAX_PLATFORMS=cpu).")
    dtype = config.model.dtype  # the peers compute in it too (autocast), from float32 weights as ours
    print(f"machine: {bc.machine()}; torch {torch.__version__} on {device}, {torch.get_num_threads()} threads, "
          f"{dtype}", flush=True)

    ours_params, ours = ours_step(config, batch)
    cfgs = PEERS[args.size]
    d_model, d_step = diffusers_step(cfgs["diffusers"], batch, frames, res, text_len, text_dim, device, dtype)
    i_model, i_step = imagen_step(cfgs["imagen"], batch, frames, res, text_len, text_dim, device, dtype)
    models = {"lumiere_jax STUNet (jax.jit)": (ours_params, ours),
              "diffusers UNet3DConditionModel": (count(d_model), d_step),
              "imagen-pytorch Unet3D": (count(i_model), i_step)}
    for name, (n, fn) in models.items():
        fn()  # warm-up (and the compile for ours)
        print(f"{name}: {n / 1e6:.3f}M parameters ({n / ours_params:.2f}x ours)", flush=True)
    times = {name: [] for name in models}
    for r in range(args.rounds):
        for name, (_, fn) in models.items():
            for _ in range(args.steps):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{k.split()[0]} {bc.median(v) * 1e3:.0f} ms"
                                                          for k, v in times.items()), flush=True)
        report(models, times, batch, frames, res, cfgs, args, device, final=r + 1 == args.rounds, rounds=r + 1)


def report(models, times, batch, frames, res, cfgs, args, device: str, *, final: bool, rounds: int) -> None:
    """Writes the JSON (after every round: a CPU round of peers takes minutes) and, at the end, the table."""
    platform = jax.devices()[0].platform
    ours_s = bc.median(times["lumiere_jax STUNet (jax.jit)"])
    rows, records = [], []
    for name, (n, _) in models.items():
        s = bc.median(times[name])
        records.append({"model": name, "params": n, "step_s": s, "step_s_all": times[name],
                        "clips_per_s": batch / s, "ours_speedup": s / ours_s})
        rows.append([name, f"{n / 1e6:.3f}M", f"{s * 1e3:.0f}", f"{batch / s:.2f}", f"{s / ours_s:.2f}x"])
    table = ""
    if final:
        table = bc.print_table(f"Train step (fwd+bwd+AdamW), batch {batch}, {frames} frames at {res}x{res}, on "
                               f"{bc.machine()}; torch {torch.__version__}",
                               ["model", "params", "ms/step (median)", "clips/s", "ours is faster by"], rows)
    configs = {k: {kk: list(vv) if isinstance(vv, tuple) else vv for kk, vv in v.items()} for k, v in cfgs.items()}
    bc.write_json(args.out or f"peers_{platform}", {
        "machine": bc.machine(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "torch_device": device,
        "batch": batch, "frames": frames, "resolution": res, "rounds_done": rounds, "steps_per_round": args.steps,
        "peer_configs": configs, "results": records, "table": table})


if __name__ == "__main__":
    host_memory.ensure_hugepage_malloc()  # timed runs get the trainer's allocator setting
    main()
