"""One writer per run folder: a lock file created atomically, naming its holder.

Two `difflab train` processes writing one run folder overwrite each other's checkpoints
and interleave their metrics logs. `RunLock(run_dir)` creates `run_dir/.difflab.lock`
with O_CREAT | O_EXCL (atomic on local file systems and on NFSv3+), holding the holder's
PID, host and start time as JSON. A second process fails at once with a DataError that
names the holder. A lock left behind by a process that died (kill -9, power loss) on this
host is detected (its PID is not alive) and reclaimed with a warning. A lock from another
host is never reclaimed automatically: its PID means nothing here.

Multi-process training takes the lock in the main process only, for the whole job.
"""
from __future__ import annotations

import json
import os
import socket
import time
import warnings
from pathlib import Path
from typing import Any

from difflab.errors import DataError

LOCK_NAME = ".difflab.lock"


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID exists on this host (signal 0 checks without sending)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    except OSError:
        return False
    return True


class RunLock:
    """Context manager holding `run_dir/.difflab.lock` for as long as the block runs."""

    def __init__(self, run_dir: str | os.PathLike, purpose: str = "train"):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.purpose = purpose
        self.acquired = False

    # ---- acquiring -------------------------------------------------------------------------------
    def acquire(self) -> "RunLock":
        self.run_dir.mkdir(parents=True, exist_ok=True)
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                  "purpose": self.purpose}
        for _ in range(3):  # a reclaimed stale lock may be re-taken by a third process in between
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = read_lock(self.path)
                if holder is None:  # vanished between our open and our read, or being written: retry
                    if self.path.exists() and _age_seconds(self.path) > 10:
                        self._reclaim(holder, "an unreadable lock file")
                    else:
                        time.sleep(0.05)
                    continue
                if self._is_stale(holder):
                    self._reclaim(holder, f"process {holder.get('pid')} is no longer running")
                    continue
                raise DataError(
                    f"{self.run_dir} is in use by another difflab process (PID {holder.get('pid')} on host "
                    f"{holder.get('host')}, started {holder.get('started', 'at an unknown time')}); two processes "
                    f"must not write one run. Wait for it to finish, or if it is gone, delete {self.path}")
            try:
                os.write(fd, (json.dumps(record) + "\n").encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            self.acquired = True
            return self
        raise DataError(f"could not take the lock {self.path}: other processes keep taking it; try again")

    def _is_stale(self, holder: dict[str, Any]) -> bool:
        try:
            pid = int(holder.get("pid"))
        except (TypeError, ValueError):
            return True
        if holder.get("host") != socket.gethostname():
            return False  # another machine's PID cannot be checked from here
        if pid == os.getpid():
            return False  # our own process (e.g. a second lock in the same process): not stale
        return not pid_alive(pid)

    def _reclaim(self, holder: dict[str, Any] | None, why: str) -> None:
        warnings.warn(f"difflab: reclaiming the stale lock {self.path} ({why})", RuntimeWarning, stacklevel=3)
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    # ---- releasing -------------------------------------------------------------------------------
    def release(self) -> None:
        if not self.acquired:
            return
        self.acquired = False
        holder = read_lock(self.path)
        if holder is not None and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc_info) -> None:
        self.release()


def read_lock(path: str | os.PathLike) -> dict[str, Any] | None:
    """The lock file's record, or None when it is absent or not (yet) valid JSON."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _age_seconds(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0


def check_not_locked(run_dir: str | os.PathLike) -> None:
    """DataError if a live process holds the run folder's lock (checked before --overwrite deletes
    anything, or --resume reads anything). A stale lock is left for RunLock to reclaim."""
    lock = RunLock(run_dir)
    holder = read_lock(lock.path)
    if holder is None or lock._is_stale(holder):
        return
    if holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
        return  # this process holds it
    raise DataError(
        f"{lock.run_dir} is in use by another difflab process (PID {holder.get('pid')} on host "
        f"{holder.get('host')}, started {holder.get('started', 'at an unknown time')}); two processes must not "
        f"write one run. Wait for it to finish, or if it is gone, delete {lock.path}")
