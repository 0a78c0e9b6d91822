"""One trainer per workdir: `<workdir>/train.lock` names the process that trains there.

    with run_lock.RunLock(workdir):   # RunLockedError (one line: host, pid, since when) if a live trainer holds it
        train(...)

The lock file is JSON: host, pid, the process's start time (from /proc/<pid>/stat), since when it holds the
lock, and a heartbeat that a daemon thread refreshes every `heartbeat_every` seconds. A lock whose holder is
gone does not block the next run: on the same host the holder is probed (pid not alive, or alive but started at
another time, i.e. the pid was reused: stale); on another host, which cannot be probed, a heartbeat older than
STALE_HEARTBEATS intervals is stale (hosts' clocks are assumed to agree to well within that).

Creating the lock is atomic on a local or network filesystem (O_EXCL). In a bucket (gs://) it is best effort:
create-if-absent, then read back to see whose lock stands; two trainers started within the same second may
both believe they won. Sampling and evaluation never take the lock: they read only complete checkpoints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

from etils import epath

from lumiere_jax import paths

log = logging.getLogger("lumiere_jax")

LOCK_NAME = "train.lock"
HEARTBEAT_EVERY = 30.0  # seconds between heartbeats
STALE_HEARTBEATS = 4  # a holder on another host whose heartbeat is older than this many intervals is gone
TORN_GRACE = 5.0  # seconds an unreadable lock file may be one that is being written right now


class RunLockedError(ValueError):
    """Another live trainer holds the workdir; the message names it (a ValueError: the command line's one line)."""


@dataclasses.dataclass(frozen=True)
class Holder:
    """What a lock file says about its holder."""

    host: str
    pid: int
    start_time: str | None  # field 22 of /proc/<pid>/stat: tells a reused pid from the holder
    since: float  # unix time the lock was taken
    heartbeat: float  # unix time of the last heartbeat
    heartbeat_every: float
    token: str  # tells this lock from a later one in the same file

    def describe(self, now: float | None = None) -> str:
        now = time.time() if now is None else now
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        return (f"host {self.host}, pid {self.pid}, since {since} (heartbeat {max(0.0, now - self.heartbeat):.0f} s "
                f"ago)")


def process_start_time(pid: int) -> str | None:
    """The start time of process pid in clock ticks since boot (/proc/<pid>/stat field 22); None where unknown."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": comm may hold spaces and parentheses
    return fields[19] if len(fields) > 19 else None  # field 22 overall; the state (field 3) is fields[0]


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host (possibly another user's)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_stale(holder: Holder, now: float | None = None) -> bool:
    """Whether the holder is gone: probed on this host, judged by its heartbeat on another."""
    if holder.host == socket.gethostname():
        if not pid_alive(holder.pid):
            return True
        started = process_start_time(holder.pid)
        return holder.start_time is not None and started is not None and started != holder.start_time
    now = time.time() if now is None else now
    return now - holder.heartbeat > STALE_HEARTBEATS * holder.heartbeat_every


def read_holder(path: str | os.PathLike) -> Holder | None:
    """The holder a lock file names; None if the file is absent, empty or not a lock file."""
    try:
        d = json.loads(epath.Path(path).read_text())
        return Holder(host=str(d["host"]), pid=int(d["pid"]), start_time=d.get("start_time"),
                      since=float(d["since"]), heartbeat=float(d["heartbeat"]),
                      heartbeat_every=float(d["heartbeat_every"]), token=str(d["token"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


class RunLock:
    """Holds `<workdir>/train.lock` from `acquire` (or `with`) to `release`; see the module docstring."""

    def __init__(self, workdir: str | os.PathLike, *, heartbeat_every: float = HEARTBEAT_EVERY):
        self.path = paths.resolve(workdir) / LOCK_NAME
        self.heartbeat_every = heartbeat_every
        self._token = uuid.uuid4().hex
        self._since = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._held = False

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def _content(self) -> str:
        pid = os.getpid()
        return json.dumps({"host": socket.gethostname(), "pid": pid, "start_time": process_start_time(pid),
                           "since": self._since, "heartbeat": time.time(), "heartbeat_every": self.heartbeat_every,
                           "token": self._token})

    def acquire(self) -> None:
        """Takes the lock, replacing a stale one; raises RunLockedError naming a live holder."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._since = time.time()
        for _ in range(5):  # each round either takes the lock, refuses, or clears a stale lock and retries
            if self._create():
                self._held = True
                self._stop.clear()
                self._thread = threading.Thread(target=self._beat, name="lumiere-run-lock", daemon=True)
                self._thread.start()
                return
            holder = self._wait_readable()
            if holder is not None and not is_stale(holder):
                raise RunLockedError(
                    f"Another trainer is training in {self.path.parent}: {holder.describe()}. Wait for it to "
                    f"finish or stop it (sampling and eval may read this workdir meanwhile); if no trainer runs "
                    f"there, delete {self.path}.")
            what = f"of {holder.describe()}" if holder else "(unreadable)"
            log.warning("Replacing the stale lock %s %s: its trainer is gone.", self.path, what)
            self._remove_stale(holder)
        raise RunLockedError(f"Could not take {self.path}: other trainers keep replacing it. Start one trainer "
                             f"per workdir.")

    def _create(self) -> bool:
        """Creates the lock file if absent (O_EXCL locally; best effort in a bucket); True if it is ours."""
        if paths.is_remote(self.path):
            if self.path.exists():
                return False
            self.path.write_text(self._content())
            time.sleep(1.0)  # let a racing writer's object land, then see whose stands
            holder = read_holder(self.path)
            return holder is not None and holder.token == self._token
        try:
            fd = os.open(os.fspath(self.path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        try:
            with os.fdopen(fd, "w") as f:
                f.write(self._content())
        except OSError as e:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            if paths.is_disk_full(e):
                raise paths.disk_full_error(self.path) from e
            raise
        return True

    def _wait_readable(self) -> Holder | None:
        """The holder, waiting out a lock file that is being written right now; None if absent or unreadable
        (a creator killed between creating and writing it)."""
        deadline = time.time() + TORN_GRACE
        while True:
            holder = read_holder(self.path)
            if holder is not None or not self.path.exists():
                return holder
            try:
                age = time.time() - self.path.stat().mtime
            except OSError:
                age = 0.0
            if age > TORN_GRACE or time.time() > deadline:
                return None
            time.sleep(0.1)

    def _remove_stale(self, holder: Holder | None) -> None:
        """Removes the lock file if it still is the stale one read (a racing trainer may have replaced it)."""
        if paths.is_remote(self.path):
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            return
        claimed = f"{self.path}.stale-{self._token}"
        try:
            os.rename(os.fspath(self.path), claimed)  # atomic: of racing removers, one moves the file
        except FileNotFoundError:
            return
        moved = read_holder(claimed)
        if (moved and moved.token) != (holder and holder.token):
            with contextlib.suppress(FileExistsError):
                os.link(claimed, os.fspath(self.path))  # a fresh lock taken meanwhile: put it back
        os.unlink(claimed)

    def _beat(self) -> None:
        """Refreshes the heartbeat until released; a failed refresh is logged once and retried."""
        warned = False
        while not self._stop.wait(self.heartbeat_every):
            try:
                holder = read_holder(self.path)
                if holder is None or holder.token != self._token:
                    log.error("%s is no longer this trainer's lock (%s): another trainer may be writing this "
                              "workdir.", self.path, holder.describe() if holder else "removed")
                    return
                paths.write_atomic(self.path, self._content())
                warned = False
            except Exception as e:  # noqa: BLE001  (a full disk, a network blip): keep training, retry
                if not warned:
                    log.warning("Could not refresh the heartbeat of %s: %s", self.path, e)
                    warned = True

    def release(self) -> None:
        """Stops the heartbeat and removes the lock file if it is still ours."""
        if not self._held:
            return
        self._held = False
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        holder = read_holder(self.path)
        if holder is not None and holder.token == self._token:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
