"""Fast sampling by distillation: a student that gives the guided prediction in one model call, in few steps.

A trained model samples a clip in 25-50 DDIM steps of two model calls each (classifier-free guidance). As Imagen
Video did for every model of its cascade, distillation trains a student in two stages, each stage and each round
an ordinary resumable run of the trainer (configs/distill.py) whose targets come from a frozen teacher, the run in
`init_from`:

1. Guidance (Meng et al. 2023, "On distillation of guided diffusion models", stage one; `distill.steps=0`): the
   student is the teacher's STUNet plus an embedding of the guidance weight w (`model.guidance_embedding`, zero
   output at init, so it starts as the teacher's conditional model) and learns the teacher's classifier-free-guided
   v prediction v_u + w (v_c - v_u) at the same z_t and t, for w drawn per clip from [guidance_min, guidance_max].
2. Rounds (progressive distillation, Salimans & Ho 2022, "Progressive distillation for fast sampling of diffusion
   models"; Meng et al. stage two; `distill.steps=N`): the student learns to take, from every time of an N-step
   DDIM grid, the one step that lands where two DDIM steps of the teacher (the previous round, or the stage-one
   student at 2N steps) land. Each round halves the steps: 64 -> 32 -> ... -> 4.

The v-target of a round (`two_step_target`): from z_t the teacher steps to t' = t - 1/(2N) and on to s = t - 1/N,
landing on z''_s. A DDIM step with clean prediction x lands on alpha_s x + sigma_s (z_t - alpha_t x) / sigma_t, so
the x that lands on z''_s is (Salimans & Ho, Algorithm 2)

    x~ = (z''_s - (sigma_s / sigma_t) z_t) / (alpha_s - (sigma_s / sigma_t) alpha_t),

and the student's target in v-parameterization is v~ = (alpha_t z_t - x~) / sigma_t (x = alpha z - sigma v). The
sampler's last step returns its clean prediction rather than z_0, so there x~ is the teacher's last clean prediction.

The teacher's weights are an extra, non-donated argument of the jitted train step; the student's loss is the
trainer's v MSE. A distilled run's weights are the teacher's STUNet's plus `guidance_in` and `guidance_out`, and its
config.json records what it was distilled for (`Distilled`): sampling then makes one model call per step, for the
step count and guidance range it learned (`check_request`).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from lumiere_jax import config_lib, paths, runs, shipped
from lumiere_jax.diffusion import samplers
from lumiere_jax.diffusion.schedule import SCHEDULE_KEYS, CosineSchedule, broadcast_to, predict_x_eps

log = logging.getLogger("lumiere_jax")

Denoiser = Callable[[jax.Array, jax.Array], jax.Array]
# What a student learns from its teacher's run beyond the model section: the clip, the text and the noise schedule
# the teacher's predictions are about.
TEACHER_KEYS = ("task", "data.num_frames", "data.resolution", "text_encoder", "text_encoder_path",
                "text_max_length") + tuple(f"diffusion.{k}" for k in SCHEDULE_KEYS)


@dataclasses.dataclass(frozen=True)
class Distilled:
    """What a run was distilled for (its config.json's `distill` section), which sampling keeps to."""

    workdir: str
    steps: int  # the sampler's step count; 0: a guidance-conditioned student, any step count
    guidance_min: float
    guidance_max: float
    teacher: str  # init_from: the run it learned from


def distilled_for(workdir: str | None) -> Distilled | None:
    """What the run in `workdir` (or a shipped model's folder) was distilled for; None for a run that was not."""
    saved = config_lib.read_run_config(workdir)
    d, model = saved.get("distill"), saved.get("model")
    if not (isinstance(d, dict) and isinstance(model, dict) and model.get("guidance_embedding")):
        return None
    return Distilled(workdir=str(workdir), steps=int(d["steps"]), guidance_min=float(d["guidance_min"]),
                     guidance_max=float(d["guidance_max"]), teacher=str(saved.get("init_from", "")))


def lineage(distilled: Distilled) -> list[Distilled]:
    """The run and, through init_from, each distilled run it came from (newest first; stops at an undistilled one)."""
    chain, seen = [distilled], {distilled.workdir}
    while chain[-1].teacher and chain[-1].teacher not in seen:
        seen.add(chain[-1].teacher)
        parent = distilled_for(chain[-1].teacher)
        if parent is None:
            break
        chain.append(parent)
    return chain


def check_request(distilled: Distilled, steps: int, guidance: float, guidance_rescale: float = 0.0) -> None:
    """Refuses, in one line, a sampling request a distilled run has not learned: another step count than it was
    distilled for (naming the counts its lineage offers), a guidance weight outside its range, or guidance rescale
    (one call per step leaves no conditional prediction apart to rescale toward)."""
    where = distilled.workdir
    if distilled.steps and steps != distilled.steps:
        chain = lineage(distilled)
        offers = [f"{d.steps} ({d.workdir})" if d.steps else f"any number ({d.workdir})" for d in chain]
        teacher = chain[-1].teacher
        raise ValueError(f"{steps} denoising steps asked of {where}, which was distilled to sample in "
                         f"{distilled.steps}: use --config.sample.steps={distilled.steps} (--mode=eval: "
                         f"--config.eval.steps={distilled.steps}); steps its runs offer: {', '.join(offers)}"
                         + (f"; its teacher {teacher} samples at any count with two calls a step." if teacher else "."))
    if not distilled.guidance_min <= guidance <= distilled.guidance_max:
        raise ValueError(f"guidance {guidance:g} is outside [{distilled.guidance_min:g}, {distilled.guidance_max:g}], "
                         f"the guidance weights {where} was distilled for: use --config.sample.guidance (--mode=eval: "
                         f"--config.eval.guidance) in that range.")
    if guidance_rescale:
        raise ValueError(f"sample.guidance_rescale={guidance_rescale:g}: {where} is distilled and makes one model "
                         f"call per step, with no conditional prediction apart to rescale toward; use 0.")


def check_sampling(config: ml_collections.ConfigDict, workdir: str | None, ssr_workdir: str | None = None) -> None:
    """--mode=sample's check of config.sample against what the run in workdir (a shipped model's folder) was
    distilled for, and of a cascade's SSR run, which samples at config.sample.steps and its own guidance; nothing to
    check for runs that were not distilled. JSON only, before anything is restored."""
    s = config.sample
    distilled = distilled_for(workdir)
    if distilled is not None:
        check_request(distilled, s.steps, s.guidance, s.guidance_rescale)
    distilled = distilled_for(ssr_workdir)
    if distilled is not None:
        own = config_lib.run_config(ssr_workdir, flag="--ssr_workdir").sample
        check_request(distilled, s.steps, own.guidance, own.guidance_rescale)


def takes_guidance(model: Any) -> bool:
    """Whether `model` (a STUNet) takes the guidance weight as an input: a distilled student."""
    return bool(getattr(getattr(model, "cfg", None), "guidance_embedding", False))


def with_guidance_input(model: Callable[..., jax.Array], guidance: float) -> Callable[..., jax.Array]:
    """A distilled student as the samplers call a model, (z, t, text, text_mask, **inputs) -> v, with the guidance
    weight given to every row: its output is already the guided prediction."""
    def call(z: jax.Array, t: jax.Array, text: jax.Array, text_mask: jax.Array, **inputs: jax.Array) -> jax.Array:
        return model(z, t, text, text_mask, guidance=jnp.full((z.shape[0],), guidance, jnp.float32), **inputs)
    return call


def guided_prediction(model: Callable[..., jax.Array], z: jax.Array, t: jax.Array, text: jax.Array,
                      text_mask: jax.Array, null_text: jax.Array, null_mask: jax.Array, inputs: dict[str, jax.Array],
                      w: jax.Array, *, takes_w: bool, unguided: bool = False) -> jax.Array:
    """The teacher's classifier-free-guided v at (z [B, ...], t [B]) for guidance weights w [B].

    takes_w: the teacher is itself a distilled student, one call. Otherwise v_u + w (v_c - v_u) from one batched
    call on the caption and the empty caption (null_text [1, L, D]), or, with `unguided` (every w is 1), the
    conditional prediction alone. inputs: the task's extra inputs (SSR: cond, cond_level), [B, ...] each.
    """
    if takes_w:
        return model(z, t, text, text_mask, guidance=w, **inputs)
    if unguided:
        return model(z, t, text, text_mask, **inputs)
    b = z.shape[0]
    both_text = jnp.concatenate([text, jnp.broadcast_to(null_text, text.shape).astype(text.dtype)])
    both_mask = jnp.concatenate([text_mask, jnp.broadcast_to(null_mask, text_mask.shape)])
    v = model(jnp.concatenate([z, z]), jnp.concatenate([t, t]), both_text, both_mask,
              **{k: jnp.concatenate([a, a]) for k, a in inputs.items()})
    v_cond, v_uncond = v[:b], v[b:]
    return v_uncond + broadcast_to(w, z) * (v_cond - v_uncond)


def grid_times(t: jax.Array, steps: int) -> jax.Array:
    """Times [B] moved onto the grid of an N-step sampler (samplers.sample's): each to the first grid time at or
    above it, so uniform draws give every one of the N steps alike."""
    i = jnp.clip(jnp.ceil(t * steps), 1, steps).astype(jnp.int32)  # the step from time i / N
    return jnp.linspace(1.0, 0.0, steps + 1)[steps - i]


def two_step_target(denoise: Denoiser, z: jax.Array, t: jax.Array, steps: int, schedule: CosineSchedule,
                    thresholding: str = "static") -> jax.Array:
    """The v target of a round's student at (z_t [B, ...], t [B] on the grid of an N = `steps` sampler): the one
    DDIM step that lands where two DDIM steps of `denoise` (the teacher's guided v) land (module docstring).

    The teacher's steps are samplers.sample's, clean predictions kept in range by `thresholding` alike, on the grid
    of a 2N-step sampler; with every x~ in range (always under thresholding="none") the student's N-step sampler
    then retraces the teacher's 2N-step one exactly.
    """
    k = steps - jnp.round(t * steps).astype(jnp.int32)  # the sampler's step index: 0 at t = 1
    t_mid = jnp.linspace(1.0, 0.0, 2 * steps + 1)[2 * k + 1]
    s = jnp.linspace(1.0, 0.0, steps + 1)[k + 1]

    def ddim(z: jax.Array, t: jax.Array, s: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(z_s, clean prediction) of one teacher step, as samplers.sample takes it."""
        alpha_t, sigma_t = schedule.alpha_sigma(t)
        alpha_s, sigma_s = schedule.alpha_sigma(s)
        x, eps = predict_x_eps(z, denoise(z, t), alpha_t, sigma_t)
        x = samplers.threshold(x, thresholding)
        return broadcast_to(alpha_s, z) * x + broadcast_to(sigma_s, z) * eps, x

    # 1. Two teacher steps: t -> t' = t - 1/(2N) -> s = t - 1/N.
    z_mid, _ = ddim(z, t, t_mid)
    z_s, x_last = ddim(z_mid, t_mid, s)
    # 2. The clean prediction whose DDIM step from z_t lands on z_s (the last step: the teacher's clean prediction).
    alpha_t, sigma_t = schedule.alpha_sigma(t)
    alpha_s, sigma_s = schedule.alpha_sigma(s)
    ratio = sigma_s / sigma_t
    x_tilde = (z_s - broadcast_to(ratio, z) * z) / broadcast_to(alpha_s - ratio * alpha_t, z)
    x_tilde = jnp.where(broadcast_to(k == steps - 1, z), x_last, x_tilde)
    # 3. In v-parameterization: v = (alpha_t z_t - x) / sigma_t.
    return (broadcast_to(alpha_t, z) * z - x_tilde) / broadcast_to(sigma_t, z)


@dataclasses.dataclass(frozen=True)
class Distiller:
    """The train step's targets from a frozen teacher (static under jit): `times` moves the drawn diffusion times
    onto a round's grid, `draw_guidance` the weights the student is told, `target` the teacher's v target."""

    teacher_graphdef: nnx.GraphDef
    schedule: CosineSchedule
    steps: int  # 0: stage one (the guided prediction at any t); N: a round's N-step grid
    guidance_min: float
    guidance_max: float
    teacher_takes_guidance: bool  # the teacher is itself a distilled student
    thresholding: str = "static"

    def times(self, t: jax.Array) -> jax.Array:
        return grid_times(t, self.steps) if self.steps else t

    def draw_guidance(self, key: jax.Array, batch: int) -> jax.Array:
        """Guidance weights [B], uniform in [guidance_min, guidance_max]."""
        return jax.random.uniform(key, (batch,), jnp.float32, self.guidance_min, self.guidance_max)

    def target(self, teacher: nnx.State, z: jax.Array, t: jax.Array, text: jax.Array, text_mask: jax.Array,
               null_text: jax.Array, null_mask: jax.Array, inputs: dict[str, jax.Array], w: jax.Array) -> jax.Array:
        """The student's v target at (z_t, t) for guidance weights w [B]; no gradient reaches the teacher."""
        model = nnx.merge(self.teacher_graphdef, jax.lax.stop_gradient(teacher))
        unguided = self.guidance_min == self.guidance_max == 1.0

        def denoise(z: jax.Array, t: jax.Array) -> jax.Array:
            return guided_prediction(model, z, t, text, text_mask, null_text, null_mask, inputs, w,
                                     takes_w=self.teacher_takes_guidance, unguided=unguided)

        if not self.steps:
            return denoise(z, t)
        return two_step_target(denoise, z, t, self.steps, self.schedule, self.thresholding)


def distilling(config: ml_collections.ConfigDict) -> bool:
    """Whether `config` trains a student (configs/distill.py) rather than on the data's own targets."""
    return "distill" in config


def prepare(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Fits a distillation config to its teacher, in place, before anything is built: the student's model is the
    teacher's plus the guidance embedding, and the clip, text and noise schedule are the teacher's (`TEACHER_KEYS`,
    the `ssr` section of an SSR teacher); a round samples its periodic clips at its own step count; the teacher's
    checkpoint is fixed for the life of the run (distill.teacher_step, kept in config.json). Refuses in one line a
    teacher a stage cannot learn from. Reads JSON only."""
    d, teacher_dir = config.distill, config.init_from
    if not teacher_dir:
        raise ValueError("configs/distill.py distils a trained run: give it with --config.init_from=<the teacher's "
                         "workdir> (a configs/t2v.py or configs/ssr.py run, or the previous distillation round).")
    teacher = config_lib.run_config(teacher_dir, flag="init_from", fix="train the teacher there first (configs/t2v.py "
                                    "or configs/ssr.py), or point --config.init_from at the previous round")
    if teacher.task not in config_lib.UNCONDITIONAL + config_lib.SSR:
        raise ValueError(f"init_from={teacher_dir} is a task={teacher.task!r} run: distillation takes a text-to-video, "
                         f"text-to-image or SSR run (configs/t2v.py, t2i.py, ssr.py) or a distillation round.")
    if ("ssr" in teacher) != ("ssr" in config):
        fix = "configs/distill.py:teacher=ssr" if "ssr" in teacher else "configs/distill.py (teacher=t2v)"
        raise ValueError(f"init_from={teacher_dir} is a task={teacher.task!r} run: distil it with --config={fix}.")
    parent = distilled_for(teacher_dir)
    if not d.steps and parent is not None:
        raise ValueError(f"init_from={teacher_dir} is already a distilled student: a round from it halves its steps "
                         f"with --config.distill.steps=N" + (f" (N = {parent.steps // 2})." if parent.steps else "."))
    if d.steps and parent is not None and parent.steps and parent.steps != 2 * d.steps:
        raise ValueError(f"distill.steps={d.steps}, but init_from={teacher_dir} was distilled for {parent.steps} "
                         f"steps: a round halves them, --config.distill.steps={parent.steps // 2} (or start from a "
                         f"run with {2 * d.steps}).")
    if parent is not None and not parent.guidance_min <= d.guidance_min <= d.guidance_max <= parent.guidance_max:
        raise ValueError(f"distill.guidance_min/max=[{d.guidance_min:g}, {d.guidance_max:g}] reaches outside "
                         f"[{parent.guidance_min:g}, {parent.guidance_max:g}], the guidance weights init_from="
                         f"{teacher_dir} learned: use a range within it.")

    config.model.update({k: tuple(v) if isinstance(v, list) else v for k, v in teacher.model.items()})
    config.model.guidance_embedding = True
    for key in TEACHER_KEYS:
        section, _, leaf = key.rpartition(".")
        (config[section] if section else config)[leaf] = (teacher[section] if section else teacher)[leaf]
    if "ssr" in teacher:
        config.ssr.update(teacher.ssr)
    if d.steps:
        config.sample.steps = d.steps
    run = config_lib.read_run_config(workdir)
    saved = run.get("distill")
    if isinstance(saved, dict):  # a resumed run keeps the teacher and the task it started with
        learned = {"init_from": (str(paths.resolve(run.get("init_from", ""))), str(paths.resolve(teacher_dir))),
                   "distill.steps": (saved.get("steps"), d.steps),
                   "distill.guidance_min": (saved.get("guidance_min"), d.guidance_min),
                   "distill.guidance_max": (saved.get("guidance_max"), d.guidance_max)}
        for key, (before, now) in learned.items():
            if before != now:
                raise ValueError(f"{key}={now}, but the run in {workdir} distils with {before}: resume it with "
                                 f"--config.{key}={before}, or distil anew in another workdir.")
        d.teacher_step = saved["teacher_step"]
    elif d.teacher_step < 0:
        latest = shipped.step_of(teacher_dir) if shipped.is_folder(teacher_dir) else runs.latest_step(teacher_dir)
        if latest is None:
            raise ValueError(f"init_from={teacher_dir} has no checkpoint: train it first with --mode=train "
                             f"--workdir={teacher_dir}.")
        d.teacher_step = latest
    config_lib.validate(config)


def load_teacher(config: ml_collections.ConfigDict) -> tuple[Distiller, runs.Run]:
    """The frozen teacher of a prepared distillation config (`prepare`): its run (EMA weights of
    distill.teacher_step, on the first device) and the Distiller that makes the train step's targets from it."""
    if shipped.is_folder(config.init_from):  # shipped weights (lumiere_jax/weights/NAME): one step, its own
        teacher = shipped.load_folder(config.init_from)
    else:
        teacher = runs.load(config.init_from, step=config.distill.teacher_step, flag="init_from")
    d = config.distill
    distiller = Distiller(teacher_graphdef=teacher.graphdef, schedule=teacher.schedule, steps=d.steps,
                          guidance_min=float(d.guidance_min), guidance_max=float(d.guidance_max),
                          teacher_takes_guidance=bool(teacher.config.model.guidance_embedding),
                          thresholding=config.sample.thresholding)
    stage = (f"a round: one step of the student for two of the teacher's, {d.steps} steps" if d.steps
             else "the guidance-conditioned student")
    log.info("Distilling %s (step %d) into %s, guidance weights in [%g, %g].", config.init_from, teacher.step, stage,
             d.guidance_min, d.guidance_max)
    return distiller, teacher


def init_student(params: nnx.State, teacher: nnx.State) -> nnx.State:
    """The student's first weights: the teacher's, every one; the guidance embedding a stage-one student adds keeps
    its init (a zero output), so the student starts as the teacher's conditional model. Fails, naming the
    parameters, when the teacher's model differs otherwise."""
    name = jax.tree_util.keystr
    student = dict(jax.tree_util.tree_flatten_with_path(params.to_pure_dict())[0])
    old = dict(jax.tree_util.tree_flatten_with_path(teacher.to_pure_dict())[0])
    new = [k for k in student if k not in old]
    misfit = [f"{name(k)}: {old[k].shape} vs {student[k].shape}" for k in student
              if k in old and old[k].shape != student[k].shape]
    extra = [name(k) for k in old if k not in student]
    if misfit or extra or any(not name(k).startswith(("['guidance_in']", "['guidance_out']")) for k in new):
        raise ValueError(f"init_from: the teacher's model differs from the student's beyond the guidance embedding. "
                         f"Shape mismatches: {misfit[:5]}; not in the student: {extra[:5]}; new in the student: "
                         f"{[name(k) for k in new][:5]}. Distil with the teacher's model section (its config.json).")
    flat, treedef = jax.tree_util.tree_flatten_with_path(params.to_pure_dict())
    out = jax.tree.map(lambda x: x, params)
    # Copies: the train step donates the student's buffers and reads the teacher's in the same call.
    nnx.replace_by_pure_dict(out, jax.tree_util.tree_unflatten(
        treedef, [jnp.copy(old[k]) if k in old else v for k, v in flat]))
    log.info("Student: the teacher's %d weights%s.", len(old),
             ", and a guidance embedding (zero output: it starts as the teacher's conditional model)" if new else "")
    return out
