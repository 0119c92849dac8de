"""The node agent over a btrfs pool on a real btrfs filesystem (loop device, see conftest).

The agent's rules (idempotent sets, immutability, revert after a safety snapshot by an atomic
swap, restore and clone to new writable subvolumes, nothing partial after a crash) hold on btrfs
as on chunkstore; a real agent process is killed mid-snapshot; a daemon with an embedded btrfs
node takes scheduled snapshots of subvolumes.
"""

from __future__ import annotations

import errno
import os
import signal
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from reconciler.agent.api import CreateSetRequest, QuiesceGroup, SnapshotKey, SnapshotUpdate, Target
from reconciler.agent.client import AgentClient
from reconciler.agent.core import NodeAgent
from reconciler.backends.btrfs import BtrfsBackend
from reconciler.domain import Hooks, ImmutableState
from reconciler.errors import FailedPrecondition, InvalidArgument, NotFound, PathEscapes, Unavailable
from tests.helpers import AgentProcess, DaemonProcess, cli_json, wait_for, write

pytestmark = [pytest.mark.btrfs, pytest.mark.root]

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def sh(*cmd: str) -> str:
    res = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=60)
    assert res.returncode == 0, f"{' '.join(cmd)}: {res.stderr}"
    return res.stdout


def subvol(path: Path, content: str = "") -> Path:
    """A subvolume made by the btrfs CLI (independent of the code under test)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sh("btrfs", "subvolume", "create", str(path))
    if content:
        (path / "data.txt").write_text(content)
    return path


def is_subvolume(path: Path) -> bool:
    return os.lstat(path).st_ino == 256


def readonly(path: Path) -> bool:
    return sh("btrfs", "property", "get", "-ts", str(path), "ro").strip() == "ro=true"


def subvolumes_under(mount: Path, root: Path) -> set[str]:
    rel = f"{root.relative_to(mount)}/"
    return {
        line.split(" path ", 1)[1][len(rel) :]
        for line in sh("btrfs", "subvolume", "list", str(mount)).splitlines()
        if line.split(" path ", 1)[1].startswith(rel)
    }


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def req(set_id: str, *vols: str, **kw: object) -> CreateSetRequest:
    return CreateSetRequest(
        set_id=set_id,
        name=set_id,
        targets=tuple(Target("fast", v, "r") for v in vols),
        created=T0,
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture
def root(btrfs_dir: Path) -> Path:
    r = btrfs_dir / "pool"
    r.mkdir()
    return r


@pytest.fixture
def agent(root: Path) -> Iterator[NodeAgent]:
    a = NodeAgent(
        "n1", {"fast": BtrfsBackend(pool="fast", root=root)}, clock=Clock(), unlock_floor=timedelta(days=1)
    )
    try:
        yield a
    finally:
        a.close()


def backend(agent: NodeAgent) -> BtrfsBackend:
    b = agent.pool("fast").backend
    assert isinstance(b, BtrfsBackend)
    return b


def test_create_set_is_idempotent_and_members_are_read_only_snapshots(root: Path, agent: NodeAgent) -> None:
    subvol(root / "vms" / "web" / "disk0", "disk v1")  # vms/web is a plain directory
    subvol(root / "shares" / "docs", "docs v1")
    g0 = agent.pool_info("fast").generation
    r1 = agent.create_set(req("s1", "vms/web/disk0", "shares/docs"))
    g1 = agent.pool_info("fast").generation
    r2 = agent.create_set(req("s1", "vms/web/disk0", "shares/docs"))
    assert g1 == g0 + 1 and agent.pool_info("fast").generation == g1  # the retry changed nothing
    assert (
        [s.volume for s in r1.snapshots]
        == [s.volume for s in r2.snapshots]
        == ["vms/web/disk0", "shares/docs"]
    )
    assert agent.pool_info("fast").backend == "btrfs" and agent.pool_info("fast").snapshot_count == 2
    for vol in ("vms/web/disk0", "shares/docs"):
        snap = backend(agent).snapshot_path("s1", vol)
        assert is_subvolume(snap) and readonly(snap)
    # point in time: the live volume moves on, the snapshot does not
    (root / "vms/web/disk0/data.txt").write_text("disk v2")
    snap = backend(agent).snapshot_path("s1", "vms/web/disk0")
    assert (snap / "data.txt").read_text() == "disk v1"
    with pytest.raises(OSError) as exc:
        (snap / "data.txt").write_text("tamper")
    assert exc.value.errno == errno.EROFS
    # metadata survives the agent: a new agent on the same pool lists the same set
    agent.close()
    again = NodeAgent("n1", {"fast": BtrfsBackend(pool="fast", root=root)}, clock=Clock())
    try:
        [(_, snaps)] = list(again.list_snapshots("fast"))
        assert {(s.set_id, s.volume) for s in snaps} == {("s1", "vms/web/disk0"), ("s1", "shares/docs")}
    finally:
        again.close()


def test_delete_and_immutable_refusal(root: Path, agent: NodeAgent) -> None:
    subvol(root / "v", "x")
    agent.create_set(req("keep", "v", immutable=True))
    agent.create_set(req("tmp", "v"))
    [refused] = agent.delete([SnapshotKey("keep", "fast", "v")])
    assert not refused.deleted and "immutable (locked)" in refused.error
    assert is_subvolume(backend(agent).snapshot_path("keep", "v"))
    [unlocking] = agent.update([SnapshotUpdate(SnapshotKey("keep", "fast", "v"), frozenset({"unlock"}))])
    assert unlocking.immutable is ImmutableState.UNLOCKING
    [still] = agent.delete([SnapshotKey("keep", "fast", "v")])
    assert not still.deleted and "unlocking" in still.error

    [ok] = agent.delete([SnapshotKey("tmp", "fast", "v")])
    assert ok.deleted
    assert not os.path.lexists(backend(agent).snapshot_path("tmp", "v"))
    assert not (root / ".reconciler/btrfs/snapshots/tmp").exists()  # no empty layout left behind
    [again] = agent.delete([SnapshotKey("tmp", "fast", "v")])  # gone already: succeeds
    assert again.deleted
    with pytest.raises(NotFound):
        agent.get_snapshot(SnapshotKey("tmp", "fast", "v"))


def test_revert_takes_a_safety_snapshot_and_swaps_atomically(
    btrfs_mount: Path, root: Path, agent: NodeAgent
) -> None:
    vol = subvol(root / "vms" / "db", "v1")
    agent.create_set(req("s1", "vms/db"))
    (vol / "data.txt").write_text("v2")
    (vol / "added-later").write_text("new")
    before = subvolumes_under(btrfs_mount, root)

    res = agent.restore(SnapshotKey("s1", "fast", "vms/db"), safety_set_id="safety-1")

    assert res.ok and res.safety_set_id == "safety-1"
    live = root / "vms" / "db"
    assert (live / "data.txt").read_text() == "v1" and not (live / "added-later").exists()
    assert is_subvolume(live) and not readonly(live)
    (live / "data.txt").write_text("writable again")
    # the safety snapshot holds what was live before the revert
    safety = backend(agent).snapshot_path("safety-1", "vms/db")
    assert (safety / "data.txt").read_text() == "v2" and (safety / "added-later").exists()
    assert agent.get_snapshot(SnapshotKey("safety-1", "fast", "vms/db")).labels["kind"] == "safety"
    # the snapshot restored from is intact
    snap = backend(agent).snapshot_path("s1", "vms/db")
    assert readonly(snap) and (snap / "data.txt").read_text() == "v1"
    # the old live subvolume is gone, no staging leftovers: only the safety snapshot was added
    after = subvolumes_under(btrfs_mount, root)
    assert after - before == {".reconciler/btrfs/snapshots/safety-1/vms/db/@"}
    staging = root / ".reconciler" / "staging"
    assert not staging.exists() or not list(staging.iterdir())


def test_restore_to_new_and_clone_are_writable_subvolumes(root: Path, agent: NodeAgent) -> None:
    vol = subvol(root / "shares" / "docs", "original")
    agent.create_set(req("s1", "shares/docs"))
    (vol / "data.txt").write_text("changed")
    key = SnapshotKey("s1", "fast", "shares/docs")

    restored = agent.restore(key, new_volume="shares/docs-restored")
    cloned = agent.clone(key, "shares/docs-clone")

    assert restored.ok and cloned.ok
    for name in ("docs-restored", "docs-clone"):
        p = root / "shares" / name
        assert is_subvolume(p) and not readonly(p)
        assert (p / "data.txt").read_text() == "original"
        (p / "data.txt").write_text(f"{name} writes")
    assert (backend(agent).snapshot_path("s1", "shares/docs") / "data.txt").read_text() == "original"
    assert (vol / "data.txt").read_text() == "changed"  # the source is untouched
    with pytest.raises(FailedPrecondition, match="already exists"):
        agent.clone(key, "shares/docs-clone")
    # the clone is a volume like any other: it can be snapshotted
    agent.create_set(req("s2", "shares/docs-clone"))
    assert (
        backend(agent).snapshot_path("s2", "shares/docs-clone") / "data.txt"
    ).read_text() == "docs-clone writes"


def test_volumes_outside_the_pool_or_not_subvolumes_are_refused(
    root: Path, agent: NodeAgent, btrfs_dir: Path
) -> None:
    outside = subvol(btrfs_dir / "outside", "secret")
    (root / "link").symlink_to(outside)
    (root / "plain").mkdir()
    with pytest.raises(InvalidArgument):
        agent.create_set(req("s1", "../outside"))
    with pytest.raises(PathEscapes):
        agent.create_set(req("s1", "link"))
    with pytest.raises(FailedPrecondition, match="not a btrfs subvolume"):
        agent.create_set(req("s1", "plain"))
    with pytest.raises(NotFound, match="'missing'"):
        agent.create_set(req("s1", "missing"))
    assert agent.pool("fast").catalog.count() == 0
    assert backend(agent).stored_keys() == set()


def test_agent_process_killed_mid_snapshot_leaves_no_orphan_on_btrfs(btrfs_dir: Path, tmp_path: Path) -> None:
    root = btrfs_dir / "pool"
    subvol(root / "vms" / "a", "a")
    subvol(root / "vms" / "b", "b")
    cfg = write(
        tmp_path / "agent.yaml",
        f'node: n1\nlisten: "127.0.0.1:0"\ninsecure: true\nallow_hooks: true\npools:\n  fast: {{type: btrfs, path: {root}}}\n',
    )
    thawing, pidfile = tmp_path / "thawing", tmp_path / "hook.pid"
    agent = AgentProcess(cfg).start()
    client = AgentClient("n1", f"127.0.0.1:{agent.port}")
    try:
        # the thaw hook runs once both snapshots exist and before they become visible
        hooks = Hooks(
            ("true",),
            ("sh", "-c", f"echo $$ > {pidfile}; touch {thawing}; exec sleep 60"),
            timedelta(minutes=2),
        )
        request = req("s1", "vms/a", "vms/b", quiesce=(QuiesceGroup("r", hooks),))
        errors: list[Exception] = []

        def create() -> None:
            try:
                client.create_set(request)
            except Exception as exc:  # noqa: BLE001 - collected for the assertion below
                errors.append(exc)

        t = threading.Thread(target=create)
        t.start()
        wait_for(lambda: thawing.exists() or errors, timeout=20, what="the thaw hook")
        assert not errors, errors
        store = root / ".reconciler/btrfs/snapshots/s1"
        assert is_subvolume(store / "vms/a/@") and is_subvolume(store / "vms/b/@")  # taken, not yet visible
        agent.kill()
        os.kill(int(pidfile.read_text()), signal.SIGKILL)
        t.join(30)
        assert len(errors) == 1 and isinstance(errors[0], Unavailable)
        db = sqlite3.connect(root / ".reconciler" / "catalog.db")
        assert db.execute("SELECT COUNT(*) FROM snapshots").fetchone()[0] == 0
        db.close()

        agent.stop()
        write(cfg, cfg.read_text().replace('"127.0.0.1:0"', f'"127.0.0.1:{agent.port}"'))
        agent = AgentProcess(cfg).start()
        assert not store.exists()  # the orphans were deleted when the pool was opened again
        assert client.node_info().pools[0].snapshot_count == 0
        res = client.create_set(req("s1", "vms/a", "vms/b"))  # the retry under the same id
        assert len(res.snapshots) == 2 and readonly(store / "vms/a/@")
    finally:
        client.close()
        agent.stop()


def test_daemon_takes_scheduled_snapshots_of_btrfs_subvolumes(btrfs_dir: Path, tmp_path: Path) -> None:
    root = btrfs_dir / "pool"
    subvol(root / "vms" / "web01", "web")
    subvol(root / "shares" / "home", "home")
    cfg = write(
        tmp_path / "config.yaml",
        f"""\
version: 1
nodes:
  local:
    embedded: true
    pools:
      fast: {{type: btrfs, path: {root}}}
resources:
  web01: {{kind: vm, volumes: [vms/web01]}}
  home: {{kind: nas_volume, volumes: [shares/home]}}
profiles:
  hourly:
    periods:
      - {{name: hourly, frequency: daily, hour: 3, retention: 2d}}  # one slot per run of the test
system_snapshots:
  full: {{type: full, profile: hourly}}
""",
    )
    state = tmp_path / "state"
    with DaemonProcess(cfg, state):
        [s] = wait_for(
            lambda: [x for x in cli_json(state, "snapshot", "list") if x["complete"]],
            timeout=30,
            what="a scheduled set",
        )
        assert s["kind"] == "scheduled" and s["scope"] == "system:full"
        assert sorted(m["volume"] for m in s["members"]) == ["shares/home", "vms/web01"]
        for vol, content in (("vms/web01", "web"), ("shares/home", "home")):
            snap = root / ".reconciler/btrfs/snapshots" / s["set_id"] / vol / "@"
            assert is_subvolume(snap) and readonly(snap)
            assert (snap / "data.txt").read_text() == content
        st = cli_json(state, "status")
        [pool] = st["nodes"][0]["pools"]
        assert pool["backend"] == "btrfs" and int(pool["snapshot_count"]) == 2
        m = cli_json(state, "snapshot", "create", "resource:web01", "--expires", "1h")
        assert m["complete"] and [x["volume"] for x in m["members"]] == ["vms/web01"]
        assert readonly(root / ".reconciler/btrfs/snapshots" / m["set_id"] / "vms/web01/@")


def test_catalog_sync_normal_skips_the_insert_fsync_only(root: Path) -> None:
    """`catalog_sync: normal` (NodeAgent(durable_inserts=False)): inserts commit without fsync,
    removes and updates stay fully durable, and nothing partial appears either way."""
    subvol(root / "v", "x")
    agent = NodeAgent(
        "n1", {"fast": BtrfsBackend(pool="fast", root=root)}, clock=Clock(), durable_inserts=False
    )
    try:
        catalog = agent.pool("fast").catalog
        modes: list[int] = []
        real = catalog._bump

        def spy() -> None:  # runs inside each write transaction
            modes.append(catalog._db.execute("PRAGMA synchronous").fetchone()[0])
            real()

        catalog._bump = spy  # type: ignore[method-assign]
        agent.create_set(req("s1", "v"))
        agent.update(
            [SnapshotUpdate(SnapshotKey("s1", "fast", "v"), frozenset({"holds"}), add_holds=frozenset({"x"}))]
        )
        agent.update(
            [
                SnapshotUpdate(
                    SnapshotKey("s1", "fast", "v"), frozenset({"holds"}), remove_holds=frozenset({"x"})
                )
            ]
        )
        [d] = agent.delete([SnapshotKey("s1", "fast", "v")])
        assert d.deleted
        assert modes == [1, 2, 2, 2]  # NORMAL for the insert; FULL for updates and the remove
    finally:
        agent.close()


def test_restore_and_clone_into_another_pool(btrfs_dir: Path, tmp_path: Path) -> None:
    """A new copy can go to another pool of the node: moved where it is one btrfs filesystem,
    copied into a new volume of the other pool's kind elsewhere (a subvolume on btrfs, which the
    btrfs pool can then snapshot), and nothing is left in either pool's staging area."""
    from reconciler.backends.chunkstore import ChunkstoreBackend

    fast, also, near = btrfs_dir / "fast", btrfs_dir / "also", btrfs_dir / "near"
    plain = tmp_path / "plain"  # not on btrfs: a copy across filesystems
    for d in (fast, also, near, plain):
        d.mkdir()
    a = NodeAgent(
        "n1",
        {
            "fast": BtrfsBackend(pool="fast", root=fast),
            "also": BtrfsBackend(pool="also", root=also),
            "plain": ChunkstoreBackend(pool="plain", root=plain),
            "near": ChunkstoreBackend(pool="near", root=near),  # on the btrfs filesystem
        },
        clock=Clock(),
        unlock_floor=timedelta(days=1),
    )
    try:
        vol = subvol(fast / "docs", "original")
        os.makedirs(vol / "sub")
        (vol / "sub" / "b.txt").write_text("b")
        a.create_set(req("s1", "docs"))
        (vol / "data.txt").write_text("changed")
        key = SnapshotKey("s1", "fast", "docs")

        # btrfs -> btrfs on the same filesystem: the writable snapshot is moved, nothing copied
        r = a.restore(key, new_volume="docs-r", new_pool="also")
        assert r.ok and r.bytes == 0 and "also/docs-r" in r.message
        assert is_subvolume(also / "docs-r") and not readonly(also / "docs-r")
        assert (also / "docs-r" / "data.txt").read_text() == "original"
        assert not (fast / "docs-r").exists()

        # btrfs -> chunkstore on another filesystem: copied (with its tree), a plain directory
        c = a.clone(key, "docs-c", new_pool="plain")
        assert c.ok and c.bytes == len("original") + 1
        assert (plain / "docs-c" / "data.txt").read_text() == "original"
        assert (plain / "docs-c" / "sub" / "b.txt").read_text() == "b"

        # chunkstore -> btrfs: copied into a new subvolume, which the btrfs pool snapshots
        a.create_set(
            CreateSetRequest(
                set_id="p1", name="p1", targets=(Target("plain", "docs-c", "r"),), created=T0, labels={}
            )
        )
        (plain / "docs-c" / "data.txt").write_text("plain changed")
        r2 = a.restore(SnapshotKey("p1", "plain", "docs-c"), new_volume="from-plain", new_pool="fast")
        assert r2.ok
        assert is_subvolume(fast / "from-plain") and not readonly(fast / "from-plain")
        assert (fast / "from-plain" / "data.txt").read_text() == "original"
        assert (fast / "from-plain" / "sub" / "b.txt").read_text() == "b"
        a.create_set(req("s2", "from-plain"))
        assert (backend_of(a, "fast").snapshot_path("s2", "from-plain") / "sub" / "b.txt").read_text() == "b"

        # chunkstore on the same btrfs filesystem -> btrfs: a plain directory could be moved, but
        # the btrfs pool could not snapshot it: copied into a subvolume too
        a.clone(SnapshotKey("p1", "plain", "docs-c"), "docs-n", new_pool="near")
        a.create_set(
            CreateSetRequest(
                set_id="n1", name="n1", targets=(Target("near", "docs-n", "r"),), created=T0, labels={}
            )
        )
        a.clone(SnapshotKey("n1", "near", "docs-n"), "from-near", new_pool="fast")
        assert is_subvolume(fast / "from-near")
        a.create_set(req("s3", "from-near"))

        # only paths, into another pool
        a.restore(key, new_volume="only-sub", new_pool="plain", paths=["sub"])
        assert sorted(os.listdir(plain / "only-sub")) == ["sub"]

        with pytest.raises(FailedPrecondition, match="pool also: volume 'docs-r' already exists"):
            a.clone(key, "docs-r", new_pool="also")
        with pytest.raises(NotFound, match="no pool 'nope'"):
            a.clone(key, "x", new_pool="nope")
        with pytest.raises(InvalidArgument, match="new_pool"):
            a.restore(key, new_pool="also", skip_safety_snapshot=True)
        assert (vol / "data.txt").read_text() == "changed"  # the source untouched throughout
        for pool_root in (fast, also, near, plain):
            staging = pool_root / ".reconciler" / "staging"
            assert not staging.exists() or not os.listdir(staging), pool_root
    finally:
        a.close()


def backend_of(a: NodeAgent, pool: str) -> BtrfsBackend:
    b = a.pool(pool).backend
    assert isinstance(b, BtrfsBackend)
    return b
