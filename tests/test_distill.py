"""Distillation (lumiere_jax/distill.py, configs/distill.py): the round's target algebra on an exact denoiser, the
guidance-conditioned student at init and in training, rounds through the command line (resume, sampling with one
model call per step, the one-line refusal of another step count), the SSR, export, and the benchmark's dry run."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import smoke_config
from configs import distill as distill_config
from configs import ssr as ssr_config
from lumiere_jax import commands, config_lib, distill, runs, sampling, shipped, ssr, train
from lumiere_jax.diffusion import samplers
from lumiere_jax.diffusion.schedule import CosineSchedule, predict_x_eps
from lumiere_jax.models.stunet import STUNet
from lumiere_jax.state import build_model, init_model, init_state, make_optimizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import bench_common  # noqa: E402
import distill_quality  # noqa: E402

SCHEDULE = CosineSchedule()
PROMPT = "a red circle moving left"


def _gaussian_denoiser(mean: jax.Array, spread: float):
    """The exact denoiser (posterior mean, as v) of clips x ~ N(mean, spread^2 I): linear in z_t, so the sampler's
    result moves with every step's z, and a 2N-step DDIM sampler lands elsewhere than an N-step one (a dataset of
    one clip would not tell them apart: every step count recovers that clip)."""
    def denoise(z: jax.Array, t: jax.Array) -> jax.Array:
        alpha, sigma = (a.reshape(-1, 1, 1, 1, 1) for a in SCHEDULE.alpha_sigma(t))
        x = mean + alpha * spread ** 2 / (alpha ** 2 * spread ** 2 + sigma ** 2) * (z - alpha * mean)
        return (alpha * z - x) / sigma
    return denoise


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_one_student_step_lands_where_two_teacher_steps_land(steps):
    mean = 0.5 * jnp.tanh(jax.random.normal(jax.random.key(0), (2, 2, 4, 4, 3)))
    teacher = _gaussian_denoiser(mean, 0.4)
    z = jax.random.normal(jax.random.key(1), mean.shape)

    def sample(denoise, num_steps):
        return samplers.sample(denoise, z, jax.random.key(2), SCHEDULE, num_steps=num_steps, thresholding="none")

    # A student that predicts the derived v target exactly.
    student = jax.jit(lambda z, t: distill.two_step_target(teacher, z, t, steps, SCHEDULE, thresholding="none"))
    twice, once, distilled = sample(teacher, 2 * steps), sample(teacher, steps), sample(student, steps)
    np.testing.assert_allclose(distilled, twice, atol=2e-5)
    assert float(jnp.abs(once - twice).max()) > 0.01  # the step counts differ by far more than the tolerance

    # Step by step: from every grid time, one student step lands on two teacher steps (not only at the end).
    grid, fine = jnp.linspace(1.0, 0.0, steps + 1), jnp.linspace(1.0, 0.0, 2 * steps + 1)

    def ddim(denoise, z, t, s):
        alpha_t, sigma_t = SCHEDULE.alpha_sigma(jnp.full((z.shape[0],), t))
        alpha_s, sigma_s = SCHEDULE.alpha_sigma(jnp.full((z.shape[0],), s))
        x, eps = predict_x_eps(z, denoise(z, jnp.full((z.shape[0],), t)), alpha_t, sigma_t)
        return alpha_s.reshape(-1, 1, 1, 1, 1) * x + sigma_s.reshape(-1, 1, 1, 1, 1) * eps

    for k in range(steps - 1):  # the last step returns the clean prediction: the sampler's result, checked above
        z_t = SCHEDULE.alpha_sigma(grid[k])[0] * mean + SCHEDULE.alpha_sigma(grid[k])[1] * z
        two = ddim(teacher, ddim(teacher, z_t, grid[k], fine[2 * k + 1]), fine[2 * k + 1], grid[k + 1])
        np.testing.assert_allclose(ddim(student, z_t, grid[k], grid[k + 1]), two, atol=2e-5)


def test_grid_times_cover_every_step_of_the_sampler():
    t = jnp.linspace(0.0, 0.999, 64)
    grid = distill.grid_times(t, 4)
    np.testing.assert_allclose(np.unique(np.asarray(grid)), [0.25, 0.5, 0.75, 1.0], atol=1e-6)
    assert bool(jnp.all(grid >= t))


def test_guided_student_starts_as_the_teacher_and_learns_its_guided_prediction(data_dir):
    config = smoke_config(data_dir, distill_config, optim__learning_rate=1e-3, optim__warmup_steps=0)
    # A teacher whose prediction depends on the caption and the time: the smoke STUNet with every weight moved at
    # random (a fresh one ignores both: its conditioning and output layers start at zero).
    teacher_cfg = dataclasses.replace(config_lib.model_config(config), guidance_embedding=False)
    teacher_graphdef, teacher_params = build_model(teacher_cfg, 1)
    leaves, treedef = jax.tree.flatten(teacher_params)
    keys = jax.random.split(jax.random.key(3), len(leaves))
    teacher_params = jax.tree.unflatten(treedef, [a + 0.1 * jax.random.normal(k, a.shape)
                                                  for a, k in zip(leaves, keys)])
    graphdef, params = init_model(config, 0)
    params = distill.init_student(params, teacher_params)

    b, f, r = 2, config.data.num_frames, config.data.resolution
    z = jax.random.normal(jax.random.key(4), (b, f, r, r, 3))
    t = jnp.array([0.3, 0.8])
    text = jax.random.normal(jax.random.key(5), (b, config.text_max_length, config.model.text_dim))
    mask = jnp.ones((b, config.text_max_length), bool)
    null_text, null_mask = jnp.zeros((1,) + text.shape[1:]), jnp.ones((1, config.text_max_length), bool)
    distiller = distill.Distiller(teacher_graphdef, SCHEDULE, steps=0, guidance_min=1.0, guidance_max=4.0,
                                  teacher_takes_guidance=False)
    # Jitted: run op by op, the STUNet's hundreds of small ops each compile on their own.
    teacher = jax.jit(lambda text: nnx.merge(teacher_graphdef, teacher_params)(z, t, text, mask))
    student = jax.jit(lambda p, w: nnx.merge(graphdef, p)(z, t, text, mask, guidance=w))
    target = jax.jit(lambda w: distiller.target(teacher_params, z, t, text, mask, null_text, null_mask, {}, w))

    conditional, unconditional = teacher(text), teacher(jnp.broadcast_to(null_text, text.shape))
    for w in (1.0, 2.5, 4.0):  # at init the guidance embedding adds nothing: the teacher's conditional prediction
        np.testing.assert_allclose(student(params, jnp.full((b,), w)), conditional, atol=1e-5)
    guided = target(jnp.array([1.0, 3.0]))
    np.testing.assert_allclose(guided[0], conditional[0], atol=1e-5)  # w = 1: the conditional prediction
    np.testing.assert_allclose(guided[1], unconditional[1] + 3 * (conditional[1] - unconditional[1]), atol=1e-4)

    # Trained on the teacher's targets for a few steps, the student's loss on a fixed draw goes down.
    w = jnp.array([2.0, 4.0])
    fixed_target = target(w)

    def loss(p):
        return float(jnp.mean(jnp.square(student(p, w) - fixed_target)))

    tx = make_optimizer(config)
    step = jax.jit(train.make_train_step(graphdef, tx, SCHEDULE, config, distiller=distiller))
    state = init_state(params, tx)
    batch = {"video": jnp.clip(z, -1, 1), "text": text, "text_mask": mask}
    before = loss(state.params)
    for _ in range(8):
        state, _ = step(state, batch, null_text, null_mask, teacher_params)
    after = loss(state.params)
    assert before > 1e-3 and after < 0.9 * before, (before, after)  # 0.357 -> 0.300 on the CPU


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lumiere_jax.main", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def guided_run(tmp_path_factory, data_dir, trained_workdir) -> str:
    """The guidance-conditioned student of the smoke run, trained 2 steps."""
    workdir = str(tmp_path_factory.mktemp("distill_guided"))
    train.train_and_evaluate(smoke_config(data_dir, distill_config, init_from=trained_workdir, total_steps=2), workdir)
    return workdir


@pytest.fixture(scope="module")
def round_run(tmp_path_factory, data_dir, guided_run) -> str:
    """A round through the command line: 2 steps of the student for 4 of the guided student; stopped at step 2,
    then resumed to step 4."""
    workdir = str(tmp_path_factory.mktemp("distill_2"))
    args = ["--config=configs/distill.py:size=smoke", f"--workdir={workdir}", f"--config.data.data_dir={data_dir}",
            f"--config.init_from={guided_run}", "--config.distill.steps=2"]
    first = _cli(*args, "--config.total_steps=2")
    assert first.returncode == 0, first.stderr[-3000:]
    resumed = _cli(*args, "--config.total_steps=4")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resumed from checkpoint at step 2" in resumed.stderr
    with open(os.path.join(workdir, "train_done.json")) as f:
        assert json.load(f)["step"] == 4
    return workdir


def test_a_round_records_what_it_was_distilled_for(round_run, guided_run, trained_workdir):
    distilled = distill.distilled_for(round_run)
    assert (distilled.steps, distilled.guidance_min, distilled.guidance_max) == (2, 1.0, 4.0)
    assert distilled.teacher == guided_run
    assert distill.distilled_for(guided_run).steps == 0 and distill.distilled_for(trained_workdir) is None
    with open(os.path.join(round_run, "config.json")) as f:
        saved = json.load(f)
    assert saved["distill"]["teacher_step"] == 2 and saved["sample"]["steps"] == 2  # the guided run's last step
    # Resuming it as another round is refused before anything is built.
    config = distill_config.get_config("size=smoke")
    config.init_from, config.distill.steps = guided_run, 1
    with pytest.raises(ValueError, match=r"distill.steps=1, but the run in .* distils with 2"):
        distill.prepare(config, round_run)


def test_a_round_samples_in_its_steps_with_one_model_call_each(round_run, tmp_path, monkeypatch):
    calls = []
    call = STUNet.__call__

    def counted(self, z, t, *args, **kwargs):
        jax.debug.callback(lambda rows: calls.append(len(rows)), t)
        return call(self, z, t, *args, **kwargs)

    monkeypatch.setattr(STUNet, "__call__", counted)
    sampling.generate.clear_cache()
    config = distill_config.get_config("size=smoke")
    config.sample.steps, config.sample.guidance = 2, 2.5
    out = str(tmp_path / "clip.gif")
    line = commands.check("sample", config, round_run, commands.SampleInputs(prompt=PROMPT, out=out))()
    assert "Wrote" in line and os.path.exists(out)
    assert calls == [1, 1]  # two steps, one clip each: no empty-caption half
    sampling.generate.clear_cache()


def test_another_step_count_is_one_line(round_run, guided_run, tmp_path):
    proc = _cli("--config=configs/distill.py:size=smoke", f"--workdir={round_run}", "--mode=sample",
                f"--prompt={PROMPT}", f"--out={tmp_path / 'clip.gif'}", "--config.sample.steps=3")
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "distilled to sample in 2" in errors[0] and "--config.sample.steps=2" in errors[0]
    assert f"any number ({guided_run})" in errors[0]
    with pytest.raises(ValueError, match=r"guidance 5 is outside \[1, 4\]"):
        distill.check_request(distill.distilled_for(round_run), 2, 5.0)
    config = distill_config.get_config("size=smoke")  # what --mode=sample checks before anything is restored
    config.sample.steps = 3
    with pytest.raises(ValueError, match="distilled to sample in 2"):
        distill.check_sampling(config, round_run)


def test_a_distilled_run_restores_and_exports_as_stunet_weights_plus_the_guidance_embedding(round_run,
                                                                                              trained_workdir,
                                                                                              tmp_path):
    student, teacher = runs.load(round_run), runs.load(trained_workdir)
    names, teacher_names = set(shipped.flatten(student.params)), set(shipped.flatten(teacher.params))
    assert teacher_names < names
    assert {n.split(".")[0] for n in names - teacher_names} == {"guidance_in", "guidance_out"}
    with open(os.path.join(round_run, "config.json")) as f:
        config_json = f.read()
    provenance = {k: "test" for k in shipped.PROVENANCE_FIELDS} | {"step": student.step}
    shipped.save("distill_2", student.params, config_json=config_json, provenance=provenance, eval_json=None,
                 root=str(tmp_path))
    loaded = shipped.load("distill_2", root=str(tmp_path))
    for name, array in shipped.flatten(student.params).items():
        np.testing.assert_array_equal(shipped.flatten(loaded.params)[name], array)
    assert distill.distilled_for(loaded.workdir).steps == 2  # a shipped student keeps to its step count


def _ship(workdir: str, name: str, root: str) -> str:
    """Exports the run in workdir as shipped model `name` under root (as tools/ship_weights.py does)."""
    run = runs.load(workdir)
    with open(os.path.join(workdir, "config.json")) as f:
        config_json = f.read()
    provenance = {k: "test" for k in shipped.PROVENANCE_FIELDS} | {"step": run.step}
    return shipped.save(name, run.params, config_json=config_json, provenance=provenance, eval_json=None, root=root)


@pytest.fixture
def shipped_student(round_run, trained_workdir, tmp_path, monkeypatch) -> None:
    """The smoke run shipped as the default model "teacher" of size smoke, and the 2-step round as its student."""
    root = str(tmp_path / "weights")
    _ship(trained_workdir, "teacher", root)
    _ship(round_run, "student_2", root)
    monkeypatch.setattr(shipped, "WEIGHTS_DIR", root)
    monkeypatch.setattr(shipped, "DEFAULTS", {("t2v", "smoke"): "teacher"})
    monkeypatch.setattr(shipped, "STUDENTS", {"teacher": {2: "student_2"}})


def test_a_shipped_student_stands_in_at_its_step_count(shipped_student, data_dir, tmp_path):
    config = smoke_config(data_dir)
    config.sample.guidance_rescale = 0.7  # the teacher's default: a student makes one call a step, so it is 0
    config.sample.steps = 2
    out = str(tmp_path / "clip.gif")
    line = commands.check("sample", config, None, commands.SampleInputs(prompt=PROMPT, out=out))()
    assert "shipped model student_2" in line and "distilled: 2 calls" in line, line
    config.sample.steps = 3  # no student samples in 3: the teacher does, two calls a step
    line = commands.check("sample", config, None, commands.SampleInputs(prompt=PROMPT, out=out))()
    assert "shipped model teacher," in line and "distilled" not in line, line
    # A student's guidance range is checked before anything is restored.
    config.sample.steps, config.sample.guidance = 2, 9.0
    with pytest.raises(commands.UsageError, match=r"guidance 9 is outside \[1, 4\]"):
        commands.check("sample", config, None, commands.SampleInputs(prompt=PROMPT, out=out))
    sampling.generate.clear_cache()


def test_the_demo_samples_with_a_shipped_student_at_its_step_count(shipped_student, round_run, tmp_path):
    from lumiere_jax import demo
    reporter = demo.StepReporter()
    teacher = demo.load_model(None, "--workdir", reporter, name="teacher")
    assert teacher.step_counts() == [2] and teacher.distilled is None
    page = demo.Demo(teacher, None, reporter, str(tmp_path))
    quiet = lambda *args, **kwargs: None  # noqa: E731  (the page's progress bar)
    _, _, status = page.text_to_video(PROMPT, "", 0, 2.0, 2, None, progress=quiet)
    assert "Weights: the shipped model student_2" in status and "distilled to 2 steps" in status, status
    assert page.students["student_2"].distilled.steps == 2
    _, _, status = page.text_to_video(PROMPT, "", 0, 2.0, 3, None, progress=quiet)
    assert "Weights: the shipped model teacher (step" in status, status
    student = demo.load_model(round_run, "--workdir", reporter)  # a distilled run given as --workdir
    assert student.step_counts() == [2] and "distilled to 2 steps of one call" in student.describe()
    sampling.generate.clear_cache()


def test_eval_of_a_distilled_run_at_another_step_count_is_refused_before_restoring(round_run, monkeypatch):
    config = distill_config.get_config("size=smoke")
    config.eval.steps = 3
    monkeypatch.setattr(runs, "load", lambda *a, **k: pytest.fail("restored before the check"))
    with pytest.raises(commands.UsageError, match=r"distilled to sample in 2: .*--config.eval.steps=2"):
        commands.check("eval", config, round_run)


def test_a_shipped_model_is_a_teacher(trained_workdir, data_dir, tmp_path):
    """configs/distill.py takes a shipped model's folder (lumiere_jax/weights/t2v_tiny) as init_from: the teacher
    is its weights, at the step its provenance names."""
    folder = _ship(trained_workdir, "teacher", str(tmp_path / "weights"))
    config = smoke_config(data_dir, distill_config, init_from=folder, total_steps=2)
    distill.prepare(config, str(tmp_path / "student"))
    run = runs.load(trained_workdir)
    assert config.distill.teacher_step == run.step
    _, teacher = distill.load_teacher(config)
    for name, array in shipped.flatten(run.params).items():
        np.testing.assert_array_equal(shipped.flatten(teacher.params)[name], array)


def test_a_student_ships_naming_its_shipped_teacher(round_run, trained_workdir, tmp_path):
    from tools import ship_weights
    root = str(tmp_path / "weights")
    with pytest.raises(ValueError, match="is a distilled student of .*give --teacher="):
        ship_weights.ship(round_run, "student_2", "python -m ...", root=root)
    with pytest.raises(ValueError, match="--teacher=teacher is not a shipped model"):
        ship_weights.ship(round_run, "student_2", "python -m ...", root=root, teacher="teacher")
    _ship(trained_workdir, "teacher", root)
    folder = ship_weights.ship(round_run, "student_2", "python -m ...", root=root, teacher="teacher")
    with open(os.path.join(folder, "config.json")) as f:
        assert json.load(f)["init_from"] == "lumiere_jax/weights/teacher"  # no folder of the training machine
    assert distill.distilled_for(folder).steps == 2


def test_the_ssr_distils_the_same_way(tmp_path_factory, data_dir, monkeypatch):
    teacher = str(tmp_path_factory.mktemp("ssr_teacher"))
    config = ssr_config.get_config("size=smoke")
    config.data.data_dir, config.total_steps = data_dir, 2
    train.train_and_evaluate(config, teacher)
    student = str(tmp_path_factory.mktemp("ssr_distill_2"))
    config = distill_config.get_config("size=smoke,teacher=ssr")
    config.data.data_dir, config.total_steps, config.init_from, config.distill.steps = data_dir, 2, teacher, 2
    train.train_and_evaluate(config, student)
    assert distill.distilled_for(student).steps == 2
    config.sample.steps = 3  # the cascade samples its SSR at the base model's step count
    with pytest.raises(ValueError, match="distilled to sample in 2"):
        distill.check_sampling(config, None, ssr_workdir=student)

    calls = []
    call = STUNet.__call__

    def counted(self, z, t, *args, **kwargs):
        jax.debug.callback(lambda rows: calls.append(len(rows)), t)
        return call(self, z, t, *args, **kwargs)

    monkeypatch.setattr(STUNet, "__call__", counted)
    sampling.generate.clear_cache()
    upsampler, step = ssr.SuperResolution.from_workdir(student)
    low = jnp.zeros((1, 4, 16, 16, 3))
    high = upsampler(low, [PROMPT], steps=2)
    assert step == 2 and high.shape == (1, 4, 32, 32, 3) and np.isfinite(high).all()
    assert calls == [1, 1]
    sampling.generate.clear_cache()


def test_benchmark_dry_run(round_run, guided_run, trained_workdir, tmp_path, monkeypatch):
    monkeypatch.setattr(bench_common, "RESULTS_DIR", str(tmp_path))
    gif = str(tmp_path / "side_by_side.gif")
    distill_quality.main([f"--teacher={trained_workdir}", "--teacher_steps=4,3",
                          f"--students={round_run},{guided_run}:3", "--clips=2", "--out=distill_cpu", f"--gif={gif}"])
    with open(tmp_path / "distill_cpu.json") as f:
        result = json.load(f)
    teacher, teacher_3, student, guided = result["models"]
    assert (teacher["steps"], teacher["model_calls_per_clip"]) == (4, 8)  # smoke eval: 4 steps at guidance 3
    assert (teacher_3["steps"], teacher_3["model_calls_per_clip"]) == (3, 6)
    assert (student["steps"], student["model_calls_per_clip"]) == (2, 2)
    assert (guided["workdir"], guided["steps"], guided["model_calls_per_clip"]) == (guided_run, 3, 3)
    for model in result["models"]:
        for prompt_set in ("template", "paraphrase"):
            assert set(model[prompt_set]["accuracy"]) == {"color", "shape", "motion", "consistent", "all"}
            assert model[prompt_set]["seconds_per_clip"] > 0
    assert result["machine"] and os.path.exists(gif)


def test_benchmark_refuses_a_step_count_the_student_was_not_distilled_for(round_run, trained_workdir):
    with pytest.raises(ValueError, match=r"asks 3 steps of a run distilled to sample in 2"):
        distill_quality.run(trained_workdir, [f"{round_run}:3"])
