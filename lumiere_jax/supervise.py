"""A parent process for each process of a multi-process run, so that a lost coordinator is one line too.

When process 0 of a `--distributed` run (the host of jax's coordination service) dies, JAX's runtime ends every
other process from C++ as soon as its connection to the service breaks: a multi-line fatal log, a C++ stack, and
Python's fault handler dumping every thread, then SIGABRT. No Python code of the dying process runs in between, so
`peers.Watchdog` cannot speak for it. `run_supervised` does instead: `python -m lumiere_jax.main --distributed ...`
re-runs itself as a child with the same arguments, passes its stdout through untouched and its stderr line by line,
and holds back the runtime's coordination-service log lines (glog format, `W1207 08:46:07.765 ... file.cc:147]`)
until the next ordinary line shows the run went on. If the child then dies of a signal after the runtime's fatal
"leader task ... died" log, the held lines are replaced by

    error: lost the coordinator (process 0 of 2 at host:port): ... Restart every process with the same command ...

and the parent exits with LOST_PEER_EXIT, as the watchdog does for any other lost process. Any other ending passes
the held lines on as they were and keeps the child's exit status. SIGTERM and SIGHUP reach the child (preemption
notices go to whichever process the launcher started); the child is killed if the parent is (PR_SET_PDEATHSIG), so
killing the launched process kills the run as before.

Standard library only: it runs before jax is imported.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import subprocess
import sys
from typing import IO, Sequence

LOST_PEER_EXIT = 3  # exit code of a process ended because another one was lost (peers.py uses it too)
CHILD_ENV = "LUMIERE_JAX_SUPERVISED"  # set in the child: it runs the job instead of supervising again
# A glog line of jax's C++ runtime: level, date, time, thread, source file and line.
_GLOG = re.compile(r"^([IWEF])\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+ ([\w.]+):\d+\] ")
_OUR_LOG = re.compile(r"^\d\d:\d\d:\d\d ")  # the project's own log lines (console.py): "08:46:03 step 3/1000 ..."
# The runtime's files whose lines concern the coordination service (and the GRPC detail lines that follow them).
_COORDINATION = ("coordination", "preemption_sync", "client.h", "distributed")
# What the runtime's fatal log says when the coordinator went away ("Either the leader task was preempted/died ...").
_LEADER_GONE = "leader task"
_PR_SET_PDEATHSIG = 1


def distributed(argv: Sequence[str]) -> bool:
    """Whether the command line turns --distributed on (absl's forms: --distributed, --distributed=true,
    --nodistributed; the last one wins)."""
    on = False
    for arg in argv[1:]:
        if arg == "--":
            break
        if arg in ("--distributed", "-distributed"):
            on = True
        elif arg in ("--nodistributed", "-nodistributed"):
            on = False
        elif arg.startswith(("--distributed=", "-distributed=")):
            on = arg.split("=", 1)[1].lower() in ("true", "t", "1", "yes")
    return on


def _flag(argv: Sequence[str], name: str) -> str | None:
    """The value of --name=VALUE or --name VALUE in argv (the last one), or None."""
    value = None
    for i, arg in enumerate(argv):
        if arg.startswith(f"--{name}="):
            value = arg.split("=", 1)[1]
        elif arg == f"--{name}" and i + 1 < len(argv):
            value = argv[i + 1]
    return value


def newest_checkpoint(workdir: str | None) -> int | None:
    """The newest finished checkpoint step in workdir/checkpoints (orbax's step folders; a save in progress is a
    tmp folder), or None where there is none or the folder is not local."""
    if not workdir or "://" in workdir:
        return None
    try:
        steps = [int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit()]
    except OSError:
        return None
    return max(steps, default=None)


def lost_coordinator_line(argv: Sequence[str]) -> str:
    """The one line for a process the runtime ended because the coordinator went away."""
    count = _flag(argv, "num_processes")
    address = _flag(argv, "coordinator_address")
    where = " of " + count if count else ""
    where += f" at {address}" if address else ""
    step = newest_checkpoint(_flag(argv, "workdir"))
    resume = (f"each resumes from step {step}, the newest checkpoint every process finished" if step is not None
              else "they resume from the newest checkpoint every process finished")
    return (f"error: lost the coordinator (process 0{where}): its connection broke (killed, crashed, or its host "
            f"unreachable) and jax's runtime ended this process. Restart every process with the same command: "
            f"{resume}.")


class StderrFilter:
    """Passes the child's stderr lines on, holding the runtime's coordination-service lines (and what follows a
    fatal one) until it is known whether the coordinator died; `finish` decides."""

    def __init__(self, out: IO[str]):
        self.out = out
        self.held: list[str] = []
        self.fatal = False  # the runtime logged a fatal error: everything after it is its crash report

    def feed(self, line: str) -> None:
        if self.fatal:
            self.held.append(line)
            return
        match = _GLOG.match(line)
        if match and any(name in match.group(2) for name in _COORDINATION):
            self.held.append(line)
            self.fatal = match.group(1) == "F"
            return
        if self.held and not match and not _OUR_LOG.match(line) and not line.startswith("error: "):
            self.held.append(line)  # a continuation of a held line (the GRPC detail lines)
            return
        self._flush()
        self.out.write(line)
        self.out.flush()

    def _flush(self) -> None:
        self.out.write("".join(self.held))
        self.out.flush()
        self.held = []

    def finish(self, returncode: int, argv: Sequence[str], reported: bool) -> int:
        """The parent's exit code. A child killed by a signal after a fatal log about the coordination service
        becomes our one line and LOST_PEER_EXIT; a child whose watchdog already printed its line drops the runtime
        lines held after it; anything else passes on as it was."""
        held = "".join(self.held)
        if self.fatal and returncode < 0 and _LEADER_GONE in held:
            self.held = []
            self.out.write(lost_coordinator_line(argv) + "\n")
            self.out.flush()
            return LOST_PEER_EXIT
        if reported and returncode == LOST_PEER_EXIT:
            self.held = []
        self._flush()
        return returncode if returncode >= 0 else 128 - returncode


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL when the parent dies (Linux; elsewhere the child outlives it)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def run_supervised(argv: Sequence[str]) -> int:
    """Runs `python -m lumiere_jax.main argv[1:]` as a child under the filter; returns the exit code to use."""
    env = dict(os.environ, **{CHILD_ENV: "1"})
    child = subprocess.Popen([sys.executable, "-m", "lumiere_jax.main", *argv[1:]], env=env,
                             stderr=subprocess.PIPE, text=True, errors="replace", bufsize=1,
                             preexec_fn=_die_with_parent)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: child.send_signal(signum))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the child too (same process group): it decides
    stderr = StderrFilter(sys.stderr)
    reported = False
    for line in child.stderr:
        reported = reported or line.startswith("error: lost ")
        stderr.feed(line)
    return stderr.finish(child.wait(), argv, reported)


def maybe_supervise(argv: Sequence[str]) -> None:
    """In `python -m lumiere_jax.main`: a --distributed command that is not already the child runs as one and this
    process exits with its code; anything else returns at once."""
    if distributed(argv) and not os.environ.get(CHILD_ENV):
        sys.exit(run_supervised(argv))
