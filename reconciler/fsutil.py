"""Small filesystem primitives the agent relies on for crash safety.

`exchange` swaps two paths atomically (renameat2 RENAME_EXCHANGE): a restore over a live
volume is either the old or the new content at every instant, never a mix or a gap.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import subprocess
from pathlib import Path

from .errors import FailedPrecondition, ReconcilerError, StorageFull

_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_renameat2 = getattr(_libc, "renameat2", None)


def _rename2(src: Path, dst: Path, flags: int) -> None:
    if _renameat2 is None:
        raise OSError(errno.ENOSYS, "renameat2 is not available in this C library")
    res = _renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags)
    if res != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{os.strerror(err)}: {src} -> {dst}")


def exchange(a: Path, b: Path) -> None:
    """Atomically swap `a` and `b` (both must exist, same filesystem)."""
    _rename2(a, b, _RENAME_EXCHANGE)
    fsync_dir(a.parent)
    if b.parent != a.parent:
        fsync_dir(b.parent)


def rename_noreplace(src: Path, dst: Path, *, fsync: bool = True) -> None:
    """Rename that fails with FailedPrecondition instead of replacing an existing `dst`; durable
    on return unless `fsync=False` (for a caller that syncs the whole filesystem next)."""
    try:
        _rename2(src, dst, _RENAME_NOREPLACE)
    except OSError as exc:
        if exc.errno == errno.EEXIST:
            raise FailedPrecondition(f"{dst} already exists; refusing to replace it") from None
        if exc.errno in (errno.EINVAL, errno.ENOSYS):
            # filesystems without RENAME_NOREPLACE support: check-then-rename (single writer per pool)
            if os.path.lexists(dst):
                raise FailedPrecondition(f"{dst} already exists; refusing to replace it") from None
            os.rename(src, dst)
        else:
            raise
    if fsync:
        fsync_dir(dst.parent)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, *, fsync: bool = True) -> None:
    """Write a file so that readers see either the old or the whole new content."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise_if_full(exc, path)
        raise
    if fsync:
        fsync_dir(path.parent)


def raise_if_full(exc: OSError, where: Path) -> None:
    """Turn ENOSPC/EDQUOT into a StorageFull error naming the place."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        raise StorageFull(f"no space left while writing {where}") from exc


def copy_tree(src: Path, dst: Path, *, reflink: str, what: str) -> None:
    """`cp -a --reflink=REFLINK -T src dst`: ownership, modes, times, xattrs and hard links kept;
    into an existing directory `dst`, src's entries are copied into it. `what` starts the error
    message (a full target is StorageFull)."""
    res = subprocess.run(
        ["cp", "-a", f"--reflink={reflink}", "-T", "--", str(src), str(dst)],
        capture_output=True,
        text=True,
        check=False,
    )
    if res.returncode != 0:
        msg = f"{what} failed: {res.stderr.strip()}"
        if "No space left" in res.stderr or "quota exceeded" in res.stderr.lower():
            raise StorageFull(msg)
        raise ReconcilerError(msg)
