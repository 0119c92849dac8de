"""btrfs replication between real agent processes over mTLS, on loop-device btrfs (root only).

`btrfs send` (with the newest common parent) streams into `btrfs receive` in the target's staging
area; the received subvolume is verified (read-only, received UUID) and committed read-only into the
store layout. An interrupted receive leaves nothing that looks like a snapshot.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from reconciler import serde
from reconciler.backends import btrfs_ioctl as ioc
from reconciler.backends.btrfs import BtrfsBackend
from reconciler.domain import SnapshotInfo
from reconciler.errors import StorageFull, Unavailable
from reconciler.replication import btrfs as btrfs_repl
from reconciler.replication.api import REPLICATION_PROTOCOL, ReplicateSpec
from reconciler.replication.btrfs import subvol_info
from reconciler.replication.progress import Meter, TransferStats
from reconciler.tlslab import LabPKI, create_lab_pki
from reconciler.v1 import replication_pb2 as rpb
from reconciler.v1 import replication_pb2_grpc as rpb_grpc
from tests.helpers import wait_for
from tests.replication_lab import CollectLink, Site, change_volume, creds, fill_volume, read_tree

pytestmark = [pytest.mark.root, pytest.mark.btrfs]


def _subvolume(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["btrfs", "subvolume", "create", str(path)], check=True, capture_output=True)


@pytest.fixture
def pki(tmp_path: Path) -> LabPKI:
    return create_lab_pki(tmp_path / "tls", nodes=["src", "dst"])


@pytest.fixture
def pair(btrfs_dir: Path, pki: LabPKI, tmp_path: Path) -> Iterator[tuple[Site, Site]]:
    src = Site("src", tmp_path / "src", btrfs_dir / "src", pki, backend="btrfs")
    dst = Site("dst", tmp_path / "dst", btrfs_dir / "dst", pki, backend="btrfs")
    for v in ("vm1", "vm2"):
        _subvolume(src.pool / v)
    fill_volume(src.pool / "vm1", seed=1, big_mb=16)
    fill_volume(src.pool / "vm2", seed=2, big_mb=2, small=5)
    dst.pool.mkdir(parents=True)
    src.start()
    dst.start()
    yield src, dst
    src.stop()
    dst.stop()


def _snapshot_dir(site: Site, set_id: str, volume: str) -> Path:
    return site.pool / ".reconciler" / "btrfs" / "snapshots" / set_id / volume / "@"


def _receiving(site: Site) -> list[str]:
    """What the target's staging area for receives (snapshots/.receiving) holds."""
    path = site.pool / ".reconciler" / "btrfs" / "snapshots" / ".receiving"
    return sorted(os.listdir(path)) if path.exists() else []


def test_full_then_incremental_with_the_newest_common_parent(pair: tuple[Site, Site], tmp_path: Path) -> None:
    src, dst = pair
    src.snapshot("b-1", ["vm1", "vm2"])
    full = src.replicate("b-1", dst)
    assert sorted(s.volume for s in full.snapshots) == ["vm1", "vm2"]
    assert [v.parent_set_id for v in full.volumes] == ["", ""]
    for v in ("vm1", "vm2"):
        got = _snapshot_dir(dst, "b-1", v)
        info = subvol_info(got)
        assert info.readonly and os.lstat(got).st_ino == ioc.FIRST_FREE_OBJECTID
        assert info.received_uuid == subvol_info(_snapshot_dir(src, "b-1", v)).uuid
    assert dst.verify() == []
    assert _receiving(dst) == []

    changed = change_volume(src.pool / "vm1", seed=3, fraction=0.01)
    src.snapshot("b-2", ["vm1", "vm2"])
    incr = src.replicate("b-2", dst)
    assert [v.parent_set_id for v in incr.volumes] == ["b-1", "b-1"]
    # btrfs sends the changed extents and a little metadata per changed range
    assert incr.totals.wire_bytes <= 1.05 * changed + 64 * 1024, (changed, incr.totals)
    assert incr.totals.wire_bytes < 0.05 * full.totals.wire_bytes
    assert dst.content("b-2", "vm1", tmp_path) == read_tree(src.pool / "vm1")
    assert dst.content("b-2", "vm2", tmp_path) == read_tree(src.pool / "vm2")
    # the received copy is itself a usable parent: a third set goes incremental again
    change_volume(src.pool / "vm1", seed=4, fraction=0.01)
    src.snapshot("b-3", ["vm1"])
    third = src.replicate("b-3", dst)
    assert [v.parent_set_id for v in third.volumes] == ["b-2"]
    assert dst.content("b-3", "vm1", tmp_path) == read_tree(src.pool / "vm1")


def _children(pid: int) -> list[str]:
    """The command names of a process's children."""
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                out.append(Path(f"/proc/{child}/comm").read_text().strip())
            except OSError:
                pass  # gone meanwhile
    return out


def test_a_wrong_guess_of_the_parent_is_stopped_and_the_common_one_used(
    pair: tuple[Site, Site], tmp_path: Path
) -> None:
    """The source starts the first `btrfs send` before the target has said what it holds, against
    the newest older set (c-2). The target holds only c-1: that send is stopped, the volume goes
    against c-1, and no send is left running."""
    src, dst = pair
    src.snapshot("c-1", ["vm1"])
    src.replicate("c-1", dst)
    change_volume(src.pool / "vm1", seed=5, fraction=0.01)
    src.snapshot("c-2", ["vm1"])  # never sent
    change_volume(src.pool / "vm1", seed=6, fraction=0.01)
    src.snapshot("c-3", ["vm1"])
    out = src.replicate("c-3", dst)
    assert [v.parent_set_id for v in out.volumes] == ["c-1"]
    # (both sites share one filesystem here, so a stream against c-2 would find the source's c-2
    # and be received too: the received subvolume's parent says which stream it was)
    got = subvol_info(_snapshot_dir(dst, "c-3", "vm1"))
    assert got.parent_uuid == subvol_info(_snapshot_dir(dst, "c-1", "vm1")).uuid
    assert dst.content("c-3", "vm1", tmp_path) == read_tree(src.pool / "vm1")
    assert src.proc is not None and src.proc.proc is not None
    pid = src.proc.proc.pid
    wait_for(lambda: "btrfs" not in _children(pid), timeout=10, what="no btrfs send left")


def test_two_streams_of_one_pool_arrive_together_and_stay_incremental(
    pair: tuple[Site, Site], tmp_path: Path
) -> None:
    src, dst = pair
    src.snapshot("g-1", ["vm1", "vm2"])
    full = src.replicate("g-1", dst, streams=2)
    assert full.streams == 2
    assert sorted(s.volume for s in dst.sets()["g-1"]) == ["vm1", "vm2"]
    change_volume(src.pool / "vm2", seed=5, fraction=0.01)
    src.snapshot("g-2", ["vm1", "vm2"])
    incr = src.replicate("g-2", dst, streams=2)
    assert sorted(v.parent_set_id for v in incr.volumes) == ["g-1", "g-1"]
    assert dst.content("g-2", "vm2", tmp_path) == read_tree(src.pool / "vm2")
    assert dst.verify() == []
    receiving = dst.pool / ".reconciler" / "btrfs" / "snapshots" / ".receiving"
    assert not receiving.exists() or not list(receiving.iterdir())


def test_an_interrupted_receive_leaves_nothing_that_looks_like_a_snapshot(pair: tuple[Site, Site]) -> None:
    src, dst = pair
    src.snapshot("cut-1", ["vm1"])
    killed: list[TransferStats] = []

    def kill_target(st: TransferStats) -> None:
        if not killed and st.wire_bytes > 2 << 20:
            killed.append(st)
            dst.kill()

    with pytest.raises(Unavailable):
        src.repl.replicate(
            ReplicateSpec(set_id="cut-1", target=dst.peer(), throttle_bps=8 << 20, compression=False),
            kill_target,
        )
    assert killed
    assert _receiving(dst)  # the dead receive's subvolume
    dst.restart()  # open() removes what the dead receive left in staging
    assert dst.sets() == {}
    assert _receiving(dst) == []
    assert not (dst.pool / ".reconciler" / "btrfs" / "snapshots" / "cut-1").exists()
    src.replicate("cut-1", dst)
    assert list(dst.sets()) == ["cut-1"] and dst.verify() == []


def _channel_as_src(dst: Site, pki: LabPKI) -> grpc.Channel:
    """A channel to the target's Receive with the source's (valid) certificate."""
    return grpc.secure_channel(
        dst.address, creds(pki, pki["nodes"]["src"]), options=[("grpc.ssl_target_name_override", "dst")]
    )


def _begin(snap: SnapshotInfo) -> rpb.ReceiveRequest:
    return rpb.ReceiveRequest(
        begin=rpb.ReceiveBegin(
            protocol=REPLICATION_PROTOCOL,
            set_id=snap.set_id,
            source_node="src",
            source_pool="main",
            backend="btrfs",
            members=[serde.snapshot_to_pb(snap)],
        )
    )


def _receive_processes(dst: Site) -> list[int]:
    """`btrfs receive` processes writing into the target's pool."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if len(argv) > 2 and argv[1] == b"receive" and any(str(dst.pool).encode() in a for a in argv):
            found.append(int(pid))
    return found


def test_a_sender_gone_after_ready_leaves_no_receive_behind(pair: tuple[Site, Site], pki: LabPKI) -> None:
    """The target starts the first volume's `btrfs receive` while its ready travels (the process
    start overlaps the round trip). A sender that goes away instead of sending the volume leaves
    neither that process nor its staging directory."""
    src, dst = pair
    (snap,) = src.snapshot("gone-1", ["vm2"])
    answered = threading.Event()

    def requests() -> Iterator[rpb.ReceiveRequest]:
        yield _begin(snap)
        answered.wait(30)  # then the stream ends, without a volume or a commit

    with _channel_as_src(dst, pki) as channel:
        responses = rpb_grpc.ReplicationStub(channel).Receive(requests(), timeout=60)
        first = next(responses)
        assert first.WhichOneof("msg") == "ready", first
        # the receive started ahead waits for the volume
        wait_for(lambda: _receive_processes(dst) and _receiving(dst), what="a receive started ahead")
        answered.set()
        assert list(responses) == []
    wait_for(lambda: not _receive_processes(dst) and not _receiving(dst), what="the receive gone")
    assert dst.sets() == {}
    src.replicate("gone-1", dst)  # and the next transfer takes the receive it starts ahead
    assert list(dst.sets()) == ["gone-1"] and dst.verify() == []
    assert _receiving(dst) == [] and not _receive_processes(dst)


def _receive_raw(
    dst: Site, pki: LabPKI, snap: SnapshotInfo, stream: bytes, source_uuid: bytes
) -> grpc.RpcError:
    """Send `stream` as the btrfs stream of `snap` straight to the target's Receive, as a peer
    with a valid certificate would; the target's refusal."""

    def requests() -> Iterator[rpb.ReceiveRequest]:
        yield _begin(snap)
        yield rpb.ReceiveRequest(volume=rpb.VolumeBegin(volume=snap.volume, source_uuid=source_uuid))
        for i in range(0, len(stream), 1 << 20):
            yield rpb.ReceiveRequest(data=stream[i : i + (1 << 20)])
        yield rpb.ReceiveRequest(volume_end=rpb.VolumeEnd())
        yield rpb.ReceiveRequest(commit=rpb.ReceiveCommit())

    with _channel_as_src(dst, pki) as channel, pytest.raises(grpc.RpcError) as err:
        list(rpb_grpc.ReplicationStub(channel).Receive(requests(), timeout=60))
    return err.value


def _send_stream(src: Site, set_id: str, volume: str) -> bytes:
    path = _snapshot_dir(src, set_id, volume)
    return subprocess.run(["btrfs", "send", "-q", str(path)], check=True, capture_output=True).stdout


def test_a_stream_whose_received_uuid_does_not_match_is_refused(pair: tuple[Site, Site], pki: LabPKI) -> None:
    src, dst = pair
    (snap,) = src.snapshot("uuid-1", ["vm2"])
    err = _receive_raw(dst, pki, snap, _send_stream(src, "uuid-1", "vm2"), b"\x01" * 16)
    assert err.code() == grpc.StatusCode.DATA_LOSS
    assert "does not match the source" in (err.details() or "")
    assert dst.sets() == {}
    assert _receiving(dst) == []


@pytest.mark.parametrize("where", ["header", "middle"])
def test_a_corrupted_stream_is_refused_as_data_loss_and_a_good_one_goes_after(
    pair: tuple[Site, Site], pki: LabPKI, tmp_path: Path, where: str
) -> None:
    """A byte flipped in transit: `btrfs receive` checks the stream's magic and every command's
    CRC32C. The transfer fails as DATA_LOSS naming the pool and what receive saw, nothing of it
    stays on the target, and the set sent again arrives whole."""
    src, dst = pair
    (snap,) = src.snapshot("bad-1", ["vm2"])
    stream = bytearray(_send_stream(src, "bad-1", "vm2"))
    stream[4 if where == "header" else len(stream) // 2] ^= 0xFF
    uuid = subvol_info(_snapshot_dir(src, "bad-1", "vm2")).uuid
    err = _receive_raw(dst, pki, snap, bytes(stream), uuid)
    assert err.code() == grpc.StatusCode.DATA_LOSS, err.details()
    details = err.details() or ""
    assert "pool main: btrfs receive of bad-1/vm2" in details
    assert ("header" if where == "header" else "crc32 mismatch") in details
    assert dst.sets() == {}
    assert _receiving(dst) == []
    src.replicate("bad-1", dst)
    assert dst.content("bad-1", "vm2", tmp_path) == read_tree(src.pool / "vm2")


@pytest.fixture
def tiny_btrfs(tmp_path: Path) -> Iterator[Path]:
    """A 48 MiB btrfs (mixed block groups) on a loop device of its own: a target that fills up."""
    image, mnt = tmp_path / "tiny.img", tmp_path / "tiny"
    mnt.mkdir()
    with open(image, "wb") as fh:
        fh.truncate(48 << 20)
    res = subprocess.run(["mkfs.btrfs", "-q", "-f", "--mixed", str(image)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"mkfs.btrfs --mixed failed: {res.stderr.strip()}")
    res = subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a second loop device: {res.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)


def test_a_full_target_filesystem_fails_the_receive_cleanly(
    btrfs_dir: Path, pki: LabPKI, tiny_btrfs: Path, tmp_path: Path
) -> None:
    """64 MB into a 48 MiB filesystem: the transfer fails with StorageFull naming the pool, the
    target shows nothing of it and keeps no staging copy, the source keeps its set, and once the
    space is given back (the failed receive's) a set that fits goes through."""
    src = Site("src", tmp_path / "src", btrfs_dir / "src", pki, backend="btrfs")
    full = Site("dst", tmp_path / "full", tiny_btrfs / "pool", pki, backend="btrfs")
    for v in ("big", "small"):
        _subvolume(src.pool / v)
    fill_volume(src.pool / "big", seed=7, big_mb=64, small=2)
    fill_volume(src.pool / "small", seed=8, big_mb=1, small=2)
    full.pool.mkdir()
    src.start()
    full.start()
    try:
        src.snapshot("enospc-b", ["big"])
        with pytest.raises(StorageFull, match=r"pool main: .*[Nn]o space left"):
            src.replicate("enospc-b", full, compression=False)
        assert full.sets() == {}
        assert _receiving(full) == []
        assert full.client.node_info().node == "dst"  # still serving
        assert "enospc-b" in src.sets() and src.verify("enospc-b") == []
        # the failed receive's subvolume is deleted; a commit wakes the cleaner that frees its space
        for cmd in (["filesystem", "sync"], ["subvolume", "sync"]):
            subprocess.run(["btrfs", *cmd, str(tiny_btrfs)], check=True, capture_output=True)
        src.snapshot("fits", ["small"])
        out = src.replicate("fits", full)
        assert [s.volume for s in out.snapshots] == ["small"]
        assert full.content("fits", "small", tmp_path / "check") == read_tree(src.pool / "small")
    finally:
        src.stop()
        full.stop()


def test_the_stream_carries_the_version_both_ends_read_and_a_send_started_on_another_is_redone(
    btrfs_dir: Path,
) -> None:
    """The source starts its first send ahead in the newest stream version it can send; when the
    target reads only an older one (its ready says so), that send is stopped and the volume is
    sent again in the older version. The version is in the stream's header."""
    _subvolume(btrfs_dir / "vm1")
    fill_volume(btrfs_dir / "vm1", seed=3, big_mb=1, small=3)
    backend = BtrfsBackend(pool="main", root=btrfs_dir)
    try:
        backend.snapshot(set_id="v-1", volume="vm1")
        newest = btrfs_repl.send_stream_version()

        def header_version(stream_version: int, started: btrfs_repl.SendProcess | None = None) -> int:
            link = CollectLink()
            btrfs_repl.send_volume(
                backend,
                link,
                Meter(),
                set_id="v-1",
                volume="vm1",
                parent_set_id="",
                compression=False,
                logical_bytes=0,
                stream_version=stream_version,
                started=started,
            )
            data = link.data()
            assert data[:13] == b"btrfs-stream\0"
            return int.from_bytes(data[13:17], "little")

        assert header_version(1) == 1
        assert header_version(newest) == newest
        if newest == 1:
            pytest.skip("this kernel or btrfs-progs sends stream v1 only: nothing to fall back from")
        ahead = btrfs_repl.start_send(
            backend, set_id="v-1", volume="vm1", parent_set_id="", stream_version=newest
        )
        assert header_version(1, started=ahead) == 1
        assert ahead.proc.returncode == -signal.SIGKILL  # the send started ahead was stopped
    finally:
        backend.close()


def test_zeroed_space_travels_as_lengths_and_arrives_as_zeros(
    pair: tuple[Site, Site], tmp_path: Path
) -> None:
    """Uncompressed, the write commands full of zeros that `btrfs send` makes of zeroed space (a
    third of fill_volume's image is written zeros) leave their zeros behind (wire.squeeze); the
    target's `btrfs receive` gets them back, and the copy is the source's."""
    src, dst = pair
    src.snapshot("z-1", ["vm1"])
    out = src.replicate("z-1", dst, compression=False)
    assert dst.content("z-1", "vm1", tmp_path) == read_tree(src.pool / "vm1")
    assert out.totals.wire_bytes < 0.8 * out.totals.sent_bytes, out.totals
    assert dst.verify() == []


def test_a_sparse_block_in_a_compressed_stream_is_refused(pair: tuple[Site, Site], pki: LabPKI) -> None:
    src, dst = pair
    (snap,) = src.snapshot("sp-1", ["vm2"])
    uuid = subvol_info(_snapshot_dir(src, "sp-1", "vm2")).uuid

    def requests() -> Iterator[rpb.ReceiveRequest]:
        yield _begin(snap)
        yield rpb.ReceiveRequest(volume=rpb.VolumeBegin(volume="vm2", source_uuid=uuid, compressed=True))
        yield rpb.ReceiveRequest(sparse=rpb.SparseData(data=b"x", runs=[1, 4096]))

    with _channel_as_src(dst, pki) as channel, pytest.raises(grpc.RpcError) as caught:
        list(rpb_grpc.ReplicationStub(channel).Receive(requests(), timeout=60))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value
    assert "'vm2': a sparse block in a compressed stream" in str(caught.value.details())
    wait_for(lambda: not _receive_processes(dst) and not _receiving(dst), what="the receive gone")
    assert dst.sets() == {}


def _stream_size(snapshot: Path, parent: Path | None = None) -> int:
    version = btrfs_repl.send_stream_version()
    cmd = ["btrfs", "send", "-q", "--proto", str(version)] if version > 1 else ["btrfs", "send", "-q"]
    if parent is not None:
        cmd += ["-p", str(parent)]
    out = subprocess.run([*cmd, str(snapshot)], check=True, capture_output=True)
    return len(out.stdout)


def _data_bytes(snapshot: Path, since: int = 0) -> int:
    fd = os.open(snapshot, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return ioc.file_data_bytes(fd, since=since)
    finally:
        os.close(fd)


def test_the_estimate_of_a_stream_is_the_file_data_it_carries_full_and_incremental(btrfs_dir: Path) -> None:
    """What the ETA counts on (StreamEstimate): the file data of the snapshot, or of what changed
    since the parent, read from the metadata; `btrfs send` streams that plus a little metadata."""
    rng = random.Random(5)
    vol = btrfs_dir / "vol"
    _subvolume(vol)
    (vol / "random.bin").write_bytes(rng.randbytes(3 << 20))
    with open(vol / "sparse.img", "wb") as fh:  # 1 MiB of data in a 16 MiB file
        fh.seek(8 << 20)
        fh.write(rng.randbytes(1 << 20))
        fh.truncate(16 << 20)
    (vol / "tail.bin").write_bytes(rng.randbytes(10_000))  # its last block counts to the end
    (vol / "small.txt").write_bytes(b"x" * 100)  # inline, in the metadata
    with open(vol / "prealloc.img", "wb") as fh:  # allocated, never written: nothing to send
        os.posix_fallocate(fh.fileno(), 0, 4 << 20)
    s1, s2 = btrfs_dir / "s1", btrfs_dir / "s2"
    subprocess.run(
        ["btrfs", "subvolume", "snapshot", "-r", str(vol), str(s1)], check=True, capture_output=True
    )
    full = _data_bytes(s1)
    assert full == (3 << 20) + (1 << 20) + 10_000 + 100
    assert full <= _stream_size(s1) <= full + (64 << 10)

    with open(vol / "random.bin", "r+b") as fh:  # 1 MiB rewritten in place, 512 KiB new
        fh.seek(1 << 20)
        fh.write(rng.randbytes(1 << 20))
    (vol / "new.bin").write_bytes(rng.randbytes(512 << 10))
    subprocess.run(
        ["btrfs", "subvolume", "snapshot", "-r", str(vol), str(s2)], check=True, capture_output=True
    )
    changed = _data_bytes(s2, since=subvol_info(s1).generation)
    assert changed == (1 << 20) + (512 << 10)
    assert changed <= _stream_size(s2, s1) <= changed + (64 << 10)


def test_a_transfer_reports_its_total_and_eta_while_it_runs_and_its_cost_at_the_end(
    pair: tuple[Site, Site],
) -> None:
    src, dst = pair
    src.snapshot("eta-1", ["vm1", "vm2"])
    progress: list[TransferStats] = []
    # throttled to last about 2 s: the meter reports every 0.5 s
    out = src.replicate("eta-1", dst, compression=False, throttle_bps=6 << 20, progress=progress)
    final = out.totals
    # both volumes' estimates are in within milliseconds; a quarter of the way in, the total has
    # also learnt how much less than the stream the wire carries (a third of fill_volume is zeros)
    sending = [p for p in progress if p.phase == "send" and p.sent_bytes >= final.sent_bytes // 4]
    assert len(sending) >= 2, progress
    for p in sending:
        assert 0.9 * final.wire_bytes <= p.total_bytes <= 1.1 * final.wire_bytes, (p, final)
        assert p.eta_seconds >= 0, p
    assert any(p.eta_seconds > 0.1 for p in sending), sending
    # at the end: what the data messages cost (the wire also carries begin, end and commit)
    assert 0.97 * final.wire_bytes <= final.total_bytes <= final.wire_bytes, final


def _compressed_extents(subvolume: Path) -> int:
    """How many of the subvolume's file extents are compressed on the disk."""
    fd = os.open(subvolume, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return sum(1 for e in ioc.data_extents(fd) if e.encoded)
    finally:
        os.close(fd)


def test_compressed_extents_travel_as_they_are_and_arrive_compressed(
    btrfs_dir: Path, pki: LabPKI, tmp_path: Path
) -> None:
    """On a pool with compression, stream v2 carries the compressed extents as they are on the disk
    (`btrfs send --compressed-data`): the wire carries about what the disk holds, not the file
    sizes, the target stores them compressed, and the estimate of the stream counts them so."""
    if btrfs_repl.send_stream_version() < 2:
        pytest.skip("this kernel or btrfs-progs sends stream v1 only: no encoded writes")
    src = Site("src", tmp_path / "src", btrfs_dir / "src", pki, backend="btrfs")
    dst = Site("dst", tmp_path / "dst", btrfs_dir / "dst", pki, backend="btrfs")
    vol = src.pool / "nas1"
    _subvolume(vol)
    subprocess.run(
        ["btrfs", "property", "set", str(vol), "compression", "zstd"], check=True, capture_output=True
    )
    rng = random.Random(11)
    words = [rng.randbytes(rng.randint(3, 9)).hex().encode() for _ in range(500)]
    text = b"\n".join(b" ".join(rng.choices(words, k=12)) for _ in range(150_000))  # about 23 MiB
    (vol / "logs.txt").write_bytes(text)
    (vol / "random.bin").write_bytes(rng.randbytes(1 << 20))  # stored uncompressed: no gain
    os.sync()
    dst.pool.mkdir(parents=True)
    src.start()
    dst.start()
    try:
        src.snapshot("c-1", ["nas1"])
        snap = _snapshot_dir(src, "c-1", "nas1")
        assert _compressed_extents(snap) > 0
        logical = len(text) + (1 << 20)
        out = src.replicate("c-1", dst, compression=False)
        assert out.totals.wire_bytes < 0.6 * logical, (out.totals, logical)
        assert dst.content("c-1", "nas1", tmp_path) == read_tree(vol)
        assert _compressed_extents(_snapshot_dir(dst, "c-1", "nas1")) > 0
        # the estimate counts what the stream carries
        fd = os.open(snap, os.O_RDONLY | os.O_DIRECTORY)
        try:
            expected = ioc.file_data_bytes(fd, compressed_data=True)
        finally:
            os.close(fd)
        stream = subprocess.run(
            ["btrfs", "send", "-q", "--proto", "2", "--compressed-data", str(snap)],
            check=True,
            capture_output=True,
        ).stdout
        assert expected < 0.6 * logical
        assert expected <= len(stream) <= expected + (64 << 10)
        # and incrementally: what changed travels compressed too
        with open(vol / "logs.txt", "ab") as fh:
            fh.write(text[: 4 << 20])
        os.sync()
        src.snapshot("c-2", ["nas1"])
        out = src.replicate("c-2", dst, compression=False)
        assert [v.parent_set_id for v in out.volumes] == ["c-1"]
        assert out.totals.wire_bytes < 0.6 * (4 << 20), out.totals
        assert dst.content("c-2", "nas1", tmp_path) == read_tree(vol)
        assert dst.verify() == []
    finally:
        src.stop()
        dst.stop()
