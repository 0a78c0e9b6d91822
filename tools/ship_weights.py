r"""Ships a trained run's EMA weights with the package, as the model that sampling without --workdir uses.

  python -m tools.ship_weights --workdir=runs/t2v_tiny --name=t2v_tiny \
      --command="python -m lumiere_jax.main --config=configs/t2v.py --workdir=runs/t2v_tiny"

Writes lumiere_jax/weights/<name>/ (lumiere_jax/shipped.py describes the files): the newest checkpoint's EMA weights,
the run's config.json, its newest evaluation (eval/eval_<step>.json, which must be of that checkpoint's step; run
`--mode=eval --workdir=RUN` first) and provenance.json: this checkout's commit (git rev-parse HEAD), --command as
given, the step, the training loop's wall time (summed from metrics.jsonl) and, with --command_wall_s, the command's
own as timed, this machine and the date. Run it on the machine that trained the run, from its checkout or naming it
with --checkout. Replaces a shipped model of the same name; refuses weights over
10 MB. Then commit the folder.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys

import jax
from absl import app, flags

from lumiere_jax import console, paths, runs, shipped

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def commit(checkout: str = REPO) -> str:
    """The commit of a git checkout (git rev-parse HEAD); one line where it is not one."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=checkout, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as e:
        raise ValueError(f"git rev-parse HEAD failed in {checkout} ({type(e).__name__}): ship from a git checkout "
                         f"of the commit that trained the run, or name it with --checkout.") from None


def machine() -> str:
    """One line naming this machine: cores and CPU model, the OS, and the accelerator where there is one."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    device = jax.devices()[0]
    accelerator = "" if device.platform == "cpu" else f", {jax.device_count()}x {device.device_kind}"
    return f"{os.cpu_count()}-core {cpu} ({platform.system()} {platform.machine()}{accelerator}, jax {jax.__version__})"


def train_wall_s(workdir: str, step: int) -> float | None:
    """Seconds the training loop ran up to `step`: each logged interval's steps over its steps/s, summed from
    metrics.jsonl (compiles and evaluations are not in it; a line torn by a crash is skipped); None without metrics."""
    path = paths.resolve(workdir) / "metrics.jsonl"
    if not path.exists():
        return None
    total, last = 0.0, 0
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if row["step"] > step:
            break
        if row.get("steps_per_sec"):
            total += (row["step"] - last) / row["steps_per_sec"]
        last = row["step"]
    return round(total, 1)


def newest_eval(workdir: str, step: int) -> str | None:
    """The text of the run's newest eval/eval_<step>.json, or None where it has none; refuses one of another step
    than the shipped checkpoint's."""
    folder = paths.resolve(workdir) / "eval"
    found = sorted(folder.glob("eval_*.json")) if folder.is_dir() else []
    if not found:
        return None
    text = found[-1].read_text()
    evaluated = json.loads(text).get("step")
    if evaluated != step:
        raise ValueError(f"The run's newest evaluation {found[-1].name} is of step {evaluated}, not of its newest "
                         f"checkpoint {step}: evaluate it first with python -m lumiere_jax.main "
                         f"--config=<its config> --workdir={workdir} --mode=eval.")
    return text


def student_config_json(workdir: str, teacher: str | None, root: str | None = None) -> str:
    """The run's config.json as it ships. A distilled student's init_from, the folder it learned from on the
    training machine, becomes its shipped teacher's folder (lumiere_jax/weights/<teacher>), so the step counts its
    lineage offers are read from the package; other runs' is kept as written."""
    text = (paths.resolve(workdir) / "config.json").read_text()
    saved = json.loads(text)
    if "distill" not in saved:
        if teacher:
            raise ValueError(f"--teacher={teacher}: the run in {workdir} is not distilled (configs/distill.py); "
                             f"leave --teacher out.")
        return text
    if not teacher:
        raise ValueError(f"The run in {workdir} is a distilled student of {saved.get('init_from')}, a folder of this "
                         f"machine: give --teacher=<the shipped model it learned from>, e.g. --teacher=t2v_tiny.")
    if teacher not in shipped.names(root):
        raise ValueError(f"--teacher={teacher} is not a shipped model (have {shipped.names(root)}): ship the teacher "
                         f"first.")
    saved["init_from"] = f"lumiere_jax/weights/{teacher}"
    return json.dumps(saved, indent=2) + "\n"


def ship(workdir: str, name: str, command: str, root: str | None = None, checkout: str = REPO,
         command_wall_s: float | None = None, teacher: str | None = None) -> str:
    """Exports the newest checkpoint's EMA weights of the run in workdir as shipped model `name` (under `root`,
    default the package's lumiere_jax/weights); returns its folder. checkout: the git checkout whose commit trained
    the run; command_wall_s: the training command's own wall time, timed by the caller (dataset build, compiles
    and periodic samples included), where it was measured; teacher: for a distilled student, the shipped model it
    learned from (student_config_json)."""
    if not command or not command.strip():
        raise ValueError("--command is empty: give the exact command line that trained the run.")
    config_json = student_config_json(workdir, teacher, root)
    run = runs.load(workdir)
    provenance = {"name": name, "commit": commit(checkout), "command": command, "step": run.step,
                  "train_wall_s": train_wall_s(workdir, run.step), "command_wall_s": command_wall_s,
                  "machine": machine(),
                  "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  "params": int(sum(a.size for a in jax.tree.leaves(run.params)))}
    return shipped.save(name, run.params, config_json=config_json, provenance=provenance, eval_json=newest_eval(workdir, run.step), root=root)


def define_flags() -> None:
    """The command line's flags, defined only when the tool runs as a program: tests import `ship` into processes
    where lumiere_jax.main has defined a --workdir of its own."""
    flags.DEFINE_string("workdir", None, "The trained run to ship (its newest checkpoint).")
    flags.DEFINE_string("name", shipped.DEFAULT, "The shipped model's name: its folder in lumiere_jax/weights.")
    flags.DEFINE_string("command", None, "The exact command line that trained the run, for provenance.json.")
    flags.DEFINE_string("checkout", REPO, "The git checkout that trained the run (its HEAD is recorded).")
    flags.DEFINE_float("command_wall_s", None, "The training command's wall time in seconds, as timed.")
    flags.DEFINE_string("teacher", None, "For a distilled student (configs/distill.py): the shipped model it was "
                        "distilled from, which its shipped config.json names as init_from.")


def main(argv: list[str]) -> None:
    console.setup_logging()
    values = flags.FLAGS
    if len(argv) > 1:
        sys.exit(f"error: unexpected arguments {argv[1:]}: flags are written --name=value.")
    if not values.workdir:
        sys.exit("error: --workdir is required: the trained run to ship.")
    try:
        where = ship(values.workdir, values.name, values.command or "", checkout=values.checkout,
                     command_wall_s=values.command_wall_s, teacher=values.teacher)
    except ValueError as e:
        sys.exit(f"error: {e}")
    size = os.path.getsize(os.path.join(where, shipped.WEIGHTS))
    print(f"Wrote {where} ({size / 1e6:.1f} MB of weights): commit it with the package.")


if __name__ == "__main__":
    define_flags()
    app.run(main)
