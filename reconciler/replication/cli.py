"""`reconciler sync`: queue a set for an offsite target by hand (with a progress bar on --wait), or
bring a set back from a target (--back); and the offsite part of `reconciler status`."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from typing import Any

import grpc

from ..durations import format_duration, parse_duration
from ..errors import InvalidArgument, ReconcilerError, Unavailable
from ..syncplan import SENDING_NOW
from ..transport.status import from_rpc_error
from ..v1 import sync_pb2 as spb
from ..v1 import sync_pb2_grpc as spb_grpc
from .progress import human_rate


def _stub(ns: argparse.Namespace) -> tuple[spb_grpc.SyncStub, Any]:
    from ..cli import _control

    control = _control(ns)
    if not control.socket.exists():
        raise Unavailable(
            f"the daemon is not running: no control socket at {control.socket} "
            "(start it with `reconciler daemon -c FILE`, or pass --socket / RECONCILER_STATE_DIR)"
        )
    return spb_grpc.SyncStub(control.channel), control


def _human(n: float) -> str:
    v = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if v < 1024 or unit == "TiB":
            return f"{v:.0f} {unit}" if unit == "B" else f"{v:.1f} {unit}"
        v /= 1024
    return f"{v:.1f} TiB"


def _eta(seconds: float) -> str:
    if seconds < 0:
        return "--"
    return format_duration_short(seconds)


def format_duration_short(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


class Bar:
    """A one-line progress bar on stderr (a line every few seconds when it is not a terminal)."""

    WIDTH = 24

    def __init__(self, label: str) -> None:
        self.label = label
        self.tty = sys.stderr.isatty()
        self.last = 0.0
        self.shown = False

    def line(self, p: Any) -> str:
        total = p.total_bytes
        frac = min(1.0, p.wire_bytes / total) if total else 0.0
        filled = int(frac * self.WIDTH)
        bar = "#" * filled + "-" * (self.WIDTH - filled) if total else "?" * self.WIDTH
        pct = f"{frac * 100:5.1f}%" if total else "  ?  "
        vols = f" vol {p.volumes_done}/{p.volumes_total}" if p.volumes_total > 1 else ""
        return (
            f"{self.label} [{bar}] {pct} {p.phase}{vols}  checked {_human(p.checked_bytes)}  "
            f"scanned {_human(p.scanned_bytes)}  sent {_human(p.sent_bytes)}  wire {_human(p.wire_bytes)}  "
            f"{human_rate(p.rate_bps)}  ETA {_eta(p.eta_seconds)}"
        )

    def update(self, p: Any) -> None:
        now = time.monotonic()
        if self.tty:
            sys.stderr.write("\r\x1b[K" + self.line(p))
            sys.stderr.flush()
            self.shown = True
        elif now - self.last >= 2.0:
            self.last = now
            print(self.line(p), file=sys.stderr, flush=True)

    def note(self, text: str) -> None:
        self.done()
        print(f"{self.label}: {text}", file=sys.stderr, flush=True)

    def done(self) -> None:
        if self.tty and self.shown:
            sys.stderr.write("\n")
            sys.stderr.flush()
            self.shown = False


def _events(call: Iterator[spb.SyncEvent], bar: Bar | None, where: str) -> spb.SyncResult | None:
    result: spb.SyncResult | None = None
    try:
        for ev in call:
            kind = ev.WhichOneof("event")
            if kind == "progress" and bar is not None:
                bar.update(ev.progress)
            elif kind == "waiting" and bar is not None:
                bar.note(f"waiting: {ev.waiting}")
            elif kind == "result":
                result = ev.result
    except grpc.RpcError as err:
        if bar is not None:
            bar.done()
        raise from_rpc_error(err, where=where) from None
    if bar is not None:
        bar.done()
    return result


def cmd_sync(ns: argparse.Namespace) -> int:
    from ..cli import emit_json
    from ..control.client import to_dict

    stub, control = _stub(ns)
    try:
        if ns.back:
            try:
                keep = parse_duration(ns.keep)
            except ValueError as exc:
                raise InvalidArgument(f"--keep {ns.keep!r}: {exc}") from None
            call = stub.SyncBack(
                spb.SyncBackRequest(
                    set_id=ns.set_id,
                    target=ns.target,
                    to_node=ns.to or "",
                    keep_seconds=int(keep.total_seconds()),
                ),
                metadata=control.metadata,
            )
            bar = None if ns.json else Bar(f"{ns.set_id} <- {ns.target}")
            result = _events(call, bar, f"daemon SyncBack {ns.set_id}")
        else:
            if ns.to:
                raise InvalidArgument("--to goes with --back")
            call = stub.Queue(
                spb.QueueSyncRequest(set_id=ns.set_id, target=ns.target, wait=ns.wait, ignore_windows=ns.now),
                timeout=None if ns.wait else 60,
                metadata=control.metadata,
            )
            bar = Bar(f"{ns.set_id} -> {ns.target}") if ns.wait and not ns.json else None
            result = _events(call, bar, f"daemon Sync {ns.set_id}")
    finally:
        control.close()
    if result is None:
        raise ReconcilerError("the daemon ended the request without an answer")
    if ns.json:
        emit_json(to_dict(result))
    elif result.ok:
        if result.message == "queued":
            print(f"queued {result.set_id} for {result.target} (see `reconciler status`)")
        elif ns.back:
            print(
                f"{result.set_id}: {result.message} ({_human(result.wire_bytes)} on the wire, {result.seconds:.1f}s)"
            )
        else:
            print(
                f"{result.set_id} is on {result.target} ({_human(result.wire_bytes)} on the wire, "
                f"{result.seconds:.1f}s)"
                if result.message == "synced"
                else f"{result.set_id}: {result.message}"
            )
    else:
        print(
            f"reconciler: sync of {result.set_id} to {result.target} failed: {result.message}",
            file=sys.stderr,
        )
    return 0 if result.ok else 1


# --- status -----------------------------------------------------------------------------------------
def sync_status(ns: argparse.Namespace) -> dict[str, Any] | None:
    """The daemon's sync status as a dict, or None when it has no Sync service."""
    from ..control.client import to_dict

    try:
        stub, control = _stub(ns)
    except ReconcilerError:
        return None
    try:
        return to_dict(stub.GetSyncStatus(spb.GetSyncStatusRequest(), timeout=30, metadata=control.metadata))
    except grpc.RpcError as err:
        if err.code() == grpc.StatusCode.UNIMPLEMENTED:
            return None
        raise from_rpc_error(err, where="daemon GetSyncStatus") from None
    finally:
        control.close()


def print_sync_status(st: dict[str, Any]) -> None:
    from ..cli import short_time, table

    targets = st.get("targets", [])
    if not targets:
        return
    print()
    rows = []
    for t in targets:
        lag = format_duration_short(float(t.get("lag_seconds", 0))) if t.get("lag_known") else "?"
        window = "open" if t.get("window_open") else f"closed until {short_time(t.get('next_window'))}"
        throttle = human_rate(float(t.get("throttle_bps", 0))) if int(t.get("throttle_bps", 0) or 0) else "-"
        rows.append(
            [
                t["name"],
                "up" if t.get("reachable") else "DOWN",
                window,
                throttle,
                t.get("pending", 0),
                lag,
                short_time(t.get("newest_on_target")),
                "" if t.get("reachable") else t.get("error", ""),
            ]
        )
    print(table(rows, ["OFFSITE", "STATE", "WINDOW", "THROTTLE", "PENDING", "LAG", "NEWEST THERE", "ERROR"]))
    for w in st.get("warnings", []):
        print(f"warning: {w}")
    active = st.get("active", [])
    if active:
        print()
        arows = []
        for a in active:
            p = a.get("progress", {})
            arows.append(
                [
                    a["set_id"],
                    a["target"],
                    p.get("phase", ""),
                    _human(int(p.get("checked_bytes", 0))),
                    _human(int(p.get("scanned_bytes", 0))),
                    _human(int(p.get("sent_bytes", 0))),
                    _human(int(p.get("wire_bytes", 0))),
                    human_rate(float(p.get("rate_bps", 0))),
                    _eta(float(p.get("eta_seconds", -1))),
                ]
            )
        print(
            table(arows, ["SENDING", "TARGET", "PHASE", "CHECKED", "SCANNED", "SENT", "WIRE", "RATE", "ETA"])
        )
    waiting = [w for w in st.get("waiting", []) if w.get("reason") != SENDING_NOW]
    if waiting:
        print()
        print(
            table(
                [[w["set_id"], w["target"], w["reason"], short_time(w.get("until"))] for w in waiting[:20]],
                ["WAITING", "TARGET", "WHY", "UNTIL"],
            )
        )
        if len(waiting) > 20:
            print(f"... and {len(waiting) - 20} more (--json lists them all)")
    scopes = st.get("scopes", [])
    if scopes:
        print()
        print(
            table(
                [
                    [
                        s["scope"],
                        s["target"],
                        s["set_id"],
                        short_time(s.get("created")),
                        short_time(s.get("synced_at")),
                    ]
                    for s in scopes
                ],
                ["SCOPE", "TARGET", "NEWEST THERE", "CREATED", "SYNCED AT"],
            )
        )


__all__ = ["cmd_sync", "format_duration", "print_sync_status", "sync_status"]


def fetch_back(ns: argparse.Namespace, set_id: str, target: str, *, keep: str = "7d") -> None:
    """Bring a set held at an offsite target back to its origin node (for a restore), or raise."""
    stub, control = _stub(ns)
    try:
        call = stub.SyncBack(
            spb.SyncBackRequest(
                set_id=set_id,
                target=target,
                to_node="",
                keep_seconds=int(parse_duration(keep).total_seconds()),
            ),
            metadata=control.metadata,
        )
        bar = None if getattr(ns, "json", False) else Bar(f"{set_id} <- {target}")
        result = _events(call, bar, f"daemon SyncBack {set_id}")
    finally:
        control.close()
    if result is None or not result.ok:
        why = result.message if result is not None else "the daemon ended the request without an answer"
        raise ReconcilerError(f"fetching set {set_id} back from {target} failed: {why}; nothing was restored")
