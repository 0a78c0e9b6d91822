"""benchmarks/gpu_check.py (the stages of benchmarks/gpu.sh) at size=smoke on the CPU, so the GPU check cannot rot
while no GPU runs it: every stage writes its JSON with the fields a GPU run fills, and the package imports with
placeholders in place of the packages a bare CUDA image lacks. The GPU figures themselves need a GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import gpu_check  # noqa: E402
from configs import t2v  # noqa: E402


def load(out: str, stage: str) -> dict:
    with open(os.path.join(out, f"gpu_{stage}.json")) as f:
        return json.load(f)


def test_stages_write_their_figures(tmp_path, monkeypatch):
    monkeypatch.delenv("GPU_CHECK_HIDE", raising=False)
    out = str(tmp_path)
    common = [f"--out={out}", "--smoke", "--seconds=0.2"]
    for stage in ("devices", "train_step", "sampler"):
        assert gpu_check.main([f"--stage={stage}"] + common) == 0, stage
    assert gpu_check.main(["--stage=peers", "--rounds=1", "--steps=1"] + common) in (0, 1)  # no peer here: skipped
    status = "devices=0:1,train_step=0:20,sampler=0:9,peers=0:1"
    assert gpu_check.main(["--stage=summary", f"--status={status}"] + common) == 0

    for stage in gpu_check.STAGES:
        d = load(out, stage)
        assert d["smoke"] and d["label"] == gpu_check.SMOKE_LABEL and "not GPU figures" in d["label"]
        assert d["versions"]["jax"] and d["status"].startswith(("done", "skipped"))
    dev = load(out, "devices")
    assert dev["device"]["platform"] == "cpu" and dev["device"]["kind"] and dev["gpu_seen"] is False
    assert dev["matmul_bf16"]["tflop_per_s"] > 0

    train = load(out, "train_step")
    xla = train["variants"]["xla"]
    assert train["config"]["dtype"] == "bfloat16" and train["config"]["size"] == "smoke"
    assert train["peak_flops"] > 0 and train["peak_source"] and train["flops_per_step"] > 0
    assert xla["step_s"] > 0 and xla["clips_per_s"] > 0 and 0 < xla["utilization"] < 1 and xla["loss_finite"]
    assert xla["compile_s"] > 0 and xla["params_M"] > 0 and "meets_goal" not in xla  # a goal for GPUs only
    assert "GPU" in train["variants"]["cudnn"]["skipped"] and train["best"]["attention"] == "xla"

    sampler = load(out, "sampler")
    assert sampler["student"] == "not trained yet"
    done = {r["case"]: r for r in sampler["results"] if "clips_per_s" in r}
    config = t2v.get_config("size=smoke")
    assert done["teacher"]["steps"] == config.sample.steps and done["8_steps"]["steps"] == 8
    assert done["teacher"]["denoiser_evaluations_per_clip"] == 2 * config.sample.steps  # guidance: doubled batch
    assert done["8_steps"]["denoiser_evaluations_per_clip"] == 8 and done["8_steps"]["guidance"] == 1.0
    assert all(r["clips_per_s"] > 0 and r["finite"] for r in done.values())

    peers = load(out, "peers")
    assert peers.get("skipped") or all(r["step_s"] > 0 for r in peers["results"])
    summary = load(out, "summary")
    assert "xla" in summary["text"] and "not trained yet" in summary["text"]
    assert summary["stages"]["train_step"] == {"rc": 0, "seconds": 20.0}


def test_package_imports_with_placeholders_for_what_a_bare_image_lacks():
    """What gpu.sh --smoke does to mirror the GPU image: the train step's and sampler's imports, then the peers'
    without ml_collections (they take their clip shapes from PEER_SHAPES)."""
    code = ("import sys; sys.path.insert(0, 'benchmarks'); import gpu_check as g; "
            "why = g.install_placeholders(g.BARE_IMAGE_LACKS + EXTRA, g.PLACEHOLDER_OK + EXTRA); "
            "import configs.t2v, bench_common, lumiere_jax.train, lumiere_jax.sampling, lumiere_jax.state; "
            "assert all(isinstance(sys.modules.get(m, g._PlaceholderModule(m)), g._PlaceholderModule) for m in why), why; "
            "print(sorted(why))")
    for extra in ("()", "('ml_collections',)"):
        run = subprocess.run([sys.executable, "-c", f"EXTRA = {extra}; " + code], cwd=ROOT, capture_output=True,
                             text=True, timeout=120, env={**os.environ, "JAX_PLATFORMS": "cpu"})
        assert run.returncode == 0, run.stderr[-3000:]
        assert set(gpu_check.BARE_IMAGE_LACKS) <= set(eval(run.stdout.strip().splitlines()[-1]))  # noqa: S307


def test_peer_shapes_are_the_configs():
    for size, shapes in gpu_check.PEER_SHAPES.items():
        c = gpu_check.t2v_config(size)
        assert shapes == {"frames": c.data.num_frames, "resolution": c.data.resolution, "text_len": c.text_max_length,
                          "text_dim": c.model.text_dim, "batch": c.batch_size, "dtype": c.model.dtype}, size


def test_placeholders_stand_in_for_what_the_package_does_with_them():
    """Subclassing (a dataclass built with keywords its base would take), attributes, calls, decorators."""
    import dataclasses
    mod = gpu_check._PlaceholderModule("fake_tfds")

    @dataclasses.dataclass(kw_only=True)
    class Config(mod.core.BuilderConfig):
        frames: int = 8

    c = Config(name="x", frames=4)
    assert c.name == "x" and c.frames == 4
    assert mod.core.Version("1.0.0") is not None and mod.decorate(len) is len
    assert isinstance(mod.Features[int], type)
