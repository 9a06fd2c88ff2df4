"""Files that appear whole or not at all: the one atomic-write helper of molediff.

Everything is written to a hidden temporary file beside the target,
``.<name>.<pid>.<random>.tmp``, flushed to disk and renamed onto the target (atomic on POSIX), so a
crash, Ctrl-C or ``kill -9`` never leaves a half-written checkpoint, SDF or JSON. Temporary files of
processes that no longer exist (a ``kill -9``) are removed by the next writer of the same target;
:class:`OutputLock` keeps two live processes from writing the same target at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import time
from pathlib import Path
from typing import IO, Any, Callable

from molediff.errors import UserError


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete ``.<name>.<pid>.*.tmp`` files beside ``path`` whose process is gone; returns them."""
    path = Path(path)
    removed = []
    if not path.parent.is_dir():
        return removed
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        pid = tmp.name[len(path.name) + 2 :].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            with contextlib.suppress(OSError):
                tmp.unlink()
                removed.append(tmp)
    return removed


class AtomicFile:
    """A file written under a temporary name and moved onto ``path`` by :meth:`commit`.

    ``mode`` "w" (text, UTF-8, ``\\n`` line ends) or "wb". :meth:`abort` (or leaving a ``with`` block
    by an exception, or garbage collection before commit) discards it and leaves ``path`` untouched.
    """

    def __init__(self, path: str | os.PathLike, mode: str = "w") -> None:
        if mode not in ("w", "wb"):
            raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
        self.path = Path(path)
        if self.path.is_dir():
            raise IsADirectoryError(f"{self.path} is a directory")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.path)
        self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        text = dict(encoding="utf-8", newline="\n") if mode == "w" else {}
        self.file: IO[Any] | None = open(self.tmp, mode, **text)

    @property
    def closed(self) -> bool:
        return self.file is None

    def write(self, data: Any) -> None:
        if self.file is None:
            raise ValueError(f"writer for {self.path} is closed")
        self.file.write(data)

    def commit(self) -> None:
        """Flush to disk and move the finished file onto ``path``. If that fails or is interrupted (a full
        disk, Ctrl-C) the temporary file is removed and ``path`` is left as it was; the error propagates."""
        if self.file is None:
            return
        fh = self.file
        try:
            fh.flush()
            os.fsync(fh.fileno())
            fh.close()
            os.replace(self.tmp, self.path)
        except BaseException:
            with contextlib.suppress(Exception):
                fh.close()
            with contextlib.suppress(OSError):
                self.tmp.unlink()
            raise
        finally:
            self.file = None

    def abort(self) -> None:
        """Drop everything written; ``path`` is left as it was."""
        if self.file is None:
            return
        fh, self.file = self.file, None
        fh.close()
        with contextlib.suppress(FileNotFoundError):
            self.tmp.unlink()

    def __enter__(self) -> "AtomicFile":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()

    def __del__(self) -> None:  # an uncommitted file never appears
        with contextlib.suppress(Exception):
            self.abort()


def output_folder(path: str | os.PathLike, option: str) -> Path:
    """The folder that command-line ``option`` names for output, created (parents too) and checked
    writable now, before any long work; a :class:`UserError` saying why otherwise."""
    out = Path(path).expanduser()
    if out.exists() and not out.is_dir():
        raise UserError(f"{option} {out}: exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".molediff_write_test_{os.getpid()}_{time.time_ns()}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise UserError(f"cannot write to {option} {out}: {exc.strerror or exc}") from None
    return out


def atomic_write(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write ``data`` (text or bytes) to ``path`` atomically."""
    with AtomicFile(path, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)
    return Path(path)


def atomic_write_binary(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Write ``path`` atomically through ``write(binary_file)`` (torch.save, PIL, matplotlib)."""
    with AtomicFile(path, "wb") as f:
        write(f.file)
    return Path(path)


class OutputLock:
    """``.<name>.lock`` beside an output: refuses a second live process writing the same target.

    The lock is an exclusive ``flock`` on that file, held until :meth:`release` or the process's end
    (``kill -9`` included: the kernel drops it), so a lock left behind by a dead process is simply taken,
    and there is no window in which two processes both hold it. The file carries the holder's PID for
    messages only.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.lock = self.path.with_name(f".{self.path.name}.lock")
        self._fd: int | None = None

    def acquire(self) -> "OutputLock":
        if self._fd is not None:
            return self
        for _ in range(100):
            fd = os.open(self.lock, os.O_CREAT | os.O_RDWR, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                pid = lock_owner(self.lock)
                raise UserError(f"another process{f' (pid {pid})' if pid else ''} is writing {self.path}; wait for it "
                                f"or choose another output (if it is gone, delete {self.lock})") from None
            except BaseException:
                os.close(fd)
                raise
            # the file may have been unlinked by its previous holder's release after we opened it: the
            # lock is ours only if the path still names the file we locked
            try:
                same = os.fstat(fd).st_ino == os.stat(self.lock).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            self._fd = fd
            return self
        raise UserError(f"cannot lock {self.path} for writing ({self.lock})")

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Delete the lock file and drop the lock (only a lock this object holds)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(FileNotFoundError):
            self.lock.unlink()  # while still holding it: nobody else can own this file now
        os.close(fd)

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def lock_owner(lock: str | os.PathLike) -> int:
    """The PID of the live process holding the :class:`OutputLock` file ``lock`` (0 when nobody holds it,
    or its PID is not written yet); the one test of "is this lock held" (the PID is only for messages)."""
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return 0
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:  # held: say by whom
            try:
                return int(os.read(fd, 32).decode().strip() or -1)
            except ValueError:
                return -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return 0
    finally:
        os.close(fd)
