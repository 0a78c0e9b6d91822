"""The hugetlb re-exec: when it applies, and that the re-executed process keeps its command line."""

import os
import subprocess
import sys

import pytest

from lumiere_jax import host_memory as hm

LINUX, NEW, OLD = "linux", (2, 36), (2, 31)


@pytest.mark.parametrize("env, platform, glibc, thp, expected_tunables", [
    ({}, LINUX, NEW, "madvise", "glibc.malloc.hugetlb=1"),
    ({}, LINUX, NEW, "always", "glibc.malloc.hugetlb=1"),
    ({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, LINUX, NEW, "madvise",
     "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"),                       # the user's tunables are kept
    ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, LINUX, NEW, "madvise", None),  # the user chose
    ({"LUMIERE_HUGEPAGES": "0"}, LINUX, NEW, "madvise", None),                    # opted out
    ({"LUMIERE_HUGEPAGES_REEXEC": "1"}, LINUX, NEW, "madvise", None),             # already re-executed
    ({}, LINUX, NEW, "never", None),
    ({}, LINUX, NEW, None, None),
    ({}, LINUX, OLD, "madvise", None),                                            # no hugetlb tunable yet
    ({}, LINUX, None, "madvise", None),                                           # musl and others
    ({}, "darwin", NEW, "madvise", None),
])
def test_when_the_process_re_executes(env, platform, glibc, thp, expected_tunables):
    out = hm.hugepage_environment({"PATH": "/bin", **env}, platform, glibc, thp)
    if expected_tunables is None:
        assert out is None
    else:
        assert out["GLIBC_TUNABLES"] == expected_tunables
        assert out["PATH"] == "/bin" and out["LUMIERE_HUGEPAGES_REEXEC"] == "1"


def test_the_re_executed_process_keeps_its_command_line_and_runs_once(tmp_path):
    script = tmp_path / "probe.py"
    script.write_text(
        "import os, sys\n"
        f"sys.path.insert(0, {os.path.dirname(os.path.dirname(os.path.abspath(__file__)))!r})\n"
        "from lumiere_jax import host_memory\n"
        "print('start', flush=True)\n"
        "host_memory.ensure_hugepage_malloc()\n"
        "print(sys.argv[1:], os.environ.get('GLIBC_TUNABLES'), os.environ.get('LUMIERE_HUGEPAGES_REEXEC'))\n")
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "LUMIERE_HUGEPAGES",
                                                           "LUMIERE_HUGEPAGES_REEXEC")}
    run = subprocess.run([sys.executable, "-u", str(script), "--flag=a b", "x"], env=env, capture_output=True,
                         text=True, timeout=60, check=True)
    lines = run.stdout.splitlines()
    applies = hm.hugepage_environment(env, sys.platform, hm.glibc_version(), hm.transparent_hugepages())
    if applies:  # this machine can use it: the script started twice, the second time with the tunable
        assert lines == ["start", "start", "['--flag=a b', 'x'] glibc.malloc.hugetlb=1 1"]
    else:
        assert lines == ["start", "['--flag=a b', 'x'] None None"]
    off = subprocess.run([sys.executable, str(script), "y"], env={**env, "LUMIERE_HUGEPAGES": "0"},
                         capture_output=True, text=True, timeout=60, check=True)
    assert off.stdout.splitlines() == ["start", "['y'] None None"]
