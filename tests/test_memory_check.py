"""The train step's memory is checked before it runs: XLA's estimate of a known program, the limit's sources, the
one-line refusal with the knobs, a smoke run over a tiny limit refused before any step, and a normal run that
passes with its step compiled once."""

import logging
import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import pytest

from conftest import smoke_config
from lumiere_jax import memory_check, train
from lumiere_jax.memory_check import GIB, Limit, StepMemory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIB = 2 ** 20


def test_estimate_of_a_known_function():
    """x * 2 + 1 on a 1 MiB array: 1 MiB in, 1 MiB out; donated, the output reuses the input's buffer."""
    x = jax.ShapeDtypeStruct((512, 512), jnp.float32)
    plain = StepMemory.of(jax.jit(lambda a: a * 2 + 1).lower(x).compile())
    assert (plain.argument, plain.output, plain.alias) == (MIB, MIB, 0)
    assert 2 * MIB <= plain.peak <= 2 * MIB + 64 * 1024, plain  # elementwise: next to no temporaries
    donated = StepMemory.of(jax.jit(lambda a: a * 2 + 1, donate_argnums=0).lower(x).compile())
    assert (donated.argument, donated.output, donated.alias) == (MIB, MIB, MIB)
    assert MIB <= donated.peak <= MIB + 64 * 1024, donated


class FakeDevice:
    platform, device_kind = "gpu", "NVIDIA H100 80GB HBM3"

    def memory_stats(self):
        return {"bytes_limit": 60 * GIB, "bytes_in_use": 2 * GIB}  # 1 GiB of it the step's state


def test_the_limit_comes_from_the_config_the_device_or_the_host():
    assert memory_check.device_limit([FakeDevice()], 0.5) == Limit(GIB // 2, "memory_limit_gb=0.5 (512.0 MiB)", True)
    gpu = memory_check.device_limit([FakeDevice(), FakeDevice()], resident_bytes=2 * GIB)
    assert gpu == Limit(59 * GIB, "NVIDIA H100 80GB HBM3's 60.00 GiB (its allocator's limit, 1.00 GiB of it held "
                                  "by other arrays)")
    cpu = memory_check.device_limit(jax.local_devices()[:1], resident_bytes=10 * MIB)
    available = memory_check.host_available_bytes()
    assert abs(cpu.bytes_per_device - (available + 10 * MIB)) < 256 * MIB  # MemAvailable moves a little
    assert cpu.what.startswith("the host's") and "available memory" in cpu.what


def test_a_step_over_the_limit_is_refused_with_the_estimate_and_the_knobs(data_dir):
    config = smoke_config(data_dir, batch_size=8)
    memory = StepMemory(argument=100 * MIB, output=90 * MIB, alias=90 * MIB, temp=800 * MIB)  # 900 MiB
    limit = Limit(500 * MIB, "memory_limit_gb=0.49 (500.0 MiB)", configured=True)
    knobs = memory_check.knobs(config, {"data": 2, "fsdp": 1, "frames": 1}, 2, memory, limit)
    with pytest.raises(ValueError) as error:
        memory_check.check_fits(memory, limit, knobs)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("The train step needs 900.0 MiB per device by XLA's plan (arguments 100.0 MiB + "
                              "outputs 90.0 MiB - donated 90.0 MiB + temporaries 800.0 MiB), more than "
                              "memory_limit_gb=0.49 (500.0 MiB): use a smaller batch_size (now 8: 4 clips per "
                              "device; about batch_size=4 fits)"), message
    assert "model.remat='block'" in message and "mesh.fsdp=2" in message
    memory_check.check_fits(memory, Limit(GIB, "1 GiB"), knobs)  # fits: nothing raised
    memory_check.check_fits(memory, None, knobs)  # no known limit: not checked


def test_a_run_over_the_limit_is_refused_before_its_first_step(tmp_path, data_dir):
    workdir = tmp_path / "run"
    start = time.time()
    result = subprocess.run(
        [sys.executable, "-m", "lumiere_jax.main", "--config=configs/t2v.py:size=smoke", f"--workdir={workdir}",
         f"--config.data.data_dir={data_dir}", "--config.memory_limit_gb=0.001"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-3000:]
    assert lines[-1].startswith("error: The train step needs "), lines[-1]
    assert "more than memory_limit_gb=0.001 (1.0 MiB): use a smaller batch_size (now 2: 2 clips per device)" \
        in lines[-1] and "model.remat='block'" in lines[-1], lines[-1]
    assert not [d for d in os.listdir(workdir / "checkpoints")], os.listdir(workdir / "checkpoints")
    assert not (workdir / "metrics.jsonl").exists()
    assert time.time() - start < 120


def test_a_run_within_the_limit_trains_with_its_step_compiled_once(tmp_path, data_dir, caplog):
    caplog.set_level(logging.INFO)
    with jax.log_compiles(True):
        train.train_and_evaluate(smoke_config(data_dir, total_steps=1), str(tmp_path / "run"))
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("Train step: ") and "the limit: the host's" in m for m in messages), messages
    # Lowered once, by the memory check; the first step's call reused that executable.
    assert sum(m.startswith("Compiling jit(train_step)") for m in messages) == 1
