"""The docs as a guide: rendered result tables are current, the README stays short, no page speaks of machine
paths or of how the code was made, every GIF in docs/ is shown, and every relative link resolves. Fast; no jax."""

from __future__ import annotations

import glob
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README_MAX_LINES = 220

FENCE = re.compile(r"^```.*?^```", re.S | re.M)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.M)
# (what, pattern): absolute machine paths, and words about how the code was developed.
FORBIDDEN = [
    ("an absolute machine path", re.compile(r"/(?:tmp|root|home|work)/")),
    ("a file outside the repository (cite the paper)", re.compile(r"\bSPEC\b")),
    ("development history", re.compile(r"\bsessions?\b", re.I)),
    ("development history", re.compile(r"\bround \d", re.I)),
    ("development history", re.compile(r"\b(?:no|not) (?:GPU|machine|device)s? (?:was|were|has been|have been) lent\b",
                                       re.I)),
]


def markdown_files(root: str) -> list[str]:
    """README.md and every .md under docs/, benchmarks/ and launch/."""
    found = [os.path.join(root, "README.md")]
    for folder in ("docs", "benchmarks", "launch"):
        found += glob.glob(os.path.join(root, folder, "**", "*.md"), recursive=True)
    return sorted(p for p in found if os.path.isfile(p))


def guide_files(root: str) -> list[str]:
    return [os.path.join(root, "README.md")] + sorted(glob.glob(os.path.join(root, "docs", "*.md")))


def read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def forbidden_words(root: str) -> list[str]:
    """'file:line: what (match)' for every forbidden match in the repository's Markdown."""
    out = []
    for path in markdown_files(root):
        for number, line in enumerate(read(path).splitlines(), 1):
            for what, pattern in FORBIDDEN:
                m = pattern.search(line)
                if m:
                    out.append(f"{os.path.relpath(path, root)}:{number}: {what} ({m.group(0)!r})")
    return out


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def broken_links(root: str) -> list[str]:
    """'file: target (why)' for relative links in README.md and docs/*.md whose file or heading is missing."""
    out = []
    for path in guide_files(root):
        text = FENCE.sub("", read(path))
        for target in LINK.findall(text):
            if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
                continue
            file_part, _, fragment = target.partition("#")
            dest = os.path.normpath(os.path.join(os.path.dirname(path), file_part)) if file_part else path
            where = f"{os.path.relpath(path, root)}: {target}"
            if not os.path.exists(dest):
                out.append(f"{where} (no such file)")
            elif fragment and dest.endswith(".md"):
                anchors = {anchor(h) for h in HEADING.findall(FENCE.sub("", read(dest)))}
                if fragment not in anchors:
                    out.append(f"{where} (no heading #{fragment})")
    return out


def gifs_not_shown(root: str) -> list[str]:
    """GIFs in docs/ that no image link of any Markdown file shows."""
    shown = set()
    for path in markdown_files(root):
        for target in IMAGE.findall(read(path)):
            shown.add(os.path.normpath(os.path.join(os.path.dirname(path), target.partition("#")[0])))
    return sorted(os.path.relpath(g, root) for g in glob.glob(os.path.join(root, "docs", "*.gif"))
                  if os.path.normpath(g) not in shown)


def test_rendered_results_are_current():
    run = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "render_results.py"), "--check"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr


def test_readme_is_short():
    lines = read(os.path.join(ROOT, "README.md")).count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; keep it under {README_MAX_LINES} (guides in docs/)"


def test_no_machine_paths_or_development_history():
    found = forbidden_words(ROOT)
    assert not found, "\n".join(found)


def test_every_gif_in_docs_is_shown():
    missing = gifs_not_shown(ROOT)
    assert not missing, "GIFs that no page shows with ![...](...): " + ", ".join(missing)


def test_relative_links_resolve():
    broken = broken_links(ROOT)
    assert not broken, "\n".join(broken)


@pytest.mark.parametrize("line, bad", [
    ("python x.py --workdir=/tmp/t2v", True),
    ("see /work/runs/tiny1", True),
    ("SPEC section 2", True),
    ("Session 19 added", True),
    ("two 2,000-step rounds", False),
    ("the second round 2 of tuning", True),
    ("no GPU was lent to this task", True),
    ("~/tensorflow_datasets and workdirs/t2v_small", False),
    ("spectral norm, specific", False),
])
def test_forbidden_patterns(line, bad):
    assert any(p.search(line) for _, p in FORBIDDEN) == bad
