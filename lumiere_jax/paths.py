"""Paths of runs and data: local folders or object-store URLs (gs://...), all through etils.epath.

    root = paths.resolve("~/runs/t2v")            # epath.Path: user expanded, absolute; "gs://b/runs/t2v" as is
    paths.write_atomic(root / "config.json", text)  # readers never see half a file
    paths.append_line(root / "metrics.jsonl", row)

On a TPU VM a run's workdir and its data (data.data_dir, data.videos, data.images) may live in a bucket; orbax
and tfds take the same paths. Object stores have no rename and no append: an object is published whole when its
write completes, so `write_atomic` writes it directly and `append_line` rewrites the (small) object.
"""

from __future__ import annotations

import os
import posixpath
import tempfile

from etils import epath


def is_remote(path: str | os.PathLike) -> bool:
    """True for a URL (gs://bucket/..., s3://...), False for a local path."""
    return "://" in os.fspath(path)


def normalize(path: str) -> str:
    """os.path.normpath that keeps a URL's scheme (normpath would fold gs://b into gs:/b)."""
    scheme, sep, rest = path.partition("://")
    return scheme + sep + posixpath.normpath(rest) if sep else os.path.normpath(path)


def resolve(path: str | os.PathLike) -> epath.Path:
    """A local path with ~ expanded and made absolute, or a URL unchanged, as an epath.Path."""
    path = os.fspath(path)
    if is_remote(path):
        return epath.Path(path)
    return epath.Path(os.path.abspath(os.path.expanduser(path)))


def write_atomic(path: epath.Path, data: str | bytes) -> None:
    """Writes the whole file so that a reader (or a crash) sees the old content or the new, never a mix."""
    path = epath.Path(path)
    mode = "wb" if isinstance(data, bytes) else "w"
    if is_remote(path):  # an object appears only once its upload completes
        with path.open(mode) as f:
            f.write(data)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.fspath(path.parent), prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            f.write(data)
        os.replace(tmp, os.fspath(path))
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def append_line(path: epath.Path, line: str) -> None:
    """Appends one line (a newline is added): in place locally, by rewriting the object in a bucket."""
    path = epath.Path(path)
    if is_remote(path):
        old = path.read_text() if path.exists() else ""
        write_atomic(path, old + line + "\n")
        return
    with path.open("a") as f:
        f.write(line + "\n")


def upload(local_file: str, path: epath.Path) -> None:
    """Copies a finished local file to path (a URL or a local path), replacing what was there."""
    epath.Path(local_file).copy(epath.Path(path), overwrite=True)
