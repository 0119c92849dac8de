"""Restores over the source that die halfway, and restores that do not fit.

- A real agent process (plain text on loopback) serves a chunkstore pool to a real daemon. A
  volume of 64 files of 4 MB is snapshotted, every file is changed, and `reconciler restore
  --over-source --yes` runs in the background. Once the safety set is in the agent's catalog the
  agent is SIGKILLed - at the start of the restore, while it writes its staging tree, and after
  the swap - and started again on the same port. Afterwards the live volume is, file for file,
  either all the changed content or all the restored content, never a mix; the safety set is
  complete and holds the changed content; the pool's staging directory is empty; the CLI exited
  non-zero naming the failure.
- A restore onto a full filesystem (a 64 MB ext4 image on a loop device; root only) is refused
  with a "no space" error and the live data is untouched.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from tests.helpers import RECONCILER, AgentProcess, DaemonProcess, cli, cli_json, env_for, wait_for, write

NODE = "storage-k"
VOLUME = "vms/vm1"
FILES = 64
FILE_BYTES = 4 << 20

Hashes = dict[str, str]


# --- data ------------------------------------------------------------------------------------------
def fill(volume: Path) -> Hashes:
    """Write FILES files of distinct random content (same names every time); their hashes."""
    volume.mkdir(parents=True, exist_ok=True)
    out: Hashes = {}
    for i in range(FILES):
        data = os.urandom(FILE_BYTES)
        name = f"f{i:02d}.bin"
        (volume / name).write_bytes(data)
        out[name] = hashlib.blake2b(data, digest_size=16).hexdigest()
    return out


def hashes(volume: Path) -> Hashes:
    out = {}
    for p in sorted(volume.rglob("*")):
        if p.is_file():
            with open(p, "rb") as fh:
                out[str(p.relative_to(volume))] = hashlib.file_digest(
                    fh, lambda: hashlib.blake2b(digest_size=16)
                ).hexdigest()
    return out


def which_state(live: Hashes, **states: Hashes) -> str:
    """The name of the state the live volume is in as a whole; fails naming the mix otherwise."""
    for name, want in states.items():
        if live == want:
            return name
    detail = {
        f: next((n for n, want in states.items() if want.get(f) == h), "neither") for f, h in live.items()
    }
    counts: dict[str, int] = {}
    for v in detail.values():
        counts[v] = counts.get(v, 0) + 1
    missing = sorted(set(next(iter(states.values()))) - set(live))
    raise AssertionError(f"the live volume is a mix: files per state {counts}, missing {missing[:5]}")


# --- processes ---------------------------------------------------------------------------------------
def agent_yaml(pool: Path, port: int) -> str:
    return json.dumps(
        {
            "node": NODE,
            "listen": f"127.0.0.1:{port}",
            "insecure": True,
            "pools": {"main": {"type": "chunkstore", "path": str(pool), "create": True}},
        }
    )


def daemon_yaml(pool: Path, port: int) -> str:
    return json.dumps(
        {
            "version": 1,
            "nodes": {
                NODE: {
                    "address": f"127.0.0.1:{port}",
                    "insecure": True,
                    "pools": {"main": {"type": "chunkstore", "path": str(pool)}},
                }
            },
            "resources": {"vm1": {"kind": "vm", "volumes": [VOLUME]}},
        }
    )


def catalog_sets(pool: Path) -> set[str]:
    """Set ids in the agent's catalog, read directly (a reader never blocks the WAL writer)."""
    db = pool / ".reconciler" / "catalog.db"
    if not db.exists():
        return set()
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return {row[0] for row in con.execute("SELECT set_id FROM snapshots")}
        finally:
            con.close()
    except sqlite3.OperationalError:
        return set()


def staging_trees(pool: Path) -> list[Path]:
    staging = pool / ".reconciler" / "staging"
    return [p for p in staging.iterdir() if p.is_dir()] if staging.exists() else []


def start_restore(d: DaemonProcess, set_id: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*RECONCILER, "restore", "resource", "vm1", "--set", set_id, "--over-source", "--yes"],
        env=env_for(d.state_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def sets_by_id(d: DaemonProcess) -> dict[str, dict[str, object]]:
    return {str(s["set_id"]): s for s in cli_json(d.state_dir, "snapshot", "list")}


class Agent:
    """An agent process that can be SIGKILLed and started again on the same port."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.proc = AgentProcess(config).start()
        self.port = self.proc.port

    def kill(self) -> None:
        self.proc.kill()
        self.proc.stop()  # closes its log

    def restart(self) -> None:
        deadline = time.monotonic() + 20
        while True:
            try:
                self.proc = AgentProcess(self.config).start()
                break
            except AssertionError:  # the port may linger for a moment after the kill
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert self.proc.port == self.port

    def stop(self) -> None:
        self.proc.stop()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[tuple[Path, Agent, DaemonProcess]]:
    pool = tmp_path / "pool"
    pool.mkdir()
    cfg = write(tmp_path / "agent" / "agent.yaml", agent_yaml(pool, 0))
    agent = Agent(cfg)
    try:
        # from now on the agent listens on a fixed port, so a restarted agent is found again
        write(cfg, agent_yaml(pool, agent.port))
        dcfg = write(tmp_path / "config.yaml", daemon_yaml(pool, agent.port))
        with DaemonProcess(dcfg, tmp_path / "state") as d:
            yield pool, agent, d
    finally:
        agent.stop()


def _live_ino(pool: Path) -> int:
    try:
        return os.stat(pool / VOLUME).st_ino
    except FileNotFoundError:
        return 0


# --- kill during restore over the source ------------------------------------------------------------
# When to kill (by progress, not by the clock, so the moments hold on a fast or a slow machine):
#   ("safety", 0)  - as soon as the safety set is in the catalog (the restore has not begun)
#   ("staging", f) - once the tree being restored in staging holds the share f of the volume's bytes
#   ("swapped", 0) - as soon as the live volume is the swapped-in tree (the old one being removed)
MOMENTS: list[tuple[str, float]] = [
    ("safety", 0.0),
    ("staging", 0.0),
    ("staging", 0.3),
    ("staging", 0.8),
    ("swapped", 0.0),
]


def _staged_bytes(pool: Path) -> int:
    total = 0
    for tree in staging_trees(pool):
        for dirpath, _dirs, files in os.walk(tree):
            for f in files:
                try:
                    total += os.lstat(os.path.join(dirpath, f)).st_size
                except FileNotFoundError:
                    pass
    return total


def _wait_moment(pool: Path, kind: str, share: float, live_ino: int, restore: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60

    def waiting() -> bool:
        return restore.poll() is None and time.monotonic() < deadline

    if kind == "staging":
        while waiting() and not staging_trees(pool):
            time.sleep(0.002)
        while waiting() and _staged_bytes(pool) < share * FILES * FILE_BYTES and _live_ino(pool) == live_ino:
            time.sleep(0.005)
    elif kind == "swapped":
        while waiting() and _live_ino(pool) == live_ino:
            time.sleep(0.001)


def _new_safety_sets(pool: Path, before: set[str], restore: subprocess.Popen[str]) -> set[str] | bool:
    new = {x for x in catalog_sets(pool) - before if x.startswith("safety-")}
    return new or restore.poll() is not None


def _with_complete(d: DaemonProcess, set_id: str) -> dict[str, dict[str, object]] | None:
    sets = sets_by_id(d)
    return sets if set_id in sets and sets[set_id].get("complete") else None


def test_killed_agent_leaves_old_or_restored_never_a_mix(rig: tuple[Path, Agent, DaemonProcess]) -> None:
    pool, agent, d = rig
    vol = pool / VOLUME
    original = fill(vol)
    s = cli_json(d.state_dir, "snapshot", "create", "resource:vm1", "--expires", "1d")
    assert s["complete"], s
    set_id = str(s["set_id"])

    outcomes: list[str] = []
    for n, (kind, share) in enumerate(MOMENTS):
        at = f"kill {n} ({kind} {share:.0%})"
        changed = fill(vol)
        before = catalog_sets(pool)
        live_ino = _live_ino(pool)
        restore = start_restore(d, set_id)
        try:
            new = wait_for(
                partial(_new_safety_sets, pool, before, restore),
                timeout=60,
                interval=0.005,
                what="the safety set in the agent's catalog",
            )
            assert restore.poll() is None, f"{at}: the restore ended before the kill: {restore.communicate()}"
            (safety,) = new
            _wait_moment(pool, kind, share, live_ino, restore)
            agent.kill()
            out, err = restore.communicate(timeout=60)
        finally:
            if restore.poll() is None:
                restore.kill()
                restore.wait()

        agent.restart()
        staging = pool / ".reconciler" / "staging"
        assert not any(staging.iterdir()), (
            f"{at}: staging leftovers after the restart: {list(staging.iterdir())}"
        )
        state = which_state(hashes(vol), changed=changed, restored=original)
        outcomes.append(f"{at}: {state}, CLI exit {restore.returncode}")
        if restore.returncode == 0:
            # the agent had answered before it died: the restore is complete
            assert state == "restored", f"{at}: the CLI reported success but the volume is {state}"
        else:
            text = out + err
            assert "Traceback" not in text, text
            assert "failed" in text and NODE in text, f"{at}: no clear failure message:\n{text}"
            assert safety in text, f"{at}: the message does not name the safety set:\n{text}"
            if "safety snapshot" in text and "so nothing was restored" in text:
                # killed before it answered for the safety snapshot: the restore never began
                assert state == "changed", f"{at}: 'nothing was restored', yet the volume is {state}"
            else:
                assert "never a mix" in text, (
                    f"{at}: the message does not say what state the volume is in:\n{text}"
                )
        if kind == "swapped":
            assert state == "restored", f"{at}: the swap happened, yet the volume is {state}"

        # the safety set is complete and holds exactly the content from before the restore
        sets = wait_for(
            partial(_with_complete, d, safety),
            timeout=30,
            what=f"safety set {safety} complete in the daemon's view",
        )
        assert sets[safety]["kind"] == "safety", sets[safety]
        check = f"check{n}"
        cli(d.state_dir, "restore", "resource", "vm1", "--set", safety, "--as", check, check=True)
        assert which_state(hashes(pool / "vms" / check), changed=changed) == "changed"
        shutil.rmtree(pool / "vms" / check)

    print("\n".join(outcomes))
    # the moments are chosen so that both outcomes occur (killed before the swap, and after it)
    states = {o.split(": ")[1].split(",")[0] for o in outcomes}
    assert states == {"changed", "restored"}, outcomes


# --- full disk -----------------------------------------------------------------------------------------
def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=60)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 64 MB ext4 filesystem on a loop device."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small filesystem on a loop device")
    for tool in ("mkfs.ext4", "mount", "umount", "losetup"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")
    image = tmp_path / "small.img"
    mnt = tmp_path / "small"
    mnt.mkdir()
    with open(image, "wb") as fh:
        fh.truncate(64 << 20)
    res = _run("mkfs.ext4", "-q", "-F", "-m", "0", str(image))
    if res.returncode != 0:
        pytest.skip(f"mkfs.ext4 failed: {res.stderr.strip()}")
    res = _run("mount", "-o", "loop", str(image), str(mnt))
    if res.returncode != 0:
        pytest.skip(f"cannot mount a loop device: {res.stderr.strip()}")
    try:
        yield mnt
    finally:
        if _run("umount", str(mnt)).returncode != 0:
            _run("umount", "-l", str(mnt))
        for line in _run("losetup", "-j", str(image)).stdout.splitlines():
            _run("losetup", "-d", line.split(":", 1)[0])


def _fill_disk(where: Path, leave: int) -> None:
    """Take all free space of where's filesystem but `leave` bytes."""
    st = os.statvfs(where)
    free = st.f_bavail * st.f_frsize
    with open(where / "filler", "wb") as fh:
        remaining = max(0, free - leave)
        block = b"\xff" * (1 << 20)
        while remaining > 0:
            remaining -= fh.write(block[: min(len(block), remaining)])
        fh.flush()
        os.fsync(fh.fileno())


@pytest.mark.root
@pytest.mark.parametrize("where", ["restore", "safety snapshot"])
def test_restore_onto_a_full_disk_is_refused_and_live_data_untouched(
    small_fs: Path, tmp_path: Path, where: str
) -> None:
    pool = small_fs / "pool"
    vol = pool / "shares" / "data"
    vol.mkdir(parents=True)
    for i in range(4):  # 8 MB that does not compress
        (vol / f"r{i}.bin").write_bytes(os.urandom(2 << 20))
    cfg = write(
        tmp_path / "config.yaml",
        json.dumps(
            {
                "version": 1,
                "nodes": {
                    "local": {
                        "embedded": True,
                        "pools": {"main": {"type": "chunkstore", "path": str(pool), "create": True}},
                    }
                },
                "resources": {"data": {"kind": "nas_volume", "volumes": ["shares/data"]}},
            }
        ),
    )
    with DaemonProcess(cfg, tmp_path / "state") as d:
        s = cli_json(d.state_dir, "snapshot", "create", "resource:data", "--expires", "1d")
        set_id = str(s["set_id"])
        # the live data changes: compressible (its safety snapshot is small) or not (it is not)
        for i in range(4):
            data = (b"live text %d " % i) * 200_000 if where == "restore" else os.urandom(2 << 20)
            (vol / f"r{i}.bin").write_bytes(data)
        live = hashes(vol)
        _fill_disk(small_fs, 3 << 20)  # room for a small safety snapshot, not for 8 MB of data
        before = set(sets_by_id(d))

        r = cli(d.state_dir, "restore", "resource", "data", "--set", set_id, "--over-source", "--yes")
        assert r.returncode != 0, r.stdout + r.stderr
        assert "no space" in r.stderr and "shares/data" in r.stderr, r.stdout + r.stderr
        assert "Traceback" not in r.stderr, r.stderr
        assert hashes(vol) == live  # untouched
        staging = pool / ".reconciler" / "staging"
        assert not [p for p in staging.iterdir() if p.is_dir()], list(staging.iterdir())
        after = sets_by_id(d)
        if where == "restore":
            # the safety set was taken and is kept; the message says where the old content is
            (safety,) = set(after) - before
            assert after[safety]["complete"] and after[safety]["kind"] == "safety"
        else:
            assert "nothing was restored" in r.stderr, r.stderr
            assert set(after) == before  # no half safety set

        # space again: the same restore now works
        (small_fs / "filler").unlink()
        cli(d.state_dir, "restore", "resource", "data", "--set", set_id, "--over-source", "--yes", check=True)
        assert len(hashes(vol)) == 4 and hashes(vol) != live
