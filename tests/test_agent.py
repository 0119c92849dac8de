"""The agent core on a real chunkstore pool: idempotent sets, immutability, restores, quiesce hooks."""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest

from reconciler.agent.api import CreateSetRequest, QuiesceGroup, SnapshotKey, SnapshotUpdate, Target
from reconciler.agent.core import NodeAgent
from reconciler.backends import make_backend
from reconciler.domain import Hooks, ImmutableState
from reconciler.errors import FailedPrecondition, InvalidArgument, NotFound, PathEscapes, QuiesceFailed
from reconciler.nodes import warn_without_btrfs_progs
from reconciler.replication.btrfs import btrfs_program

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def pool_root(tmp_path: Path) -> Path:
    root = tmp_path / "pool"
    for vol, files in {
        "vms/a/disk0": {"img": b"A" * 300_000},
        "shares/s": {"x.txt": b"hello", "d/y": b"world"},
    }.items():
        for name, data in files.items():
            p = root / vol / name
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
    return root


def make_agent(root: Path, clock: Clock | None = None, **kw: object) -> NodeAgent:
    backend = make_backend("chunkstore", pool="main", root=root, options={"compression": "zstd"})
    return NodeAgent("n1", {"main": backend}, clock=clock or Clock(), **kw)  # type: ignore[arg-type]


def req(set_id: str, *vols: str, **kw: object) -> CreateSetRequest:
    return CreateSetRequest(
        set_id=set_id,
        name=set_id,
        targets=tuple(Target("main", v, "r") for v in vols),
        created=T0,
        **kw,  # type: ignore[arg-type]
    )


def test_create_is_idempotent_and_bumps_generation(pool_root: Path) -> None:
    agent = make_agent(pool_root)
    g0 = agent.pool_info("main").generation
    r1 = agent.create_set(req("s1", "vms/a/disk0", "shares/s"))
    g1 = agent.pool_info("main").generation
    r2 = agent.create_set(req("s1", "vms/a/disk0", "shares/s"))
    assert g1 > g0
    assert agent.pool_info("main").generation == g1  # the retry changed nothing
    assert [s.volume for s in r1.snapshots] == [s.volume for s in r2.snapshots] == ["vms/a/disk0", "shares/s"]
    assert r1.snapshots[0].logical_bytes == 300_000
    pages = list(agent.list_snapshots("main", page_size=1))
    assert [len(p) for _, p in pages] == [1, 1]


def test_failure_midway_leaves_nothing_visible(pool_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    agent = make_agent(pool_root)
    backend = agent.pool("main").backend
    real = backend.snapshot
    calls = {"n": 0}

    def flaky(**kw: object) -> object:
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk on fire")
        return real(**kw)  # type: ignore[arg-type]

    monkeypatch.setattr(backend, "snapshot", flaky)
    with pytest.raises(OSError):
        agent.create_set(req("s1", "vms/a/disk0", "shares/s"))
    assert agent.pool("main").catalog.count() == 0
    assert backend.stored_keys() == set()
    monkeypatch.setattr(backend, "snapshot", real)
    assert len(agent.create_set(req("s1", "vms/a/disk0", "shares/s")).snapshots) == 2


def test_bad_requests_are_refused(pool_root: Path, tmp_path: Path) -> None:
    agent = make_agent(pool_root)
    with pytest.raises(InvalidArgument):
        agent.create_set(req("../evil", "vms/a/disk0"))
    with pytest.raises(InvalidArgument):
        agent.create_set(req("s1", "../outside"))
    with pytest.raises(InvalidArgument):
        agent.create_set(req("s1", "/etc"))
    with pytest.raises(NotFound):
        agent.create_set(req("s1", "missing"))
    outside = tmp_path / "outside"
    outside.mkdir()
    (pool_root / "link").symlink_to(outside)
    with pytest.raises(PathEscapes):
        agent.create_set(req("s1", "link"))
    with pytest.raises(NotFound):
        agent.create_set(CreateSetRequest("s1", "s1", (Target("nopool", "x"),), T0))
    assert agent.pool("main").catalog.count() == 0


def test_immutable_cannot_be_deleted_until_unlock_wait_passed(pool_root: Path) -> None:
    clock = Clock()
    agent = make_agent(pool_root, clock, unlock_floor=timedelta(days=2))
    agent.create_set(req("s1", "shares/s", immutable=True))
    key = SnapshotKey("s1", "main", "shares/s")
    [res] = agent.delete([key])
    assert not res.deleted and "immutable (locked)" in res.error
    # a client asking for a 1-second wait gets the agent's floor
    [snap] = agent.update([SnapshotUpdate(key, frozenset({"unlock"}), unlock_delay=timedelta(seconds=1))])
    assert snap.immutable is ImmutableState.UNLOCKING
    assert snap.unlock_at == T0 + timedelta(days=2)
    clock.now = T0 + timedelta(days=1)
    [res] = agent.delete([key])
    assert not res.deleted and "unlocking" in res.error
    clock.now = T0 + timedelta(days=2, seconds=1)
    assert agent.get_snapshot(key).immutable is ImmutableState.UNLOCKED
    [res] = agent.delete([key])
    assert res.deleted
    # deleting what is gone succeeds
    assert agent.delete([key])[0].deleted


def test_holds_block_delete(pool_root: Path) -> None:
    agent = make_agent(pool_root)
    agent.create_set(req("s1", "shares/s"))
    key = SnapshotKey("s1", "main", "shares/s")
    agent.update([SnapshotUpdate(key, frozenset({"holds"}), add_holds=frozenset({"operator"}))])
    assert "held (operator)" in agent.delete([key])[0].error
    agent.update([SnapshotUpdate(key, frozenset({"holds"}), remove_holds=frozenset({"operator"}))])
    assert agent.delete([key])[0].deleted


def test_restore_over_source_takes_safety_snapshot_and_swaps(pool_root: Path) -> None:
    agent = make_agent(pool_root)
    agent.create_set(req("s1", "shares/s"))
    live = pool_root / "shares/s"
    (live / "x.txt").write_bytes(b"changed")
    (live / "new.txt").write_bytes(b"new")
    res = agent.restore(SnapshotKey("s1", "main", "shares/s"))
    assert res.ok and res.safety_set_id
    assert (live / "x.txt").read_bytes() == b"hello"
    assert not (live / "new.txt").exists()
    assert (live / "d/y").read_bytes() == b"world"
    # the safety snapshot holds the content from before the restore
    agent.restore(SnapshotKey(res.safety_set_id, "main", "shares/s"), new_volume="shares/before")
    assert (pool_root / "shares/before/new.txt").read_bytes() == b"new"
    assert not list((pool_root / ".reconciler/staging").iterdir())


def test_restore_to_new_refuses_existing_name_and_clone_works(pool_root: Path) -> None:
    agent = make_agent(pool_root)
    agent.create_set(req("s1", "shares/s"))
    with pytest.raises(FailedPrecondition):
        agent.restore(SnapshotKey("s1", "main", "shares/s"), new_volume="vms/a/disk0")
    assert (pool_root / "vms/a/disk0/img").stat().st_size == 300_000  # untouched
    agent.clone(SnapshotKey("s1", "main", "shares/s"), "shares/s_clone")
    assert (pool_root / "shares/s_clone/x.txt").read_bytes() == b"hello"
    with pytest.raises(NotFound):
        agent.restore(SnapshotKey("nope", "main", "shares/s"))


def _hooks(tmp_path: Path, freeze: list[str], timeout: float = 5) -> Hooks:
    return Hooks(
        freeze=tuple(freeze),
        thaw=(sys.executable, "-c", f"open({str(tmp_path / 'thawed')!r}, 'a').write('t')"),
        timeout=timedelta(seconds=timeout),
    )


def test_quiesce_hooks_run_around_the_snapshot(pool_root: Path, tmp_path: Path) -> None:
    agent = make_agent(pool_root)
    freeze = [sys.executable, "-c", f"open({str(tmp_path / 'frozen')!r}, 'w').write('f')"]
    res = agent.create_set(req("s1", "shares/s", quiesce=(QuiesceGroup("r", _hooks(tmp_path, freeze)),)))
    assert res.quiesced and all(s.quiesced for s in res.snapshots)
    assert (tmp_path / "frozen").exists() and (tmp_path / "thawed").read_text() == "t"


def test_failed_freeze_gives_crash_consistent_snapshot_and_still_thaws(
    pool_root: Path, tmp_path: Path
) -> None:
    agent = make_agent(pool_root)
    freeze = [sys.executable, "-c", "import sys; sys.exit(3)"]
    res = agent.create_set(req("s1", "shares/s", quiesce=(QuiesceGroup("r", _hooks(tmp_path, freeze)),)))
    assert not res.quiesced
    assert any("exited with status 3" in w for w in res.warnings)
    assert (tmp_path / "thawed").exists()


def test_failed_freeze_with_fail_policy_fails_and_thaws(pool_root: Path, tmp_path: Path) -> None:
    agent = make_agent(pool_root)
    freeze = [sys.executable, "-c", "import time; time.sleep(30)"]
    with pytest.raises(QuiesceFailed, match="did not finish within 0.5s"):
        agent.create_set(
            req(
                "s1",
                "shares/s",
                quiesce_fail=True,
                quiesce=(QuiesceGroup("r", _hooks(tmp_path, freeze, timeout=0.5)),),
            )
        )
    assert (tmp_path / "thawed").exists()
    assert agent.pool("main").catalog.count() == 0


def test_reopen_keeps_metadata(pool_root: Path) -> None:
    agent = make_agent(pool_root)
    agent.create_set(
        req("s1", "shares/s", immutable=True, expires=T0 + timedelta(days=1), labels={"scope": "system:x"})
    )
    agent.close()
    again = make_agent(pool_root)
    snap = again.get_snapshot(SnapshotKey("s1", "main", "shares/s"))
    assert snap.immutable is ImmutableState.LOCKED
    assert snap.expires == T0 + timedelta(days=1)
    assert snap.labels["scope"] == "system:x"


def test_btrfs_pools_on_a_node_without_btrfs_progs_are_named_at_start(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Snapshots of btrfs pools go through ioctls; only sending and receiving them needs the
    `btrfs` program, and its absence is said when the node starts, not at the first transfer."""
    chunks = make_backend("chunkstore", pool="bulk", root=tmp_path / "bulk")

    class _Btrfs:  # only its kind is looked at
        kind = "btrfs"

    btrfs_program.cache_clear()
    monkeypatch.setenv("PATH", str(tmp_path))
    try:
        with caplog.at_level(logging.WARNING, logger="reconciler.nodes"):
            warn_without_btrfs_progs({"bulk": chunks})
            assert caplog.records == []
            warn_without_btrfs_progs(cast(Any, {"fast": _Btrfs(), "bulk": chunks, "cold": _Btrfs()}))
    finally:
        btrfs_program.cache_clear()
        chunks.close()
    (rec,) = caplog.records
    assert "btrfs-progs is not installed" in rec.getMessage()
    assert (
        "btrfs pool(s) cold, fast take and restore snapshots, but cannot send or receive them"
        in rec.getMessage()
    )
