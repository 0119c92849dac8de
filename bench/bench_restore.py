"""Restore benchmarks, as ratios in one run (exit 1 when a target is missed).

    .venv/bin/python bench/bench_restore.py [--only btrfs|chunkstore] [--sizes-gb 1,10] [--size-mb 960]
                                            [--repeat 3] [--keep]

1. btrfs revert (root, btrfs-progs, loop devices): a pool on a btrfs filesystem in a sparse image
   under /tmp, one volume (a subvolume) per size - 1 GB and 10 GB of real bytes by default, in
   256 MiB files plus a few small ones. Each is snapshotted, changed a little, then reverted over
   the source through `NodeAgent.restore` - the full agent path: safety snapshot, writable snapshot
   of the snapshot into staging, atomic exchange with the live volume, removal of the old tree.
   Each volume is reverted --repeat + 1 times. The first revert removes the volume as it was
   written, with all its data in the page cache, and the kernel evicts those pages inside the
   subvolume delete: that run grows with the cached size and is reported on its own row. The later
   runs (best and median) remove a fresh writable snapshot, as every revert after the first does.
   Baseline: `cp -a --reflink=never` of the same volume on the same filesystem, after the reverts
   (its `sync` is reported apart and not counted). Targets: the revert time is flat in size
   (10 GB / 1 GB at most 1.5x) and at least 10x faster than the copy of the 1 GB volume. When /tmp
   lacks the space for the largest size (every volume, a copy of the largest, headroom), the
   largest is cut to 4 GB and a note says so.

2. chunkstore restore to a new volume of bench/datasets.py's ~1 GB data set (an 800 MiB disk image
   with holes, text-like and random regions, plus 5,000 small files) against `borg extract` and
   `restic restore` of the same data from repositories made in the same run (borg
   `--encryption=none`, default lz4; restic default settings). Each tool runs as its own process,
   timed from its start to its exit: ours opens the agent (catalog, chunk index) and runs
   `NodeAgent.restore(new_volume=...)`, which writes every file and makes the result durable
   (syncfs) before it returns - borg and restic do not sync, and their time is counted without
   one (a `sync` after them is shown for reference). Every run restores into a fresh directory
   after a `sync`; the best of --repeat runs of each tool counts, tools taking turns to go first.
   Every restored tree is checked byte for byte against the data set, and kept until the end (see
   the comment in the loop). Target: at least as fast as both (ratio >= 1.0).

Work directories are under /tmp and removed at the end (unless --keep).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

if __package__ in (None, ""):  # run as a script from a checkout: make `reconciler` and `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.datasets import DEFAULT_SIZE_MB, generate

GB = 1 << 30
MiB = 1 << 20
MB = 1_000_000
TARGET_FLAT = 1.5  # revert time of the largest volume / of the smallest
TARGET_VS_CP = 10.0  # cp time of the smallest volume / its revert time
TARGET_VS_BASELINES = 1.0  # baseline restore time / ours
FALLBACK_GB = 4
HEADROOM = 8 * GB  # left free on /tmp for everybody else
OPTIONS = {"compression": "zstd", "compression_level": 3}


@dataclass
class Check:
    name: str
    value: float
    target: float
    op: str = ">="

    @property
    def met(self) -> bool:
        return self.value >= self.target if self.op == ">=" else self.value <= self.target


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run(cmd, capture_output=True, check=False, **kw)  # type: ignore[call-overload]
    if proc.returncode != 0:
        raise SystemExit(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr.decode(errors='replace')}"
        )
    return proc  # type: ignore[no-any-return]


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def tree_digest(path: Path) -> str:
    """Names, sizes and content of every regular file and symlink (holes read as zeros)."""
    h = hashlib.blake2b()
    for dirpath, dirs, files in os.walk(path):
        dirs.sort()
        for f in sorted(files):
            p = os.path.join(dirpath, f)
            h.update(os.path.relpath(p, path).encode() + b"\0")
            if os.path.islink(p):
                h.update(os.readlink(p).encode())
                continue
            with open(p, "rb") as fh:
                while block := fh.read(4 * MiB):
                    h.update(block)
    return h.hexdigest()


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


# --- 1. btrfs revert ------------------------------------------------------------------------------
def _write_volume(path: Path, size: int) -> None:
    """`size` bytes of real (random, incompressible) data in 256 MiB files, plus a few small files."""
    block = os.urandom(64 * MiB)
    n = 0
    left = size
    i = 0
    while left > 0:
        fsize = min(256 * MiB, left)
        with open(path / f"part{i:04d}.bin", "wb") as fh:
            done = 0
            while done < fsize:
                k = min(len(block), fsize - done)
                # a counter in every 64 MiB piece: no two pieces are the same bytes
                n += 1
                fh.write(n.to_bytes(8, "little") + block[8:k])
                done += k
        left -= fsize
        i += 1
    small = path / "etc"
    small.mkdir()
    for j in range(100):
        (small / f"conf{j:03d}.txt").write_text(f"setting {j} = original\n" * 20)


def bench_btrfs(args: argparse.Namespace, report: Report) -> list[list[str]]:
    if os.geteuid() != 0:
        report.notes.append("btrfs revert: skipped (needs root for the loop device and the mount)")
        return []
    for tool in ("mkfs.btrfs", "btrfs", "mount", "umount", "losetup", "cp"):
        if shutil.which(tool) is None:
            report.notes.append(f"btrfs revert: skipped ({tool} is not installed)")
            return []
    from reconciler.agent.api import CreateSetRequest, SnapshotKey, Target
    from reconciler.agent.core import NodeAgent
    from reconciler.backends.btrfs import BtrfsBackend

    sizes = sorted(int(float(x) * GB) for x in args.sizes_gb.split(","))
    largest = sizes[-1]
    # every volume, a cp copy of the largest one, btrfs metadata
    need = sum(sizes) + largest + 2 * GB
    avail = free_bytes(Path("/tmp")) - HEADROOM
    if need > avail and largest > FALLBACK_GB * GB:
        old = largest
        largest = FALLBACK_GB * GB
        sizes = sorted({s for s in sizes if s < largest} | {largest})
        need = sum(sizes) + largest + 2 * GB
        report.notes.append(
            f"btrfs revert: /tmp has {avail / GB:.1f} GiB free beyond {HEADROOM // GB} GiB headroom, "
            f"{(sum(sizes) + old + 2 * GB) / GB:.0f} GiB needed for {old / GB:.0f} GiB: the largest volume "
            f"is cut to {FALLBACK_GB} GiB"
        )
    if need > avail:
        report.notes.append(
            f"btrfs revert: skipped (needs {need / GB:.0f} GiB on /tmp, {avail / GB:.1f} free)"
        )
        return []

    work = Path(tempfile.mkdtemp(prefix="bench-restore-btrfs-", dir="/tmp"))
    image, mnt = work / "btrfs.img", work / "mnt"
    mnt.mkdir()
    with open(image, "wb") as fh:
        fh.truncate(need + 4 * GB)  # sparse: only what is written takes space
    run(["mkfs.btrfs", "-q", "-f", str(image)])
    run(["mount", "-o", "loop", str(image), str(mnt)])
    rows: list[list[str]] = []
    try:
        root = mnt / "pool"
        root.mkdir()
        agent = NodeAgent("bench", {"main": BtrfsBackend(pool="main", root=root)})
        results: dict[int, tuple[float, float, float, float, float]] = {}
        try:
            for size in sizes:
                name = f"vol{size // GB}g"
                vol = root / name
                run(["btrfs", "subvolume", "create", str(vol)])
                t0 = time.perf_counter()
                _write_volume(vol, size)
                os.sync()
                print(
                    f"btrfs: wrote {size / GB:.0f} GiB volume in {time.perf_counter() - t0:.1f} s", flush=True
                )
                agent.create_set(
                    CreateSetRequest(f"s-{name}", f"s-{name}", (Target("main", name),), datetime.now(UTC))
                )
                want = (vol / "etc" / "conf000.txt").read_text()
                ref = SnapshotKey(f"s-{name}", "main", name)
                reverts: list[float] = []
                for r in range(args.repeat + 1):
                    # a change to revert: a small file and the start of a big one
                    (vol / "etc" / "conf000.txt").write_text(f"changed {r}\n")
                    with open(vol / "part0000.bin", "r+b") as fh:
                        fh.write(os.urandom(MiB))
                    os.sync()
                    reverts.append(timed(partial(agent.restore, ref)))
                    if (vol / "etc" / "conf000.txt").read_text() != want:
                        raise SystemExit(f"btrfs revert of {name} did not restore its content")
                # The first revert removes the volume as written, all of it in the page cache; the
                # later ones remove a volume that is a fresh writable snapshot (little cached).
                hot, steady = reverts[0], reverts[1:]
                os.sync()
                copy = root / f"{name}-copy"
                cp_s = timed(partial(run, ["cp", "-a", "--reflink=never", str(vol), str(copy)]))
                sync_s = timed(os.sync)
                if tree_digest(copy / "etc") != tree_digest(vol / "etc"):
                    raise SystemExit("cp made a different copy")
                shutil.rmtree(copy)
                os.sync()
                results[size] = (min(steady), statistics.median(steady), hot, cp_s, sync_s)
                print(
                    f"btrfs {size / GB:.0f} GiB: first revert {hot * 1000:.0f} ms, then "
                    f"{', '.join(f'{x * 1000:.0f} ms' for x in steady)}; cp {cp_s:.2f} s (+ sync {sync_s:.2f} s)",
                    flush=True,
                )
        finally:
            agent.close()
        for size, (best, med, hot, cp_s, sync_s) in results.items():
            gib = f"{size / GB:.0f} GiB"
            rows.append(
                [
                    f"btrfs revert {gib}",
                    f"{best * 1000:.0f} ms",
                    f"{med * 1000:.0f} ms",
                    f"cp -a --reflink=never: {cp_s:.2f} s (+sync {sync_s:.2f} s)",
                    f"{cp_s / best:.0f}x",
                ]
            )
            rows.append(
                [
                    f"  first revert, {gib} cached",
                    f"{hot * 1000:.0f} ms",
                    "",
                    f"{hot / (size / GB) * 1000:.0f} ms/GiB: the kernel drops the old volume's cached pages",
                    f"{cp_s / hot:.0f}x",
                ]
            )
        small, big = sizes[0], sizes[-1]
        report.notes.append(
            "btrfs revert: the first revert of a volume removes the volume as it was written, all of it in the "
            "page cache, and BTRFS_IOC_SNAP_DESTROY evicts those pages before it returns; that part grows with "
            "the cached size (the 'first revert' rows). The targets use the later reverts, whose old volume "
            "is a fresh writable snapshot."
        )
        if big != small:
            report.checks.append(
                Check(
                    f"btrfs revert {big / GB:.0f} GiB / {small / GB:.0f} GiB time (flat)",
                    results[big][0] / results[small][0],
                    TARGET_FLAT,
                    "<=",
                )
            )
        report.checks.append(
            Check(
                f"btrfs: cp of {small / GB:.0f} GiB / revert of it",
                results[small][3] / results[small][0],
                TARGET_VS_CP,
            )
        )
    finally:
        if run_ok(["umount", str(mnt)]) is False:
            run_ok(["umount", "-l", str(mnt)])
        for line in subprocess.run(
            ["losetup", "-j", str(image)], capture_output=True, text=True, check=False
        ).stdout.splitlines():
            run_ok(["losetup", "-d", line.split(":", 1)[0]])
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return rows


def run_ok(cmd: list[str]) -> bool:
    return subprocess.run(cmd, capture_output=True, check=False).returncode == 0


# --- 2. chunkstore restore to new -----------------------------------------------------------------
def child(args: argparse.Namespace) -> int:
    """One restore, as the agent does it, in its own process (so start-up is counted like the others')."""
    from reconciler.agent.api import SnapshotKey
    from reconciler.agent.core import NodeAgent
    from reconciler.backends.chunkstore import ChunkstoreBackend

    root = Path(args.pool_root)
    agent = NodeAgent("bench", {"main": ChunkstoreBackend(pool="main", root=root, options=OPTIONS)})
    try:
        if args.child == "snapshot":
            from reconciler.agent.api import CreateSetRequest, Target

            res = agent.create_set(CreateSetRequest("s1", "s1", (Target("main", "data"),), datetime.now(UTC)))
            print(json.dumps({"logical_bytes": res.snapshots[0].logical_bytes}))
        else:
            out = agent.restore(SnapshotKey("s1", "main", "data"), new_volume=args.new_volume)
            print(json.dumps({"bytes": out.bytes}))
    finally:
        agent.close()
    return 0


def bench_chunkstore(args: argparse.Namespace, report: Report) -> list[list[str]]:
    for tool in ("borg", "restic"):
        if shutil.which(tool) is None:
            report.notes.append(f"chunkstore restore: skipped ({tool} is not installed)")
            return []
    work = Path(tempfile.mkdtemp(prefix="bench-restore-cs-", dir="/tmp"))
    try:
        return _bench_chunkstore(work, args, report)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def _bench_chunkstore(work: Path, args: argparse.Namespace, report: Report) -> list[list[str]]:
    pool = work / "pool"
    data = pool / "data"
    t0 = time.perf_counter()
    ds = generate(data, size_mb=args.size_mb)
    print(
        f"data set: {ds.total_bytes / MB:.0f} MB ({ds.image_bytes / MB:.0f} MB image, {ds.small_files} small files), "
        f"generated in {time.perf_counter() - t0:.1f} s",
        flush=True,
    )
    want = tree_digest(data)
    me = [sys.executable, str(Path(__file__).resolve()), "--pool-root", str(pool)]
    borg_repo, restic_repo = work / "borg-repo", work / "restic-repo"
    borg_env = dict(
        os.environ, BORG_BASE_DIR=str(work / "borg-base"), BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes"
    )
    restic_env = dict(os.environ, RESTIC_PASSWORD="bench", RESTIC_CACHE_DIR=str(work / "restic-cache"))
    # the repositories (not timed); borg and restic store the absolute path, so both back up `data`
    # relative to the pool directory and extract it under the destination
    run([*me, "--child", "snapshot"])
    run(["borg", "init", "--encryption=none", str(borg_repo)], env=borg_env)
    run(["borg", "create", f"{borg_repo}::s1", "data"], env=borg_env, cwd=pool)
    run(["restic", "init", "--repo", str(restic_repo)], env=restic_env)
    run(["restic", "backup", "--quiet", "--repo", str(restic_repo), "data"], env=restic_env, cwd=pool)

    out_dir = work / "out"
    out_dir.mkdir()
    n = [0]

    def ours() -> Path:
        n[0] += 1
        name = f"r{n[0]}"
        run([*me, "--child", "restore", "--new-volume", name])
        return pool / name

    def borg() -> Path:
        n[0] += 1
        dest = out_dir / f"borg{n[0]}"
        dest.mkdir()
        run(["borg", "extract", f"{borg_repo}::s1"], env=borg_env, cwd=dest)
        return dest / "data"

    def restic() -> Path:
        n[0] += 1
        dest = out_dir / f"restic{n[0]}"
        run(
            ["restic", "restore", "latest", "--repo", str(restic_repo), "--target", str(dest)], env=restic_env
        )
        return dest / "data"

    tools: list[tuple[str, Callable[[], Path]]] = [("ours", ours), ("borg", borg), ("restic", restic)]
    times: dict[str, list[float]] = {t: [] for t, _ in tools}
    cpu: dict[str, list[float]] = {t: [] for t, _ in tools}
    syncs: dict[str, list[float]] = {t: [] for t, _ in tools}
    for i in range(args.repeat):
        order = tools[i % 3 :] + tools[: i % 3]
        for tool, fn in order:
            os.sync()
            c0 = children_cpu()
            t0 = time.perf_counter()
            dest = fn()
            times[tool].append(time.perf_counter() - t0)
            cpu[tool].append(children_cpu() - c0)
            syncs[tool].append(timed(os.sync))
            if i == 0 and tree_digest(dest) != want:
                raise SystemExit(f"{tool}: the restored tree differs from the data set")
            # Restored trees stay until the end: deleting thousands of files just before the next
            # tool creates thousands makes ext4 (without a journal, like many VM images) scan past
            # every recently deleted inode on each create, and the run would time that instead.
        print(
            f"round {i + 1}: " + ", ".join(f"{t} {times[t][-1]:.2f} s" for t, _ in tools),
            flush=True,
        )
    best = {t: min(v) for t, v in times.items()}
    rows = []
    for tool, _ in tools:
        k = times[tool].index(best[tool])
        rows.append(
            [
                f"restore to new: {tool}",
                f"{best[tool]:.2f} s",
                f"{statistics.median(times[tool]):.2f} s",
                f"{ds.total_bytes / MB / best[tool]:.0f} MB/s, cpu {cpu[tool][k]:.2f} s, "
                + (
                    "syncfs included"
                    if tool == "ours"
                    else f"sync after it {syncs[tool][k]:.2f} s (not counted)"
                ),
                "" if tool == "ours" else f"{best[tool] / best['ours']:.2f}x",
            ]
        )
    report.checks.append(Check("chunkstore restore-to-new vs borg extract", best["borg"] / best["ours"], 1.0))
    report.checks.append(
        Check("chunkstore restore-to-new vs restic restore", best["restic"] / best["ours"], 1.0)
    )
    return rows


# --- main ---------------------------------------------------------------------------------------------
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=("btrfs", "chunkstore"), help="run one of the two benchmarks")
    ap.add_argument("--sizes-gb", default="1,10", help="btrfs volume sizes in GiB (default 1,10)")
    ap.add_argument(
        "--size-mb", type=int, default=DEFAULT_SIZE_MB, help="chunkstore data set in MiB (default 960)"
    )
    ap.add_argument("--repeat", type=int, default=3, help="runs per measurement; the best counts (default 3)")
    ap.add_argument("--keep", action="store_true", help="keep the work directories under /tmp")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--pool-root", help=argparse.SUPPRESS)
    ap.add_argument("--new-volume", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)

    report = Report()
    rows: list[list[str]] = []
    load0 = os.getloadavg()[0]
    if args.only in (None, "btrfs"):
        rows += bench_btrfs(args, report)
    if args.only in (None, "chunkstore"):
        rows += bench_chunkstore(args, report)
    load1 = os.getloadavg()[0]

    print()
    head = ["measurement", "best", "median", "baseline / detail", "baseline/ours"]
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    print(f"\nload average before/after: {load0:.2f} / {load1:.2f} ({os.cpu_count()} CPUs)")
    for note in report.notes:
        print(f"note: {note}")
    print()
    for c in report.checks:
        print(f"{c.name:<52} {c.value:8.2f}x  (target {c.op} {c.target}x)  {'met' if c.met else 'MISSED'}")
    if not report.checks:
        print("nothing was measured")
        return 2
    return 0 if all(c.met for c in report.checks) else 1


if __name__ == "__main__":
    sys.exit(main())
