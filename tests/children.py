"""Child processes for tests that send them signals: started with SIGINT's default disposition (a
suite started as a background job of a non-interactive shell inherits SIG_IGN, and a Python child that
inherits it ignores Ctrl-C for good), every wait bounded, and the child killed and reaped however the
test ends."""

from __future__ import annotations

import contextlib
import signal
import subprocess
from typing import Iterator


def _default_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # Python then installs its own KeyboardInterrupt handler
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextlib.contextmanager
def child(cmd: list[str], **kwargs) -> Iterator[subprocess.Popen]:
    """``subprocess.Popen(cmd, **kwargs)`` with default signal dispositions; on leaving, a child still
    running is killed, and it is always reaped (its pipes read) within a bounded time."""
    proc = subprocess.Popen(cmd, preexec_fn=_default_signals, **kwargs)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired, ValueError, OSError):
            proc.communicate(timeout=30)


def finish(proc: subprocess.Popen, timeout: float = 120) -> tuple:
    """``proc.communicate(timeout=timeout)``, killing the child first if it does not end in time (the
    test then fails with what it had printed, instead of hanging)."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=30)
        raise AssertionError(f"child did not end within {timeout} s (killed): stdout {out!r} stderr {err!r}") from None
