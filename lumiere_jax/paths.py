"""Paths of runs and data: local folders or object-store URLs (gs://...), all through etils.epath.

    root = paths.resolve("~/runs/t2v")            # epath.Path: user expanded, absolute; "gs://b/runs/t2v" as is
    paths.write_atomic(root / "config.json", text)  # readers never see half a file
    paths.append_line(root / "metrics.jsonl", row)

On a TPU VM a run's workdir and its data (data.data_dir, data.videos, data.images) may live in a bucket; orbax
and tfds take the same paths. Object stores have no rename and no append: an object is published whole when its
write completes, so `write_atomic` writes it directly and `append_line` rewrites the (small) object.

A write that runs out of space (ENOSPC, or EDQUOT: over quota) raises `DiskFullError`, one line naming the file,
its folder and the space it needs, and leaves the old content (or nothing) in place.
"""

from __future__ import annotations

import errno
import os
import posixpath
import shutil
import tempfile

from etils import epath

NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# How a full disk reads in errors that lost their errno: tensorstore (orbax) raises ValueError("... No space left
# on device [os_error_code='28']").
_NO_SPACE_TEXTS = tuple(os.strerror(code) for code in NO_SPACE_ERRNOS) + tuple(
    f"os_error_code='{code}'" for code in NO_SPACE_ERRNOS)
_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once: write_atomic's files get the usual 0o666 & ~umask, not mkstemp's 0o600


class DiskFullError(ValueError):
    """A write ran out of disk space or quota; the message is one line naming where and how much is needed.

    A ValueError so that the command line reports it as `error: ...` without a traceback."""


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


def is_disk_full(error: BaseException) -> bool:
    """Whether error, or an error it was raised from, is ENOSPC or EDQUOT (also as orbax/tensorstore word it)."""
    seen: set[int] = set()
    pending = [error]
    while pending:
        e = pending.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in NO_SPACE_ERRNOS:
            return True
        if any(text in str(e) for text in _NO_SPACE_TEXTS):
            return True
        pending += [e.__cause__, e.__context__, *getattr(e, "exceptions", ())]  # ExceptionGroup members too
    return False


def free_bytes(path: str | os.PathLike) -> int | None:
    """Free bytes on the local filesystem holding path (or its nearest existing parent); None for a URL."""
    path = os.fspath(path)
    if is_remote(path):
        return None
    path = os.path.abspath(path)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def disk_full_error(path: str | os.PathLike, needed: int | None = None) -> DiskFullError:
    """The one-line DiskFullError for a file write to path that ran out of space; needed: its size, if known."""
    path = os.fspath(path)
    folder = posixpath.dirname(path) if is_remote(path) else os.path.dirname(os.path.abspath(path))
    free = free_bytes(folder)
    sizes = ", ".join(part for part in (f"it needs {human_bytes(needed)}" if needed is not None else "",
                                        f"{human_bytes(free)} free there" if free is not None else "") if part)
    return DiskFullError(f"Disk full writing {path} ({sizes or 'no space left'}): nothing was half-written (the "
                         f"file is as it was). Free space in {folder}, or write elsewhere, and re-run.")


def write_atomic(path: epath.Path, data: str | bytes) -> None:
    """Writes the whole file so that a reader (or a crash) sees the old content or the new, never a mix.

    A full disk raises DiskFullError (one line: the file, its size, the free space) and leaves the old file.
    """
    path = epath.Path(path)
    mode = "wb" if isinstance(data, bytes) else "w"
    try:
        if is_remote(path):  # an object appears only once its upload completes
            with path.open(mode) as f:
                f.write(data)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.fspath(path.parent), prefix=f".{path.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, 0o666 & ~_UMASK)
            with os.fdopen(fd, mode) as f:
                f.write(data)
            os.replace(tmp, os.fspath(path))
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    except OSError as e:
        if is_disk_full(e):
            raise disk_full_error(path, len(data.encode() if isinstance(data, str) else data)) from e
        raise


def append_line(path: epath.Path, line: str) -> None:
    """Appends one line (a newline is added): in place locally, by rewriting the object in a bucket.

    A full disk raises DiskFullError and cuts the file back to its old end: no torn last line.
    """
    path = epath.Path(path)
    if is_remote(path):
        old = path.read_text() if path.exists() else ""
        write_atomic(path, old + line + "\n")
        return
    data = (line + "\n").encode()
    fd = os.open(os.fspath(path), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        end = os.lseek(fd, 0, os.SEEK_END)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        except OSError as e:
            if not is_disk_full(e):
                raise
            os.ftruncate(fd, end)
            raise disk_full_error(path, len(data)) from e
    finally:
        os.close(fd)
