"""Scratch folders for a run's epoch checkpoints (``/tmp/logmilp-ckpt-*``), removed on every exit path.

An exception or Ctrl-C removes the folder on the way out. A process that is killed outright (SIGKILL,
a Ray worker torn down after its driver was interrupted, a crashed worker group) cannot, so each folder
holds an advisory lock for its owner's lifetime: the kernel drops the lock when the owner dies, and the
next :func:`scratch_dir` with the same prefix on that machine removes the folders nobody holds.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from typing import Iterator

LOCK_FILE = ".owner.lock"


@contextlib.contextmanager
def scratch_dir(prefix: str = "logmilp-ckpt-") -> Iterator[str]:
    """A fresh folder under ``tempfile.gettempdir()``, locked while in use and removed on exit; first
    removes the folders with this prefix that killed processes left behind."""
    sweep(prefix)
    path = tempfile.mkdtemp(prefix=prefix)
    # The lock file gets its name only once it is locked, so a sweep never finds it free while we live.
    fd = os.open(os.path.join(path, LOCK_FILE + ".new"), os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(os.path.join(path, LOCK_FILE + ".new"), os.path.join(path, LOCK_FILE))
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        os.close(fd)


def sweep(prefix: str) -> list[str]:
    """Remove the scratch folders with ``prefix`` whose owner is gone (their lock is free); returns them.
    Folders without a lock file are left alone: they are not ours to judge."""
    removed = []
    root = tempfile.gettempdir()
    for entry in os.scandir(root):
        if not entry.name.startswith(prefix) or not entry.is_dir(follow_symlinks=False):
            continue
        try:
            fd = os.open(os.path.join(entry.path, LOCK_FILE), os.O_RDWR)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue                                    # its owner is alive
        finally:
            os.close(fd)
        shutil.rmtree(entry.path, ignore_errors=True)
        removed.append(entry.path)
    return removed
