"""Feeding a pipe without copying: vmsplice(2) hands the pages of a buffer to the pipe.

`btrfs receive` reads its stream from a pipe. `write()` copies every byte into the pipe's pages
first (a pass over the data costing about as much as the reader's own copy); vmsplice puts
references to the buffer's pages in the pipe instead, and the reader copies from them. The price:
the buffer must not change until the reader has consumed it. A pipe holds at most its capacity
(F_GETPIPE_SZ) of unread data, always the newest, so a buffer is safe to let go once at least that
many bytes have been spliced after it; until then `PipeFeeder` keeps a reference to it. Python
bytes never change, and a referenced object's memory is not reused.

Where vmsplice is missing (not Linux) or refused, the feeder falls back to write() for good.
"""

from __future__ import annotations

import collections
import ctypes
import errno
import fcntl
import os
from typing import Any

F_GETPIPE_SZ = 1032


class _PyBuffer(ctypes.Structure):
    """Py_buffer (Include/pybuffer.h), to learn where a read-only buffer's bytes are."""

    _fields_ = [
        ("buf", ctypes.c_void_p),
        ("obj", ctypes.c_void_p),
        ("len", ctypes.c_ssize_t),
        ("itemsize", ctypes.c_ssize_t),
        ("readonly", ctypes.c_int),
        ("ndim", ctypes.c_int),
        ("format", ctypes.c_char_p),
        ("shape", ctypes.c_void_p),
        ("strides", ctypes.c_void_p),
        ("suboffsets", ctypes.c_void_p),
        ("internal", ctypes.c_void_p),
    ]


class _IoVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


def _load() -> Any:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        vmsplice = libc.vmsplice
    except (OSError, AttributeError):
        return None
    vmsplice.argtypes = [ctypes.c_int, ctypes.POINTER(_IoVec), ctypes.c_size_t, ctypes.c_uint]
    vmsplice.restype = ctypes.c_ssize_t
    get = ctypes.pythonapi.PyObject_GetBuffer
    get.argtypes = [ctypes.py_object, ctypes.POINTER(_PyBuffer), ctypes.c_int]
    get.restype = ctypes.c_int
    release = ctypes.pythonapi.PyBuffer_Release
    release.argtypes = [ctypes.POINTER(_PyBuffer)]
    release.restype = None
    return vmsplice


_vmsplice = _load()


class _NoSplice(Exception):
    """vmsplice refused the buffer before taking any of it."""


class PipeFeeder:
    """Writes buffers to the pipe `fd` (blocking), by vmsplice where it can."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._splice = _vmsplice is not None
        self._kept: collections.deque[tuple[object, int]] = collections.deque()
        self._kept_bytes = 0  # bytes spliced from the buffers in _kept

    def write(self, data: bytes | memoryview) -> None:
        if not len(data):
            return
        if self._splice:
            try:
                self._vmsplice(data)
                return
            except _NoSplice:
                self._splice = False  # not a pipe, or no vmsplice here: copy from now on
        view = memoryview(data)
        while len(view):
            view = view[os.write(self.fd, view) :]

    def _vmsplice(self, data: bytes | memoryview) -> None:
        pybuf = _PyBuffer()
        if ctypes.pythonapi.PyObject_GetBuffer(data, ctypes.byref(pybuf), 0) != 0:
            raise _NoSplice
        try:
            base, size, done = pybuf.buf, pybuf.len, 0
            while done < size:
                iov = _IoVec(base + done, size - done)
                n = _vmsplice(self.fd, ctypes.byref(iov), 1, 0)
                if n < 0:
                    err = ctypes.get_errno()
                    if err == errno.EINTR:
                        continue
                    if not done and err in (errno.EINVAL, errno.ENOSYS, errno.EBADF):
                        raise _NoSplice  # nothing is in the pipe: write() may send all of it
                    if done:  # part of it is in the pipe: keep it, and report the failure
                        self._keep(data, done)
                    raise OSError(err, os.strerror(err))
                done += n
        finally:
            ctypes.pythonapi.PyBuffer_Release(ctypes.byref(pybuf))
        self._keep(data, size)

    def _keep(self, data: object, size: int) -> None:
        self._kept.append((data, size))
        self._kept_bytes += size
        capacity = fcntl.fcntl(self.fd, F_GETPIPE_SZ)
        # the oldest buffer can go once the ones after it hold at least a pipe's worth
        while self._kept and self._kept_bytes - self._kept[0][1] >= capacity:
            self._kept_bytes -= self._kept.popleft()[1]

    def release(self) -> None:
        """Let go of the buffers kept for the pipe: call once its reader has exited (or the pipe
        is closed at both ends), never before."""
        self._kept.clear()
        self._kept_bytes = 0
