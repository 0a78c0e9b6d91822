r"""Distilled students against their teacher: the evaluator's accuracies, model calls and wall time per clip.

  python benchmarks/distill_quality.py --teacher=lumiere_jax/weights/t2v_tiny --teacher_steps=25,8 \
      --students=runs/distill_g:8,runs/distill_4 --gif=docs/distill_tiny.gif

The teacher (a run, or a shipped model's folder) samples the evaluation prompts (lumiere_jax/evaluate.py: the
eval.num_clips colour x motion prompts and seed of configs/t2v.py at the teacher's size) at that config's eval.guidance,
thresholding and guidance rescale, two model calls a step (classifier-free guidance), at each of --teacher_steps
(default: the config's eval.steps); each student (configs/distill.py) at the step count it was distilled for (a
guidance-conditioned student, which takes any, at the count given as `workdir:N`, else the teacher's first) and the
teacher's guidance weight, one call a step, without rescale. Every model samples both prompt sets, the
training captions' wording (eval.prompts='template') and paraphrases ('paraphrase'), from the same seeds, and the
program checker scores each clip. Per model and prompt set: accuracies, model calls per clip, and wall seconds per
clip after one batch that compiles the sampler (timed apart). Writes benchmarks/results/distill_<platform>.json (or
--out) and, with --gif, the first template clips side by side, one row per prompt: teacher | each student.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402
from typing import Any, Sequence  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

import bench_common as bc  # noqa: E402
from configs import t2v as t2v_config  # noqa: E402
from lumiere_jax import distill, evaluate, host_memory, runs, sampling, shipped, video_io  # noqa: E402
from lumiere_jax.eval import paraphrases  # noqa: E402
from lumiere_jax.text.encoders import load_text_encoder  # noqa: E402


def measure(t2v: sampling.TextToVideo, config: Any, steps: int, guidance: float, num_clips: int,
            batch_size: int) -> tuple[dict[str, Any], np.ndarray]:
    """One model on every prompt set: ({prompt set: accuracies and seconds per clip}, the template set's clips)."""
    e = config.eval
    kwargs = dict(steps=steps, guidance=guidance, sampler=config.sample.sampler, batch_size=batch_size)
    first = evaluate.eval_prompts(batch_size, e.seed)
    start = time.perf_counter()
    t2v([p["prompt"] for p in first], seed=e.seed, **kwargs)  # compiles the sampler for this batch size
    results: dict[str, Any] = {"first_batch_s": time.perf_counter() - start}
    template = None
    for prompt_set in paraphrases.PROMPT_SETS:
        expected = evaluate.eval_prompts(num_clips, e.seed, prompt_set)
        start = time.perf_counter()
        clips = t2v([p["prompt"] for p in expected], seed=e.seed, **kwargs)
        seconds = time.perf_counter() - start
        scored = evaluate.score_clips(video_io.to_uint8(clips), expected)
        results[prompt_set] = {"accuracy": scored["accuracy"], "seconds_per_clip": seconds / num_clips}
        print(f"  {prompt_set}: {scored['accuracy']}, {seconds / num_clips:.3f} s per clip", flush=True)
        if prompt_set == "template":
            template = clips
    return results, template


def parse_student(spec: str) -> tuple[str, int | None]:
    """`workdir` or `workdir:N` (a guidance-conditioned student sampled in N steps) -> (workdir, N or None)."""
    match = re.fullmatch(r"(.+):(\d+)", spec)
    return (match.group(1), int(match.group(2))) if match else (spec, None)


def run(teacher_dir: str, student_specs: Sequence[str], *, num_clips: int | None = None, out: str | None = None,
        gif: str | None = None, teacher_steps: Sequence[int] = ()) -> dict[str, Any]:
    """Evaluates the teacher and each student (module docstring); returns what it writes to the JSON."""
    students = []
    for spec in student_specs:
        workdir, steps = parse_student(spec)
        distilled = distill.distilled_for(workdir)
        if distilled is None:
            raise ValueError(f"--students: {workdir} is not a distilled run (configs/distill.py): give the workdirs "
                             f"of distillation rounds.")
        if steps is not None and distilled.steps and steps != distilled.steps:
            raise ValueError(f"--students: {spec} asks {steps} steps of a run distilled to sample in "
                             f"{distilled.steps}: give {workdir} (or {workdir}:{distilled.steps}).")
        students.append((spec, workdir, distilled, steps))
    teacher = (shipped.load_folder(teacher_dir) if shipped.is_folder(teacher_dir)
               else runs.load(teacher_dir, flag="--teacher"))
    # How every model samples: the config file's defaults at the teacher's size (what --mode=eval of that config
    # does), not the sampling keys stored when the teacher trained.
    config = runs.with_run_model(t2v_config.get_config(f"size={teacher.config.size}"), teacher.workdir)
    e = config.eval
    num_clips = num_clips or e.num_clips
    batch_size = min(e.batch_size, num_clips)
    encoder = load_text_encoder(config.text_encoder, config.text_encoder_path, config.text_max_length)
    teacher_steps = list(teacher_steps) or [e.steps]
    models = [(teacher_dir, teacher, steps, 1 if e.guidance == 1 else 2) for steps in teacher_steps]
    for spec, workdir, distilled, steps in students:
        student = shipped.load_folder(workdir) if shipped.is_folder(workdir) else runs.load(workdir, flag="--students")
        models.append((workdir, student, distilled.steps or steps or teacher_steps[0], 1))
    rows, payload, strips = [], [], []
    for where, run_, steps, calls_per_step in models:  # where: as given (a shipped folder's is not made absolute)
        print(f"{where} (step {run_.step}): {steps} steps at guidance {e.guidance:g}", flush=True)
        t2v = sampling.TextToVideo.from_run(run_, encoder)
        t2v.thresholding = config.sample.thresholding
        # A student's one call a step leaves no conditional prediction apart to rescale toward.
        t2v.guidance_rescale = config.sample.guidance_rescale if run_ is teacher else 0.0
        results, template = measure(t2v, config, steps, e.guidance, num_clips, batch_size)
        calls = steps * calls_per_step
        payload.append({"workdir": where, "checkpoint_step": run_.step, "steps": steps,
                        "guidance": e.guidance, "model_calls_per_clip": calls, **results})
        strips.append(template)
        for prompt_set in paraphrases.PROMPT_SETS:
            accuracy = results[prompt_set]["accuracy"]
            rows.append([where, steps, calls, prompt_set,
                         *(f"{100 * accuracy[k]:.0f}%" for k in ("color", "shape", "motion", "all")),
                         f"{results[prompt_set]['seconds_per_clip']:.3f}"])
    table = bc.print_table(f"Teacher {teacher_dir} against its distilled students: {num_clips} evaluation prompts, "
                           f"guidance {e.guidance:g}, on {bc.machine()}",
                           ["run", "steps", "model calls per clip", "prompts", "colour", "shape", "motion",
                            "all three", "s per clip"], rows)
    result = {"machine": bc.machine(), "teacher": teacher_dir, "size": config.size, "num_clips": num_clips,
              "batch_size": batch_size, "seed": e.seed, "guidance": e.guidance, "models": payload, "table": table}
    bc.write_json(out or f"distill_{jax.devices()[0].platform}", result)
    if gif:
        n = min(6, num_clips)
        side_by_side = np.stack([np.concatenate([s[i] for s in strips], axis=2) for i in range(n)])  # [n, T, H, M*W, C]
        video_io.write_video(gif, video_io.upscale(video_io.grid(video_io.to_uint8(side_by_side), columns=1), 2),
                             config.sample.fps)
        print(f"wrote {gif}", flush=True)
    return result


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", required=True, help="the distilled runs' teacher: a configs/t2v.py run or a shipped "
                   "model's folder")
    p.add_argument("--students", required=True, help="comma-separated workdirs of configs/distill.py runs (or "
                   "shipped students' folders); `workdir:N` samples a guidance-conditioned student in N steps")
    p.add_argument("--teacher_steps", default="", help="comma-separated step counts to sample the teacher at "
                   "(default: the config's eval.steps); the first is the one students are compared with")
    p.add_argument("--clips", type=int, default=None, help="evaluation prompts (default: the teacher's eval.num_clips)")
    p.add_argument("--out", default=None, help="the JSON's name in benchmarks/results, or a path without .json")
    p.add_argument("--gif", default=None, help="write the first template clips: teacher | each student")
    args = p.parse_args(argv)
    print(f"machine: {bc.machine()}", flush=True)
    run(args.teacher, [s for s in args.students.split(",") if s], num_clips=args.clips, out=args.out, gif=args.gif,
        teacher_steps=[int(s) for s in args.teacher_steps.split(",") if s])


if __name__ == "__main__":
    host_memory.ensure_hugepage_malloc()  # timed runs get the trainer's allocator setting
    main()
