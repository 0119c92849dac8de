"""btrfs replication: `btrfs send` (with the newest common parent) into `btrfs receive` on the target.

The target receives into a staging directory of its snapshot store
(`<root>/.reconciler/btrfs/snapshots/.receiving/recv-*/`), which `open()` empties, so an
interrupted receive never leaves anything that looks like a snapshot. A finished receive is
verified (exactly one subvolume `@`, read-only, carrying the received UUID the source announced).
The commit renames each `recv-*` directory to its place in the layout (`<set_id>/<volume>/`, the
subvolume inside it keeps its received UUID and serves as the parent of the next incremental
receive), syncs the filesystem (the received data and the renames become durable together), and
only then does the agent insert the catalog row: a crash before that leaves orphans that `open()`
deletes. The commit copies nothing and deletes nothing, and costs what `btrfs receive` followed by
`btrfs filesystem sync` costs.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import functools
import logging
import os
import re
import secrets
import select
import shutil
import socket
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import zstandard

from ..backends import btrfs_ioctl as ioc
from ..backends.btrfs import SNAPSHOT_LEAF, BtrfsBackend
from ..errors import (
    CorruptData,
    FailedPrecondition,
    InvalidArgument,
    ReconcilerError,
    StorageFull,
)
from ..pipefeed import PipeFeeder
from ..v1 import replication_pb2 as rpb
from .link import Link
from .progress import Meter, VolumeEstimate
from .readahead import ReadAhead
from .wire import SPARSE_MAX, data_message_from, encode_data, squeeze

log = logging.getLogger(__name__)

PIPE_SIZE = 1 << 20  # what /proc/sys/fs/pipe-max-size allows by default
SEND_BUFFER = 8 << 20  # what `btrfs send` may write ahead of the reader
MESSAGE_SIZE = 4 << 20
assert MESSAGE_SIZE <= SPARSE_MAX  # every message may go sparse
ZERO_BUFFER = bytes(256 << 10)  # what the target gives `btrfs receive` for a run of zeros, a piece at a time
STDERR_MAX = 64 << 10  # what an error message quotes of a btrfs process's stderr, at most
# seconds the first byte of a message waits for more, at most: `btrfs receive` gets the stream in
# bites of at most this much of it, and has at most that to work through after its end (with 10 ms
# the 8.4 MB incremental of bench_replication.py took ~10% longer; the full stream's 1 GB is not
# slower in 3 ms messages than in 4 MiB ones)
FLUSH_AFTER = 0.003
READ_TICK = 0.002  # seconds between two looks at `btrfs send`'s output while a message gathers
# The newest send stream version used. v2 carries file data in larger commands: through a local
# pipe, an 8.4 MB incremental took 92 ms instead of 112 ms, a 1 GB full stream 3.2 s instead of
# 3.5 s (medians of 5 and 3). It needs btrfs-progs 5.18 on both ends and Linux 5.18 to send;
# v3 is not final (debug kernels only).
MAX_STREAM = 2
PROGS_FOR_V2 = (5, 18)
SEND_STREAM_SYSFS = Path("/sys/fs/btrfs/features/send_stream_version")
F_SETPIPE_SZ = 1031
SO_SNDBUFFORCE = 32  # (linux/asm-generic/socket.h; the socket module does not name it)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
UUID_LEN = 16


class _SubvolInfo(ctypes.Structure):
    """struct btrfs_ioctl_get_subvol_info_args (linux/btrfs.h)."""

    _fields_ = [
        ("treeid", ctypes.c_uint64),
        ("name", ctypes.c_char * 256),
        ("parent_id", ctypes.c_uint64),
        ("dirid", ctypes.c_uint64),
        ("generation", ctypes.c_uint64),
        ("flags", ctypes.c_uint64),
        ("uuid", ctypes.c_ubyte * UUID_LEN),
        ("parent_uuid", ctypes.c_ubyte * UUID_LEN),
        ("received_uuid", ctypes.c_ubyte * UUID_LEN),
        ("ctransid", ctypes.c_uint64),
        ("otransid", ctypes.c_uint64),
        ("stransid", ctypes.c_uint64),
        ("rtransid", ctypes.c_uint64),
        ("times", ctypes.c_uint64 * 8),  # four struct btrfs_ioctl_timespec {u64 sec; u32 nsec} (padded)
        ("reserved", ctypes.c_uint64 * 8),
    ]


assert ctypes.sizeof(_SubvolInfo) == 504
IOC_GET_SUBVOL_INFO = (2 << 30) | (ctypes.sizeof(_SubvolInfo) << 16) | (0x94 << 8) | 60


@dataclass(frozen=True, slots=True)
class SubvolInfo:
    uuid: bytes
    received_uuid: bytes
    readonly: bool
    parent_uuid: bytes = bytes(UUID_LEN)  # what it was snapshotted (or received incrementally) from
    generation: int = 0  # the last transaction that changed its tree

    @property
    def identity(self) -> bytes:
        """What a receiving side knows this subvolume by: the received UUID when it was itself
        received (btrfs send puts that in the stream), otherwise its own UUID."""
        return self.received_uuid if any(self.received_uuid) else self.uuid


def subvol_info(path: Path) -> SubvolInfo:
    fd = os.open(path, _DIR_FLAGS)
    try:
        args = _SubvolInfo()
        fcntl.ioctl(fd, IOC_GET_SUBVOL_INFO, args)
        readonly = ioc.is_readonly(fd)  # (the root item's own flags use another bit)
    finally:
        os.close(fd)
    return SubvolInfo(
        uuid=bytes(args.uuid),
        received_uuid=bytes(args.received_uuid),
        readonly=readonly,
        parent_uuid=bytes(args.parent_uuid),
        generation=args.generation,
    )


@functools.cache
def btrfs_program() -> str:
    """The `btrfs` program, looked up on PATH once (a failed lookup is not kept: installing
    btrfs-progs fixes it without a restart). Starting a process by name walks PATH again every
    time, an execve per directory, and with cold caches each costs disk reads: 2.5 ms of the
    start of every send and receive with an eleven-entry PATH (measured)."""
    found = shutil.which("btrfs")
    if found is None:
        raise FailedPrecondition(
            "btrfs-progs is not installed on this node (no `btrfs` program on PATH "
            f"{os.environ.get('PATH', '')!r}); it sends and receives btrfs snapshots"
        )
    return os.path.abspath(found)


@functools.cache
def _progs_version() -> tuple[int, ...]:
    out = subprocess.run([btrfs_program(), "--version"], capture_output=True, text=True, timeout=30).stdout
    m = re.search(r"v(\d+)\.(\d+)", out)
    return (int(m[1]), int(m[2])) if m else (0,)


def receive_stream_version() -> int:
    """The newest btrfs send stream version this node's `btrfs receive` reads (1 when unsure)."""
    try:
        return MAX_STREAM if _progs_version() >= PROGS_FOR_V2 else 1
    except (ReconcilerError, OSError, subprocess.SubprocessError):
        return 1


def send_stream_version() -> int:
    """The newest this node can send: what its btrfs-progs and its kernel both support."""
    try:
        kernel = int(SEND_STREAM_SYSFS.read_text())
    except (OSError, ValueError):
        kernel = 1
    return max(1, min(kernel, receive_stream_version()))


def compressed_data(stream_version: int) -> bool:
    """Whether a stream of this version carries compressed extents as they are on the disk
    (`btrfs send --compressed-data`, stream v2's encoded writes) rather than decompressed: on a
    pool with compression, the stream (and the wire) is then as small as the data on the disk,
    neither side spends CPU decompressing it, and the target stores the extents compressed as
    they came. A target whose kernel cannot write them so has `btrfs receive` decompress them."""
    return stream_version >= 2


def _boost(pid: int) -> None:
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, pid, -5)


def start_btrfs(
    args: list[str], *, stdin: int | IO[bytes] | None, stdout: int | IO[bytes] | None, stderr: IO[bytes]
) -> subprocess.Popen[bytes]:
    """Start `btrfs ARGS` (by the path btrfs_program found; if the program has moved since,
    btrfs-progs reinstalled elsewhere, it is looked up again), at a higher priority than the
    agent's threads that feed it."""
    try:
        proc = subprocess.Popen([btrfs_program(), *args], stdin=stdin, stdout=stdout, stderr=stderr)
    except FileNotFoundError:
        btrfs_program.cache_clear()
        proc = subprocess.Popen([btrfs_program(), *args], stdin=stdin, stdout=stdout, stderr=stderr)
    _boost(proc.pid)
    return proc


def _bigger_pipe(fd: int) -> None:
    """A deeper pipe between us and `btrfs receive` smooths out who waits for whom."""
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_SIZE)


def _output_socket() -> tuple[socket.socket, socket.socket]:
    """Where `btrfs send` writes its stream: (our end, its end) of a socket pair, not a pipe.
    btrfs-progs 6.x shrinks a pipe on its stdout to 256 KiB (F_SETPIPE_SZ, once per command with
    stream v2), so a reader that looks every few milliseconds would stall it; a socket's buffer is
    ours to size (it ignores the call), and `btrfs send` splices into it as into a pipe."""
    ours, theirs = socket.socketpair()
    try:
        try:  # root (CAP_NET_ADMIN) may go past net.core.wmem_max
            theirs.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, SEND_BUFFER)
        except OSError:
            theirs.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
    except BaseException:
        ours.close()
        theirs.close()
        raise
    return ours, theirs


def _stderr_file() -> IO[bytes]:
    """Where a btrfs process writes its errors: an anonymous memory file, not one on /tmp (whose
    directory lookup costs a disk read when cold, on the way to starting the process)."""
    return os.fdopen(os.memfd_create("btrfs-stderr", os.MFD_CLOEXEC), "w+b")


def _stderr_text(fh: IO[bytes]) -> str:
    """What a btrfs process said, on one line; without `receive --chroot`'s "Chroot to" notice
    (it prints one even with -q), which would bury the error under a staging path."""
    fh.seek(0)
    lines = fh.read(STDERR_MAX).decode(errors="replace").splitlines()
    return "; ".join(x.strip() for x in lines if x.strip() and not x.startswith("Chroot to "))


def _error(pool: str, what: str, stderr: str) -> ReconcilerError:
    msg = f"pool {pool}: {what}: {stderr or 'failed'}"
    low = stderr.lower()
    if "no space left" in low or "quota exceeded" in low:
        return StorageFull(msg)
    if "cannot find parent" in low or "could not find parent" in low:
        return FailedPrecondition(msg)
    if any(m in low for m in ("crc32 mismatch", "unexpected header", "short read", "invalid command")):
        return CorruptData(msg)  # the stream is damaged: refused as such, and sent again
    return ReconcilerError(msg)


# --- source side ----------------------------------------------------------------------------------
@dataclass
class SendProcess:
    """A running `btrfs send` of (set_id, volume) against parent_set_id ('' for a full stream)."""

    set_id: str
    volume: str
    parent_set_id: str
    proc: subprocess.Popen[bytes]
    out: socket.socket  # our end of its stdout
    err: IO[bytes]
    parent_identity: bytes = b""  # looked up while the send starts: the parent check needs it
    stream_version: int = 1
    read_ahead: ReadAhead | None = None  # asking for the data the stream will carry (see readahead)

    def stop(self) -> None:
        """Kill it (if still running) and release what it holds."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.stop_reading_ahead()
        self.out.close()
        self.err.close()

    def stop_reading_ahead(self) -> None:
        if self.read_ahead is not None:
            self.read_ahead.stop()


def start_send(
    backend: BtrfsBackend, *, set_id: str, volume: str, parent_set_id: str, stream_version: int = 1
) -> SendProcess:
    """Start `btrfs send` (its output waits in its socket until read). The sender starts the first
    volume's send while it is still agreeing on the parent with the target, on the parent it
    expects; `btrfs send -p` spends its first moments walking both trees, which then overlaps
    the round trip instead of following it. The data the stream will carry is read ahead of it
    (readahead.ReadAhead), from the moment it starts."""
    args = ["send", "-q"]
    if stream_version > 1:
        args += ["--proto", str(stream_version)]
    if compressed_data(stream_version):
        args.append("--compressed-data")
    if parent_set_id:
        args += ["-p", str(backend.snapshot_path(parent_set_id, volume))]
    args.append(str(backend.snapshot_path(set_id, volume)))
    err = _stderr_file()
    try:
        out, theirs = _output_socket()
        try:
            proc = start_btrfs(args, stdin=subprocess.DEVNULL, stdout=theirs.fileno(), stderr=err)
        except BaseException:
            out.close()
            raise
        finally:
            theirs.close()  # the child has its copy
    except BaseException:
        err.close()
        raise
    sending = SendProcess(set_id, volume, parent_set_id, proc, out, err, stream_version=stream_version)
    try:
        since: int | None = 0
        if parent_set_id:
            try:
                parent = subvol_info(backend.snapshot_path(parent_set_id, volume))
            except OSError:  # `btrfs send` will say what is wrong with it
                since = None
            else:
                sending.parent_identity, since = parent.identity, parent.generation
        if since is not None:
            sending.read_ahead = ReadAhead(
                backend.snapshot_path(set_id, volume), since, compressed_data=compressed_data(stream_version)
            ).start()
    except BaseException:
        sending.stop()
        raise
    return sending


def send_volume(
    backend: BtrfsBackend,
    link: Link,
    meter: Meter,
    *,
    set_id: str,
    volume: str,
    parent_set_id: str,
    compression: bool,
    logical_bytes: int,
    stream_version: int = 1,
    started: SendProcess | None = None,
    estimate: StreamEstimate | None = None,
) -> tuple[int, int]:
    """Stream `btrfs send` of one snapshot; returns (wire bytes, stream bytes). `started`: a send
    begun ahead (start_send), used if it is of this volume against this parent in this stream
    version (the one both ends read: see send_stream_version), else stopped.
    Returns after volume_end without waiting for the target's volume_done: the caller reads those
    before the commit's answer (one round trip less per volume). `estimate`: what the stream is
    expected to bring, for the ETA (see StreamEstimate)."""
    if started is not None and (
        started.set_id,
        started.volume,
        started.parent_set_id,
        started.stream_version,
    ) != (set_id, volume, parent_set_id, stream_version):
        started.stop()
        started = None
    wire0 = meter.stats.wire_bytes
    try:
        info = subvol_info(backend.snapshot_path(set_id, volume))
        meter.update(phase="send", volume=volume, parent_set_id=parent_set_id)
        link.send(
            rpb.ReceiveRequest(
                volume=rpb.VolumeBegin(
                    volume=volume,
                    parent_set_id=parent_set_id,
                    source_uuid=info.identity,
                    compressed=compression,
                    logical_bytes=logical_bytes,
                )
            )
        )
        sending = started or start_send(
            backend, set_id=set_id, volume=volume, parent_set_id=parent_set_id, stream_version=stream_version
        )
    except BaseException:
        if started is not None:
            started.stop()
        raise
    proc, err = sending.proc, sending.err
    with err:
        try:
            stream_bytes = forward_stream(
                sending.out,
                link,
                meter,
                compression=compression,
                estimate=estimate,
                read_ahead=sending.read_ahead,
            )
            rc = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            sending.stop_reading_ahead()
            sending.out.close()
        if rc != 0:
            raise _error(backend.pool, f"btrfs send of {set_id}/{volume}", _stderr_text(err))
    link.send(rpb.ReceiveRequest(volume_end=rpb.VolumeEnd()))
    meter.update(phase="commit")
    return meter.stats.wire_bytes - wire0, stream_bytes


def _queued(sock: socket.socket) -> int:
    """Bytes waiting to be read from `sock` (SIOCINQ)."""
    return int.from_bytes(fcntl.ioctl(sock.fileno(), termios.FIONREAD, bytes(4)), sys.byteorder, signed=True)


def forward_stream(
    out: socket.socket,
    link: Link,
    meter: Meter,
    *,
    compression: bool,
    estimate: StreamEstimate | None = None,
    read_ahead: ReadAhead | None = None,
) -> int:
    """Send what `btrfs send` writes to `out` until it closes, as data messages; returns the
    stream's bytes.

    `btrfs send` writes in pieces of 64-144 KiB. Read as they come, that is some 10,000 wakeups
    and reads per GB; instead the stream gathers in the socket (SEND_BUFFER deep, so `btrfs send`
    does not wait for us), looked at every READ_TICK, and each message is read in one go, straight
    into the message (wire.data_message_from). A message leaves when MESSAGE_SIZE has gathered,
    when its first byte has waited FLUSH_AFTER, or when a tick brings nothing: `btrfs send`
    paused (walking the trees for an incremental stream, or done and exiting, which takes it
    milliseconds), and what it produced goes out, so the target's `btrfs receive` works while the
    rest is produced. The end of the stream ends a tick at once. The first message leaves at once.
    Uncompressed, a message that is an eighth or more runs of zeros leaves them out (wire.squeeze).
    Compressed, each message is a zstd frame of its own (with its content size): one-shot
    compression and decompression take about half the CPU of one zstd stream flushed block by
    block, whose decoder grows its output as it goes. `estimate` hears what went out, for the
    ETA (see StreamEstimate); `read_ahead` how far `btrfs send` has come (what it sent and what
    waits in the socket)."""
    estimate = estimate or StreamEstimate()
    cctx = zstandard.ZstdCompressor(level=1) if compression else None
    stream_bytes = 0
    first = 0.0  # when the oldest byte waiting in the socket came
    wait_for_more = 0.0
    arrives = select.poll()
    arrives.register(out, select.POLLIN | select.POLLRDHUP)
    ends = select.poll()  # woken by `btrfs send` closing its end, not by each piece it writes
    ends.register(out, select.POLLRDHUP)
    wire = 0  # the data messages' bytes

    def send(size: int) -> None:
        nonlocal stream_bytes, wire
        if cctx is None:
            frame = squeeze(data_message_from(out, size), size)
        else:
            frame = encode_data(cctx.compress(out.recv(size, socket.MSG_WAITALL)))
        link.send_raw(frame)
        stream_bytes += size
        wire += len(frame)
        meter.add(scanned=size, sent=size, checked=size)
        estimate.progress(meter, stream=stream_bytes, wire=wire)

    ended = False
    try:
        while not ended:
            if not first:
                arrives.poll()  # until there is something, or the end
                first = time.monotonic()
            queued = _queued(out)
            if read_ahead is not None:
                read_ahead.advance(stream_bytes + queued)
            if queued < MESSAGE_SIZE and time.monotonic() < first + wait_for_more:
                ended = bool(ends.poll(READ_TICK * 1000))
                more = _queued(out)
                if more > queued and not ended:
                    continue  # still coming: let it gather
                queued = more
            # full, waited long enough, paused, or ended: what is there goes out
            while queued:
                size = min(queued, MESSAGE_SIZE)
                send(size)
                queued -= size
            first = 0.0
            wait_for_more = FLUSH_AFTER
    finally:
        estimate.close(meter, wire=wire)
    return stream_bytes


# --- how much a stream will bring (for the ETA) -----------------------------------------------------
class StreamEstimate(VolumeEstimate):
    """What one volume's `btrfs send` stream is expected to bring, for the transfer's total and
    ETA: the stream's size is not known before it ends, but its file data is (file_data_bytes)
    and that is nearly all of it. The estimate comes from stream_content, on estimate_each's
    thread; while the stream runs, forward_stream turns what remains of it into wire bytes at the
    ratio seen so far (compression, zero runs). At the end the volume counts what it really sent."""

    def __init__(self) -> None:
        super().__init__()
        self.content: int | None = None  # the stream's expected bytes (None: not known yet)

    def known(self, meter: Meter, cost: int) -> None:
        """`cost`: the stream's bytes (stream_content)."""
        self.content = cost
        self.guess(meter, cost)

    def progress(self, meter: Meter, *, stream: int, wire: int) -> None:
        """`stream` bytes of the stream went out as `wire` bytes."""
        content = self.content
        if content is not None:
            remaining = max(0, content - stream)
            self.guess(meter, wire + (remaining * wire // stream if stream else remaining))

    def close(self, meter: Meter, *, wire: int) -> None:
        """The stream ended (or failed) after `wire` bytes: what it cost replaces the guess."""
        self.settle(meter, wire, if_guessed=True)


def stream_content(
    backend: BtrfsBackend,
    set_id: str,
    volume: str,
    parent_set_id: str,
    given_up: Callable[[], bool],
    *,
    stream_version: int = 1,
) -> int:
    """What the stream of (set_id, volume) against parent_set_id will bring (a CostFn for
    progress.estimate_each): the file data written after the parent (all of it for a full
    stream), from the metadata alone, about 1% of the stream's time (the tree walk for
    bench_replication's 960 MiB full stream takes 27-37 ms of CPU, for its 1% incremental
    1-2 ms)."""
    since = subvol_info(backend.snapshot_path(parent_set_id, volume)).generation if parent_set_id else 0
    fd = os.open(backend.snapshot_path(set_id, volume), _DIR_FLAGS)
    try:
        return ioc.file_data_bytes(
            fd, since=since, stop=given_up, compressed_data=compressed_data(stream_version)
        )
    finally:
        os.close(fd)


# --- target side ----------------------------------------------------------------------------------
@dataclass
class _ReceiveProcess:
    """A `btrfs receive` into its own staging directory, waiting for a stream on its stdin."""

    staging: Path
    proc: subprocess.Popen[bytes]
    err: IO[bytes]


@dataclass
class _Receiving(_ReceiveProcess):
    """The receive that a volume's stream goes to."""

    volume: str
    source_uuid: bytes
    dctx: zstandard.ZstdDecompressor | None
    feeder: PipeFeeder
    received: int = 0


@dataclass
class BtrfsSink:
    """The target's end for one source pool: staged receives, committed together.

    `expected`: how many volumes the stream will bring. While the sender still has to answer
    (after ready, after each volume but the last), the next volume's `btrfs receive` is started
    (`receive_ahead`), so that its start, which reads the program from disk when caches are cold,
    overlaps the round trip instead of holding up the stream; a process started that way that
    no volume takes is killed with its staging directory by close()."""

    backend: BtrfsBackend
    set_id: str
    expected: int = 1
    cur: _Receiving | None = None
    staged: list[tuple[str, Path]] = field(default_factory=list)
    ahead: _ReceiveProcess | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _start_receive(self) -> _ReceiveProcess:
        self.backend.receive_dir.mkdir(exist_ok=True)
        staging = self.backend.receive_dir / f"recv-{secrets.token_hex(8)}"
        staging.mkdir(mode=0o700)
        err = _stderr_file()
        try:
            # --chroot: a hostile stream cannot write outside the staging directory
            proc = start_btrfs(
                ["receive", "-q", "--chroot", str(staging)],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        except BaseException:
            err.close()
            self.backend.remove_volume_tree(staging)
            raise
        assert proc.stdin is not None
        _bigger_pipe(proc.stdin.fileno())
        return _ReceiveProcess(staging, proc, err)

    def receive_ahead(self) -> None:
        """Start the next volume's `btrfs receive` now if one more volume is expected (a failure
        here is left for begin_volume, which starts it again and reports why)."""
        if self.ahead is not None or len(self.staged) + (self.cur is not None) >= self.expected:
            return
        try:
            self.ahead = self._start_receive()
        except Exception:  # noqa: BLE001
            log.debug("could not start a receive ahead", exc_info=True)

    def begin_volume(self, msg: rpb.VolumeBegin) -> None:
        if self.cur is not None:
            raise InvalidArgument("a volume began before the previous one ended")
        if len(msg.source_uuid) != UUID_LEN:
            raise InvalidArgument("btrfs volume without the source's subvolume UUID")
        started, self.ahead = self.ahead, None
        if started is None:
            started = self._start_receive()
        dctx = zstandard.ZstdDecompressor() if msg.compressed else None
        assert started.proc.stdin is not None
        self.cur = _Receiving(
            staging=started.staging,
            proc=started.proc,
            err=started.err,
            volume=msg.volume,
            source_uuid=bytes(msg.source_uuid),
            dctx=dctx,
            feeder=PipeFeeder(started.proc.stdin.fileno()),
        )

    def data(self, block: bytes | memoryview) -> None:
        cur = self._current()
        if cur.dctx is not None:
            block = _decompress(cur.dctx, block, cur.volume)
        self._feed(cur, block)

    def sparse(self, data: memoryview, runs: Sequence[int]) -> None:
        """A block with its runs of zeros left out (wire.squeeze; decode checked its layout): the
        data and zeros go to `btrfs receive` in turn, the zeros spliced from ZERO_BUFFER."""
        cur = self._current()
        if cur.dctx is not None:
            raise InvalidArgument(f"btrfs stream of {cur.volume!r}: a sparse block in a compressed stream")
        zeros = memoryview(ZERO_BUFFER)
        pos = 0
        for i in range(0, len(runs), 2):
            literal, run = runs[i], runs[i + 1]
            self._feed(cur, data[pos : pos + literal])
            pos += literal
            while run:
                n = min(run, len(zeros))
                self._feed(cur, zeros[:n])
                run -= n

    def _feed(self, cur: _Receiving, block: bytes | memoryview) -> None:
        if not block:
            return
        assert cur.proc.stdin is not None
        try:
            cur.feeder.write(block)
        except (BrokenPipeError, OSError) as exc:
            cur.proc.wait()
            stderr = _stderr_text(cur.err)
            if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
                stderr = stderr or "No space left on device"
            raise _error(self.backend.pool, f"btrfs receive of {self.set_id}/{cur.volume}", stderr) from None
        cur.received += len(block)

    def end_volume(self) -> rpb.ReceiveResponse:
        cur = self._current()
        assert cur.proc.stdin is not None
        try:
            cur.proc.stdin.close()
        except BrokenPipeError:
            pass
        self.receive_ahead()  # the next volume's, while this one's receive finishes
        rc = cur.proc.wait()
        cur.feeder.release()
        stderr = _stderr_text(cur.err)
        if rc != 0:
            raise _error(self.backend.pool, f"btrfs receive of {self.set_id}/{cur.volume}", stderr)
        self._verify(cur)
        cur.err.close()
        self.staged.append((cur.volume, cur.staging))
        self.cur = None
        return rpb.ReceiveResponse(volume_done=rpb.VolumeReceived(volume=cur.volume, bytes=cur.received))

    def _verify(self, cur: _Receiving) -> None:
        where = f"pool {self.backend.pool}: received {self.set_id}/{cur.volume}"
        entries = sorted(os.listdir(cur.staging))
        if entries != [SNAPSHOT_LEAF]:
            raise CorruptData(
                f"{where}: the stream created {entries}, expected one subvolume {SNAPSHOT_LEAF!r}"
            )
        sub = cur.staging / SNAPSHOT_LEAF
        if os.lstat(sub).st_ino != ioc.FIRST_FREE_OBJECTID:
            raise CorruptData(f"{where}: {sub} is not a subvolume")
        info = subvol_info(sub)
        if not info.readonly:
            raise CorruptData(f"{where}: the received subvolume is not read-only (the stream did not finish)")
        if info.received_uuid != cur.source_uuid:
            raise CorruptData(
                f"{where}: received UUID {info.received_uuid.hex()} does not match the source's "
                f"{cur.source_uuid.hex()}"
            )

    def commit(self) -> list[str]:
        """Move every staged subvolume into the store layout, then make it durable."""
        if self.cur is not None:
            raise InvalidArgument(f"commit while volume {self.cur.volume!r} is incomplete")
        done: list[str] = []
        try:
            while self.staged:
                volume, staging = self.staged[0]
                self.backend.adopt_received(staging, set_id=self.set_id, volume=volume)
                self.staged.pop(0)
                done.append(volume)
            self.backend.sync()
        except BaseException:
            for volume in done:
                self.drop(volume)
            raise
        return done

    def drop(self, volume: str) -> None:
        try:
            self.backend.drop(set_id=self.set_id, volume=volume)
        except Exception:  # noqa: BLE001 - open() removes snapshots the catalog does not list
            log.exception("pool %s: could not drop received %s/%s", self.backend.pool, self.set_id, volume)

    def close(self) -> None:
        cur, self.cur = self.cur, None
        ahead, self.ahead = self.ahead, None
        for running in (cur, ahead):
            if running is None:
                continue
            running.proc.kill()
            running.proc.wait()
            if running.proc.stdin is not None:
                with contextlib.suppress(OSError):
                    running.proc.stdin.close()
            running.err.close()
            self._discard(running.staging)
        for _volume, staging in self.staged:
            self._discard(staging)
        self.staged = []

    def _discard(self, path: Path) -> None:
        try:
            self.backend.remove_volume_tree(path)
        except (OSError, ReconcilerError):
            log.exception("could not remove %s; it goes when the pool is opened again", path)

    def _current(self) -> _Receiving:
        if self.cur is None:
            raise InvalidArgument("data outside a volume")
        return self.cur


def _decompress(dctx: zstandard.ZstdDecompressor, frame: bytes | memoryview, volume: str) -> bytes:
    """One compressed data message: a zstd frame declaring its size, at most a message's worth
    (the declared size is what gets allocated, so it is checked first), and nothing after it."""
    try:
        size = zstandard.frame_content_size(frame)
    except zstandard.ZstdError as exc:
        raise CorruptData(f"btrfs stream of {volume!r}: not a zstd frame: {exc}") from None
    if not 0 <= size <= MESSAGE_SIZE:
        what = "does not declare its size" if size < 0 else f"declares {size} bytes, over {MESSAGE_SIZE}"
        raise CorruptData(f"btrfs stream of {volume!r}: a compressed message {what}")
    try:
        return dctx.decompress(frame, allow_extra_data=False)
    except zstandard.ZstdError as exc:
        raise CorruptData(f"btrfs stream of {volume!r}: cannot decompress: {exc}") from None


def identity_of(backend: BtrfsBackend, set_id: str, volume: str) -> bytes:
    try:
        return subvol_info(backend.snapshot_path(set_id, volume)).identity
    except OSError:
        return b""
