"""Trains a STUNet text-to-video model; reads top to bottom: mesh, data, state, step, checkpoint, loop."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from etils import epath
from flax import nnx
from jax.experimental import multihost_utils
from tensorboardX import SummaryWriter

from lumiere_jax import checkpointing, compile_options, conditioning, config_lib, distill, inflate, memory_check, \
    paths, run_lock, sampling, sharding, video_io
from lumiere_jax.data import mixture, pipeline, stories
from lumiere_jax.data import augment as augment_lib
from lumiere_jax.data import sources as data_sources
from lumiere_jax.diffusion import schedule as sched
from lumiere_jax.diffusion.schedule import schedule_from
from lumiere_jax.state import TrainState, abstract_graphdef_and_state, check_resumed_schedule, init_model, \
    init_state, make_optimizer, resolve_trainable, set_text_statistics
from lumiere_jax.text import cache as text_cache
from lumiere_jax.text.encoders import load_text_encoder

log = logging.getLogger("lumiere_jax")


class NonFiniteError(RuntimeError):
    """The loss or gradient became NaN/Inf; raised on the host at the next log."""


def check_mesh(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> None:
    """The batch must split over data x fsdp and the clip over frames: say which value to change, if not."""
    batch_ways = mesh.shape["data"] * mesh.shape["fsdp"]
    if config.batch_size % batch_ways:
        raise ValueError(f"batch_size={config.batch_size} must be divisible by mesh data x fsdp = {batch_ways}: "
                         f"use a multiple of {batch_ways}, or change --config.mesh.data/fsdp.")
    frames = mesh.shape["frames"]
    if config.data.num_frames % frames:
        raise ValueError(f"data.num_frames={config.data.num_frames} must be divisible by mesh.frames={frames}; "
                         f"use a mesh.frames that divides it.")


def load_data(config: ml_collections.ConfigDict, extra_captions=()) -> tuple[dict[str, Any], Any, Any]:
    """Builds (first run) and opens the dataset; encodes every caption once into a cache beside it.

    Returns ({"train", "test"[, "images"]}, encoder, cache): "images" (the training images of data.images) when
    data.mixture mixes them in."""
    if jax.process_count() > 1 and jax.process_index() != 0:
        # Process 0 builds the dataset and the text cache first: on a shared filesystem two builders
        # would race; on per-host disks the others then build their own (identical) copies.
        multihost_utils.sync_global_devices("lumiere_data_built")
    d = config.data
    sources = data_sources.load_sources(d)
    encoder = load_text_encoder(config.text_encoder, config.text_encoder_path, config.text_max_length)
    if d.story_fraction:  # a share of the training clips becomes stories, with a caption per frame
        sources["train"] = stories.StorySource(sources["train"], d.story_fraction, seed=d.seed,
                                               num_frames=d.num_frames, resolution=d.resolution,
                                               changes=stories.parse_changes(d.story_changes))
    if d.mixture:
        sources[mixture.IMAGES] = data_sources.load_image_sources(d)["train"]
    trained = [sources["train"]] + ([sources[mixture.IMAGES]] if d.mixture else [])
    cache = pipeline.build_text_cache(encoder, data_sources.text_cache_dir(d), trained, extra=extra_captions)
    if jax.process_count() > 1 and jax.process_index() == 0:
        multihost_utils.sync_global_devices("lumiere_data_built")
    return sources, encoder, cache


def draw_times(key: jax.Array, batch_size: int, high_noise_fraction: float | jax.Array = 0.0,
               high_noise_t_min: float = 0.9, t_max: float = 1.0) -> jax.Array:
    """Diffusion times [B]: a low-discrepancy sequence over [0, t_max) (lower loss variance than iid draws),
    except the first round(high_noise_fraction * B), a low-discrepancy sequence over [high_noise_t_min, 1).

    Only at the highest noise levels does the caption alone decide the layout and the motion of a clip: below
    logSNR -6 (t > 0.97 at shift 1), 3% of uniform draws. docs/training.md measures that a micro shapes world
    learns its direction words when training goes there and not otherwise. The fraction may be traced (it
    changes with the step under `high_noise_share`); the batch's shape does not.
    """
    u = jax.random.uniform(key)
    n_high = jnp.round(jnp.asarray(high_noise_fraction, jnp.float32) * batch_size).astype(jnp.int32)
    i = jnp.arange(batch_size)
    high = high_noise_t_min + (1.0 - high_noise_t_min) * jnp.mod(u + i / jnp.maximum(n_high, 1), 1.0)
    low = t_max * jnp.mod(u + (i - n_high) / jnp.maximum(batch_size - n_high, 1), 1.0)
    return jnp.where(i < n_high, high, low)


def high_noise_share(config: ml_collections.ConfigDict, step: jax.Array) -> jax.Array:
    """The share of this step's batch drawn at high noise: diffusion.high_noise_fraction until step
    diffusion.high_noise_until, diffusion.high_noise_fraction_after from there (a phase that only learns what the
    caption decides, then one that fills in the lower noise levels); high_noise_until = 0: one phase."""
    d = config.diffusion
    if not d.high_noise_until:
        return jnp.asarray(d.high_noise_fraction, jnp.float32)
    return jnp.where(step < d.high_noise_until, d.high_noise_fraction, d.high_noise_fraction_after)


def make_train_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation, schedule: sched.CosineSchedule,
                    config: ml_collections.ConfigDict, images: bool = False, distiller: distill.Distiller | None = None
                    ) -> Callable[..., tuple[TrainState, dict[str, jax.Array]]]:
    """The pure step: (state, batch, null text) -> (state, metrics). Follows the v-prediction loss.

    images=True: the batch holds single-frame clips of images (data.mixture), run with the STUNet's temporal
    layers bypassed; they get no gradient from it. distiller: the v targets are a frozen teacher's instead of the
    data's (lumiere_jax/distill.py), and the step takes the teacher's weights as a fifth argument."""
    base_rng = jax.random.key(config.seed)
    p_drop = config.data.text_dropout
    ema_decay = config.optim.ema_decay
    condition = conditioning.conditioner(config)

    def train_step(state: TrainState, batch: dict[str, jax.Array], null_text: jax.Array, null_mask: jax.Array,
                   teacher: nnx.State | None = None) -> tuple[TrainState, dict[str, jax.Array]]:
        # The step's randomness is a function of the step alone: resumed runs repeat it exactly.
        step_rng = jax.random.fold_in(base_rng, state.step)
        k_drop, k_t, k_eps = jax.random.split(step_rng, 3)
        # [B, T, H, W, C], text [B, (T,) L, D] (per frame: data.story_fraction), mask [B, (T,) L]
        x, text, text_mask = batch["video"], batch["text"], batch["text_mask"]
        b = x.shape[0]
        # 1. Classifier-free guidance: replace some captions (all of a clip's frames at once) by the null caption.
        drop = jax.random.bernoulli(k_drop, p_drop, (b,))
        text = jnp.where(drop.reshape((b,) + (1,) * (text.ndim - 1)), null_text, text)
        text_mask = jnp.where(drop.reshape((b,) + (1,) * (text_mask.ndim - 1)), null_mask, text_mask)
        # 2. Times (a share of them at the highest noise levels only), and noise.
        t = draw_times(k_t, b, high_noise_share(config, state.step), config.diffusion.high_noise_t_min,
                       config.diffusion.t_max)
        if distiller is not None:
            t = distiller.times(t)  # a round's student learns its own sampler's times
        # Conditional tasks (SSR, masked video): extra model inputs made from the clean clip; a residual SSR
        # generates the detail over its upsampled input ("x0") instead of the clip.
        cond = condition(x, jax.random.fold_in(step_rng, 1)) if condition else {}
        x = cond.pop("x0", x)
        eps = jax.random.normal(k_eps, x.shape, x.dtype)
        alpha, sigma = schedule.alpha_sigma(t)
        # 3. z_t = alpha_t x + sigma_t eps; target v = alpha_t eps - sigma_t x.
        z = sched.diffuse(x, eps, alpha, sigma)
        v = sched.v_target(x, eps, alpha, sigma)
        inputs = {**cond, **({"images": True} if images else {})}
        if distiller is not None:
            # Distillation: the target is the teacher's guided v at the same z_t (a round's: that of the one step
            # that lands where two of the teacher's do), for a guidance weight per clip, which the student is told.
            w = distiller.draw_guidance(jax.random.fold_in(step_rng, 2), b)
            v = distiller.target(teacher, z, t, text, text_mask, null_text, null_mask, cond, w)
            inputs["guidance"] = w

        # 4. Loss: mean squared error of the v prediction.
        def loss_fn(params: nnx.State) -> jax.Array:
            v_hat = nnx.merge(graphdef, params)(z, t, text, text_mask, **inputs)
            return jnp.mean(jnp.square(v_hat - v))

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        grad_norm = optax.global_norm(grads)
        # 5. Update, unless loss, gradient or update is not finite: then keep the old state and count it.
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        # EMA warmup: early on the average would be dominated by the random init, so the decay ramps up.
        decay = jnp.minimum(ema_decay, (1.0 + state.step) / (10.0 + state.step))
        ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, state.ema, params)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & jnp.isfinite(optax.global_norm(updates))
        new = TrainState(step=state.step + 1, params=params, opt_state=opt_state, ema=ema, skipped=state.skipped)
        old = state.replace(step=state.step + 1, skipped=state.skipped + 1)
        state = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
        return state, {"loss": loss, "grad_norm": grad_norm, "finite": finite.astype(jnp.float32)}

    return train_step


def jit_train_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation, schedule: sched.CosineSchedule,
                   config: ml_collections.ConfigDict, images: bool = False,
                   distiller: distill.Distiller | None = None, **jit_kwargs: Any) -> Any:
    """The train step under `jax.jit(**jit_kwargs)`, with the compiler options measured best for its platform
    and dtype (`compile_options`); the trainer, style tuning and the benchmarks all compile it this way."""
    return jax.jit(make_train_step(graphdef, tx, schedule, config, images, distiller),
                   compiler_options=compile_options.train_step_options(config.model.dtype,
                                                                       cpu_fusions=config.cpu_fusions),
                   **jit_kwargs)


def checkpoint_meta(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """What a checkpoint records of its config, to check a later restore against."""
    return {"task": config.task, "model": config.model.to_dict(),
            "data": {"num_frames": config.data.num_frames, "resolution": config.data.resolution}}


def write_samples(workdir: str, step: int, clips: np.ndarray, fps: int) -> str:
    """Writes a grid of clips [N, T, H, W, C] in [-1, 1] as MP4 and GIF; returns the GIF path."""
    frames = video_io.upscale(video_io.grid(video_io.to_uint8(clips)), 4)
    base = os.fspath(paths.resolve(workdir) / "samples" / f"step_{step:07d}")
    video_io.write_video(base + ".mp4", frames, fps)
    video_io.write_video(base + ".gif", frames, fps)
    return base + ".gif"


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
    """Trains to config.total_steps, resuming from the newest checkpoint in workdir.

    SIGTERM/SIGINT at any point (startup included) make it checkpoint after the current step and return.
    A second trainer on the same workdir is refused (run_lock); the lock is released however this returns.
    """
    with _StopSignals() as stop, contextlib.ExitStack() as held:
        return _train(config, workdir, stop, held)


def _train(config: ml_collections.ConfigDict, workdir: str, stop: "_StopSignals",
           held: contextlib.ExitStack) -> TrainState:
    config_lib.validate(config)
    if distill.distilling(config):  # the student's model, clip and schedule are its teacher's
        distill.prepare(config, workdir)
    root = paths.resolve(workdir)  # a local folder or a gs:// URL
    root.mkdir(parents=True, exist_ok=True)
    workdir = os.fspath(root)
    # One trainer per workdir: taken before anything is written, so a refused second trainer leaves the live
    # one's files alone. Process 0 holds it for all processes of a multi-host run (they share the workdir).
    refused = None
    if jax.process_index() == 0:
        try:
            held.enter_context(run_lock.RunLock(workdir))
        except ValueError as e:  # RunLockedError, or a disk too full to write the lock file
            refused = e
    if jax.process_count() > 1 and not multihost_utils.broadcast_one_to_all(np.int32(refused is None)):
        raise refused or run_lock.RunLockedError(f"Process 0 could not lock {workdir}: see its log.")
    if refused:
        raise refused
    # Fixed for the life of the run (config.json keeps it): resumes never depend on init_from again.
    config.trainable = resolve_trainable(config, workdir)

    # Mesh: batch over data x fsdp, frames over `frames`, parameters and optimizer state over fsdp.
    mesh = sharding.make_mesh(config)
    rules = sharding.rules_from(config)
    check_mesh(config, mesh)
    replicated = sharding.replicated(mesh)
    log.info("Mesh %s over %d devices in %d processes.", dict(mesh.shape), jax.device_count(), jax.process_count())

    # A checkpoint of another config is refused before any data is built or anything compiles.
    ckpt = checkpointing.Checkpointer(workdir, max_to_keep=config.keep_checkpoints,
                                      async_save=config.async_checkpoints)
    if config.trainable == "temporal" and not config.init_from and ckpt.latest_step() is None:
        raise ValueError("trainable='temporal' freezes the spatial layers, so it needs --config.init_from=<T2I "
                         "workdir> to inflate from (or --config.trainable=all to train from scratch).")
    graphdef, abstract = abstract_graphdef_and_state(config)
    state_sharding = sharding.tree_shardings(abstract, mesh, rules)
    if ckpt.latest_step() is not None:
        ckpt.check_compatible(abstract, ckpt.latest_step())
        check_resumed_schedule(config, workdir)

    # Data.
    sources, encoder, cache = load_data(config, extra_captions=config.sample.prompts)
    prompts = data_sources.sample_prompts(config, sources)
    augment = augment_lib.parse_augment(config.data.augment)
    clip_batches = pipeline.train_dataset(sources["train"], cache, global_batch_size=config.batch_size,
                                          seed=config.data.seed, process_index=jax.process_index(),
                                          process_count=jax.process_count(), augment=augment)
    dataset = clip_batches  # element k: the batch of step k + 1
    null_text, null_mask = (jnp.asarray(a) for a in cache.lookup([pipeline.NULL_CAPTION]))
    steps_of_images = None  # data.mixture: step k + 1 reads an image batch where steps_of_images[k]
    if config.data.mixture:
        weights = mixture.parse_mixture(config.data.mixture, (config.data.dataset, mixture.IMAGES))
        image_batches = pipeline.train_dataset(sources[mixture.IMAGES], cache, global_batch_size=config.batch_size,
                                               seed=config.data.seed, process_index=jax.process_index(),
                                               process_count=jax.process_count(), augment=augment)
        dataset = mixture.mixture_dataset({config.data.dataset: clip_batches, mixture.IMAGES: image_batches}, weights,
                                          seed=config.data.seed, num_steps=config.total_steps)
        steps_of_images = mixture.plan(weights, config.data.seed, config.total_steps) == list(weights).index(
            mixture.IMAGES)
        log.info("data.mixture: %s; %d of %d steps read images (single frames, temporal layers bypassed).",
                 ", ".join(f"{n} {w:.2f}" for n, w in weights.items()), int(steps_of_images.sum()),
                 config.total_steps)

    # State: restore the newest checkpoint, or initialize.
    tx = make_optimizer(config)
    schedule = schedule_from(config)
    # Distillation: the frozen teacher whose predictions are the targets, an argument of the step (not donated).
    distiller, teacher, teacher_args = None, None, ()
    if distill.distilling(config):
        distiller, teacher = distill.load_teacher(config)
        teacher_sharding = sharding.tree_shardings(teacher.params, mesh, rules)
        teacher_args = (jax.device_put(teacher.params, teacher_sharding),)
    if ckpt.latest_step() is not None:
        state, _ = ckpt.restore(checkpointing.with_shardings(abstract, state_sharding))
        log.info("Resumed from checkpoint at step %d in %s", int(state.step), ckpt.directory)
    else:
        _, params = init_model(config, config.seed)
        if config.model.text_norm == "standardize":  # frozen statistics of this run's captions (a source run's below)
            mean, std = text_cache.token_statistics(cache.features, cache.masks)
            params = set_text_statistics(graphdef, params, mean, std)
            log.info("Text features standardized by the token statistics of %d captions (model.text_norm).",
                     min(len(cache.features), text_cache.STATISTICS_CAPTIONS))
        if teacher is not None:
            params = distill.init_student(params, teacher.params)
        elif config.init_from:
            params = inflate.load_init_weights(params, config.init_from)  # T2I: inflated; T2V: copied
        state = jax.device_put(init_state(params, tx), state_sharding)
        log.info("No checkpoint in %s: starting from %s.", ckpt.directory,
                 f"the run {config.init_from}" if config.init_from else "scratch")
    if jax.process_index() == 0:
        paths.write_atomic(root / "config.json", config.to_json_best_effort(indent=2))
    num_params = sum(x.size for x in jax.tree.leaves(state.params))
    log.info("STUNet: %.2fM parameters; %s.", num_params / 1e6,
             "all train" if config.trainable == "all" else f"only the {config.trainable} layers train")

    # Step: compiled once, state donated so params and optimizer are updated in place.
    def compile_step(example: dict[str, np.ndarray], images: bool = False) -> tuple[Any, dict[str, Any]]:
        global_batch = {k: jax.ShapeDtypeStruct((config.batch_size,) + v.shape[1:], v.dtype)
                        for k, v in example.items()}
        shardings = sharding.batch_shardings(global_batch, mesh, rules)
        fn = jit_train_step(graphdef, tx, schedule, config, images, distiller,
                            in_shardings=(state_sharding, shardings, replicated, replicated)
                            + ((teacher_sharding,) if teacher_args else ()),
                            out_shardings=(state_sharding, replicated), donate_argnums=(0,))
        # Compiled now for the batches it will get: a step that would not fit in memory is refused here, before
        # the first step; the first call reuses this compile (jax caches it).
        batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=shardings[k]) for k, v in global_batch.items()}
        log.info("Compiling the %strain step for batches of %d: XLA, once per run (about half a minute for the "
                 "tiny model on 2 CPU cores, minutes at paper scale)...", "image " if images else "", config.batch_size)
        start = time.perf_counter()
        memory_check.check_train_step(fn, (state, batch, null_text, null_mask) + teacher_args, config, mesh, rules)
        log.info("Compiled in %.0f s; training.", time.perf_counter() - start)
        return fn, shardings

    step_fn, batch_sharding = compile_step(clip_batches[0])
    if steps_of_images is not None:  # a second compiled step: the same state, single-frame image batches
        image_step_fn, image_sharding = compile_step(image_batches[0], images=True)
    t2v = sampling.TextToVideo(graphdef, state.ema, encoder, schedule, num_frames=config.data.num_frames,
                               resolution=config.data.resolution, channels=config.model.out_channels,
                               thresholding=config.sample.thresholding,
                               guidance_rescale=config.sample.guidance_rescale)

    # Loop.
    start = int(state.step)
    writer = None
    if jax.process_index() == 0:
        # Steps after the restored checkpoint were lost with the crash: drop their rows, they will be redone.
        writer = SummaryWriter(os.fspath(root / "tb"), purge_step=start + 1 if start else None)
        _truncate_metrics(root / "metrics.jsonl", start)
    batches = pipeline.iterate_from(dataset, start, num_threads=config.data.num_threads,
                                    prefetch=config.data.prefetch)
    pending: list[dict[str, jax.Array]] = []
    t_last, s_last = time.time(), start
    waited = 0.0  # seconds the loop spent waiting for the input pipeline since the last log line
    for step in range(start + 1, config.total_steps + 1):
        t_wait = time.perf_counter()
        try:
            local = next(batches)
            bad_records = pipeline.check_bad_records(sources.values(), config.data.max_bad_records)
        except pipeline.DamagedDataError:
            # Prepared data damaged since the run started: keep the steps trained so far, then stop with one line.
            if step - 1 > start and (step - 1) % config.checkpoint_every:
                ckpt.save(step - 1, state, checkpoint_meta(config), force=True)
            ckpt.wait()
            if writer:
                writer.close()
            raise
        waited += time.perf_counter() - t_wait
        images = steps_of_images is not None and bool(steps_of_images[step - 1])
        fn, shardings = (image_step_fn, image_sharding) if images else (step_fn, batch_sharding)
        batch = {k: jax.make_array_from_process_local_data(shardings[k], v) for k, v in local.items()}
        with sharding.use_mesh(mesh, rules):  # the model's activation constraints and frame-parallel convs
            state, metrics = fn(state, batch, null_text, null_mask, *teacher_args)
        pending.append(metrics)

        if step % config.log_every == 0 or step == config.total_steps:
            summary = _check_finite(jax.device_get(pending), step - len(pending) + 1, config, ckpt)
            pending = []
            now = time.time()
            rate = (step - s_last) / max(now - t_last, 1e-9)
            eta = (config.total_steps - step) / max(rate, 1e-9)
            # The input pipeline's share of the loop: time blocked on the next batch over the interval's wall time.
            data_share = waited / max(now - t_last, 1e-9)
            log.info("step %d/%d  loss %.4f  grad_norm %.3f  %.2f steps/s  input %.1f%%  ETA %s%s", step,
                     config.total_steps, summary["loss"], summary["grad_norm"], rate, 100 * data_share, _duration(eta),
                     f"  damaged records skipped {bad_records}" if bad_records else "")
            if jax.process_index() == 0:
                paths.append_line(root / "metrics.jsonl", json.dumps({"step": step, **summary, "steps_per_sec": rate,
                                                                      "input_wait_fraction": data_share,
                                                                      "bad_records": bad_records}))
            if writer:
                for k, v in summary.items():
                    writer.add_scalar(f"train/{k}", v, step)
                writer.add_scalar("train/steps_per_sec", rate, step)
                writer.add_scalar("train/input_wait_fraction", data_share, step)
                writer.add_scalar("train/bad_records", bad_records, step)
            t_last, s_last, waited = now, step, 0.0

        preempted = stop.requested or _reached_preemption(step)
        if step % config.checkpoint_every == 0 or step == config.total_steps or preempted:
            ckpt.save(step, state, checkpoint_meta(config), force=True)
        if preempted:
            ckpt.wait()
            log.info("Stopped by %s at step %d; checkpoint saved. Re-run the same command to resume.",
                     stop.reason or "a preemption notice", step)
            break

        if (config.sample_every and config.task in config_lib.UNCONDITIONAL
                and (step % config.sample_every == 0 or step == config.total_steps)):
            t2v.params = state.ema
            clips = t2v(prompts, seed=config.seed, steps=config.sample.steps,
                        guidance=config.sample.guidance, sampler=config.sample.sampler)
            if jax.process_index() == 0:
                log.info("Wrote samples: %s", write_samples(workdir, step, clips, config.sample.fps))
            if writer:
                # A film strip (frames side by side, one row per prompt) as an image: TensorBoard's video
                # summaries need moviepy; the MP4/GIF beside it is the playable version.
                strip = np.concatenate(list(np.moveaxis(video_io.to_uint8(clips), 1, 0)), axis=2)  # [N,H,T*W,C]
                writer.add_image("samples", np.concatenate(list(strip), axis=0), step, dataformats="HWC")

    ckpt.close()
    if writer:
        writer.close()
    if int(state.step) >= config.total_steps and jax.process_index() == 0:
        paths.write_atomic(root / "train_done.json",
                           json.dumps({"step": int(state.step), "skipped_steps": int(state.skipped)}))
    return state


def _truncate_metrics(path: epath.Path, last_step: int) -> None:
    """Keeps metrics.jsonl rows up to last_step (and drops a torn last line), atomically."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= last_step:
                keep.append(line + "\n")
        except (ValueError, KeyError):
            continue
    paths.write_atomic(path, "".join(keep))


def _check_finite(metrics: list[dict[str, np.ndarray]], first_step: int, config: ml_collections.ConfigDict,
                  ckpt: checkpointing.Checkpointer) -> dict[str, float]:
    """Averages a log interval's per-step metrics; applies config.nan_policy to non-finite steps.

    Each step already skipped its own non-finite update on device; here, at the log's one host sync, the
    host learns which step went first and where (loss or gradient), without a sync every step.
    """
    bad = [i for i, m in enumerate(metrics) if m["finite"] < 1.0]
    if bad:
        first = metrics[bad[0]]
        where = ("loss" if not np.isfinite(first["loss"]) else
                 "gradient norm" if not np.isfinite(first["grad_norm"]) else "parameter update")
        what = (f"Non-finite {where} first at step {first_step + bad[0]} ({len(bad)} of the last "
                f"{len(metrics)} steps; loss={float(first['loss'])}, grad_norm={float(first['grad_norm'])})")
        if config.nan_policy == "stop":
            ckpt.wait()
            raise NonFiniteError(f"{what}. Those updates were skipped and the last checkpoint (step "
                                 f"{ckpt.latest_step()}) is intact. Lower --config.optim.learning_rate, check the "
                                 f"data, or set --config.nan_policy=skip.")
        log.warning("%s: updates skipped (nan_policy=skip).", what)
    good = [m for m in metrics if m["finite"] >= 1.0] or metrics
    summary = {k: float(np.mean([m[k] for m in good])) for k in ("loss", "grad_norm")}
    summary["skipped"] = float(len(bad))
    return summary


class _StopSignals:
    """Turns SIGTERM/SIGINT into a request to checkpoint and stop at the end of the current step."""

    def __init__(self):
        self.requested, self.reason, self._old = False, None, {}

    def _handle(self, signum, frame):
        del frame
        self.requested, self.reason = True, signal.Signals(signum).name

    def __enter__(self):
        # Multi-process: jax.distributed's own SIGTERM handler drives the preemption sync point, so that
        # every host saves the same step (_reached_preemption); replacing it would make hosts diverge.
        if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def _reached_preemption(step: int) -> bool:
    """True on every host at the same step once a TPU VM receives a preemption notice (multi-host only)."""
    if jax.process_count() == 1:
        return False
    try:
        return multihost_utils.reached_preemption_sync_point(step)
    except RuntimeError:  # no preemption service (not started through jax.distributed on a TPU VM)
        return False


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
