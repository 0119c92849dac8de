"""Kill the sending or the receiving agent at random moments during chunkstore transfers, many
times: every run ends with either the complete, verified set on the target or nothing visible
there, and the next sync completes."""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.agent.api import SnapshotKey
from reconciler.backends import btrfs_ioctl as ioc
from reconciler.errors import ReconcilerError
from reconciler.replication.api import ReplicateSpec
from reconciler.tlslab import LabPKI, create_lab_pki
from tests.helpers import wait_for
from tests.replication_lab import Site, fill_volume, read_tree

ITERATIONS = int(os.environ.get("RECONCILER_KILL_ITERATIONS", "15"))
VOLUME = "vms/vm1"
VOLUME2 = "vms/vm2"
SET = "kill-1"


@pytest.fixture
def pki(tmp_path: Path) -> LabPKI:
    return create_lab_pki(tmp_path / "tls", nodes=["src", "dst"])


@pytest.fixture
def sites(pki: LabPKI, tmp_path: Path) -> Iterator[tuple[Site, Site]]:
    src = Site("src", tmp_path / "src", tmp_path / "src" / "pool", pki)
    dst = Site("dst", tmp_path / "dst", tmp_path / "dst" / "pool", pki)
    fill_volume(src.pool / VOLUME, seed=21, big_mb=24, small=60)
    fill_volume(src.pool / VOLUME2, seed=22, big_mb=8, small=20)
    src.start()
    dst.start()
    yield src, dst
    src.stop()
    dst.stop()


def _manifest_exists(site: Site) -> bool:
    return (site.pool / ".reconciler" / "chunkstore" / "snapshots" / SET).exists()


@pytest.mark.parametrize(
    ("volumes", "streams"),
    [([VOLUME], 1), ([VOLUME, VOLUME2], 2)],
    ids=["one-stream", "a-group-of-two-streams"],
)
def test_killing_either_agent_mid_transfer_never_leaves_a_partial_set(
    sites: tuple[Site, Site], tmp_path: Path, volumes: list[str], streams: int
) -> None:
    """With two streams the set's two volumes travel in a group the target commits together: a
    kill leaves both or neither."""
    src, dst = sites
    src.snapshot(SET, volumes)
    expected = {v: src.content(SET, v, tmp_path) for v in volumes}
    first = src.replicate(SET, dst, streams=streams)
    assert first.streams == streams
    throttle = int(first.totals.wire_bytes / 0.6)  # about 0.6 s per transfer: room to hit it mid-way

    def clear_target() -> None:
        assert all(r.deleted for r in dst.client.delete([SnapshotKey(SET, "main", v) for v in volumes]))
        dst.client.collect_garbage("main")

    def spec() -> ReplicateSpec:
        return ReplicateSpec(set_id=SET, target=dst.peer(), throttle_bps=throttle, streams=streams)

    # how long a throttled transfer takes here and now: the kills are spread over that time
    clear_target()
    t0 = time.monotonic()
    src.repl.replicate(spec())
    duration = time.monotonic() - t0
    seed = int(os.environ.get("RECONCILER_KILL_SEED", str(random.randrange(1 << 30))))
    rng = random.Random(seed)
    interrupted = 0
    outcomes: list[str] = []
    for i in range(ITERATIONS):
        # start from nothing on the target: the set and its chunks are gone
        clear_target()
        victim = rng.choice([src, dst])
        delay = rng.uniform(0.0, 1.1 * duration)
        errors: list[BaseException] = []

        def run(errors: list[BaseException] = errors) -> None:
            try:
                src.repl.replicate(spec())
            except ReconcilerError as exc:
                errors.append(exc)

        worker = threading.Thread(target=run)
        worker.start()
        time.sleep(delay)
        victim.kill()
        worker.join(60)
        assert not worker.is_alive(), f"seed {seed} iteration {i}: the transfer hung after the kill"
        victim.restart()
        interrupted += bool(errors)
        listed = dst.sets()
        if SET in listed:
            # complete and verified, or nothing: never something in between
            assert sorted(s.volume for s in listed[SET]) == sorted(volumes), f"seed {seed} iteration {i}"
            assert dst.verify(SET) == [], f"seed {seed} iteration {i}"
            assert {v: dst.content(SET, v, tmp_path) for v in volumes} == expected
            outcomes.append(f"{i}: kill {victim.name} at {delay:.2f}s -> complete")
        else:
            assert listed == {}, f"seed {seed} iteration {i}: {listed}"
            # a stream of the group that had committed its data takes it back out when its RPC ends
            wait_for(
                lambda: not _manifest_exists(dst), timeout=10, what=f"seed {seed} iteration {i}: no manifest"
            )
            outcomes.append(f"{i}: kill {victim.name} at {delay:.2f}s -> nothing")
            # the next sync completes (and reuses whatever chunks arrived before the kill)
            again = src.replicate(SET, dst, streams=streams)
            assert again.totals.wire_bytes <= first.totals.wire_bytes + 64 * 1024
            assert dst.verify(SET) == []
            assert {v: dst.content(SET, v, tmp_path) for v in volumes} == expected
        assert src.verify(SET) == []  # the source never loses its set
    print(f"seed {seed}:", *outcomes, sep="\n  ")
    assert interrupted >= ITERATIONS // 4, f"seed {seed}: only {interrupted} kills hit a transfer: {outcomes}"
    assert read_tree(src.pool / VOLUME)  # the live volume is untouched


@pytest.mark.root
@pytest.mark.btrfs
@pytest.mark.parametrize("pool_compression", ["", "zstd"], ids=["plain-pool", "zstd-pool"])
def test_killing_either_agent_mid_btrfs_receive_never_leaves_a_partial_snapshot(
    btrfs_dir: Path, pki: LabPKI, tmp_path: Path, pool_compression: str
) -> None:
    """On a zstd pool, stream v2 carries the compressed extents as they are (encoded writes on
    the target): a kill in the middle of those leaves nothing either."""
    import subprocess

    src = Site("src", tmp_path / "src", btrfs_dir / "src", pki, backend="btrfs")
    dst = Site("dst", tmp_path / "dst", btrfs_dir / "dst", pki, backend="btrfs")
    (btrfs_dir / "src").mkdir()
    subprocess.run(
        ["btrfs", "subvolume", "create", str(btrfs_dir / "src" / "vm1")], check=True, capture_output=True
    )
    if pool_compression:
        subprocess.run(
            ["btrfs", "property", "set", str(btrfs_dir / "src" / "vm1"), "compression", pool_compression],
            check=True,
            capture_output=True,
        )
    fill_volume(btrfs_dir / "src" / "vm1", seed=5, big_mb=24, small=20)
    (btrfs_dir / "dst").mkdir()
    src.start()
    dst.start()
    try:
        src.snapshot(SET, ["vm1"])
        expected = read_tree(btrfs_dir / "src" / "vm1")
        if pool_compression:  # the stream has encoded writes to be cut short
            snapshot = btrfs_dir / "src" / ".reconciler" / "btrfs" / "snapshots" / SET / "vm1" / "@"
            fd = os.open(snapshot, os.O_RDONLY | os.O_DIRECTORY)
            try:
                assert any(e.sent_encoded for e in ioc.data_extents(fd))
            finally:
                os.close(fd)
        first = src.replicate(SET, dst, compression=False)
        throttle = int(first.totals.wire_bytes / 0.6)
        assert dst.client.delete([SnapshotKey(SET, "main", "vm1")])[0].deleted
        t0 = time.monotonic()
        src.repl.replicate(
            ReplicateSpec(set_id=SET, target=dst.peer(), throttle_bps=throttle, compression=False)
        )
        duration = time.monotonic() - t0
        seed = int(os.environ.get("RECONCILER_KILL_SEED", str(random.randrange(1 << 30))))
        rng = random.Random(seed)
        store = btrfs_dir / "dst" / ".reconciler"
        for i in range(max(3, ITERATIONS // 3)):
            assert dst.client.delete([SnapshotKey(SET, "main", "vm1")])[0].deleted
            victim = rng.choice([src, dst])
            delay = rng.uniform(0.0, 1.1 * duration)
            worker = threading.Thread(
                target=lambda: _quietly(
                    lambda: src.repl.replicate(
                        ReplicateSpec(set_id=SET, target=dst.peer(), throttle_bps=throttle, compression=False)
                    )
                )
            )
            worker.start()
            time.sleep(delay)
            victim.kill()
            worker.join(60)
            assert not worker.is_alive(), f"seed {seed} iteration {i}: hung"
            victim.restart()
            if SET in dst.sets():
                assert dst.verify(SET) == [] and dst.content(SET, "vm1", tmp_path) == expected
            else:
                # nothing that looks like a snapshot: no store entry, nothing left in staging
                assert not (store / "btrfs" / "snapshots" / SET).exists(), f"seed {seed} iteration {i}"
                assert not list((store / "staging").iterdir()), f"seed {seed} iteration {i}"
                src.replicate(SET, dst, compression=False)
                assert dst.verify(SET) == [] and dst.content(SET, "vm1", tmp_path) == expected
    finally:
        src.stop()
        dst.stop()


def _quietly(fn: object) -> None:
    try:
        fn()  # type: ignore[operator]
    except ReconcilerError:
        pass
