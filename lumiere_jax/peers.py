"""Multi-process runs whose processes watch each other: a lost process ends the others, with one line naming it.

Every train step is a collective over all processes, so when one dies (killed, crashed, its host gone) the
others would wait in the next collective. `initialize` starts `jax.distributed` and a `Watchdog`: each process
bumps a counter in the coordination service's key-value store every few seconds and reads everyone else's. A
process whose counter has not moved for `peer_timeout_s` (config.distributed.peer_timeout_s), or a coordinator
that stops answering, is lost: the watchdog prints

    error: lost process 1 of 2: no heartbeat for 60 s (killed, crashed, or its host unreachable) ...

and ends this process with exit code LOST_PEER_EXIT, from whatever collective its main thread waits in.

JAX's own runtime also watches: its coordination service ends every process from C++ (a multi-line fatal log and
SIGABRT) once a process has missed heartbeats, about half of `heartbeat_timeout_seconds` after it died (seen with
jax 0.10: 40 s set, the killed process declared unhealthy 21 s after the kill). That timeout is set to four times
peer_timeout_s, so the watchdog's line comes first. When the coordinator (process 0) itself dies, the runtime ends
the others as soon as their connection to it breaks, with its own message ("the leader task was preempted/died");
no Python code runs in between, so the watchdog cannot speak: the parent process that `python -m lumiere_jax.main
--distributed` runs under (lumiere_jax/supervise.py) turns that ending into the line "error: lost the coordinator
...", with the same exit code.

The key-value store is reached through `jax._src.distributed.global_state.client`, the client that
`jax.distributed.initialize` connects (as `jax.experimental.multihost_utils` and orbax do); JAX has no public
accessor for it.
"""

from __future__ import annotations

import atexit
import math
import os
import re
import sys
import threading
import time
from typing import Any, Callable, Protocol

import jax
from jax._src import distributed as jax_distributed  # the connected client: JAX has no public accessor for it

from lumiere_jax.supervise import LOST_PEER_EXIT  # exit code of a process ended because another one was lost

DEFAULT_PEER_TIMEOUT_S = 60.0  # base_config's config.distributed.peer_timeout_s
KEY_DIR = "lumiere_jax/alive/"  # key-value store folder: one key per process, its heartbeat counter or DONE
DONE = "done"  # a process that finished normally writes this: the others stop watching it

_active: "Watchdog | None" = None  # the watchdog `initialize` started


class KeyValueClient(Protocol):
    """The part of jax's DistributedRuntimeClient the watchdog uses."""

    def key_value_set(self, key: str, value: str, allow_overwrite: bool = False) -> None: ...

    def key_value_dir_get(self, key: str) -> list[tuple[str, str]]: ...


def runtime_heartbeat_timeout(peer_timeout_s: float) -> int:
    """jax.distributed's heartbeat_timeout_seconds: four times ours. The runtime ends the processes about half of its
    timeout after a process died, so twice ours raced the watchdog (and won on a loaded machine)."""
    return int(math.ceil(4 * peer_timeout_s))


def peer_timeout(config: Any) -> float:
    """config.distributed.peer_timeout_s, or the default for configs without the section (configs/feature_net.py)."""
    section = config.get("distributed") if hasattr(config, "get") else None
    return float(section.get("peer_timeout_s", DEFAULT_PEER_TIMEOUT_S)) if section else DEFAULT_PEER_TIMEOUT_S


def initialize(coordinator_address: str | None, num_processes: int | None, process_id: int | None,
               peer_timeout_s: float = DEFAULT_PEER_TIMEOUT_S) -> "Watchdog | None":
    """jax.distributed.initialize (None arguments: found on TPU VMs and under SLURM), then, with more than one
    process, a started Watchdog; returns it (None for a single process).

    A process that exits without `finished()` (an error) stops its heartbeats at exit, before jax's own exit
    handler waits for the others: peers blocked in a collective with it then end after the timeout."""
    global _active
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id,
                               heartbeat_timeout_seconds=runtime_heartbeat_timeout(peer_timeout_s))
    if jax.process_count() == 1:
        return None
    watchdog = Watchdog(jax_distributed.global_state.client, jax.process_index(), jax.process_count(), peer_timeout_s)
    watchdog.start()
    atexit.register(watchdog.stop, finished=False)  # runs before jax's handler, registered at its import
    _active = watchdog
    return watchdog


def finished() -> None:
    """This process ended normally: the others stop watching it. No-op without a watchdog."""
    if _active is not None:
        _active.stop(finished=True)


def wait_for_verdict() -> None:
    """After a failed collective: if a peer was lost, the watchdog ends the process with its line within the
    timeout; otherwise (or without a watchdog) this returns and the caller raises the error."""
    if _active is not None:
        _active.wait_for_verdict()


# How an XLA runtime status reads when jax raises it as a ValueError (a jit call whose collective failed: "UNKNOWN:
# Gloo AllGather failed: ... Connection closed by peer") rather than as a JaxRuntimeError.
_RUNTIME_STATUS = re.compile(r"^(UNKNOWN|UNAVAILABLE|INTERNAL|DEADLINE_EXCEEDED|ABORTED|CANCELLED|DATA_LOSS): ")


def runtime_failure(error: BaseException) -> bool:
    """Whether `error` is XLA's runtime failing (a collective whose peer may be gone), not an input the checks
    refused: the caller waits for the watchdog's verdict before reporting it."""
    return isinstance(error, jax.errors.JaxRuntimeError) or bool(_RUNTIME_STATUS.match(str(error)))


def _exit_lost(message: str) -> None:
    """Prints the one line and ends the process at once: its main thread may be blocked in a collective."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(LOST_PEER_EXIT)


class Watchdog:
    """Heartbeats through the coordination service; ends this process when another one is lost (module docstring).

    Two daemon threads: one writes this process's counter and reads the others' (calls that may block while the
    coordinator is unreachable), one compares the times of their last changes with the timeout (never blocks).
    """

    def __init__(self, client: KeyValueClient, process_index: int, process_count: int, timeout_s: float, *,
                 interval_s: float | None = None, on_lost: Callable[[str], None] = _exit_lost,
                 clock: Callable[[], float] = time.monotonic):
        self.client, self.index, self.count, self.timeout_s = client, process_index, process_count, timeout_s
        # Ten beats a timeout, within [0.2, 5] s: a few missed beats never count as a loss.
        self.interval_s = interval_s if interval_s is not None else min(max(timeout_s / 10, 0.2), 5.0)
        self.on_lost, self.clock = on_lost, clock
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._reported = threading.Event()
        now = clock()
        self._watched = {p: (None, now) for p in range(process_count) if p != process_index}  # value, when it moved
        self._answered = now  # when the coordination service last answered
        self._beats = 0
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self._beat()  # the first beat before returning: peers see this process from the start
        self._threads = [threading.Thread(target=self._run_beats, name="lumiere-heartbeat", daemon=True),
                         threading.Thread(target=self._run_checks, name="lumiere-watchdog", daemon=True)]
        for t in self._threads:
            t.start()

    def stop(self, finished: bool) -> None:
        """Stops watching; finished=True tells the others this process ended normally (they stop watching it).

        Without it (an error), its heartbeats just stop, so peers waiting for it in a collective end after the
        timeout instead of waiting forever. Only the first call acts."""
        if self._stop.is_set():
            return
        self._stop.set()
        for t in self._threads:
            t.join(timeout=self.interval_s + 1.0)
        if finished:
            try:
                self.client.key_value_set(KEY_DIR + str(self.index), DONE, allow_overwrite=True)
            except Exception:  # noqa: BLE001  (the coordinator may be gone already; nothing is waiting then)
                pass

    def wait_for_verdict(self) -> None:
        """Called when a collective failed: blocks until the watchdog has had the time to find a lost peer (then
        the process ends in its report) or has not; returns in the second case."""
        self._reported.wait(self.timeout_s + 3 * self.interval_s + 1.0)

    def lost(self) -> str | None:
        """The one-line report of a lost process (or an unreachable coordinator), or None while all are alive."""
        now = self.clock()
        with self._lock:
            answered, watched = self._answered, dict(self._watched)
        if now - answered > self.timeout_s:
            return (f"lost the coordinator (process 0 of {self.count}): no answer for {self.timeout_s:g} s (killed, "
                    f"crashed, or its host unreachable), so process {self.index} exits too. {_RESTART}")
        for p, (_, moved) in sorted(watched.items()):
            if answered - moved > self.timeout_s:  # judged on what the service last said, not on silence
                return (f"lost process {p} of {self.count}: no heartbeat for {self.timeout_s:g} s (killed, crashed, "
                        f"or its host unreachable), so process {self.index} exits too. {_RESTART}")
        return None

    def _beat(self) -> None:
        """Writes this process's next counter value and notes which of the others' values moved."""
        try:
            self._beats += 1
            self.client.key_value_set(KEY_DIR + str(self.index), str(self._beats), allow_overwrite=True)
            values = dict(self.client.key_value_dir_get(KEY_DIR))
        except Exception:  # noqa: BLE001  (an unreachable coordinator: counted by the time of its last answer)
            return
        now = self.clock()
        with self._lock:
            self._answered = now
            for p, (old, moved) in list(self._watched.items()):
                value = values.get(KEY_DIR + str(p))
                if value == DONE:
                    del self._watched[p]
                elif value is not None and value != old:
                    self._watched[p] = (value, now)

    def _run_beats(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._beat()

    def _run_checks(self) -> None:
        while not self._stop.wait(self.interval_s):
            report = self.lost()
            if report and not self._stop.is_set():
                self.on_lost(report)  # ends the process (the main thread may be in wait_for_verdict meanwhile)
                self._reported.set()  # reached only with an on_lost that returns (tests)
                return


_RESTART = ("Restart every process with the same command: training resumes from the newest checkpoint all of them "
            "finished (the wait is --config.distributed.peer_timeout_s).")
