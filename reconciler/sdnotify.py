"""A tiny sd_notify(3) client: tell systemd we are ready, reloading, stopping, and still alive.

No dependency on libsystemd or python-systemd: the protocol is one datagram of newline-separated
KEY=VALUE lines to the AF_UNIX socket named by $NOTIFY_SOCKET. Outside systemd (no $NOTIFY_SOCKET)
every call is a no-op that returns False, so the daemon and the agent call these unconditionally.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger(__name__)

__all__ = [
    "EventNotifier",
    "Watchdog",
    "extend_timeout",
    "notify",
    "ready",
    "reloading",
    "status",
    "stopping",
    "watchdog_interval",
    "watchdog_ping",
]


def _address() -> str | None:
    path = os.environ.get("NOTIFY_SOCKET", "")
    if not path:
        return None
    if path.startswith("@"):
        return "\0" + path[1:]  # Linux abstract namespace
    if path.startswith("/"):
        return path
    # e.g. vsock:CID:PORT (systemd 254+ in VMs): not something a storage node's service gets
    log.debug("NOTIFY_SOCKET=%r is not an AF_UNIX path; not notifying", path)
    return None


def notify(*lines: str) -> bool:
    """Send KEY=VALUE lines in one datagram. True when sent; False when not under systemd or the
    send failed (never raises: a notification must not take the service down)."""
    addr = _address()
    if addr is None or not lines:
        return False
    payload = "\n".join(lines).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(addr)
            sock.sendall(payload)
    except OSError as exc:
        log.warning("sd_notify to %s failed: %s", os.environ.get("NOTIFY_SOCKET"), exc)
        return False
    return True


def _status_line(text: str) -> str:
    # STATUS is one line; a newline would start a bogus KEY=VALUE assignment
    return "STATUS=" + " ".join(text.splitlines())


def ready(status_text: str | None = None) -> bool:
    """Startup finished, or a reload finished (systemd leaves the reloading state on READY=1)."""
    lines = ["READY=1"]
    if status_text is not None:
        lines.append(_status_line(status_text))
    return notify(*lines)


def reloading(status_text: str | None = None) -> bool:
    """A reload started. systemd 253+ (Type=notify-reload) insists on MONOTONIC_USEC alongside
    RELOADING=1 to order it against the reload request; older versions ignore it. Send ready()
    when the reload is over, whether it succeeded or not."""
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    lines = ["RELOADING=1", f"MONOTONIC_USEC={usec}"]
    if status_text is not None:
        lines.append(_status_line(status_text))
    return notify(*lines)


def status(text: str) -> bool:
    """Free-form status shown by `systemctl status`."""
    return notify(_status_line(text))


def stopping(status_text: str | None = None) -> bool:
    lines = ["STOPPING=1"]
    if status_text is not None:
        lines.append(_status_line(status_text))
    return notify(*lines)


def extend_timeout(seconds: float) -> bool:
    """Ask for more time in the current start/stop/reload phase (e.g. an in-flight snapshot)."""
    return notify(f"EXTEND_TIMEOUT_USEC={max(0, int(seconds * 1_000_000))}")


def watchdog_ping() -> bool:
    return notify("WATCHDOG=1")


def watchdog_interval() -> float | None:
    """The watchdog timeout in seconds ($WATCHDOG_USEC) if it is meant for this process, else None.

    $WATCHDOG_PID, when set, names the process systemd watches; a child that inherited the
    environment must not ping on the parent's behalf.
    """
    raw = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    try:
        usec = int(raw)
    except ValueError:
        return None
    return usec / 1_000_000 if usec > 0 else None


class Watchdog(threading.Thread):
    """Sends WATCHDOG=1 every half interval while `healthy()` returns True.

    When `healthy()` returns False (or raises), pings stop, so systemd's WatchdogSec= kills the
    stuck process and Restart=on-failure starts a fresh one that rebuilds its state from the agents.
    """

    def __init__(self, healthy: Callable[[], bool], interval: float | None = None) -> None:
        super().__init__(name="sd-watchdog", daemon=True)
        self._healthy = healthy
        self.interval = interval if interval is not None else watchdog_interval()
        self._stop_event = threading.Event()
        self.pings = 0  # sent pings (tests look at it)

    @property
    def enabled(self) -> bool:
        return self.interval is not None and self.interval > 0

    def start(self) -> None:
        """Start pinging; does nothing when systemd asked for no watchdog."""
        if self.enabled:
            super().start()

    def stop(self) -> None:
        self._stop_event.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout=5)

    def run(self) -> None:
        assert self.interval is not None
        period = self.interval / 2
        while True:
            try:
                ok = bool(self._healthy())
            except Exception:  # noqa: BLE001 - a failing health check means "not healthy"
                log.exception("watchdog health check failed")
                ok = False
            if ok:
                if watchdog_ping():
                    self.pings += 1
            else:
                log.warning("unhealthy: withholding the watchdog ping (systemd restarts us if this lasts)")
            if self._stop_event.wait(period):
                return


class EventNotifier:
    """Turns the daemon's events into sd_notify messages: append `on_event` to `daemon.hooks`.

    READY=1 is sent on "started" (config loaded and control socket serving), not on the first
    "config_loaded", which comes before the socket exists: `systemctl reload` right after start
    must find the daemon able to answer. "reloading" (if the daemon emits it) sends RELOADING=1;
    the "config_loaded" that ends every reload, good or refused, sends READY=1 again.
    """

    def __init__(self) -> None:
        self._started = False

    def on_event(self, event: str, data: Mapping[str, Any]) -> None:
        if event == "started":
            self._started = True
            ready("running")
        elif not self._started:
            return
        elif event == "reloading":
            reloading("reloading the config")
        elif event == "config_loaded":
            ready("config reloaded" if data.get("ok") else "config refused; running the last good config")
        elif event == "pass":
            records = data.get("records") or ()
            failed = sum(1 for r in records if not getattr(r, "ok", True))
            status(
                f"last pass: {len(records)} action(s), {failed} failed, {float(data.get('seconds', 0.0)):.2f}s"
            )
        elif event == "stopping":
            stopping("stopping: finishing in-flight work")
