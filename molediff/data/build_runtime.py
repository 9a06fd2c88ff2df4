"""How a ``molediff data`` build runs, beside what it builds: its worker pool (spawned processes, or
one inline "worker" that runs each task at once), Ctrl-C as a request to stop at the next safe point,
and the lock file per shard that refuses a second live builder of the same chunks on this machine."""

from __future__ import annotations

import os
import re
import signal
import threading
from concurrent.futures import Future
from pathlib import Path

from molediff.atomic import OutputLock, lock_owner
from molediff.errors import UserError

__all__ = ["StopRequest", "acquire_lock", "pool"]

_LOCK_RE = re.compile(r"^\.build(?:-shard-(\d+)-of-(\d+))?\.lock$")


class _InlineExecutor:
    """The one-worker "pool": runs each task at once in this process."""

    def submit(self, fn, *args) -> Future:
        fut: Future = Future()
        try:
            fut.set_result(fn(*args))
        except Exception as exc:  # noqa: BLE001 - delivered through the future like a pool would
            fut.set_exception(exc)
        return fut

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        pass


class StopRequest:
    """Ctrl-C during a build: the first one asks the loop to stop at its next safe point (chunks being
    built are dropped, finished ones stay); a second one interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._old = None

    @classmethod
    def install(cls) -> "StopRequest":
        stop = cls()
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            stop._old = signal.signal(signal.SIGINT, stop._handle)
        return stop

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def check(self) -> None:
        if self.requested:
            raise KeyboardInterrupt

    def uninstall(self) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
            self._old = None


def pool(workers: int):
    if workers <= 1:
        return _InlineExecutor()
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from molediff.chem.conformers import worker_init

    # spawn: workers start clean (no forked locks or threads) and import only molediff.chem
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=worker_init, initargs=(os.getpid(),))


def acquire_lock(out: Path, shard: tuple[int, int]) -> OutputLock:
    i, n = shard
    for other in out.glob(".build*.lock"):
        m = _LOCK_RE.match(other.name)
        if not m:
            continue
        oi, on = (int(m.group(1)), int(m.group(2))) if m.group(1) else (0, 1)
        pid = lock_owner(other)
        if pid and (on != n or n == 1 or oi == i):
            what = f"shard {oi}/{on}" if on > 1 else "all chunks"
            who = f"pid {pid}, " if pid > 0 else ""
            raise UserError(f"{out}: another 'molediff data' build ({who}{what}) is writing this folder; wait for it "
                            f"to finish or use another --out (if that process is gone, delete {other})")
    lock = OutputLock(out / ("build" if n == 1 else f"build-shard-{i}-of-{n}"))
    try:
        return lock.acquire()
    except UserError:
        pid = lock_owner(lock.lock)
        raise UserError(f"{out}: another 'molediff data' build (pid {pid if pid > 0 else '?'}) is writing this folder; wait for it "
                        f"to finish or use another --out (if that process is gone, delete {lock.lock})") from None
