"""A full system snapshot of 1,000 btrfs subvolumes spread over 4 agent processes on one machine,
through the daemon, against the raw snapshot ioctl on the same filesystem, in one run.

    sudo .venv/bin/python bench/bench_system_snapshot.py [--volumes 1000] [--agents 4] [--runs 3]

Needs root. One btrfs on a loop device under /var/tmp with one pool directory per agent; each
pool holds volumes/N subvolumes (`vms/vmNNNN`, a small file each), one `vm` resource per volume.
Real processes: N x `reconciler agent` (TCP on loopback) and `reconciler daemon` whose config
lists them, with a full system scope bound to a profile whose only slot is in 2099 (so nothing
is scheduled while measuring). Measured:

- system snapshot: `ControlClient.create_set(scope="system:full")` in this process (the CLI's
  request path minus interpreter start-up) until the daemon answers with the complete set:
  one set id, every volume on every node; --runs times, each a new set;
- raw, sequential: BTRFS_IOC_SNAP_CREATE_V2 (read-only) of the same 1,000 subvolumes one after
  the other from one thread, on pre-opened descriptors (the kernel's cost per snapshot);
- raw, 4 threads: the same with one thread per pool, as the agents work in parallel. These
  call ioctl(2) through ctypes, which releases the GIL: `fcntl.ioctl` keeps holding it for
  argument buffers over 1 KiB (the snapshot ioctl's is 4 KiB), so threads calling it run the
  snapshots one at a time (reconciler/backends/btrfs_ioctl.py does; one agent process per pool
  does not suffer from it, several pools in one agent do).

DESIGN.md sets no target for this one: it reports the time and the per-volume cost against the
raw ioctl. Exits 1 if a system snapshot is not complete or its members are not read-only
snapshots, 2 if it cannot run here.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

if __package__ in (None, ""):  # run as a script from a checkout: make `reconciler` and `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_btrfs_snapshot import Processes, cannot_run, loop_btrfs
from reconciler.backends import btrfs_ioctl as ioc
from reconciler.control.client import ControlClient

_DIR = os.O_RDONLY | os.O_DIRECTORY


def make_pools(mnt: Path, agents: int, volumes: int) -> dict[str, list[str]]:
    """pool name -> its volume names; volumes are subvolumes made by the ioctl (fast), each with a
    4 KiB file, spread round-robin over the pools."""
    pools: dict[str, list[str]] = {f"pool{a}": [] for a in range(agents)}
    for a in range(agents):
        (mnt / f"pool{a}" / "vms").mkdir(parents=True)
    fds = {p: os.open(mnt / p / "vms", _DIR) for p in pools}
    try:
        for i in range(volumes):
            pool = f"pool{i % agents}"
            name = f"vm{i:04d}"
            ioc.create_subvolume(fds[pool], name)
            (mnt / pool / "vms" / name / "disk.conf").write_bytes(os.urandom(4096))
            pools[pool].append(f"vms/{name}")
        ioc.sync(fds["pool0"])
    finally:
        for fd in fds.values():
            os.close(fd)
    return pools


def daemon_yaml(mnt: Path, ports: dict[str, int], pools: dict[str, list[str]]) -> str:
    out = ["version: 1", "nodes:"]
    for a, (pool, port) in enumerate(sorted(ports.items())):
        out += [
            f"  n{a}:",
            f'    address: "127.0.0.1:{port}"',
            "    insecure: true",
            "    pools:",
            f"      main: {{type: btrfs, path: {mnt / pool}}}",
        ]
    out.append("resources:")
    for a, (_pool, vols) in enumerate(sorted(pools.items())):
        for v in vols:
            out.append(f"  {v.split('/')[-1]}: {{kind: vm, node: n{a}, volumes: [{v}]}}")
    out += [
        "profiles:",
        "  never-now:",
        "    periods:",
        "      - {name: once, frequency: custom, at: '2099-01-01T00:00:00', retention: 1d}",
        "system_snapshots:",
        "  full: {type: full, profile: never-now}",
    ]
    return "\n".join(out) + "\n"


_libc = ctypes.CDLL(None, use_errno=True)


def snapshot_nogil(src_fd: int, dest_fd: int, name: str) -> None:
    """ioc.snapshot(readonly=True), but through ctypes so that the GIL is released meanwhile."""
    args = ioc._VolArgsV2()
    args.fd = src_fd
    args.flags = ioc.SUBVOL_RDONLY
    args.name = os.fsencode(name)
    if _libc.ioctl(dest_fd, ctypes.c_ulong(ioc.IOC_SNAP_CREATE_V2), ctypes.byref(args)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def raw_snapshots(mnt: Path, pools: dict[str, list[str]], tag: str, *, threads: bool) -> float:
    """Snapshot every volume with the bare ioctl into <pool>/raw-<tag>/ (descriptors opened
    first, not timed); returns the wall time of the ioctls."""
    jobs: dict[str, list[tuple[int, int, str]]] = {}
    for pool, vols in pools.items():
        dest = mnt / pool / f"raw-{tag}"
        dest.mkdir()
        dfd = os.open(dest, _DIR)
        jobs[pool] = [(os.open(mnt / pool / v, _DIR), dfd, v.split("/")[-1]) for v in vols]

    def run(items: list[tuple[int, int, str]]) -> None:
        for src, dst, name in items:
            if threads:
                snapshot_nogil(src, dst, name)
            else:
                ioc.snapshot(src, dst, name, readonly=True)

    started = time.perf_counter()
    if threads:
        ts = [threading.Thread(target=run, args=(items,)) for items in jobs.values()]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    else:
        for items in jobs.values():
            run(items)
    took = time.perf_counter() - started
    for items in jobs.values():
        for src, _dst, _ in items:
            os.close(src)
        os.close(items[0][1])
    return took


def check_members(mnt: Path, s: dict[str, object], volumes: int) -> list[str]:
    members = s.get("members", [])
    assert isinstance(members, list)
    problems = []
    if not s.get("complete") or len(members) != volumes:
        problems.append(f"set {s.get('set_id')}: complete={s.get('complete')} with {len(members)} members")
    for m in members[:: max(1, len(members) // 50)]:  # a sample: every member is the same kind
        pool = f"pool{int(m['node'][1:])}"
        snap = mnt / pool / ".reconciler/btrfs/snapshots" / str(s["set_id"]) / m["volume"] / "@"
        try:
            fd = os.open(snap, _DIR)
        except OSError as exc:
            problems.append(f"{snap}: {exc.strerror}")
            continue
        try:
            if os.fstat(fd).st_ino != ioc.FIRST_FREE_OBJECTID or not ioc.is_readonly(fd):
                problems.append(f"{snap} is not a read-only subvolume")
        finally:
            os.close(fd)
    return problems


def run(work: Path, args: argparse.Namespace) -> int:
    mnt = work / "mnt"
    t = time.perf_counter()
    pools = make_pools(mnt, args.agents, args.volumes)
    print(
        f"{args.volumes} subvolumes in {args.agents} pools made in {time.perf_counter() - t:.1f}s", flush=True
    )
    procs = Processes(work)
    problems: list[str] = []
    try:
        ports = {}
        for a, pool in enumerate(sorted(pools)):
            cfg = work / f"agent-n{a}.yaml"
            cfg.write_text(
                f'node: n{a}\nlisten: "127.0.0.1:0"\ninsecure: true\n'
                f"pools:\n  main: {{type: btrfs, path: {mnt / pool}}}\n"
            )
            ports[pool] = procs.agent(cfg)
        cfg = work / "config.yaml"
        cfg.write_text(daemon_yaml(mnt, ports, pools))
        t = time.perf_counter()
        control = ControlClient(procs.daemon(cfg, work / "state"))
        print(
            f"daemon with {args.volumes} resources on {args.agents} nodes up in {time.perf_counter() - t:.1f}s"
        )
        expires = datetime.now(UTC) + timedelta(days=1)
        system: list[float] = []
        raw_seq: list[float] = []
        raw_par: list[float] = []

        def via_daemon(r: int) -> float:
            started = time.perf_counter()
            s = control.create_set(scope="system:full", request_id=f"run{r}", expires=expires)
            took = time.perf_counter() - started
            problems.extend(check_members(mnt, s, args.volumes))
            return took

        paths: list[tuple[list[float], Callable[[int], float]]] = [
            (system, via_daemon),
            (raw_seq, lambda r: raw_snapshots(mnt, pools, f"seq{r}", threads=False)),
            (raw_par, lambda r: raw_snapshots(mnt, pools, f"par{r}", threads=True)),
        ]
        for r in range(args.runs):
            # every run adds 3 x 1,000 snapshots to the filesystem: rotate who goes first
            for times, measure in paths[r % 3 :] + paths[: r % 3]:
                time.sleep(1)  # let the daemon's pass after a create (it re-lists 4 pools) finish
                times.append(measure(r))
            print(
                f"run {r}: system {system[-1]:.2f}s, raw sequential {raw_seq[-1]:.2f}s, "
                f"raw {args.agents} threads {raw_par[-1]:.2f}s",
                flush=True,
            )
        time.sleep(1)
        st = control.status()
        control.close()
    finally:
        procs.stop()

    n = args.volumes
    sys_s, seq_s, par_s = statistics.median(system), statistics.median(raw_seq), statistics.median(raw_par)
    load = os.getloadavg()[0]
    print()
    print(f"{n} volumes on {args.agents} agents, median of {args.runs} runs (load average {load:.1f}):")
    print(f"{'':48} {'total s':>8} {'per volume ms':>14} {'x raw seq':>10}")
    for label, total in (
        ("system snapshot via the daemon", sys_s),
        ("raw ioctl, sequential, one thread", seq_s),
        (f"raw ioctl, {args.agents} threads (one per pool, GIL released)", par_s),
    ):
        print(f"{label:48} {total:8.2f} {total / n * 1000:14.2f} {total / seq_s:10.2f}")
    print(f"daemon pass after the last run (re-lists the {args.agents} changed pools): "
          f"{float(st.get('last_pass_seconds', 0)):.2f}s")  # fmt: skip
    for p in problems:
        print(f"PROBLEM: {p}")
    return 1 if problems else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--volumes", type=int, default=1000)
    ap.add_argument("--agents", type=int, default=4)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--keep", action="store_true", help="keep the filesystem mounted and the work dir")
    args = ap.parse_args()
    why = cannot_run()
    if why:
        print(f"cannot run: {why}", file=sys.stderr)
        return 2
    with loop_btrfs("bench-system-snapshot-", size_gib=4, keep=args.keep) as work:
        return run(work, args)


if __name__ == "__main__":
    sys.exit(main())
