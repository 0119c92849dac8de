"""btrfs backend: volumes are subvolumes, snapshots are read-only subvolume snapshots.

On-disk layout (under the pool root):

    <root>/<volume>                                      live volumes: subvolumes, names may be nested
    <root>/.reconciler/btrfs/snapshots/                  the snapshot store: itself a subvolume
    <root>/.reconciler/btrfs/snapshots/<set_id>/<volume>/@   one read-only snapshot per (set, volume)

The snapshot is the leaf `@` below a directory path that spells the volume name. `@` cannot be a
volume segment (segments start with a letter, digit or '_'), so the snapshots of a volume and of a
volume nested in it (`vms/web01` and `vms/web01/disk0`) never collide: had the snapshot itself been
`<set_id>/vms/web01`, it would be read-only and `<set_id>/vms/web01/disk0` could not be created in it.
The store is its own subvolume so that discovering volumes (a search of the root tree for the
children of the pool's subvolume) does not have to page through every snapshot.

Crash safety: a snapshot is created directly at its final name by BTRFS_IOC_SNAP_CREATE_V2 with
BTRFS_SUBVOL_RDONLY. The kernel creates the subvolume, its directory entry and its read-only flag
in one transaction and returns only after committing it, so after a crash the snapshot either
exists complete and read-only, or not at all; a staging name plus rename would add a second
transaction and buy nothing. A snapshot received from another site (replication/btrfs.py) is
received under `snapshots/.receiving/<dir>/@` and committed by renaming `<dir>` into the layout,
then `sync`; until its catalog row exists it is an orphan like (a). What a crash can leave is (a) a snapshot the catalog never recorded
(crash between the ioctl and the catalog insert) and (b) empty directories of the layout; `open`
deletes both. `drop` runs after the catalog row is gone; if a crash loses the uncommitted delete,
the snapshot comes back as an orphan and `open` deletes it again.

Needs root (CAP_SYS_ADMIN) for the tree search and inode lookup ioctls.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

from ..domain import SET_ID_RE, valid_volume_name
from ..errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PathEscapes,
    PermissionDenied,
    StorageFull,
)
from ..fsutil import copy_tree, rename_noreplace
from . import btrfs_ioctl as ioc
from .base import (
    Backend,
    FileEntry,
    GcResult,
    ProgressEvent,
    ProgressFn,
    StoredSnapshot,
    VolumeEntry,
    no_progress,
)

log = logging.getLogger(__name__)

SNAPSHOT_LEAF = "@"
# Received subvolumes wait here (inside the snapshots subvolume, so that committing one is a rename).
RECEIVING_DIR = ".receiving"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_CHUNK = 1 << 20


class BtrfsBackend(Backend):
    """Options:
    - `logical_bytes`: "none" (default) or "walk". Counting a volume's bytes means walking every
      file, which would turn an O(1) snapshot into an O(files) one; by default snapshots report 0.
    """

    kind = "btrfs"

    def __init__(self, *, pool: str, root: Path, options: Mapping[str, object] | None = None) -> None:
        super().__init__(pool=pool, root=root, options=options)
        self.store_dir = self.meta_dir / "btrfs"
        self.snapshots_dir = self.store_dir / "snapshots"
        self.receive_dir = self.snapshots_dir / RECEIVING_DIR
        size_mode = self.options.get("logical_bytes", "none")
        if size_mode not in ("none", "walk"):
            raise InvalidArgument(
                f"pool {pool}: option logical_bytes must be 'none' or 'walk', not {size_mode!r}"
            )
        self._walk_sizes = size_mode == "walk"

    # --- lifecycle -------------------------------------------------------------------------
    def open(self, known: set[tuple[str, str]]) -> None:
        self._check_filesystem()
        self.meta_dir.mkdir(parents=True, exist_ok=True)
        self.store_dir.mkdir(exist_ok=True)
        if not os.path.lexists(self.snapshots_dir):
            with _dirfd(self.store_dir) as fd:
                self._call(
                    lambda: ioc.create_subvolume(fd, self.snapshots_dir.name),
                    f"creating {self.snapshots_dir}",
                )
        elif self.snapshots_dir.is_symlink() or not self.snapshots_dir.is_dir():
            raise FailedPrecondition(f"pool {self.pool}: {self.snapshots_dir} is not a directory")
        self.staging_dir.mkdir(exist_ok=True)
        # Staging holds only half-done work of a previous run (materialized restores/clones).
        for entry in sorted(self.staging_dir.iterdir()):
            log.info("pool %s: removing staging leftover %s", self.pool, entry)
            self.remove_volume_tree(entry)
        if os.path.lexists(self.receive_dir):
            for entry in sorted(self.receive_dir.iterdir()):
                log.info("pool %s: removing an unfinished receive %s", self.pool, entry)
                self.remove_volume_tree(entry)
            os.rmdir(self.receive_dir)
        orphans = 0
        snaps, junk = self._scan()
        for key, path in sorted(snaps.items()):
            if key not in known:
                log.warning(
                    "pool %s: removing snapshot %s/%s that the catalog does not list", self.pool, *key
                )
                self.remove_volume_tree(path)
                orphans += 1
        for path in junk:
            log.warning("pool %s: removing %s: not part of the snapshot store layout", self.pool, path)
            self.remove_volume_tree(path)
        self._prune_empty_dirs(self.snapshots_dir)
        if orphans:
            log.info("pool %s: removed %d orphaned snapshot(s)", self.pool, orphans)

    def _check_filesystem(self) -> None:
        try:
            with _dirfd(self.root) as fd:
                ioc.subvolume_id(fd)
        except FileNotFoundError:
            raise NotFound(f"pool {self.pool}: root {self.root} does not exist") from None
        except OSError as exc:
            if exc.errno in (errno.ENOTTY, errno.EINVAL, errno.EOPNOTSUPP):
                raise FailedPrecondition(
                    f"pool {self.pool}: {self.root} is not on a btrfs filesystem"
                ) from None
            if exc.errno == errno.EPERM:
                raise PermissionDenied(
                    f"pool {self.pool}: the btrfs backend needs root (CAP_SYS_ADMIN) for its ioctls"
                ) from None
            raise

    # --- layout -------------------------------------------------------------------------------
    def snapshot_path(self, set_id: str, volume: str) -> Path:
        """Where the read-only snapshot subvolume of (set_id, volume) lives (for send/receive)."""
        _check_key(set_id, volume)
        return self.snapshots_dir / set_id / volume / SNAPSHOT_LEAF

    def _scan(self) -> tuple[dict[tuple[str, str], Path], list[Path]]:
        """Snapshots in the store by key, and entries that do not belong to the layout."""
        snaps: dict[tuple[str, str], Path] = {}
        junk: list[Path] = []
        try:
            sets = list(os.scandir(self.snapshots_dir))
        except FileNotFoundError:
            return snaps, junk
        for s in sets:
            if s.name == RECEIVING_DIR and s.is_dir(follow_symlinks=False):
                continue  # receives in progress (open() empties it)
            if not (SET_ID_RE.match(s.name) and s.is_dir(follow_symlinks=False)):
                junk.append(Path(s.path))
                continue
            stack = [(Path(s.path), "")]
            while stack:
                directory, volume = stack.pop()
                with os.scandir(directory) as it:
                    entries = list(it)
                for e in entries:
                    path = Path(e.path)
                    if e.name == SNAPSHOT_LEAF and volume and e.is_dir(follow_symlinks=False):
                        snaps[(s.name, volume)] = path
                    elif e.is_dir(follow_symlinks=False) and valid_volume_name(e.name):
                        stack.append((path, f"{volume}/{e.name}" if volume else e.name))
                    else:
                        junk.append(path)
        return snaps, junk

    def _prune_empty_dirs(self, directory: Path, *, top: bool = True) -> bool:
        """Remove empty plain directories of the layout below `directory` (never looking inside a
        snapshot); True if `directory` itself was removed."""
        empty = True
        with os.scandir(directory) as it:
            entries = list(it)
        for e in entries:
            if e.name == SNAPSHOT_LEAF or not e.is_dir(follow_symlinks=False):
                empty = False
            elif not self._prune_empty_dirs(Path(e.path), top=False):
                empty = False
        if empty and not top:
            try:
                os.rmdir(directory)
                return True
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
        return False

    # --- volumes -------------------------------------------------------------------------------
    def _open_volume(self, volume: str) -> int:
        """An fd on the live subvolume, after checking it is one and still inside the pool."""
        path = self.volume_path(volume)
        try:
            fd = os.open(path, _DIR_FLAGS)
        except FileNotFoundError:
            raise NotFound(f"pool {self.pool}: volume {volume!r} does not exist at {path}") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise PathEscapes(f"pool {self.pool}: volume {volume!r}: {path} is a symlink") from None
            raise
        try:
            # volume_path checked the path; this checks what we actually opened (no swap in between).
            real = os.readlink(f"/proc/self/fd/{fd}")
            real_root = os.path.realpath(self.root)
            if os.path.commonpath([real_root, real]) != real_root:
                raise PathEscapes(
                    f"pool {self.pool}: volume {volume!r} resolves to {real}, outside {real_root}"
                )
            if os.fstat(fd).st_ino != ioc.FIRST_FREE_OBJECTID:
                raise FailedPrecondition(
                    f"pool {self.pool}: volume {volume!r} at {path} is a plain directory, not a btrfs subvolume; "
                    "the btrfs backend snapshots subvolumes only (create one with `btrfs subvolume create` "
                    "and move the data into it)"
                )
        except BaseException:
            os.close(fd)
            raise
        return fd

    def list_volumes(self, names: Sequence[str] | None = None) -> list[VolumeEntry]:
        """Named volumes that exist (a plain directory too, so that snapshotting it fails loudly
        instead of the volume looking missing); without names, every subvolume under the root."""
        if names is None:
            names = self._discover()
        out = []
        for name in names:
            try:
                path = self.volume_path(name)
            except NotFound:
                continue
            out.append(VolumeEntry(name, _volume_size(path)))
        return out

    def _discover(self) -> list[str]:
        """Pool-relative names of all subvolumes under the root, from the root tree's back refs
        (cost grows with the number of subvolumes, not of files)."""
        with _dirfd(self.root) as fd:
            own_id = ioc.subvolume_id(fd)
            ino = os.fstat(fd).st_ino
            # where the root sits inside its subvolume ('' if the root is the subvolume itself)
            prefix = "" if ino == ioc.FIRST_FREE_OBJECTID else ioc.ino_lookup(fd, own_id, ino)[1]
            found: list[str] = []
            queue: list[tuple[int, str, str]] = [(own_id, prefix, "")]
            while queue:
                subvol, prefix, base = queue.pop()
                dirs: dict[int, str] = {}
                for ref in ioc.child_subvolumes(fd, subvol):
                    if ref.dirid not in dirs:
                        dirs[ref.dirid] = ioc.ino_lookup(fd, subvol, ref.dirid)[1]
                    inside = dirs[ref.dirid] + ref.name
                    if not inside.startswith(prefix):
                        continue  # a subvolume of the same parent, but outside the pool root
                    name = base + inside[len(prefix) :]
                    if not valid_volume_name(name):
                        continue  # hidden (.reconciler) or not a name we can address
                    found.append(name)
                    queue.append((ref.subvol_id, "", name + "/"))
        return sorted(found)

    def remove_volume_tree(self, path: Path) -> None:
        """Delete a subvolume (or a directory) and every subvolume nested in it, deepest first.
        A subvolume delete is O(1) for the caller; btrfs frees the blocks in the background."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(path)
            return
        with _dirfd(path) as fd:
            try:
                own_id = ioc.subvolume_id(fd)
            except OSError as exc:
                if exc.errno in (errno.ENOTTY, errno.EINVAL, errno.EOPNOTSUPP):
                    shutil.rmtree(path)  # not btrfs: a plain tree
                    return
                raise
            is_subvol = st.st_ino == ioc.FIRST_FREE_OBJECTID
            prefix = "" if is_subvol else ioc.ino_lookup(fd, own_id, st.st_ino)[1]
            nested: list[str] = []  # paths relative to `path`
            queue: list[tuple[int, str, str]] = [(own_id, prefix, "")]
            while queue:
                subvol, prefix, base = queue.pop()
                for ref in ioc.child_subvolumes(fd, subvol):
                    inside = ioc.ino_lookup(fd, subvol, ref.dirid)[1] + ref.name
                    if inside.startswith(prefix):
                        rel = base + inside[len(prefix) :]
                        nested.append(rel)
                        queue.append((ref.subvol_id, "", rel + "/"))
        for rel in sorted(nested, key=lambda r: r.count("/"), reverse=True):
            _destroy(path / rel)
        if is_subvol:
            _destroy(path)
        else:
            shutil.rmtree(path)

    def make_empty_volume(self, path: Path) -> None:
        with _dirfd(path.parent) as parent:
            self._call(lambda: ioc.create_subvolume(parent, path.name), f"creating subvolume {path}")

    def takes_as_volume(self, path: Path) -> bool:
        try:
            with _dirfd(path) as fd:
                if os.fstat(fd).st_ino != ioc.FIRST_FREE_OBJECTID:
                    return False
                ioc.subvolume_id(fd)  # fails off btrfs, where inode 256 means nothing
        except OSError:
            return False
        return True

    # --- snapshots -------------------------------------------------------------------------------
    def snapshot(self, *, set_id: str, volume: str, progress: ProgressFn = no_progress) -> StoredSnapshot:
        _check_key(set_id, volume)
        parent = self.snapshots_dir / set_id / volume
        src = self._open_volume(volume)

        def create() -> None:
            with _dirfd(parent) as dest:
                ioc.snapshot(src, dest, SNAPSHOT_LEAF, readonly=True)

        try:
            self._into_layout(parent, create, f"snapshot of volume {volume!r} in set {set_id}", parent)
        finally:
            os.close(src)
        progress(ProgressEvent("snapshot", 1, 1, unit="snapshots", message=volume))
        return StoredSnapshot(_volume_size(parent / SNAPSHOT_LEAF) if self._walk_sizes else 0)

    def _into_layout(self, directory: Path, place: Callable[[], None], what: str, at: Path) -> None:
        """Create the layout `directory`, then `place` the snapshot at `at` in it. A concurrent
        drop may prune the fresh directories in between: then they are created again (three
        tries). `place` raising EEXIST means the snapshot is there already: AlreadyExists."""
        for attempt in range(3):
            try:
                os.makedirs(directory, exist_ok=True)
                place()
                return
            except FileNotFoundError as exc:
                if attempt == 2:
                    self._raise(exc, what)
            except OSError as exc:
                if exc.errno == errno.EEXIST:
                    raise AlreadyExists(f"pool {self.pool}: {what} already exists at {at}") from None
                self._raise(exc, what)

    def adopt_received(self, holder: Path, *, set_id: str, volume: str) -> None:
        """Make a received read-only subvolume the snapshot (set_id, volume): `holder` is a
        directory under receive_dir whose only entry is the subvolume SNAPSHOT_LEAF, and it is
        renamed into the layout, so the commit moves no data and starts no transaction of its own.
        (btrfs refuses to move a read-only subvolume itself to another directory, EROFS; the
        directory holding it is a plain directory of the snapshots subvolume.) Not durable until
        sync()."""
        _check_key(set_id, volume)
        if holder.parent != self.receive_dir:
            raise InvalidArgument(f"pool {self.pool}: {holder} is not a receive of this pool")
        final = self.snapshots_dir / set_id / volume

        def move() -> None:
            try:
                rename_noreplace(holder, final, fsync=False)  # sync() follows
            except FailedPrecondition:  # what rename_noreplace makes of EEXIST
                raise FileExistsError(errno.EEXIST, "exists", str(final)) from None

        self._into_layout(final.parent, move, f"received {set_id}/{volume}", final)

    def sync(self) -> None:
        """Write out everything the pool's filesystem holds dirty and commit its transaction."""
        with _dirfd(self.snapshots_dir) as fd:
            self._call(lambda: ioc.sync(fd), f"syncing {self.snapshots_dir}")

    def drop(self, *, set_id: str, volume: str) -> None:
        path = self.snapshot_path(set_id, volume)
        try:
            with _dirfd(path.parent) as fd:
                ioc.destroy_subvolume(fd, SNAPSHOT_LEAF)
        except FileNotFoundError:
            pass
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EINVAL):
                self.remove_volume_tree(path)  # holds nested subvolumes, or is no subvolume at all
            else:
                self._raise(exc, f"deleting {path}")
        # the now empty directories of the layout, up to the store
        d = path.parent
        while d != self.snapshots_dir:
            try:
                os.rmdir(d)
            except OSError:
                break
            d = d.parent

    def stored_keys(self) -> set[tuple[str, str]]:
        return set(self._scan()[0])

    def materialize(
        self,
        *,
        set_id: str,
        volume: str,
        dest: Path,
        paths: Sequence[str] | None = None,
        progress: ProgressFn = no_progress,
    ) -> int:
        """Full: a writable snapshot of the snapshot (instant, shares every block; returns 0 bytes
        written). With `paths`: a new subvolume holding only those paths, copied with reflinks
        (`cp -a --reflink=always`: ownership, modes, times, xattrs, hard links kept); returns the
        logical bytes of the regular files copied."""
        snap = self.snapshot_path(set_id, volume)
        rels = None if paths is None else _normalize_paths(paths)
        if rels == [""]:
            rels = None  # the whole volume
        if os.path.lexists(dest):
            raise AlreadyExists(f"pool {self.pool}: {dest} already exists")
        try:
            src = os.open(snap, _DIR_FLAGS)
        except FileNotFoundError:
            raise NotFound(f"pool {self.pool}: no stored snapshot of {volume!r} in set {set_id}") from None
        try:
            if rels is not None:
                for rel in rels:  # refuse bad paths before creating anything
                    _resolve_inside(snap, rel)
            try:
                parent = os.open(dest.parent, _DIR_FLAGS)
            except FileNotFoundError:
                raise NotFound(f"pool {self.pool}: {dest.parent} does not exist") from None
            try:
                if rels is None:
                    self._call(
                        lambda: ioc.snapshot(src, parent, dest.name, readonly=False), f"creating {dest}"
                    )
                    progress(ProgressEvent("materialize", 1, 1, unit="volumes", message=str(dest)))
                    return 0
                self._call(lambda: ioc.create_subvolume(parent, dest.name), f"creating {dest}")
            finally:
                os.close(parent)
        finally:
            os.close(src)
        assert rels is not None
        try:
            written = self._copy_paths(snap, dest, rels, progress)
            with _dirfd(dest) as fd:
                ioc.sync(fd)  # durable on return, like the full materialize (whose ioctl commits)
        except BaseException:
            self.remove_volume_tree(dest)
            raise
        return written

    def _copy_paths(self, snap: Path, dest: Path, rels: list[str], progress: ProgressFn) -> int:
        written = 0
        made_dirs: list[str] = []  # parents created in dest, given the snapshot's attributes at the end
        for i, rel in enumerate(rels):
            src = _resolve_inside(snap, rel)
            parts = rel.split("/")
            for depth in range(1, len(parts)):
                sub = "/".join(parts[:depth])
                if not (dest / sub).exists():
                    os.mkdir(dest / sub)
                    made_dirs.append(sub)
            copy_tree(src, dest / rel, reflink="always", what=f"pool {self.pool}: copying {rel} into {dest}")
            written += _regular_bytes(src)
            progress(ProgressEvent("materialize", i + 1, len(rels), unit="paths", message=rel))
        for sub in [*reversed(made_dirs), ""]:
            _copy_attrs(snap / sub if sub else snap, dest / sub if sub else dest)
        return written

    def list_files(self, *, set_id: str, volume: str, prefix: str = "") -> Iterator[FileEntry]:
        snap = self.snapshot_path(set_id, volume)
        if not os.path.lexists(snap):
            raise NotFound(f"pool {self.pool}: no stored snapshot of {volume!r} in set {set_id}")
        rels = _normalize_paths([prefix]) if prefix else [""]
        rel = rels[0]
        top = _resolve_inside(snap, rel) if rel else snap
        st = os.lstat(top)
        if rel and not stat.S_ISDIR(st.st_mode):
            entry = _file_entry(rel, st)
            if entry is not None:
                yield entry
            return
        yield from _walk_entries(top, rel)

    def verify(self, keys: Iterable[tuple[str, str]] | None, progress: ProgressFn = no_progress) -> list[str]:
        """Checks that each snapshot exists, is a read-only subvolume, and that every file reads
        back. Reads bypass the page cache (cached pages are dropped first), so btrfs checks the
        data checksums of what is on disk. Not a scrub: metadata and the second copy of DUP/RAID
        profiles are not checked (`btrfs scrub` does that for the whole filesystem)."""
        stored = self._scan()[0]
        todo = sorted(stored) if keys is None else sorted(set(keys))
        problems: list[str] = []
        for i, (set_id, volume) in enumerate(todo):
            where = f"snapshot {set_id}/{volume}"
            progress(ProgressEvent("verify", i, len(todo), unit="snapshots", message=where))
            path = stored.get((set_id, volume))
            if path is None:
                problems.append(f"{where}: missing from the snapshot store")
                continue
            try:
                with _dirfd(path) as fd:
                    if os.fstat(fd).st_ino != ioc.FIRST_FREE_OBJECTID:
                        problems.append(f"{where}: {path} is not a btrfs subvolume")
                    elif not ioc.is_readonly(fd):
                        problems.append(
                            f"{where}: {path} is writable (its read-only flag was cleared); "
                            "its content may differ from what was snapshotted"
                        )
            except OSError as exc:
                problems.append(f"{where}: cannot open {path}: {exc.strerror}")
                continue
            problems.extend(f"{where}: {p}" for p in _read_tree(path))
        progress(ProgressEvent("verify", len(todo), len(todo), unit="snapshots"))
        return problems

    def collect_garbage(self, progress: ProgressFn = no_progress) -> GcResult:
        """btrfs frees the blocks of deleted subvolumes by itself (cleaner thread); we only commit
        the transaction so the deletes are durable. The freed amount is not known here: (0, 0)."""
        with _dirfd(self.snapshots_dir) as fd:
            self._call(lambda: ioc.sync(fd), "committing deleted snapshots")
        progress(ProgressEvent("gc", 1, 1, unit="steps", message="committed"))
        return GcResult(0, 0)

    def unique_bytes(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], int]:
        """Exclusive bytes from btrfs qgroups (as of the last commit) when quotas are enabled and
        consistent; otherwise 0 for every key, since without qgroups btrfs cannot tell what a
        snapshot shares without walking its extents."""
        keys = list(keys)
        out = dict.fromkeys(keys, 0)
        if not keys:
            return out
        with _dirfd(self.snapshots_dir) as fd:
            state = ioc.qgroups(fd)
        if state is None:
            return out
        if not state.trustworthy:
            log.warning(
                "pool %s: btrfs qgroups are rescanning, inconsistent or simple; unique bytes unknown",
                self.pool,
            )
            return out
        for key in keys:
            try:
                with _dirfd(self.snapshot_path(*key)) as fd:
                    out[key] = state.exclusive.get(ioc.subvolume_id(fd), 0)
            except (FileNotFoundError, NotADirectoryError):
                continue
        return out

    def stored_bytes(self) -> int:
        """Used bytes of the whole filesystem. Snapshots share their blocks with the live volumes,
        so without qgroups there is no separate number for the snapshot store."""
        st = os.statvfs(self.root)
        return (st.f_blocks - st.f_bfree) * st.f_frsize

    # --- errors -------------------------------------------------------------------------------
    def _call(self, fn: Callable[[], None], what: str) -> None:
        try:
            fn()
        except OSError as exc:
            self._raise(exc, what)

    def _raise(self, exc: OSError, what: str) -> NoReturn:
        msg = f"pool {self.pool}: {what}: {exc.strerror or exc}"
        e = exc.errno
        if e in (errno.ENOSPC, errno.EDQUOT):
            raise StorageFull(msg) from exc
        if e == errno.EEXIST:
            raise AlreadyExists(msg) from exc
        if e in (errno.EPERM, errno.EACCES):
            raise PermissionDenied(msg) from exc
        if e == errno.EXDEV:
            raise FailedPrecondition(f"{msg} (not on the pool's btrfs filesystem)") from exc
        if e in (errno.ENOTTY, errno.EOPNOTSUPP):
            raise FailedPrecondition(f"{msg} (not a btrfs filesystem)") from exc
        if e in (errno.EROFS, errno.ETXTBSY, errno.EBUSY):
            raise FailedPrecondition(msg) from exc
        raise exc


# --- helpers -------------------------------------------------------------------------------------
@contextmanager
def _dirfd(path: Path | str) -> Iterator[int]:
    """An O_NOFOLLOW directory fd, closed on exit."""
    fd = os.open(path, _DIR_FLAGS)
    try:
        yield fd
    finally:
        os.close(fd)


def _check_key(set_id: str, volume: str) -> None:
    if not SET_ID_RE.match(set_id):
        raise InvalidArgument(f"set id {set_id!r} is not valid (letters, digits and ._:@+- ; at most 200)")
    if not valid_volume_name(volume):
        raise PathEscapes(f"volume {volume!r} is not a pool-relative path of safe segments")


def _destroy(path: Path) -> None:
    with _dirfd(path.parent) as fd:
        try:
            ioc.destroy_subvolume(fd, path.name)
        except FileNotFoundError:
            pass


def _normalize_paths(paths: Sequence[str]) -> list[str]:
    """Volume-relative '/'-separated paths, sorted, without duplicates or paths covered by another
    one; '' stands for the whole volume. Refuses absolute paths and '..'."""
    out: set[str] = set()
    for p in paths:
        if p.startswith("/") or "\0" in p:
            raise PathEscapes(f"path {p!r} must be relative to the volume root")
        segs = [s for s in p.split("/") if s not in ("", ".")]
        if ".." in segs:
            raise PathEscapes(f"path {p!r} contains '..'; paths must stay inside the volume")
        out.add("/".join(segs))
    if "" in out:
        return [""]
    kept: list[str] = []
    for p in sorted(out):
        if not any(p.startswith(k + "/") for k in kept):
            kept.append(p)
    return kept


def _resolve_inside(snap: Path, rel: str) -> Path:
    """snap/rel, refusing a symlink anywhere but the last component (that one is copied as a link)."""
    cur = snap
    parts = rel.split("/") if rel else []
    for i, seg in enumerate(parts):
        cur = cur / seg
        try:
            st = os.lstat(cur)
        except FileNotFoundError:
            raise NotFound(f"{rel!r} does not exist in the snapshot") from None
        last = i == len(parts) - 1
        if not last and stat.S_ISLNK(st.st_mode):
            raise PathEscapes(f"path {rel!r}: {'/'.join(parts[: i + 1])} is a symlink; refusing to follow it")
        if not last and not stat.S_ISDIR(st.st_mode):
            raise NotFound(
                f"{rel!r} does not exist in the snapshot ({'/'.join(parts[: i + 1])} is not a directory)"
            )
    return cur


def _file_entry(rel: str, st: os.stat_result) -> FileEntry | None:
    if stat.S_ISREG(st.st_mode):
        kind = "file"
    elif stat.S_ISDIR(st.st_mode):
        kind = "dir"
    elif stat.S_ISLNK(st.st_mode):
        kind = "symlink"
    else:
        return None  # devices, fifos, sockets: not listed
    return FileEntry(rel, kind, st.st_size if kind != "dir" else 0, stat.S_IMODE(st.st_mode), st.st_mtime)


def _walk_entries(top: Path, rel: str) -> Iterator[FileEntry]:
    """Depth-first, names sorted: a directory comes right before its content."""

    def entries(directory: Path | str, base: str) -> Iterator[tuple[os.DirEntry[str], str]]:
        with os.scandir(directory) as it:
            found = sorted(it, key=lambda e: e.name)
        return iter([(e, f"{base}/{e.name}" if base else e.name) for e in found])

    stack = [entries(top, rel)]
    while stack:
        item = next(stack[-1], None)
        if item is None:
            stack.pop()
            continue
        e, r = item
        entry = _file_entry(r, e.stat(follow_symlinks=False))
        if entry is None:
            continue
        yield entry
        if entry.kind == "dir":
            stack.append(entries(e.path, r))


def _volume_size(path: Path) -> int:
    """Bytes of the regular files a snapshot of `path` would hold: nested subvolumes are not part
    of it (a snapshot shows them as empty directories)."""
    total = 0
    stack = [str(path)]
    while stack:
        d = stack.pop()
        try:
            it = os.scandir(d)
        except OSError:
            continue
        with it:
            for e in it:
                try:
                    st = e.stat(follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode):
                    total += st.st_size
                elif stat.S_ISDIR(st.st_mode) and st.st_ino != ioc.FIRST_FREE_OBJECTID:
                    stack.append(e.path)
    return total


def _regular_bytes(path: Path) -> int:
    st = os.lstat(path)
    if stat.S_ISREG(st.st_mode):
        return st.st_size
    if stat.S_ISDIR(st.st_mode):
        return _volume_size(path)
    return 0


def _copy_attrs(src: Path, dst: Path) -> None:
    st = os.lstat(src)
    os.chown(dst, st.st_uid, st.st_gid, follow_symlinks=False)
    os.chmod(dst, stat.S_IMODE(st.st_mode))
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def _read_tree(top: Path) -> Iterator[str]:
    """Read every regular file under `top` from disk; one line per error, naming the path."""
    stack = [top]
    while stack:
        d = stack.pop()
        try:
            with os.scandir(d) as it:
                entries = list(it)
        except OSError as exc:
            yield f"cannot list {d}: {exc.strerror}"
            continue
        for e in entries:
            try:
                st = e.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    stack.append(Path(e.path))
                elif stat.S_ISREG(st.st_mode):
                    _read_file(e.path)
            except OSError as exc:
                yield f"read error at {e.path}: {exc.strerror or exc}"


def _read_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        # Cached pages would be served without a checksum check: drop them (the snapshot is
        # read-only, so they are clean, and its page cache is not the live volume's).
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        while os.read(fd, _READ_CHUNK):
            pass
    finally:
        os.close(fd)
