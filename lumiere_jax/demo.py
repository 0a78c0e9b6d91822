r"""A demo page on localhost: `python -m lumiere_jax.demo [--workdir=RUN]`, then open http://127.0.0.1:7860.

Needs the demo extra (`pip install -e '.[demo]'`: Gradio). Samples the trained run in --workdir or, without one, the
model that ships with the package (commands.resolve_run, as the CLI does). Three tabs, each running the checks and
samplers of `python -m lumiere_jax.main --mode=sample` on the same inputs:

  Text to video   a prompt (or a JSON list of prompts: a story), later prompts as FRAME: TEXT lines (--prompt_at),
                  seed, guidance, steps and frames (the training length at first; longer clips are long videos)
  Image to video  an uploaded still as the first frame (--image); needs --i2v_workdir, a configs/conditional.py run
  Edit a video    SDEdit of an uploaded clip towards the prompt (--video); strength 0 keeps it, 1 ignores it

The clip plays in the page, with its MP4 and GIF at the model's resolution to download. A bad input or a failed
request shows one line in the page, and the server goes on serving. Requests from any number of browser tabs queue
and run one at a time; while one samples, its tab shows the denoising step. The sampler is compiled once per shape
(frames, steps, guidance) and reused by later requests of that shape; the first one says it is compiling.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import itertools
import logging
import os
import queue
import signal
import sys
import tempfile
import time
from typing import Any, Iterator, Sequence

from lumiere_jax import host_memory

if __name__ == "__main__":
    # As main.py: huge pages for XLA:CPU's buffers (a re-execution, before jax loads) and the compilation cache.
    host_memory.ensure_hugepage_malloc()
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.expanduser("~/.cache/lumiere_jax/xla"))
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "2")
# The page never phones home: Gradio's usage analytics and version check are off (read when gradio loads).
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402
import jax  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from flax import nnx  # noqa: E402

from lumiere_jax import commands, config_lib, console, distill, sampling, shipped, video_io  # noqa: E402
from lumiere_jax.applications import edit, inputs  # noqa: E402
from lumiere_jax.commands import UsageError  # noqa: E402

log = logging.getLogger("lumiere_jax")



def define_flags() -> None:
    """The page's flags, defined only when it runs as a program: the tests import this module into processes where
    lumiere_jax.main has defined a --workdir of its own."""
    flags.DEFINE_string("workdir", None, "The text-to-video run the page samples (configs/t2v.py), which also edits "
                        "videos; default: the model that ships with the package, where one ships.")
    flags.DEFINE_string("i2v_workdir", None, "A conditional run (configs/conditional.py) for the image-to-video "
                        "tab; without it that tab says how to start one.")
    flags.DEFINE_string("host", "127.0.0.1", "Address to serve on; the default serves this machine only.")
    flags.DEFINE_integer("port", 7860, "Port to serve on.")
    flags.DEFINE_bool("verbose", False, "Show libraries' INFO logs (orbax, jax).")

VIEW_SIDE = 256  # the player's clip is upscaled (nearest) to at least this many pixels a side, so pixels stay sharp
MAX_UPLOAD = "50mb"  # an upload is one still or one short clip; inputs.py reads only the frames it needs
SAMPLER_QUEUE = "sampler"  # every tab's button joins this one queue: one request samples at a time
# The command line's names of the page's fields, as the shared checks' messages spell them: replaced longest first.
FIELD_NAMES = (("--config.sample.guidance", "Guidance"), ("--config.sample.strength", "Strength"),
               ("--config.sample.steps", "Steps"), ("sample.guidance", "Guidance"), ("sample.strength", "Strength"),
               ("sample.steps", "Steps"), ("--prompt_at", "Story"), ("--prompt", "Prompt"), ("--frames", "Frames"),
               ("--seed", "Seed"), ("--image", "Image"), ("--video", "Video"))


class StepReporter:
    """Carries the jitted sampler's progress to the page. The sampler is one XLA loop (samplers.sample), so the
    model's host callback (`ReportingModel`) is how the page learns which step it is on: each call puts the request
    that is sampling and the step's diffusion time here."""

    def __init__(self) -> None:
        self.times: queue.SimpleQueue[tuple[int, float]] = queue.SimpleQueue()
        self.request = 0  # set by the sampling thread, which runs one request at a time

    def __call__(self, t: np.ndarray) -> None:
        self.times.put((self.request, float(np.asarray(t).reshape(-1)[0])))


class ReportingModel(nnx.Module):
    """The STUNet with a host callback before every call that tells `reporter` the diffusion time t [B]."""

    def __init__(self, model: nnx.Module, reporter: StepReporter):
        self.model, self.reporter = model, reporter
        self.cfg = model.cfg  # what the sampler reads of the model (a distilled one takes the guidance weight)

    def __call__(self, z: jax.Array, t: jax.Array, *args: Any, **kwargs: Any) -> jax.Array:
        jax.debug.callback(self.reporter, t)
        return self.model(z, t, *args, **kwargs)


@dataclasses.dataclass
class Model:
    """A run loaded once for the page: its config, its sampler (weights, text encoder, step reporting), its
    checkpoint step, and the shapes whose sampler is compiled (`generate`'s cache keeps the programs)."""

    workdir: str | None  # None: a shipped model
    config: ml_collections.ConfigDict
    sampler: sampling.TextToVideo
    step: int
    compiled: set[tuple[Any, ...]] = dataclasses.field(default_factory=set)
    name: str = shipped.DEFAULT  # the shipped model's name, without workdir

    @property
    def distilled(self) -> distill.Distilled | None:
        """What the model was distilled for (configs/distill.py), or None."""
        return distill.distilled_for(self.workdir or shipped.folder(self.name))

    def weights(self, quote: str = "`") -> str:
        """The weights in words: the run (in `quote`s) and its checkpoint step, or the shipped model."""
        distilled = self.distilled
        calls = f", distilled to {distilled.steps} steps of one call" if distilled and distilled.steps else ""
        return (f"{quote}{self.workdir}{quote} (checkpoint step {self.step}{calls})" if self.workdir else
                f"the shipped model {self.name} (step {self.step}{calls})")

    def describe(self) -> str:
        data = self.config.data
        return f"{self.weights()}: {data.num_frames} frames at {data.resolution}x{data.resolution}, {data.fps:g} fps"

    def step_counts(self) -> list[int]:
        """The step counts that sample in one call each: a distilled run's own, or the shipped students' of a
        shipped model (shipped.STUDENTS); empty where any count samples with the run itself."""
        distilled = self.distilled
        if distilled is not None:
            return [distilled.steps] if distilled.steps else []
        if self.workdir:
            return []
        present = shipped.names()
        return sorted((n for n, student in shipped.STUDENTS.get(self.name, {}).items() if student in present),
                      reverse=True)


def check_run(workdir: str | None, flag: str, *, conditional: bool,
              name: str = shipped.DEFAULT) -> ml_collections.ConfigDict:
    """The config of the run in workdir, or without one of the shipped model `name`; refused in one line if it is
    not the kind its flag takes, or nothing ships (before any weights load)."""
    config = config_lib.run_config(workdir, flag) if workdir else shipped.sampling_config(name)
    config_lib.validate_model(config)
    if conditional and not inputs.is_conditional(config):
        raise UsageError(f"{flag}={workdir} is not a conditional run: give one trained with "
                         f"--config=configs/conditional.py (or i2v.py), or leave {flag} out.")
    if not conditional and (inputs.is_conditional(config) or config.task == "ssr"):
        raise UsageError(f"{flag}={workdir} is a {config.task} run: give a text-to-video run (configs/t2v.py)"
                         + (", and this one as --i2v_workdir." if inputs.is_conditional(config) else "."))
    return config


def load_model(workdir: str | None, flag: str, reporter: StepReporter, *, conditional: bool = False,
               share_encoder: Model | None = None, name: str = shipped.DEFAULT) -> Model:
    """Restores the weights the CLI samples (commands.resolve_run: the run in workdir, or without one the shipped
    model `name`), with `reporter` told of every model call.

    share_encoder: a loaded run whose text encoder this one reuses when both configs name the same encoder.
    """
    config = check_run(workdir, flag, conditional=conditional, name=name)
    run = commands.resolve_run(config, workdir, flag) if workdir else shipped.load(name, config)
    keys = ("text_encoder", "text_encoder_path", "text_max_length")
    encoder = None
    if share_encoder is not None and all(share_encoder.config[k] == config[k] for k in keys):
        encoder = share_encoder.sampler.encoder
    t2v = sampling.TextToVideo.from_run(run, encoder)
    t2v.graphdef, t2v.params = nnx.split(ReportingModel(nnx.merge(t2v.graphdef, t2v.params), reporter))
    return Model(workdir, config, t2v, run.step, name=name)


def first_line(error: BaseException) -> str:
    """The first line of an error's message (its type's name when it has none)."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def page_message(error: BaseException, uploads: Sequence[str] = ()) -> str:
    """The one line a failed request shows in the page: the error's first line, with the uploads named by their
    file names instead of the server's temporary paths, and the command line's flags by the page's field names."""
    text = first_line(error)
    for path in uploads:
        text = text.replace(path, os.path.basename(path))
    for flag, field in FIELD_NAMES:
        text = text.replace(f"{flag}=", f"{field} ").replace(flag, field)
    return text


def whole_number(value: float | None, field: str) -> int | None:
    """A page field that takes whole numbers (blank: None); one line when it holds anything else."""
    if value is None:
        return None
    if not float(value).is_integer():
        raise UsageError(f"{field} {value} must be a whole number.")
    return int(value)


def sample_clip(model: Model, checked: commands.SamplePlan, seed: int, s: ml_collections.ConfigDict) -> np.ndarray:
    """One clip [T, H, W, 3] in [-1, 1] for a checked request: `commands.sample`'s choice of sampler, on the run
    loaded once."""
    kwargs = dict(seed=seed, steps=s.steps, guidance=s.guidance, sampler=s.sampler)
    spans, window = checked.spans, model.config.data.num_frames
    if checked.plan.kind != "t2v":
        return edit.run(checked.plan, model.sampler, spans[0][1], **kwargs)
    if checked.frames == window and len(spans) == 1:
        return model.sampler([spans[0][1]], **kwargs)[0]
    return model.sampler.long_video(spans, checked.frames, layout=checked.layout, **kwargs)


def denoising_steps(checked: commands.SamplePlan, s: ml_collections.ConfigDict) -> tuple[float, int]:
    """The diffusion time the sampler starts from and its number of steps: SDEdit runs the fraction `strength` of
    the steps from t = strength (edit.sdedit), everything else all steps from t = 1."""
    if checked.plan.kind == "sdedit":
        return checked.plan.strength, max(1, round(s.steps * checked.plan.strength))
    return 1.0, int(s.steps)


class Demo:
    """What the page's buttons run: a request checked as `--mode=sample` checks it, sampled on a loaded run in one
    sampling thread with the step shown in the page, written as MP4 and GIF, and reported with its timings."""

    def __init__(self, t2v: Model, i2v: Model | None, reporter: StepReporter, out_dir: str):
        self.t2v, self.i2v, self.reporter, self.out_dir = t2v, i2v, reporter, out_dir
        self.worker = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="sampler")
        self.requests = itertools.count(1)
        self.students: dict[str, Model] = {}  # shipped students, loaded by the first request at their step count

    def model_for(self, model: Model, steps: int | None) -> Model:
        """The model that samples `steps` steps: the shipped student distilled for that count where `model` is a
        shipped model that has one (as --mode=sample without --workdir chooses), else `model` itself."""
        if model.workdir or steps not in model.step_counts():
            return model
        name = commands.shipped_name(model.config, steps)
        if name not in self.students:
            self.students[name] = load_model(None, "--workdir", self.reporter, share_encoder=model, name=name)
        return self.students[name]

    def text_to_video(self, prompt: str, story: str, seed: float | None, guidance: float, steps: float,
                      frames: float | None, progress: gr.Progress = gr.Progress()) -> tuple[str, list[str], str]:
        with one_line():
            prompt_at = tuple(line.strip() for line in (story or "").splitlines() if line.strip())
            return self.generate(self.t2v, prompt, seed, guidance, steps, progress, prompt_at=prompt_at,
                                 frames=whole_number(frames, "Frames"))

    def image_to_video(self, image: str | None, prompt: str, seed: float | None, guidance: float, steps: float,
                       progress: gr.Progress = gr.Progress()) -> tuple[str, list[str], str]:
        with one_line([image] if image else []):
            if self.i2v is None:
                raise UsageError("Image to video needs the conditional model: start the demo with --i2v_workdir=RUN, "
                                 "a run trained with --config=configs/conditional.py.")
            if not image:
                raise UsageError(f"Upload a still image ({', '.join(inputs.IMAGE_EXTENSIONS)}): it becomes the "
                                 f"first frame.")
            return self.generate(self.i2v, prompt, seed, guidance, steps, progress, image=image)

    def edit_video(self, video: str | None, prompt: str, strength: float, seed: float | None, guidance: float,
                   steps: float, progress: gr.Progress = gr.Progress()) -> tuple[str, list[str], str]:
        with one_line([video] if video else []):
            if not video:
                raise UsageError(f"Upload a clip to edit ({', '.join(inputs.VIDEO_EXTENSIONS + ('.gif',))}).")
            return self.generate(self.t2v, prompt, seed, guidance, steps, progress, video=video, strength=strength)

    def check(self, model: Model, out: str, prompt: str, seed: float | None, guidance: float, steps: float, *,
              strength: float | None = None, **files: Any) -> tuple[commands.SampleInputs, commands.SamplePlan]:
        """The request's inputs and plan (its config: the run's, with the page's sampling values), checked by
        commands.check_sample: the CLI's checks, before anything compiles. Raises its one-line errors."""
        if not (prompt or "").strip():
            raise UsageError("Prompt is empty: say what the clip shows, e.g. a red circle moving left.")
        config = ml_collections.ConfigDict(model.config.to_dict())  # this request's values only
        config.sample.guidance = float(guidance)
        config.sample.steps = whole_number(steps, "Steps")
        if strength is not None:
            config.sample.strength = float(strength)
        request = commands.SampleInputs(prompt=prompt, out=out, seed=whole_number(seed, "Seed") or 0, **files)
        return request, commands.check_sample(config, model.workdir, request)

    def generate(self, model: Model, prompt: str, seed: float | None, guidance: float, steps: float,
                 progress: gr.Progress, *, strength: float | None = None,
                 **files: Any) -> tuple[str, list[str], str]:
        """Checks and samples one request; returns the player's MP4, the downloads and the status line."""
        folder = tempfile.mkdtemp(dir=self.out_dir)
        out = os.path.join(folder, "clip.mp4")
        model = self.model_for(model, whole_number(steps, "Steps"))
        request, checked = self.check(model, out, prompt, seed, guidance, steps, strength=strength, **files)
        s = checked.config.sample  # what samples: the run's config with this request's values
        t_start, total = denoising_steps(checked, s)
        shape = (checked.plan.kind, checked.frames, len(checked.spans) > 1, checked.method, total, s.guidance,
                 s.sampler)
        compiling = shape not in model.compiled
        progress(0, desc=(f"Compiling the sampler for {checked.frames} frames, {total} steps, guidance {s.guidance:g} "
                          f"(the first request of this shape; later ones reuse it)" if compiling else "Starting"))
        number = next(self.requests)
        start = time.perf_counter()
        job = self.worker.submit(self._sample, number, model, checked, request.seed, s)
        times = np.linspace(t_start, 0.0, total + 1)[:-1]
        first_step, shown = None, -1
        while not (job.done() and self.reporter.times.empty()):
            try:
                who, t = self.reporter.times.get(timeout=0.1)
            except queue.Empty:
                continue
            if who != number:
                continue  # a call of an earlier request whose page went away before it finished
            first_step = first_step or time.perf_counter()
            step = int(np.abs(times - t).argmin())
            if step > shown:
                shown = step
                progress((step, total), desc=f"Denoising step {step + 1} of {total}")
        clip = job.result()
        end = time.perf_counter()
        first_step = first_step or end
        model.compiled.add(shape)
        files = self._write(video_io.to_uint8(clip), out, int(s.fps))
        setup = (f"compiled the sampler for this shape in {first_step - start:.1f} s" if compiling
                 else f"the compiled sampler reused (started in {first_step - start:.1f} s)")
        status = (f"{clip.shape[0]} frames at {clip.shape[2]}x{clip.shape[1]} in {end - start:.1f} s: {setup}, "
                  f"{total} denoising steps in {end - first_step:.1f} s. Weights: {model.weights(quote='')}, seed "
                  f"{request.seed}.")
        log.info("Request %d (%s): %s", number, checked.plan.kind, status)
        return files[0], files[1:], status

    def _sample(self, number: int, model: Model, checked: commands.SamplePlan, seed: int,
                s: ml_collections.ConfigDict) -> np.ndarray:
        self.reporter.request = number
        return sample_clip(model, checked, seed, s)

    @staticmethod
    def _write(frames: np.ndarray, out: str, fps: int) -> list[str]:
        """Writes the clip uint8 [T, H, W, 3] as MP4 and GIF at the model's resolution (the downloads), and the
        player's MP4 upscaled by whole pixels, which a browser would otherwise blur; returns player, MP4, GIF."""
        gif, view = out[:-len(".mp4")] + ".gif", out[:-len(".mp4")] + "_view.mp4"
        video_io.write_video(out, frames, fps)
        video_io.write_video(gif, frames, fps)
        video_io.write_video(view, video_io.upscale(frames, -(-VIEW_SIDE // frames.shape[1])), fps)
        return [view, out, gif]


@contextlib.contextmanager
def one_line(uploads: Sequence[str] = ()) -> Iterator[None]:
    """Turns any failure of a request into one line in the page (gr.Error), never a traceback; a failure that no
    check foresaw is logged whole on the server's console. The server goes on serving either way."""
    try:
        yield
    except gr.Error:
        raise
    except (ValueError, FileNotFoundError) as e:
        raise gr.Error(page_message(e, uploads), print_exception=False) from None
    except Exception as e:  # anything else: the request fails, the server stays up
        log.exception("The request failed.")
        raise gr.Error(f"The request failed ({type(e).__name__}: {page_message(e, uploads)}); the server's console "
                       f"has the details.", print_exception=False) from None


def _outputs(tab: str) -> list[gr.components.Component]:
    """A tab's outputs: the player, the downloads and the status line (elem_ids `<tab>_video`, ...)."""
    with gr.Column():
        video = gr.Video(label="Clip", autoplay=True, loop=True, interactive=False, height=VIEW_SIDE + 64,
                         elem_id=f"{tab}_video")
        files = gr.File(label="Download: MP4 and GIF at the model's resolution", file_count="multiple",
                        interactive=False, elem_id=f"{tab}_files")
        status = gr.Textbox(label="Status", interactive=False, elem_id=f"{tab}_status")
    return [video, files, status]


def _sampling_fields(tab: str, model: Model) -> list[gr.components.Component]:
    """Guidance and steps, at the run's config.sample defaults; a distilled run starts at its step count, and the
    steps' note names the counts that sample with one model call a step (Model.step_counts)."""
    sample, counts = model.config.sample, model.step_counts()
    distilled = model.distilled
    if distilled is not None and distilled.steps:
        info = f"this run samples in {distilled.steps} steps of one model call (distilled)"
    elif counts:
        info = f"denoising steps; {' or '.join(map(str, counts))}: a distilled student, one model call a step"
    else:
        info = "denoising steps"
    with gr.Row():
        guidance = gr.Slider(0, 10, value=float(sample.guidance), step=0.5, label="Guidance",
                             info="1: none; higher follows the prompt more", elem_id=f"{tab}_guidance")
        steps = gr.Slider(1, 250, value=int(distilled.steps if distilled and distilled.steps else sample.steps),
                          step=1, label="Steps", info=info, elem_id=f"{tab}_steps")
    return [guidance, steps]


def _seed(tab: str) -> gr.Number:
    return gr.Number(label="Seed", value=0, precision=0, elem_id=f"{tab}_seed")


def build_page(demo: Demo) -> gr.Blocks:
    """The page: a tab per application, every button in one queue."""
    t2v = demo.t2v
    window = t2v.config.data.num_frames
    sample = t2v.config.sample
    run_on = dict(concurrency_limit=1, concurrency_id=SAMPLER_QUEUE)
    default_prompt = sample.prompts[0] if sample.prompts else "a red circle moving left"
    with gr.Blocks(title="Lumiere in JAX", analytics_enabled=False, delete_cache=(3600, 3600)) as page:
        gr.Markdown(f"### Lumiere in JAX\nText to video and editing: {t2v.describe()}. Image to video: "
                    + (demo.i2v.describe() if demo.i2v else "not loaded (start with `--i2v_workdir=RUN`)") + ".")
        with gr.Tab("Text to video"):
            with gr.Row():
                with gr.Column():
                    prompt = gr.Textbox(label="Prompt", value=default_prompt, elem_id="t2v_prompt",
                                        info='One prompt; or a story as a JSON list, one prompt per equal time span: '
                                             '["a red circle moving left", "a red circle moving up"]')
                    story = gr.Textbox(label="Story", lines=2, elem_id="t2v_story",
                                       placeholder=f"{window}: a red circle moving up",
                                       info="Later prompts, one a line as FRAME: TEXT, each from that frame on")
                    guidance, steps = _sampling_fields("t2v", t2v)
                    with gr.Row():
                        seed = _seed("t2v")
                        # The training length to start with: a blank number field reaches the server as 0.
                        frames = gr.Number(label="Frames", value=window, precision=0, elem_id="t2v_frames",
                                           info=f"the training length, {window}; more: a long video")
                    button = gr.Button("Generate", variant="primary", elem_id="t2v_generate")
                outputs = _outputs("t2v")
            button.click(demo.text_to_video, [prompt, story, seed, guidance, steps, frames], outputs, **run_on)
        with gr.Tab("Image to video"):
            with gr.Row():
                with gr.Column():
                    if demo.i2v is None:
                        gr.Markdown("Start the demo with `--i2v_workdir=RUN`, a run trained with "
                                    "`--config=configs/conditional.py`, to animate a still.")
                    image = gr.File(label="Still image (the first frame)", file_types=list(inputs.IMAGE_EXTENSIONS),
                                    elem_id="i2v_image")
                    prompt = gr.Textbox(label="Prompt", value=default_prompt, elem_id="i2v_prompt")
                    guidance, steps = _sampling_fields("i2v", demo.i2v or t2v)
                    seed = _seed("i2v")
                    button = gr.Button("Animate", variant="primary", elem_id="i2v_generate")
                outputs = _outputs("i2v")
            button.click(demo.image_to_video, [image, prompt, seed, guidance, steps], outputs, **run_on)
        with gr.Tab("Edit a video"):
            with gr.Row():
                with gr.Column():
                    video = gr.File(label=f"Clip to edit (its first {window} frames at {t2v.config.data.fps:g} fps)",
                                    file_types=list(inputs.VIDEO_EXTENSIONS + (".gif",)), elem_id="edit_video")
                    prompt = gr.Textbox(label="Prompt", value=default_prompt, elem_id="edit_prompt")
                    guidance, steps = _sampling_fields("edit", t2v)
                    with gr.Row():
                        strength = gr.Slider(0, 1, value=float(sample.strength), step=0.05, label="Strength",
                                             info="0 keeps the clip, 1 ignores it", elem_id="edit_strength")
                        seed = _seed("edit")
                    button = gr.Button("Edit", variant="primary", elem_id="edit_generate")
                outputs = _outputs("edit")
            button.click(demo.edit_video, [video, prompt, strength, seed, guidance, steps], outputs, **run_on)
    return page


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise UsageError(f"Unexpected arguments {list(argv[1:])}: flags are written --name=value.")
    values = flags.FLAGS
    console.setup_logging(values.verbose)
    # SIGTERM stops the server as Ctrl-C does (Gradio closes it on KeyboardInterrupt), so the clips go with it.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    reporter = StepReporter()
    t2v = load_model(values.workdir, "--workdir", reporter)
    i2v = None
    if values.i2v_workdir:
        i2v = load_model(values.i2v_workdir, "--i2v_workdir", reporter, conditional=True, share_encoder=t2v)
    with tempfile.TemporaryDirectory(prefix="lumiere_demo_") as out_dir:
        page = build_page(Demo(t2v, i2v, reporter, out_dir))
        try:
            page.queue(default_concurrency_limit=1).launch(
                server_name=values.host, server_port=values.port, share=False, ssr_mode=False, mcp_server=False,
                max_file_size=MAX_UPLOAD, quiet=True, prevent_thread_lock=True)
        except OSError:
            raise UsageError(f"--port={values.port}: cannot serve on {values.host}:{values.port}, which another "
                             f"server may hold; give a free one, e.g. --port={values.port + 1}.") from None
        log.info("Serving %s on http://%s:%d (Ctrl-C stops).", t2v.workdir or t2v.name, values.host,
                 values.port)
        page.block_thread()


def run() -> None:
    """Entry point: a bad flag or run prints one line naming it and the fix, and exits 2."""
    try:
        app.run(main)
    except (ValueError, FileNotFoundError, OSError) as e:
        print(f"error: {first_line(e)}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    define_flags()
    run()
