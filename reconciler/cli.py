"""The `reconciler` command line. Human tables by default, --json for scripts, stable exit codes.

Exit codes: 0 ok, 1 invalid config or failed operation, 2 bad arguments, 3 not found,
5 refused by a rule (immutable, held, ...), 6 permission denied, 7 damaged data found,
8 storage full, 9 daemon or node unreachable.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from . import __version__
from .durations import format_duration, parse_duration
from .errors import ConfigError, InvalidArgument, ReconcilerError


# --- formatting -------------------------------------------------------------------------------
def table(rows: Sequence[Sequence[object]], headers: Sequence[str]) -> str:
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def human_bytes(n: int | str | None) -> str:
    v = float(n or 0)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if v < 1024 or unit == "TiB":
            return f"{v:.0f} {unit}" if unit == "B" else f"{v:.1f} {unit}"
        v /= 1024
    return f"{v:.1f} TiB"


def short_time(ts: str | None) -> str:
    if not ts:
        return "-"
    dt = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def emit_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")


# --- argument helpers --------------------------------------------------------------------------
def parse_when(text: str, *, now: datetime) -> datetime:
    """A duration from now (`7d`) or an ISO date/time (naive: UTC)."""
    try:
        return now + parse_duration(text)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidArgument(f"{text!r} is neither a duration (like 7d, 12h) nor an ISO date/time") from None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _settings(ns: argparse.Namespace) -> Any:
    from .settings import load_settings

    return load_settings(
        state_dir=getattr(ns, "state_dir", None),
        control_socket=getattr(ns, "socket", None),
        log_level=getattr(ns, "log_level", None),
        log_format=getattr(ns, "log_format", None),
        metrics_address=getattr(ns, "metrics_address", None),
    )


SYSTEM_SOCKET = Path("/run/reconciler/control.sock")  # where the systemd unit puts it


def _control(ns: argparse.Namespace) -> Any:
    import os

    from .control.client import ControlClient
    from .socketpath import control_socket_path

    path = control_socket_path(
        state_dir=getattr(ns, "state_dir", None), control_socket=getattr(ns, "socket", None)
    )
    if (
        not path.exists()
        and SYSTEM_SOCKET.exists()
        and not (getattr(ns, "socket", None) or getattr(ns, "state_dir", None))
    ):
        path = SYSTEM_SOCKET  # an operator's shell talking to the daemon run by systemd
    token = getattr(ns, "token", None) or os.environ.get("RECONCILER_TOKEN") or None
    return ControlClient(path, token=token)


# --- commands ---------------------------------------------------------------------------------
def cmd_validate(ns: argparse.Namespace) -> int:
    from .config_loader import validate_file

    errors = validate_file(Path(ns.file))
    if ns.json:
        emit_json({"file": ns.file, "valid": not errors, "errors": errors})
    elif errors:
        for e in errors:
            print(e, file=sys.stderr)
        print(f"{ns.file}: {len(errors)} error(s)", file=sys.stderr)
    else:
        print(f"{ns.file}: valid")
    return 0 if not errors else 1


def cmd_daemon(ns: argparse.Namespace) -> int:
    from . import sdnotify
    from .daemon import Daemon
    from .logs import setup_logging
    from .metrics import DaemonMetrics

    settings = _settings(ns)
    setup_logging(settings.log_level, settings.log_format)
    daemon = Daemon(Path(ns.config), settings)
    metrics = DaemonMetrics(clock=daemon.clock)
    daemon.hooks += [metrics.on_event, sdnotify.EventNotifier().on_event]
    try:
        if settings.metrics_address:
            metrics.serve(settings.metrics_address)
        daemon.start()  # emits "started": READY=1 for systemd
    except ConfigError as exc:
        for e in exc.errors:
            print(e, file=sys.stderr)
        print(f"{ns.config}: invalid config; not starting", file=sys.stderr)
        metrics.close()
        return 1
    except (ReconcilerError, OSError) as exc:
        print(f"reconciler daemon: cannot start: {exc}", file=sys.stderr)
        metrics.close()
        return 1
    daemon.install_signal_handlers()
    watchdog = sdnotify.Watchdog(daemon.healthy)
    watchdog.start()
    try:
        daemon.run_forever()
    finally:
        watchdog.stop()
        metrics.close()
    return 0


def cmd_tls_init(ns: argparse.Namespace) -> int:
    from .tlslab import create_lab_pki

    try:
        pki = create_lab_pki(
            Path(ns.dir), nodes=list(ns.node or []), daemon_name=ns.daemon_name, days=ns.days
        )
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from None
    if ns.json:
        emit_json(pki)
    else:
        for f in pki["created"]:
            print(f"wrote {f}")
        print(f"lab PKI in {pki['dir']} (CA {pki['ca']})")
    return 0


def cmd_agent(ns: argparse.Namespace) -> int:
    from .agent.main import run_agent

    return run_agent(Path(ns.config), log_level=ns.log_level, log_format=ns.log_format)


def cmd_status(ns: argparse.Namespace) -> int:
    st = _control(ns).status()
    from .replication.cli import print_sync_status, sync_status

    sync = sync_status(ns)  # offsite targets, transfers, last sync per scope, lag
    if ns.json:
        emit_json(st if sync is None else {**st, "sync": sync})
        return 0
    ok = st.get("config_valid", False)
    site = f"  site {st['site']}" if st.get("site") else ""
    print(
        f"reconciler {st.get('version')}{site}  config {st.get('config_path')}: "
        f"{'valid' if ok else 'INVALID (last good config running)'}"
    )
    for e in st.get("config_errors", []):
        print(f"  {e}")
    print(
        f"last pass {short_time(st.get('last_pass'))} ({float(st.get('last_pass_seconds', 0)):.3f}s), "
        f"next wakeup {short_time(st.get('next_wakeup'))}"
    )
    print()
    rows = []
    for n in st.get("nodes", []):
        pools = n.get("pools", []) or [{}]
        for p in pools:
            rows.append(
                [
                    n["name"],
                    "up" if n.get("reachable") else "DOWN",
                    p.get("name", "-"),
                    p.get("backend", "-"),
                    p.get("snapshot_count", "-"),
                    human_bytes(p.get("logical_bytes")),
                    human_bytes(p.get("stored_bytes")),
                    human_bytes(p.get("free_bytes")),
                    "" if n.get("reachable") else n.get("error", ""),
                ]
            )
    print(
        table(rows, ["NODE", "STATE", "POOL", "BACKEND", "SNAPSHOTS", "LOGICAL", "STORED", "FREE", "ERROR"])
    )
    print()
    srows = [
        [
            s["scope"],
            f"{s['profile']}/{s['period']}",
            s.get("sets", 0),
            short_time(s.get("last_success")),
            short_time(s.get("next_slot")),
        ]
        for s in st.get("scopes", [])
    ]
    print(table(srows, ["SCOPE", "PERIOD", "SETS", "LAST SUCCESS", "NEXT SLOT"]))
    bad = [c for c in st.get("conditions", []) if not c.get("ok")]
    if bad:
        print()
        print(
            table(
                [[c["kind"], c["subject"], c.get("reason", ""), c.get("message", "")] for c in bad],
                ["PROBLEM", "SUBJECT", "REASON", "MESSAGE"],
            )
        )
    said = [f"warning: {w}" for w in st.get("warnings", [])] + [f"note: {n}" for n in st.get("notes", [])]
    if said:
        print()
        print("\n".join(said))
    recent = st.get("recent_actions", [])[-10:]
    if recent:
        print()
        print(
            table(
                [
                    [
                        short_time(r.get("at")),
                        r["kind"],
                        r["set_id"],
                        r.get("node", ""),
                        "ok" if r.get("ok") else "FAILED",
                        r.get("error") or r.get("reason", ""),
                    ]
                    for r in recent
                ],
                ["AT", "ACTION", "SET", "NODE", "RESULT", "DETAIL"],
            )
        )
    if sync:
        print_sync_status(sync)
    return 0


def cmd_plan(ns: argparse.Namespace) -> int:
    p = _control(ns).plan()
    if ns.json:
        emit_json(p)
        return 0
    print(f"plan at {short_time(p.get('now'))} (read-only; nothing was done)")
    actions = p.get("actions", [])
    if actions:
        print(
            table(
                [[a["kind"], a["set_id"], len(a.get("members", [])), a["reason"]] for a in actions],
                ["ACTION", "SET", "VOLUMES", "WHY"],
            )
        )
    else:
        print("no actions: everything is as the config wants it")
    kept = p.get("kept", [])
    if kept and ns.verbose:
        print()
        print(table([[k["set_id"], k["rule"], k["reason"]] for k in kept], ["KEPT", "RULE", "WHY"]))
    elif kept:
        print(f"{len(kept)} set(s) kept (show why with -v)")
    _print_sync_plan(p, verbose=ns.verbose)
    for w in p.get("warnings", []):
        print(f"warning: {w}")
    for n in p.get("notes", []):
        print(f"note: {n}")
    print(f"next wakeup: {short_time(p.get('next_wakeup'))}")
    return 0


SYNC_ROWS = 20  # offsite decisions shown without -v (a target down for long has many waiting)


def _print_sync_plan(p: dict[str, Any], *, verbose: bool) -> None:
    """The offsite part of `reconciler plan`: what the next sync pass would send, leave waiting,
    prune on a target, hold or release, and why."""
    decisions = p.get("sync", [])
    if decisions:
        rows = []
        for d in decisions:
            why = d.get("reason", "")
            if d["kind"] == "wait" and d.get("until"):
                why = f"{why} (until {short_time(d['until'])})"
            elif d["kind"] == "hold":
                change = [f"+{h}" for h in d.get("add_holds", [])] + [
                    f"-{h}" for h in d.get("remove_holds", [])
                ]
                why = f"{' '.join(change)}: {why}"
            where = d.get("target") or ("local" if d["kind"] == "hold" else "")
            rows.append([d["kind"], where, d["set_id"], why])
        shown = rows if verbose else rows[:SYNC_ROWS]
        print()
        print(table(shown, ["OFFSITE", "TARGET", "SET", "WHY"]))
        if len(rows) > len(shown):
            print(f"... and {len(rows) - len(shown)} more (-v or --json lists them all)")
    remote_kept = p.get("remote_kept", [])
    if remote_kept and verbose:
        print()
        print(
            table(
                [[k["set_id"], k["scope"], k["rule"], k["reason"]] for k in remote_kept],
                ["KEPT ON TARGET", "TARGET:SCOPE", "RULE", "WHY"],
            )
        )
    elif remote_kept:
        print(f"{len(remote_kept)} set(s) kept on offsite targets (show why with -v)")


def cmd_reload(ns: argparse.Namespace) -> int:
    r = _control(ns).reload()
    if ns.json:
        emit_json(r)
    elif r.get("ok"):
        print(f"reloaded {r.get('config_path')}")
    else:
        for e in r.get("errors", []):
            print(e, file=sys.stderr)
        print("reload refused; the daemon keeps running the last good config", file=sys.stderr)
    return 0 if r.get("ok") else 1


def _set_row(s: dict[str, Any]) -> list[object]:
    size = sum(int(m.get("logical_bytes", 0)) for m in s.get("members", []))
    state = (
        "complete"
        if s.get("complete")
        else f"PARTIAL {len(s.get('members', []))}/{s.get('expected_members')}"
    )
    return [
        s.get("received_as") or s["set_id"],
        s["scope"],
        s["kind"],
        short_time(s.get("created")),
        short_time(s.get("expires")) if s.get("expires") else "never",
        state,
        s.get("immutable") or "-",
        human_bytes(size),
        ("holds: " + ", ".join(s["holds"]) if s.get("holds") else "")
        if s.get("received_as")
        else s.get("description", ""),
    ]


def cmd_snapshot_list(ns: argparse.Namespace) -> int:
    sets = _control(ns).list_sets(ns.scope or "", with_usage=ns.usage)
    if ns.json:
        emit_json(sets)
        return 0
    header = ["SET", "SCOPE", "KIND", "CREATED", "EXPIRES", "STATE", "IMMUTABLE", "SIZE", "DESCRIPTION"]
    received = [s for s in sets if s.get("received_as")]
    print(table([_set_row(s) for s in sets if not s.get("received_as")], header))
    if received:
        print(
            "\nRECEIVED FROM OTHER SITES (SET@SITE, or SET@NODES for a site without a name): restore or "
            "clone their resources and tenants as new copies, browse their files; the sending site "
            "prunes them"
        )
        print(table([_set_row(s) for s in received], header))
    return 0


def cmd_snapshot_create(ns: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    expires = parse_when(ns.expires, now=now) if ns.expires else None
    # the request id makes a retried request idempotent: the daemon derives the set id from it
    request_id = ns.request_id or f"{now.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"
    s = _control(ns).create_set(
        scope=ns.scope,
        request_id=request_id,
        name=ns.name or "",
        description=ns.description or "",
        expires=expires,
        never_expire=ns.never_expire,
        immutable=ns.immutable,
        quiesce=ns.quiesce,
        private=ns.private,
    )
    if ns.json:
        emit_json(s)
    else:
        print(
            f"created {s['set_id']} ({len(s.get('members', []))} volume(s), "
            f"expires {short_time(s.get('expires')) if s.get('expires') else 'never'})"
        )
    return 0


def cmd_snapshot_delete(ns: argparse.Namespace) -> int:
    r = _control(ns).delete_set(ns.set_id)
    if ns.json:
        emit_json(r)
    elif r.get("deleted"):
        print(f"deleted {ns.set_id}")
    else:
        for e in r.get("errors", []):
            print(e, file=sys.stderr)
    return 0 if r.get("deleted") else 5


def cmd_schedule(ns: argparse.Namespace) -> int:
    from .config import profile_to_domain
    from .config_loader import load_config
    from .schedule import next_slot

    config = load_config(Path(ns.config))
    if ns.profile not in config.profiles:
        raise InvalidArgument(
            f"no profile {ns.profile!r} in {ns.config} (profiles: {', '.join(sorted(config.profiles))})"
        )
    profile = profile_to_domain(ns.profile, config.profiles[ns.profile])
    start = parse_when(ns.start, now=datetime.now(UTC)) if ns.start else datetime.now(UTC)
    out: dict[str, list[dict[str, str]]] = {}
    for period in profile.periods:
        tz = ZoneInfo(period.timezone)
        slots: list[dict[str, str]] = []
        t = start - timedelta(microseconds=1)
        for _ in range(ns.count):
            nxt = next_slot(period, t)
            if nxt is None:
                break
            slots.append(
                {"utc": nxt.isoformat(), "local": nxt.astimezone(tz).isoformat(), "timezone": period.timezone}
            )
            t = nxt
        out[period.name] = slots
    if ns.json:
        emit_json(out)
        return 0
    for period in profile.periods:
        ret = "forever" if period.retention is None else format_duration(period.retention)
        print(
            f"{ns.profile}/{period.name}: {period.frequency.value}, retention {ret}, "
            f"min {period.min_snapshots}, timezone {period.timezone}"
        )
        if not out[period.name]:
            print("  (no future slots)")
        for s in out[period.name]:
            local = datetime.fromisoformat(s["utc"]).astimezone(ZoneInfo(period.timezone))
            print(f"  {local.strftime('%a %Y-%m-%d %H:%M:%S %Z')}   ({short_time(s['utc'])} UTC)")
    return 0


def cmd_snapshot_update(ns: argparse.Namespace) -> int:
    action = ns.update_action
    kw: dict[str, Any] = {}
    if action == "unlock" and ns.wait:
        kw["unlock_wait_s"] = int(parse_duration(ns.wait).total_seconds())
    if action == "expires":
        if ns.expires:
            kw["expires"] = parse_when(ns.expires, now=datetime.now(UTC))
        kw["never_expire"] = ns.never_expire
    if action in ("expose", "unexpose"):
        kw["tenant"] = ns.tenant
    s = _control(ns).update_set(ns.set_id, action, **kw)
    if ns.json:
        emit_json(s)
        return 0
    state = s.get("immutable") or "not immutable"
    if state == "unlocking":
        state += f", deletable from {short_time(s.get('unlock_at'))}"
    if s.get("received_as"):
        kept = [h for h in s.get("holds", []) if h.startswith("kept-here")]
        nodes = ", ".join(s.get("origin_nodes", []))
        origin = f"site {s['origin_site']} ({nodes})" if s.get("origin_site") else nodes or "another site"
        print(
            f"{s['received_as']} (received from {origin}): "
            f"{state}; holds: {', '.join(s.get('holds', [])) or 'none'}; "
            + (
                "kept here whatever the sending site's retention says"
                if kept
                else "the sending site's retention applies"
            )
        )
        return 0
    exposed = ", ".join(s.get("exposed_to", [])) or "no tenant"
    print(
        f"{s['set_id']}: {state}; expires {short_time(s.get('expires')) if s.get('expires') else 'never'}; "
        f"exposed to {exposed}"
    )
    return 0


def cmd_files(ns: argparse.Namespace) -> int:
    r = _control(ns).list_files(
        ns.set_id, ns.resource, volume=ns.volume or "", prefix=ns.prefix or "", limit=ns.limit
    )
    if ns.json:
        emit_json(r)
        return 0
    print(f"{r['node']}/{r['pool']}/{r['volume']} in set {ns.set_id}:")
    print(
        table(
            [
                [
                    f["kind"],
                    human_bytes(f.get("size")),
                    oct(int(f.get("mode", 0)))[-4:],
                    datetime.fromtimestamp(float(f.get("mtime", 0)), UTC).strftime("%Y-%m-%d %H:%M"),
                    f["path"],
                ]
                for f in r.get("files", [])
            ],
            ["KIND", "SIZE", "MODE", "MODIFIED", "PATH"],
        )
    )
    if r.get("truncated"):
        print(f"(cut at {ns.limit} entries; narrow it with a prefix)")
    return 0


SYSTEM_CANCEL_WINDOW = 10  # seconds a whole-system restore waits after its plan, unless told otherwise
CANCEL_MARGIN = 0.3  # Ctrl-C closer than this to the window's end may come too late: not promised


def _window_seconds(text: str) -> int:
    from .restore import MAX_CANCEL_WINDOW

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of seconds: {text!r}") from None
    if not 0 <= value <= MAX_CANCEL_WINDOW:
        raise argparse.ArgumentTypeError(f"must be 0-{MAX_CANCEL_WINDOW} seconds (got {value})")
    return value


def _confirm_interactively(ns: argparse.Namespace, what: str) -> bool:
    """Over-source restores need --yes; on a terminal we ask instead, naming what will be replaced."""
    if ns.yes or ns.dry_run or not sys.stdin.isatty():
        return bool(ns.yes)
    answer = input(f"{what}\nType the set id ({ns.set_id}) to confirm: ")
    return bool(answer.strip() == ns.set_id)


def cmd_restore(ns: argparse.Namespace) -> int:
    from .restore import CANCEL_WINDOW_PHASE  # here: the other commands start without the config models

    level = ns.level
    mode = (
        "clone"
        if ns.command == "clone"
        else ("over_source" if ns.over_source or level == "system" else "to_new")
    )
    if ns.command == "restore" and level == "files" and not ns.as_name and not ns.over_source:
        raise InvalidArgument(
            "restore files needs --over-source (replace them in the live volume) or --as NEWVOLUME"
        )
    if getattr(ns, "to_pool", None) and mode == "over_source":
        raise InvalidArgument(
            "--pool places a new copy; a restore over the source writes where the source is"
        )
    confirm = False
    if mode == "over_source":
        confirm = _confirm_interactively(
            ns,
            f"This replaces live data of {level} {getattr(ns, 'name', '') or ''} "
            f"with set {ns.set_id} (a safety snapshot is taken first).",
        )
    window = getattr(ns, "cancel_window", None)
    if window is None:
        window = SYSTEM_CANCEL_WINDOW if level == "system" else 0
    if mode != "over_source":
        window = 0  # nothing live is touched
    fields: dict[str, Any] = dict(
        cancel_window=window,
        set_id=ns.set_id,
        level=level,
        name=getattr(ns, "name", "") or "",
        mode=mode,
        new_name=ns.as_name or "",
        pool=ns.to_pool or "",
        confirm=confirm,
        skip_safety_snapshot=getattr(ns, "no_safety_snapshot", False),
        with_settings=getattr(ns, "with_settings", False),
        paths=list(getattr(ns, "paths", []) or []),
        volume=getattr(ns, "volume", "") or "",
        dry_run=ns.dry_run,
    )
    if getattr(ns, "from_target", None):
        # restore from offsite: the set is first copied back from the target site, then restored here
        from .replication.cli import fetch_back

        fetch_back(ns, ns.set_id, ns.from_target)
    events: list[dict[str, Any]] = []
    result: dict[str, Any] = {}
    tty = sys.stderr.isatty() and not ns.json
    window_end: float | None = None  # while the daemon waits: when its cancel window closes
    stream = _control(ns).restore(**fields)
    try:
        for ev in stream:
            events.append(ev)
            if "plan" in ev and not ns.json:
                plan = ev["plan"]
                print(plan["summary"])
                for st in plan.get("steps", []):
                    print(f"  - {st['what']}")
                for w in plan.get("warnings", []):
                    print(f"  warning: {w}")
                sys.stdout.flush()
            elif "progress" in ev:
                p = ev["progress"]
                total, done = int(p.get("total", 0)), int(p.get("done", 0))
                in_window = p.get("phase") == CANCEL_WINDOW_PHASE
                window_end = time.monotonic() + (total - done) / 1000 if in_window else None
                if ns.json:
                    continue
                pct = f"{100 * done / total:5.1f}%" if total and not in_window else ""
                line = f"{p.get('volume', '')} {p.get('phase', '')} {pct} {p.get('message', '')}".strip()
                print(
                    ("\r" + line[:120].ljust(120)) if tty else line,
                    end="" if tty else "\n",
                    file=sys.stderr,
                    flush=True,
                )
            elif "result" in ev:
                result = ev["result"]
    except KeyboardInterrupt:
        stream.close()  # cancels the call; in the cancel window, that cancels the restore
        if tty:
            print(file=sys.stderr)
        if window_end is not None and window_end - time.monotonic() > CANCEL_MARGIN:
            print("cancelled in the cancel window: nothing was changed", file=sys.stderr)
        else:
            print(
                "interrupted: the restore goes on in the daemon (each volume is swapped atomically); "
                "`reconciler snapshot list` and the daemon's log show how it ends",
                file=sys.stderr,
            )
        return 1
    if tty:
        print(file=sys.stderr)
    if ns.json:
        emit_json({"events": events, "result": result})
    elif result:
        print(result.get("message", ""))
        if result.get("safety_set_id"):
            print(f"safety set: {result['safety_set_id']} (expires in 7 days)")
        if result.get("settings_file"):
            print(f"recorded settings written to {result['settings_file']}")
        for e in result.get("errors", []):
            print(f"error: {e}", file=sys.stderr)
    return 0 if (not result or result.get("ok")) else 1


def cmd_maintain(ns: argparse.Namespace) -> int:
    kind = "verify" if ns.command == "verify" else "gc"
    r = _control(ns).maintain(
        kind, node=ns.node or "", pool=ns.pool or "", set_id=getattr(ns, "set_id", "") or ""
    )
    pools = r.get("pools", [])
    if ns.json:
        emit_json(r)
    else:
        for p in pools:
            print(f"{p['node']}/{p['pool']}: {'ok' if p.get('ok') else 'PROBLEMS'} — {p.get('message', '')}")
            for line in p.get("problems", []):
                print(f"  {line}")
    return 0 if all(p.get("ok") for p in pools) else 7


def cmd_tenant_token(ns: argparse.Namespace) -> int:
    import hashlib

    token = secrets.token_urlsafe(32)
    digest = hashlib.sha256(token.encode()).hexdigest()
    if ns.json:
        emit_json({"tenant": ns.tenant, "token": token, "api_token_sha256": digest})
    else:
        print(f"token for tenant {ns.tenant} (give it to the tenant; it is shown only once):\n  {token}")
        print(f"add to the config under tenants.{ns.tenant}:\n  api_token_sha256: {digest}")
    return 0


# --- parser -----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="reconciler", description="Declarative snapshot manager for storage appliances."
    )
    p.add_argument("--version", action="version", version=f"reconciler {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def control_opts(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--state-dir", type=Path, help="daemon state directory (env RECONCILER_STATE_DIR)")
        sp.add_argument("--socket", type=Path, help="control socket (env RECONCILER_CONTROL_SOCKET)")
        sp.add_argument("--json", action="store_true", help="machine-readable output")
        sp.add_argument("--token", help="a tenant's API token (env RECONCILER_TOKEN): act as that tenant")

    sp = sub.add_parser("daemon", help="run the reconciler daemon")
    sp.add_argument("-c", "--config", required=True, help="desired-state YAML")
    sp.add_argument("--state-dir", type=Path)
    sp.add_argument("--socket", type=Path)
    sp.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    sp.add_argument("--log-format", choices=["text", "json"])
    sp.add_argument("--metrics-address", help="host:port for the Prometheus endpoint")
    sp.set_defaults(func=cmd_daemon)

    sp = sub.add_parser("agent", help="run a node agent (gRPC server)")
    sp.add_argument("-c", "--config", required=True, help="agent YAML")
    sp.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info")
    sp.add_argument("--log-format", choices=["text", "json"], default="text")
    sp.set_defaults(func=cmd_agent)

    sp = sub.add_parser("validate", help="check a config file (exit 0 valid, 1 invalid)")
    sp.add_argument("file")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_validate)

    sp = sub.add_parser("status", help="daemon, nodes, scopes and recent actions")
    control_opts(sp)
    sp.set_defaults(func=cmd_status)

    sp = sub.add_parser("plan", help="what the daemon would do now, and why (read-only)")
    control_opts(sp)
    sp.add_argument(
        "-v", "--verbose", action="store_true", help="also list kept sets and the rule keeping each"
    )
    sp.set_defaults(func=cmd_plan)

    sp = sub.add_parser("reload", help="reload the config now (fails if it is invalid)")
    control_opts(sp)
    sp.set_defaults(func=cmd_reload)

    sp = sub.add_parser("snapshot", help="list, create and delete snapshot sets")
    ssub = sp.add_subparsers(dest="snapshot_command", required=True, metavar="ACTION")
    s2 = ssub.add_parser("list", help="snapshot sets")
    control_opts(s2)
    s2.add_argument("--scope", help="only this scope, e.g. system:full, resource:web01")
    s2.add_argument("--usage", action="store_true", help="also the space each set alone holds (slower)")
    s2.set_defaults(func=cmd_snapshot_list)
    s2 = ssub.add_parser("create", help="take a manual snapshot set now")
    control_opts(s2)
    s2.add_argument("scope", help="system:NAME, tenant:NAME or resource:NAME")
    g = s2.add_mutually_exclusive_group(required=True)
    g.add_argument("--expires", help="duration from now (7d) or ISO date/time")
    g.add_argument("--never-expire", action="store_true")
    s2.add_argument("--name")
    s2.add_argument("--description")
    s2.add_argument(
        "--immutable", action="store_true", help="nobody can delete it until unlocked and the wait passed"
    )
    s2.add_argument("--quiesce", action="store_true", help="run the resources' freeze/thaw hooks")
    s2.add_argument(
        "--private",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="system scopes: hidden from tenants (the default); --no-private lets each tenant see "
        "and restore its own resources from it",
    )
    s2.add_argument("--request-id", help="idempotency key (default: generated)")
    s2.set_defaults(func=cmd_snapshot_create)
    s2 = ssub.add_parser("delete", help="delete a snapshot set (immutable and held sets are refused)")
    control_opts(s2)
    s2.add_argument("set_id")
    s2.set_defaults(func=cmd_snapshot_delete)

    for action, text in (
        ("lock", "make a set immutable"),
        ("unlock", "start the wait after which an immutable set can be deleted"),
        (
            "expire",
            "change a manual set's expiry; on a copy received from another site (SET@SITE), keep it "
            "here until then whatever the sending site's retention says",
        ),
        ("expose", "let a tenant see and restore a provider set"),
        ("unexpose", "take a set back from a tenant"),
    ):
        s2 = ssub.add_parser(action, help=text)
        control_opts(s2)
        s2.add_argument("set_id")
        s2.set_defaults(func=cmd_snapshot_update, update_action="expires" if action == "expire" else action)
        if action == "unlock":
            s2.add_argument(
                "--wait",
                help="wait before deletion (default: immutability.unlock_wait, 7d); "
                "the agents never allow less than their floor",
            )
        if action == "expire":
            g = s2.add_mutually_exclusive_group(required=True)
            g.add_argument("--expires", help="duration from now (7d) or ISO date/time")
            g.add_argument("--never-expire", action="store_true")
        if action in ("expose", "unexpose"):
            s2.add_argument("--tenant", required=True)

    sp = sub.add_parser("files", help="list the files of a resource's volume in a set")
    control_opts(sp)
    sp.add_argument("set_id")
    sp.add_argument("resource")
    sp.add_argument("prefix", nargs="?", default="")
    sp.add_argument("--volume", help="which volume, when the resource has several")
    sp.add_argument("--limit", type=int, default=10_000)
    sp.set_defaults(func=cmd_files)

    def restore_opts(r: argparse.ArgumentParser, *, over_source: bool = True, as_new: bool = True) -> None:
        control_opts(r)
        r.add_argument("--set", dest="set_id", required=True, help="the snapshot set to restore from")
        if over_source:
            r.add_argument("--over-source", action="store_true", help="replace the live data (stop it first)")
            r.add_argument("--yes", action="store_true", help="confirm replacing live data")
            r.add_argument(
                "--no-safety-snapshot", action="store_true", help="skip the safety snapshot (not advised)"
            )
            r.add_argument(
                "--cancel-window",
                type=_window_seconds,
                metavar="SECONDS",
                help="over the live data: wait this long after showing the plan, so that Ctrl-C "
                f"still cancels it with nothing done (default: {SYSTEM_CANCEL_WINDOW} for a whole "
                "system, 0 otherwise)",
            )
        else:
            r.set_defaults(over_source=False, yes=False)
        if as_new:
            r.add_argument("--as", dest="as_name", help="new name (default: NAME_restored)")
            r.add_argument(
                "--pool",
                dest="to_pool",
                metavar="POOL",
                help="put the new copy in this pool of the same node (default: the snapshot's pool)",
            )
        else:
            r.set_defaults(as_name="", to_pool="")
        r.add_argument("--dry-run", action="store_true", help="only print what would be done")
        r.add_argument("--from-target", help="the set is held at this offsite target: fetch it back first")
        r.set_defaults(func=cmd_restore)

    sp = sub.add_parser("restore", help="restore a resource, tenant, files or the whole system from a set")
    rsub = sp.add_subparsers(dest="level", required=True, metavar="LEVEL")
    r = rsub.add_parser("resource", help="one VM or NAS volume (to a new volume by default)")
    r.add_argument("name")
    restore_opts(r)
    r.add_argument("--with-settings", action="store_true", help="NAS volumes: data and the recorded settings")
    r = rsub.add_parser("tenant", help="all of a tenant's resources (as a new tenant by default)")
    r.add_argument("name")
    restore_opts(r)
    r = rsub.add_parser(
        "system", help="the whole system from a full system set (over itself, after a safety snapshot)"
    )
    restore_opts(r, as_new=False)
    r.set_defaults(over_source=True)
    r = rsub.add_parser("files", help="chosen paths of a resource's volume")
    r.add_argument("name", help="the resource")
    r.add_argument("paths", nargs="+", help="paths inside the volume")
    r.add_argument("--volume", help="which volume, when the resource has several")
    restore_opts(r)

    sp = sub.add_parser("clone", help="a writable copy of a resource or tenant from a set, for testing")
    csub = sp.add_subparsers(dest="level", required=True, metavar="LEVEL")
    for lvl in ("resource", "tenant"):
        r = csub.add_parser(lvl, help=f"clone a {lvl} (default name: NAME_clone)")
        r.add_argument("name")
        restore_opts(r, over_source=False)

    for name, text in (
        ("verify", "re-read stored snapshot data and report damage (exit 7 when any)"),
        ("gc", "reclaim space that no snapshot references (the daemon also runs it hourly)"),
    ):
        sp = sub.add_parser(name, help=text)
        control_opts(sp)
        sp.add_argument("--node", help="only this node")
        sp.add_argument("--pool", help="only this pool")
        if name == "verify":
            sp.add_argument("--set", dest="set_id", help="only this set")
        sp.set_defaults(func=cmd_maintain)

    sp = sub.add_parser("tenant", help="tenant access")
    tsub0 = sp.add_subparsers(dest="tenant_command", required=True, metavar="ACTION")
    t0 = tsub0.add_parser("token", help="create an API token for a tenant (prints the hash for the config)")
    t0.add_argument("tenant")
    t0.add_argument("--json", action="store_true")
    t0.set_defaults(func=cmd_tenant_token)

    sp = sub.add_parser("schedule", help="print the next slots of each period of a profile")
    sp.add_argument("profile")
    sp.add_argument("-c", "--config", default="config.example.yaml")
    sp.add_argument("--from", dest="start", help="start time (ISO, or a duration from now)")
    sp.add_argument("--count", type=int, default=5)
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_schedule)

    sp = sub.add_parser("tls", help="lab certificates for mTLS between daemon and agents")
    tsub = sp.add_subparsers(dest="tls_command", required=True, metavar="ACTION")
    t2 = tsub.add_parser("init", help="create a small CA and certificates for the daemon and each node")
    t2.add_argument("dir", help="output directory (keys are written 0600)")
    t2.add_argument("--node", action="append", help="a node name (repeat for each node)")
    t2.add_argument("--daemon-name", default="reconciler-daemon")
    t2.add_argument("--days", type=int, default=825)
    t2.add_argument("--json", action="store_true")
    t2.set_defaults(func=cmd_tls_init)

    from .replication.cli_args import add_parser as add_sync_parser

    add_sync_parser(sub, control_opts)

    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    try:
        return int(ns.func(ns))
    except ConfigError as exc:
        for e in exc.errors:
            print(e, file=sys.stderr)
        return exc.exit_code
    except ReconcilerError as exc:
        print(f"reconciler: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader went away (`reconciler snapshot list | head`): stop quietly, like other tools;
        # stdout goes to /dev/null so the flush at exit does not fail a second time
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):  # stdout is not a file (embedded use)
            pass
        return 141  # 128 + SIGPIPE: what a shell shows for a tool its pipe stopped


if __name__ == "__main__":
    sys.exit(main())
