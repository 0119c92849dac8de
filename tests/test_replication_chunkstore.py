"""Chunkstore replication between real agent processes over mTLS (lab certificates).

Full and incremental transfers (a 1% change sends about 1% of the bytes), metadata on the target,
idempotence, a corrupted chunk rejected with DATA_LOSS and resent, a chunk that never verifies
failing the transfer with nothing visible, resume after the source died, a full target disk, and
refused certificates.
"""

from __future__ import annotations

import random
import shutil
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.agent.api import CreateSetRequest, Target
from reconciler.agent.core import NodeAgent
from reconciler.backends.chunkstore import ChunkstoreBackend
from reconciler.backends.chunkstore_packs import ChunkLoc
from reconciler.domain import ImmutableState, SnapshotInfo
from reconciler.errors import AlreadyExists, CorruptData, PermissionDenied, StorageFull, Unavailable
from reconciler.replication import chunkstore as cs_repl
from reconciler.replication.api import ReplicateSpec
from reconciler.replication.progress import TransferStats
from reconciler.replication.sender import Dialer, Sender, plan_parts
from reconciler.tlslab import LabPKI, create_lab_pki
from tests.helpers import small_tmpfs, wait_for
from tests.replication_lab import Site, change_volume, creds, fill_volume, read_tree

VOLUME = "vms/vm1"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> LabPKI:
    return create_lab_pki(tmp_path_factory.mktemp("pki") / "tls", nodes=["src", "dst", "inproc", "stranger"])


@pytest.fixture(scope="module")
def src(pki: LabPKI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    d = tmp_path_factory.mktemp("src")
    site = Site("src", d, d / "pool", pki)
    fill_volume(site.pool / VOLUME, seed=1, big_mb=16)
    site.start()
    yield site
    site.stop()


@pytest.fixture(scope="module")
def dst(pki: LabPKI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    d = tmp_path_factory.mktemp("dst")
    site = Site("dst", d, d / "pool", pki)
    site.start()
    yield site
    site.stop()


def test_full_then_incremental_sends_only_the_changed_bytes(src: Site, dst: Site, tmp_path: Path) -> None:
    src.snapshot("full-1", [VOLUME])
    seen: list[TransferStats] = []
    full = src.replicate("full-1", dst, progress=seen)
    assert [s.volume for s in full.snapshots] == [VOLUME] and full.target_node == "dst"
    assert full.volumes[0].parent_set_id == ""
    logical = full.snapshots[0].logical_bytes
    assert full.totals.checked_bytes == logical
    assert full.totals.sent_bytes > 0.9 * logical  # a first transfer sends (nearly) everything
    assert full.totals.wire_bytes < full.totals.sent_bytes  # compressed as stored
    assert seen and seen[-1].phase == "done"
    assert dst.verify("full-1") == []
    assert dst.content("full-1", VOLUME, tmp_path) == read_tree(src.pool / VOLUME)

    changed = change_volume(src.pool / VOLUME, seed=7, fraction=0.01)
    src.snapshot("full-2", [VOLUME])
    incr = src.replicate("full-2", dst)
    assert incr.volumes[0].parent_set_id == "full-1"
    # changed blocks travel as deltas of their 4 KiB pages: about the changed bytes, plus metadata
    metadata = 96 * 1024
    assert changed * 0.9 < incr.totals.wire_bytes <= 1.05 * changed + metadata, (changed, incr.totals)
    assert incr.totals.wire_bytes < 0.05 * full.totals.wire_bytes
    assert dst.verify("full-2") == []
    assert dst.content("full-2", VOLUME, tmp_path) == read_tree(src.pool / VOLUME)


def test_target_keeps_set_id_labels_and_created_and_takes_the_remote_expiry(src: Site, dst: Site) -> None:
    created = src.snapshot(
        "meta-1", [VOLUME], labels={"scope": "system:all", "kind": "scheduled", "slot": "x"}
    )
    expires = datetime.now(UTC).replace(microsecond=0) + timedelta(days=30)
    out = src.replicate("meta-1", dst, expires=expires, name_prefix="dr-", holds=("base:dst",))
    (snap,) = dst.sets()["meta-1"]
    assert snap.created == created[0].created
    assert snap.expires == expires
    assert snap.name == "dr-name of meta-1"
    assert snap.holds == frozenset({"base:dst"})
    assert {k: snap.labels[k] for k in ("scope", "kind", "slot")} == {
        "scope": "system:all",
        "kind": "scheduled",
        "slot": "x",
    }
    assert snap.labels["origin_node"] == "src" and snap.labels["origin_pool"] == "main"
    assert out.snapshots[0] == snap
    # the source's own expiry when none is given, never when asked
    src.snapshot("meta-2", [VOLUME])
    src.replicate("meta-2", dst)
    assert dst.sets()["meta-2"][0].expires == src.sets()["meta-2"][0].expires
    src.snapshot("meta-3", [VOLUME])
    src.replicate("meta-3", dst, never_expire=True)
    assert dst.sets()["meta-3"][0].expires is None


def test_replicating_a_set_the_target_has_is_a_cheap_no_op(src: Site, dst: Site) -> None:
    src.snapshot("again-1", [VOLUME])
    src.replicate("again-1", dst)
    again = src.replicate("again-1", dst)
    assert [v.already_present for v in again.volumes] == [True]
    assert again.totals.wire_bytes < 4096
    assert len(dst.sets()["again-1"]) == 1


# --- in-process source: lets the test damage what the source sends ------------------------------
@pytest.fixture
def inproc(pki: LabPKI, tmp_path: Path) -> Iterator[NodeAgent]:
    root = tmp_path / "inproc"
    fill_volume(root / VOLUME, seed=5, big_mb=4)
    agent = NodeAgent("inproc", {"main": ChunkstoreBackend(pool="main", root=root)})
    agent.create_set(
        CreateSetRequest(
            set_id="bad-1",
            name="bad-1",
            targets=(Target("main", VOLUME, "vm1"),),
            created=datetime.now(UTC),
            labels={"scope": "resource:vm1", "kind": "manual", "expected_members": "1"},
            expires=datetime.now(UTC) + timedelta(days=1),
        )
    )
    yield agent
    agent.close()


def _damaging(monkeypatch: pytest.MonkeyPatch, times: int) -> list[bytes]:
    """Flip a byte in the first chunk the source reads, `times` times (-1: always)."""
    real = cs_repl._Store.payload
    damaged: list[bytes] = []

    def payload(self: cs_repl._Store, reader: object, loc: ChunkLoc) -> bytes:
        data = real(self, reader, loc)  # type: ignore[arg-type]
        if times < 0 or len(damaged) < times:
            damaged.append(data)
            return bytes([data[0] ^ 0xFF]) + data[1:]
        return data

    monkeypatch.setattr(cs_repl._Store, "payload", payload)
    return damaged


@pytest.mark.parametrize("streams", [1, 2])
def test_streams_send_the_pools_of_a_set_side_by_side(pki: LabPKI, tmp_path: Path, streams: int) -> None:
    """A set with members in two pools: with streams 2 both pools' streams are open at once (each
    on a connection of its own), with 1 one after the other; the target gets the whole set."""
    source = Site(
        "src", tmp_path / "src", tmp_path / "src" / "pool", pki, more_pools={"fast": tmp_path / "fast"}
    )
    target = Site("dst", tmp_path / "dst", tmp_path / "dst" / "pool", pki)
    fill_volume(source.pool / "vms/a", seed=5, big_mb=2, small=5)
    fill_volume(tmp_path / "fast" / "vms/b", seed=6, big_mb=2, small=5)
    source.start()
    target.start()
    try:
        source.snapshot("two-pools", ["vms/a", "fast:vms/b"])
        # throttled so that each pool's stream lasts a good while: side by side, they overlap
        out = source.replicate("two-pools", target, streams=streams, throttle_bps=8 << 20)
        assert out.streams == streams
        assert sorted(s.volume for s in out.snapshots) == ["vms/a", "vms/b"]
        assert sorted(s.volume for s in target.sets()["two-pools"]) == ["vms/a", "vms/b"]
        assert target.verify("two-pools") == []
        assert target.content("two-pools", "vms/b", tmp_path / "check") == read_tree(
            tmp_path / "fast" / "vms/b"
        )
    finally:
        source.stop()
        target.stop()


def test_streams_split_one_pools_volumes_and_the_target_commits_them_together(
    pki: LabPKI, tmp_path: Path
) -> None:
    """One pool, three volumes, streams 3: three streams of one group at once; the target makes
    the three members visible together."""
    source = Site("src", tmp_path / "src", tmp_path / "src" / "pool", pki)
    target = Site("dst", tmp_path / "dst", tmp_path / "dst" / "pool", pki)
    for i, v in enumerate(("vms/a", "vms/b", "vms/c")):
        fill_volume(source.pool / v, seed=20 + i, big_mb=2, small=5)
    source.start()
    target.start()
    try:
        source.snapshot("grouped", ["vms/a", "vms/b", "vms/c"])
        out = source.replicate("grouped", target, streams=3, throttle_bps=8 << 20)
        assert out.streams == 3
        assert sorted(s.volume for s in out.snapshots) == ["vms/a", "vms/b", "vms/c"]
        assert sorted(s.volume for s in target.sets()["grouped"]) == ["vms/a", "vms/b", "vms/c"]
        assert target.verify("grouped") == []
        assert target.content("grouped", "vms/c", tmp_path / "check") == read_tree(source.pool / "vms/c")
    finally:
        source.stop()
        target.stop()


def test_a_group_whose_streams_do_not_all_commit_leaves_nothing(pki: LabPKI, tmp_path: Path) -> None:
    """The small volume's stream reaches its commit and waits for the big one's; the transfer is
    cancelled meanwhile: neither member is visible on the target, and the next transfer completes."""
    source = Site("src", tmp_path / "src", tmp_path / "src" / "pool", pki)
    target = Site("dst", tmp_path / "dst", tmp_path / "dst" / "pool", pki)
    fill_volume(source.pool / "vms/small", seed=30, big_mb=1, small=2)
    fill_volume(source.pool / "vms/big", seed=31, big_mb=24, small=2)
    source.start()
    target.start()
    try:
        source.snapshot("cut", ["vms/big", "vms/small"])
        cancel = threading.Event()
        seen: list[TransferStats] = []

        outcome: list[BaseException | None] = []

        def run() -> None:
            spec = ReplicateSpec(set_id="cut", target=target.peer(), streams=2, throttle_bps=4 << 20)
            try:
                source.repl.replicate(spec, seen.append, cancel=cancel)
                outcome.append(None)
            except BaseException as exc:  # noqa: BLE001 - checked below
                outcome.append(exc)

        t = threading.Thread(target=run)
        t.start()
        # the small part (1 MiB) reaches its commit within a second; the big one needs several at 4 MB/s
        assert target.proc is not None
        wait_for(
            lambda: "stream 1 of 2 of group" in target.proc.log.read_text(),  # type: ignore[union-attr]
            timeout=30,
            what="the small volume's stream waiting at its commit",
        )
        cancel.set()
        t.join(30)
        assert not t.is_alive()
        assert len(outcome) == 1 and isinstance(outcome[0], Unavailable), outcome
        # the waiting stream takes its volume back out as soon as its stream is cancelled
        wait_for(
            lambda: "did not reach their commit; dropped vms/small" in target.proc.log.read_text(),  # type: ignore[union-attr]
            timeout=10,
            what="the small volume dropped",
        )
        assert "cut" not in target.sets()
        out = source.replicate("cut", target, streams=2)
        assert sorted(s.volume for s in out.snapshots) == ["vms/big", "vms/small"]
        assert sorted(s.volume for s in target.sets()["cut"]) == ["vms/big", "vms/small"]
        assert target.verify("cut") == []
    finally:
        source.stop()
        target.stop()


def test_plan_parts_splits_the_pools_with_the_most_volumes_per_stream() -> None:
    def snaps(pool: str, sizes: list[int]) -> list[SnapshotInfo]:
        now = datetime.now(UTC)
        return [
            SnapshotInfo(
                set_id="s",
                name="s",
                pool=pool,
                volume=f"v{i}",
                created=now,
                expires=None,
                labels={},
                immutable=ImmutableState.NONE,
                holds=frozenset(),
                logical_bytes=n,
                quiesced=False,
            )  # fmt: skip
            for i, n in enumerate(sizes)
        ]

    groups = {"a": snaps("a", [10, 1, 1, 1, 9]), "b": snaps("b", [5])}
    assert [(p.pool, len(p.members), p.group_size) for p in plan_parts(groups, 1)] == [
        ("a", 5, 1),
        ("b", 1, 1),
    ]
    assert [(p.pool, p.group_size) for p in plan_parts(groups, 2)] == [("a", 1), ("b", 1)]
    three = plan_parts(groups, 3)
    assert [(p.pool, p.group_size) for p in three] == [("a", 2), ("a", 2), ("b", 1)]
    assert three[0].group == three[1].group != ""
    # balanced by size, members in their original order within a part
    assert sorted([m.volume for m in p.members] for p in three[:2]) == [["v0", "v2"], ["v1", "v3", "v4"]]
    # never more parts than volumes, whatever the streams
    assert len(plan_parts(groups, 16)) == 6


def test_a_stream_that_fails_fails_the_transfer_with_its_own_error(pki: LabPKI, tmp_path: Path) -> None:
    """Two pools side by side; the target refuses one of them (it holds that volume of the set
    from another node): the transfer fails with that refusal, not with the cancellation it causes
    in the other stream (whose pool, `main`, comes first)."""
    source = Site(
        "src", tmp_path / "src", tmp_path / "src" / "pool", pki, more_pools={"side": tmp_path / "side"}
    )
    target = Site("dst", tmp_path / "dst", tmp_path / "dst" / "pool", pki)
    fill_volume(source.pool / "vms/a", seed=5, big_mb=4, small=5)
    fill_volume(tmp_path / "side" / "vms/b", seed=6, big_mb=1, small=5)
    fill_volume(target.pool / "vms/b", seed=7, big_mb=1, small=5)
    source.start()
    target.start()
    try:
        source.snapshot("clash", ["vms/a", "side:vms/b"])
        target.snapshot("clash", ["vms/b"])
        with pytest.raises(AlreadyExists, match="vms/b"):
            source.replicate("clash", target, streams=2, throttle_bps=8 << 20)
        assert sorted(s.volume for s in target.sets()["clash"]) == ["vms/b"]  # its own, untouched
    finally:
        source.stop()
        target.stop()


def test_a_corrupted_chunk_is_rejected_with_data_loss_and_resent(
    inproc: NodeAgent, pki: LabPKI, dst: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    damaged = _damaging(monkeypatch, 1)
    spec = ReplicateSpec(set_id="bad-1", target=dst.peer())
    out = Sender(inproc, Dialer(creds(pki, pki["nodes"]["inproc"])), spec).run()
    assert len(damaged) == 1
    assert out.totals.chunks_resent == 1
    assert dst.verify("bad-1") == []
    assert "DATA_LOSS: chunk" in dst.proc.log.read_text()  # type: ignore[union-attr]


def test_a_chunk_that_never_verifies_fails_the_transfer_and_nothing_is_visible(
    inproc: NodeAgent, pki: LabPKI, dst: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    # content the target has never seen, so chunks must travel
    fill_volume(inproc.pool("main").backend.root / "vms/vm2", seed=99, big_mb=1)
    inproc.create_set(
        CreateSetRequest(
            set_id="bad-2",
            name="bad-2",
            targets=(Target("main", "vms/vm2", "vm2"),),
            created=datetime.now(UTC),
        )
    )
    _damaging(monkeypatch, -1)
    spec = ReplicateSpec(set_id="bad-2", target=dst.peer())
    with pytest.raises(CorruptData, match="did not verify|not accepted"):
        Sender(inproc, Dialer(creds(pki, pki["nodes"]["inproc"])), spec).run()
    assert "bad-2" not in dst.sets()


# --- resume -------------------------------------------------------------------------------------
def test_a_transfer_cut_short_resumes_without_resending_what_arrived(
    pki: LabPKI, tmp_path: Path, dst: Site
) -> None:
    site = Site("src", tmp_path / "s", tmp_path / "s" / "pool", pki)
    fill_volume(site.pool / "vms/big", seed=11, big_mb=48)
    site.start()
    try:
        site.snapshot("resume-1", ["vms/big"])
        killed: list[TransferStats] = []

        def kill_midway(st: TransferStats) -> None:
            if not killed and st.total_bytes and st.wire_bytes > 0.5 * st.total_bytes:
                killed.append(st)
                site.kill()

        # throttled so the progress reports come while data is still flowing
        with pytest.raises(Unavailable):
            site.repl.replicate(
                ReplicateSpec(set_id="resume-1", target=dst.peer(), throttle_bps=24 << 20), kill_midway
            )
        assert killed, "the transfer ended before the test could interrupt it"
        assert "resume-1" not in dst.sets()
        site.restart()
        again = site.replicate("resume-1", dst)
        total = killed[0].total_bytes
        # what arrived before the kill (at least half) is not sent again
        assert again.totals.wire_bytes < 0.65 * total, (again.totals, killed[0])
        assert dst.verify("resume-1") == []
        assert dst.content("resume-1", "vms/big", tmp_path) == read_tree(site.pool / "vms/big")
    finally:
        site.stop()


# --- a full target -----------------------------------------------------------------------------
@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path / "small", "6m") as mnt:
        yield mnt


def test_a_full_target_disk_fails_cleanly_and_the_source_keeps_its_sets(
    pki: LabPKI, src: Site, small_fs: Path, tmp_path: Path
) -> None:
    full = Site("dst", tmp_path / "full", small_fs / "pool", pki)
    full.start()
    try:
        src.snapshot("enospc-1", [VOLUME])
        with pytest.raises(StorageFull, match="no space left"):
            src.replicate("enospc-1", full)
        assert full.sets() == {}
        assert full.client.node_info().node == "dst"  # still serving
        assert "enospc-1" in src.sets() and src.verify("enospc-1") == []
    finally:
        full.stop()


# --- certificates -------------------------------------------------------------------------------
def test_a_target_presenting_a_certificate_from_another_ca_is_refused(
    src: Site, tmp_path: Path, pki: LabPKI
) -> None:
    foreign = create_lab_pki(tmp_path / "foreign", nodes=["dst"])
    # the impostor trusts our CA for its clients, but its own certificate is from another CA
    shutil.copy(pki["ca"], tmp_path / "ours.pem")
    impostor = Site("dst", tmp_path / "impostor", tmp_path / "impostor" / "pool", foreign)
    impostor.start()
    try:
        src.snapshot("cert-1", [VOLUME])
        with pytest.raises(Unavailable):
            src.replicate("cert-1", impostor)
    finally:
        impostor.stop()
    assert not (
        tmp_path / "impostor" / "pool" / ".reconciler" / "chunkstore" / "snapshots" / "cert-1"
    ).exists()


def test_a_source_the_target_does_not_allow_is_denied(src: Site, pki: LabPKI, tmp_path: Path) -> None:
    picky = Site("dst", tmp_path / "picky", tmp_path / "picky" / "pool", pki, allowed=["reconciler-daemon"])
    picky.start()
    try:
        src.snapshot("cert-2", [VOLUME])
        with pytest.raises(PermissionDenied, match="CN='src'"):
            src.replicate("cert-2", picky)
        assert picky.sets() == {}
    finally:
        picky.stop()


# --- the hand-made encoding of bulk messages, and block deltas -----------------------------------
@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_on_the_receive_stream_is_an_invalid_argument(data: bytes) -> None:
    from reconciler.errors import InvalidArgument
    from reconciler.replication import wire

    for raw in (data, b"\x2a" + data, b"\x22" + data):
        try:
            wire.decode(raw)
        except InvalidArgument:
            pass


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.binary(min_size=32, max_size=32),
            st.binary(max_size=2000),
            st.integers(0, 2**32 - 1),
            st.integers(0, 1),
            st.sampled_from([b"", b"b" * 32]),
            st.binary(max_size=8),
        ),
        max_size=5,
    ),
    st.binary(max_size=5000),
)
def test_bulk_messages_are_exactly_their_protobuf_encoding(
    chunks: list[tuple[Any, ...]], block: bytes
) -> None:
    from reconciler.replication import wire
    from reconciler.v1 import replication_pb2 as rpb

    outs = [wire.ChunkOut(*c) for c in chunks]
    raw = wire.encode_chunks(outs)
    parsed = rpb.ReceiveRequest.FromString(raw)
    assert [
        (c.digest, c.payload, c.raw_len, c.flags, c.base, c.page_map) for c in parsed.chunks.chunks
    ] == chunks
    got = wire.decode(raw)
    assert [
        (c.digest, bytes(c.payload), c.raw_len, c.flags, c.base, c.page_map) for c in got.chunks
    ] == chunks
    data = wire.encode_data(block)
    assert rpb.ReceiveRequest.FromString(data).data == block
    assert bytes(wire.decode(data).data or b"") == block
    # and what any protobuf client sends decodes the same
    assert bytes(wire.decode(rpb.ReceiveRequest(data=block).SerializeToString()).data or b"") == block


@settings(max_examples=100, deadline=None)
@given(st.integers(2, 64), st.data())
def test_a_delta_rebuilds_the_block_exactly(pages: int, data: st.DataObject) -> None:
    rng = random.Random(data.draw(st.integers(0, 2**32)))
    old = rng.randbytes(pages * 4096 - data.draw(st.integers(0, 4095)))
    new = bytearray(old)
    for _ in range(data.draw(st.integers(0, pages // 2))):
        i = data.draw(st.integers(0, len(new) - 1))
        new[i] ^= 0x5A
    delta = cs_repl.make_delta(bytes(new), old)
    if delta is not None:
        assert cs_repl.apply_delta(old, *delta) == bytes(new)
        assert len(delta[1]) <= len(new) // 2 + 4096


def test_the_total_covers_every_volume_from_the_first_one_on(pki: LabPKI, tmp_path: Path) -> None:
    """The need lists come one volume at a time; the total does not wait for them: each volume's
    cost is guessed from the chunks its manifest has and the parent's has not (chunks_cost),
    and its need list puts the guess right."""
    source = Site("src", tmp_path / "src", tmp_path / "src" / "pool", pki)
    target = Site("dst", tmp_path / "dst", tmp_path / "dst" / "pool", pki)
    for i, name in enumerate(("vms/a", "vms/b")):
        fill_volume(source.pool / name, seed=30 + i, big_mb=4, small=5)
    source.start()
    target.start()
    try:
        source.snapshot("est-1", ["vms/a", "vms/b"])
        progress: list[TransferStats] = []
        # throttled: each volume takes a second or so, the meter reports every 0.5 s
        out = source.replicate("est-1", target, streams=1, throttle_bps=2 << 20, progress=progress)
        final = out.totals
        first = [p for p in progress if p.phase == "send" and p.volumes_done == 0 and p.wire_bytes]
        assert first, progress
        for p in first:  # while the first volume is sent, the second's guess is in the total
            assert 0.9 * final.total_bytes <= p.total_bytes <= 1.1 * final.total_bytes, (p, final)
        assert final.wire_bytes >= final.total_bytes
    finally:
        source.stop()
        target.stop()
