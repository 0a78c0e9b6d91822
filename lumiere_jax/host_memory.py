"""Huge pages for XLA:CPU's per-step buffers: the process re-executes itself once with glibc's hugetlb tunable.

XLA:CPU allocates each execution's temporary buffer (747 MiB for the tiny train step at batch 8) with
posix_memalign from a worker thread. That is larger than any glibc arena, so glibc mmaps it and unmaps it
again when the step ends, and the next step faults every page back in, zero-filled: ~145,000 page faults a
step, 30% of the CPU time spent in the kernel on the project's 2-core CPU. `GLIBC_TUNABLES=glibc.malloc.hugetlb=1`
(glibc >= 2.35) makes malloc ask for transparent huge pages (madvise) on the memory it maps, so a step faults in
2 MiB pages instead of 4 KiB ones: the tiny train step takes 655 -> 491 ms and the small one 19.3 -> 16.3 s
(benchmarks/bench_train.py, two runs back to back; the kernel's share of CPU time 0.29 -> 0.11). Nothing else
changes: same programs, same numbers.

glibc reads tunables only when a process starts, hence the re-exec, done first thing by the CLI and the
benchmarks (`ensure_hugepage_malloc()`). It is skipped when the tunable cannot help (not Linux, glibc older than
2.35, transparent huge pages set to "never"), when GLIBC_TUNABLES already names `glibc.malloc.hugetlb` (the
user chose), and when LUMIERE_HUGEPAGES=0.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Mapping

TUNABLE = "glibc.malloc.hugetlb"
OPT_OUT = "LUMIERE_HUGEPAGES"  # "0": never re-execute
_DONE = "LUMIERE_HUGEPAGES_REEXEC"  # set in the re-executed process, so it never loops
THP_SETTING = "/sys/kernel/mm/transparent_hugepage/enabled"


def glibc_version() -> tuple[int, int] | None:
    """(major, minor) of the C library when it is glibc, else None."""
    try:
        name, version = os.confstr("CS_GNU_LIBC_VERSION").split()
    except (AttributeError, ValueError, OSError):
        return None
    match = re.match(r"(\d+)\.(\d+)", version)
    return (int(match.group(1)), int(match.group(2))) if name == "glibc" and match else None


def transparent_hugepages() -> str | None:
    """The kernel's THP mode ("always", "madvise", "never"), or None where it cannot be read."""
    try:
        with open(THP_SETTING) as f:
            match = re.search(r"\[(\w+)\]", f.read())
    except OSError:
        return None
    return match.group(1) if match else None


def hugepage_environment(env: Mapping[str, str], platform: str, glibc: tuple[int, int] | None,
                         thp: str | None) -> dict[str, str] | None:
    """The environment to re-execute with, or None to leave the process as it is."""
    if env.get(OPT_OUT) == "0" or env.get(_DONE) or TUNABLE in env.get("GLIBC_TUNABLES", ""):
        return None
    if not platform.startswith("linux") or glibc is None or glibc < (2, 35) or thp not in ("always", "madvise"):
        return None
    tunables = ":".join(t for t in (env.get("GLIBC_TUNABLES", ""), f"{TUNABLE}=1") if t)
    return {**env, "GLIBC_TUNABLES": tunables, _DONE: "1"}


def ensure_hugepage_malloc() -> None:
    """Re-executes this process with the hugetlb tunable when it helps (module docstring); call it first.

    The command line is repeated as it was given (`sys.orig_argv`: interpreter options, `-m module` or the
    script, and the arguments), so absl flags and scripts behave the same in the re-executed process.
    """
    env = hugepage_environment(os.environ, sys.platform, glibc_version(), transparent_hugepages())
    if env is None or not getattr(sys, "orig_argv", None):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable] + sys.orig_argv[1:], env)
