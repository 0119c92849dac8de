"""The per-pool snapshot catalog: metadata of every member snapshot, and the pool generation.

A snapshot is visible exactly when its catalog row exists. Backends first make the data complete
on disk, then the agent inserts the row (one SQLite transaction, which also bumps the generation);
deleting removes the row first and the data after. A crash between the two steps leaves only
unreferenced data, which the backend removes when the pool is opened again.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

from .domain import ImmutableState, SnapshotInfo

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS snapshots (
    set_id TEXT NOT NULL,
    volume TEXT NOT NULL,
    name TEXT NOT NULL,
    created REAL NOT NULL,
    expires REAL,
    labels TEXT NOT NULL,
    immutable TEXT NOT NULL,
    unlock_at REAL,
    holds TEXT NOT NULL,
    logical_bytes INTEGER NOT NULL,
    quiesced INTEGER NOT NULL,
    PRIMARY KEY (set_id, volume)
);
CREATE INDEX IF NOT EXISTS snapshots_by_volume ON snapshots (volume, created);
"""


def _ts(dt: datetime | None) -> float | None:
    return None if dt is None else dt.timestamp()


def _dt(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


class Catalog:
    """Thread-safe (one connection behind a lock; the agent's calls are short)."""

    def __init__(self, path: Path, *, pool: str, durable_inserts: bool = True) -> None:
        self.path = path
        self.pool = pool
        # Durability of a commit (SQLite WAL): synchronous=FULL fsyncs the WAL on every commit, so
        # a snapshot the agent acknowledged survives a power loss. NORMAL skips that fsync (the WAL
        # is fsynced at checkpoints and by the next FULL commit): still safe against a crash of the
        # agent process, but a power loss may roll back the last commits. Removes and updates are
        # always FULL: a removed row must not come back after its data was dropped, and a lock or
        # hold must not be lost. `durable_inserts=False` applies NORMAL to inserts only: after a
        # power loss, a snapshot created shortly before is an orphan that opening the pool deletes
        # (never a row without data). On btrfs that fsync costs about as much as the snapshot ioctl
        # itself (bench/bench_btrfs_snapshot.py), which is why it is offered at all.
        self.durable_inserts = durable_inserts
        path.parent.mkdir(parents=True, exist_ok=True)
        # A catalog that did not exist before may mean a lost one: the agent then refuses to treat
        # stored data as orphans (see NodeAgent), because that would delete every snapshot.
        self.created = not path.exists()
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._db.execute("INSERT OR IGNORE INTO meta VALUES ('generation', '0')")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def warm(self) -> None:
        """Ask the kernel to read the catalog's files into the page cache in the background. A
        transfer calls this when it starts, so that its commit at the end does not wait for a
        read: SQLite appends to the WAL in frames that are not page-aligned, and a cold page is
        read back before it is written (measured: 10 ms of a 130 ms btrfs transfer after the
        page cache had been dropped)."""
        for path in (self.path, self.path.with_name(self.path.name + "-wal")):
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
            except OSError:
                pass
            finally:
                os.close(fd)

    def generation(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key='generation'").fetchone()
        return int(row[0])

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM snapshots").fetchone()[0])

    def logical_bytes(self) -> int:
        with self._lock:
            return int(
                self._db.execute("SELECT COALESCE(SUM(logical_bytes), 0) FROM snapshots").fetchone()[0]
            )

    def _bump(self) -> None:
        self._db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key='generation'")

    def insert_many(self, snaps: Sequence[SnapshotInfo]) -> None:
        """Make several snapshots visible together (one transaction): a node's part of a set."""
        with self._lock:
            if not self.durable_inserts:
                self._db.execute("PRAGMA synchronous=NORMAL")
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    self._db.executemany(
                        "INSERT INTO snapshots VALUES (?,?,?,?,?,?,?,?,?,?,?)", [self._row(s) for s in snaps]
                    )
                    self._bump()
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
            finally:
                if not self.durable_inserts:
                    self._db.execute("PRAGMA synchronous=FULL")

    def remove(self, set_id: str, volume: str) -> bool:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                cur = self._db.execute("DELETE FROM snapshots WHERE set_id=? AND volume=?", (set_id, volume))
                if cur.rowcount:
                    self._bump()
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return bool(cur.rowcount)

    def get(self, set_id: str, volume: str) -> SnapshotInfo | None:
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM snapshots WHERE set_id=? AND volume=?", (set_id, volume)
            ).fetchone()
        return None if row is None else self._snap(row)

    def for_set(self, set_id: str) -> list[SnapshotInfo]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM snapshots WHERE set_id=? ORDER BY volume", (set_id,)
            ).fetchall()
        return [self._snap(r) for r in rows]

    def for_volume(self, volume: str, *, limit: int = -1) -> list[SnapshotInfo]:
        """The snapshots of one volume, newest first (the `limit` newest; -1: all)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM snapshots WHERE volume=? ORDER BY created DESC, set_id DESC LIMIT ?",
                (volume, limit),
            ).fetchall()
        return [self._snap(r) for r in rows]

    def keys(self) -> set[tuple[str, str]]:
        with self._lock:
            return {(r[0], r[1]) for r in self._db.execute("SELECT set_id, volume FROM snapshots")}

    def pages(self, page_size: int) -> Iterator[tuple[int, list[SnapshotInfo]]]:
        """All snapshots in (set_id, volume) order, in pages, each with the generation it was read at."""
        after: tuple[str, str] = ("", "")
        while True:
            with self._lock:
                gen = int(self._db.execute("SELECT value FROM meta WHERE key='generation'").fetchone()[0])
                rows = self._db.execute(
                    "SELECT * FROM snapshots WHERE (set_id, volume) > (?, ?) ORDER BY set_id, volume LIMIT ?",
                    (after[0], after[1], page_size),
                ).fetchall()
            if not rows:
                return
            yield gen, [self._snap(r) for r in rows]
            after = (rows[-1][0], rows[-1][1])
            if len(rows) < page_size:
                return

    def update(self, snaps: Sequence[SnapshotInfo]) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for s in snaps:
                    self._db.execute(
                        "UPDATE snapshots SET expires=?, immutable=?, unlock_at=?, holds=?, labels=? WHERE set_id=? AND volume=?",
                        (
                            _ts(s.expires),
                            s.immutable.value,
                            _ts(s.unlock_at),
                            json.dumps(sorted(s.holds)),
                            json.dumps(dict(s.labels), sort_keys=True),
                            s.set_id,
                            s.volume,
                        ),
                    )
                self._bump()
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    @staticmethod
    def _row(s: SnapshotInfo) -> tuple[object, ...]:
        return (
            s.set_id,
            s.volume,
            s.name,
            _ts(s.created),
            _ts(s.expires),
            json.dumps(dict(s.labels), sort_keys=True),
            s.immutable.value,
            _ts(s.unlock_at),
            json.dumps(sorted(s.holds)),
            s.logical_bytes,
            int(s.quiesced),
        )

    def _snap(self, r: sqlite3.Row | tuple[object, ...]) -> SnapshotInfo:
        set_id, volume, name, created, expires, labels, immutable, unlock_at, holds, logical, quiesced = r
        created_dt = _dt(created)  # type: ignore[arg-type]
        assert created_dt is not None
        return SnapshotInfo(
            set_id=str(set_id),
            name=str(name),
            pool=self.pool,
            volume=str(volume),
            created=created_dt,
            expires=_dt(expires),  # type: ignore[arg-type]
            labels=json.loads(str(labels)),
            immutable=ImmutableState(str(immutable)),
            unlock_at=_dt(unlock_at),  # type: ignore[arg-type]
            holds=frozenset(json.loads(str(holds))),
            logical_bytes=int(str(logical)),
            quiesced=bool(quiesced),
        )
