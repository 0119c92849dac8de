"""systemd integration: the sd_notify client against a real datagram socket, and the unit files
checked by the real `systemd-analyze verify`."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler import sdnotify

ROOT = Path(__file__).resolve().parent.parent
UNITS = ("reconciler.service", "reconciler-agent.service")


# --- sd_notify --------------------------------------------------------------------------------
class Listener:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def recv(self, timeout: float = 2.0) -> list[str]:
        self.sock.settimeout(timeout)
        return self.sock.recv(4096).decode().split("\n")

    def nothing(self, wait: float = 0.2) -> bool:
        self.sock.settimeout(wait)
        try:
            self.sock.recv(4096)
        except TimeoutError:
            return True
        return False


@pytest.fixture(params=["path", "abstract"])
def listener(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Listener]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        path = tmp_path / "notify.sock"
        sock.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    else:
        name = f"reconciler-test-{uuid.uuid4().hex}"
        sock.bind("\0" + name)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    try:
        yield Listener(sock)
    finally:
        sock.close()


def test_notify_without_socket_is_a_noop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.notify("READY=1") is False
    assert sdnotify.ready() is False
    assert sdnotify.reloading() is False


def test_notify_to_missing_socket_returns_false(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens"))
    assert sdnotify.notify("READY=1") is False


def test_ready_status_stopping(listener: Listener) -> None:
    assert sdnotify.ready("serving 3 nodes")
    assert listener.recv() == ["READY=1", "STATUS=serving 3 nodes"]
    assert sdnotify.status("pass took\n2s")  # a newline must not start a new assignment
    assert listener.recv() == ["STATUS=pass took 2s"]
    assert sdnotify.stopping()
    assert listener.recv() == ["STOPPING=1"]
    assert sdnotify.extend_timeout(90)
    assert listener.recv() == ["EXTEND_TIMEOUT_USEC=90000000"]


def test_reloading_carries_monotonic_usec(listener: Listener) -> None:
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert sdnotify.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    lines = listener.recv()
    assert lines[0] == "RELOADING=1"
    m = re.fullmatch(r"MONOTONIC_USEC=(\d+)", lines[1])
    assert m is not None, lines
    assert before <= int(m.group(1)) <= after


def test_watchdog_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert sdnotify.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    assert sdnotify.watchdog_interval() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert sdnotify.watchdog_interval() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))  # meant for another process
    assert sdnotify.watchdog_interval() is None
    monkeypatch.delenv("WATCHDOG_PID")
    monkeypatch.setenv("WATCHDOG_USEC", "0")
    assert sdnotify.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "garbage")
    assert sdnotify.watchdog_interval() is None


def test_watchdog_pings_only_while_healthy(listener: Listener, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # 0.2 s: pings every 0.1 s
    healthy = threading.Event()
    healthy.set()
    wd = sdnotify.Watchdog(healthy.is_set)
    assert wd.interval == pytest.approx(0.2)
    wd.start()
    try:
        assert listener.recv() == ["WATCHDOG=1"]
        assert listener.recv() == ["WATCHDOG=1"]
        healthy.clear()
        time.sleep(0.15)  # let an in-flight ping land
        while not listener.nothing(0.05):
            pass
        assert listener.nothing(0.4), "pinged while unhealthy"
        healthy.set()
        assert listener.recv() == ["WATCHDOG=1"]
    finally:
        wd.stop()
    assert not wd.is_alive()


def test_watchdog_disabled_without_watchdog_usec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    wd = sdnotify.Watchdog(lambda: True)
    assert not wd.enabled
    wd.start()  # a no-op, not an error
    assert not wd.is_alive()
    wd.stop()


def test_watchdog_treats_a_raising_check_as_unhealthy(listener: Listener) -> None:
    def broken() -> bool:
        raise RuntimeError("boom")

    wd = sdnotify.Watchdog(broken, interval=0.1)
    wd.start()
    try:
        assert listener.nothing(0.3)
    finally:
        wd.stop()


# --- unit files -------------------------------------------------------------------------------
def _systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("systemd-analyze is missing and cannot be installed (not root or no apt-get)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=600, check=False)
    res = subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "systemd"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    found = shutil.which("systemd-analyze")
    if not found:
        pytest.skip(f"installing the systemd package failed: {res.stderr.strip()[-500:]}")
    return found


def _reconciler_bin() -> Path:
    # the console script of the interpreter running the tests: ExecStart must point at a file that
    # exists, or `verify` complains about it instead of checking what matters
    exe = Path(sys.executable).parent / "reconciler"
    if not exe.exists():
        pytest.fail(f"{exe} is missing: install the project into this venv (pip install -e .)")
    return exe


@pytest.fixture
def units_dir(tmp_path: Path) -> Path:
    out = tmp_path / "units"
    out.mkdir()
    exe = str(_reconciler_bin())
    for name in UNITS:
        text = (ROOT / "systemd" / name).read_text()
        assert "/usr/local/bin/reconciler" in text
        (out / name).write_text(text.replace("/usr/local/bin/reconciler", exe))
    return out


@pytest.mark.parametrize("unit", UNITS)
def test_systemd_analyze_verify(units_dir: Path, unit: str) -> None:
    analyze = _systemd_analyze()
    path = units_dir / unit
    res = subprocess.run(
        [analyze, "verify", "--man=no", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        # verify also loads units from the host: a foreign unit's complaints are not ours
        env=dict(os.environ, SYSTEMD_LOG_LEVEL="notice"),
    )
    output = (res.stdout + res.stderr).strip()
    ours = [
        line
        for line in output.splitlines()
        if any(u in line for u in UNITS) or str(units_dir) in line or "reconciler" in line
    ]
    assert res.returncode == 0, f"systemd-analyze verify {unit} failed:\n{output}"
    assert not ours, f"systemd-analyze verify {unit} complained:\n" + "\n".join(ours)


def _directives(unit: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for raw in (ROOT / "systemd" / unit).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        out.setdefault(key.strip(), []).append(value.strip())
    return out


@pytest.mark.parametrize("unit", UNITS)
def test_units_have_the_operational_contract(unit: str) -> None:
    d = _directives(unit)
    assert d["Type"] == ["notify"]
    assert d["Restart"] == ["on-failure"]
    assert d["NoNewPrivileges"] == ["yes"]
    assert d["ProtectSystem"] == ["strict"]
    assert d["PrivateTmp"] == ["yes"]
    assert d["ProtectHome"] == ["yes"]
    assert d["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
    assert d["UMask"] == ["0077"]
    assert "/srv/reconciler" in " ".join(d["ReadWritePaths"])
    assert d.get("WatchdogSec") and d.get("TimeoutStopSec")
    for cap in d.get("CapabilityBoundingSet", []):
        # the agent needs CAP_SYS_ADMIN for btrfs snapshot ioctls and freeze hooks
        assert not cap.startswith("~") or "CAP_SYS_ADMIN" not in cap
        assert cap.startswith("~") or unit != "reconciler-agent.service" or "CAP_SYS_ADMIN" in cap


def test_daemon_unit_reload_is_synchronous() -> None:
    d = _directives("reconciler.service")
    assert d["ExecStart"] == ["/usr/local/bin/reconciler daemon -c /etc/reconciler/config.yaml"]
    # `reconciler reload` waits for the daemon's answer and exits 1 on an invalid config, which
    # makes `systemctl reload` fail while the last good config keeps running
    assert d["ExecReload"] == ["/usr/local/bin/reconciler reload"]
    assert "RECONCILER_STATE_DIR=/var/lib/reconciler" in d["Environment"]
    assert d["StateDirectory"] == ["reconciler"]
    assert d["RuntimeDirectory"] == ["reconciler"]


def test_agent_unit() -> None:
    d = _directives("reconciler-agent.service")
    assert d["ExecStart"] == ["/usr/local/bin/reconciler agent -c /etc/reconciler/agent.yaml"]


def test_event_notifier_maps_daemon_events(listener: Listener) -> None:
    n = sdnotify.EventNotifier()
    # the first config load happens before the control socket exists: no READY yet
    n.on_event("config_loaded", {"ok": True})
    assert listener.nothing(0.1)
    n.on_event("started", {})
    assert listener.recv() == ["READY=1", "STATUS=running"]
    n.on_event("reloading", {})
    lines = listener.recv()
    assert lines[0] == "RELOADING=1" and lines[1].startswith("MONOTONIC_USEC=")
    n.on_event("config_loaded", {"ok": False})
    assert listener.recv() == ["READY=1", "STATUS=config refused; running the last good config"]

    class Rec:
        def __init__(self, ok: bool) -> None:
            self.ok = ok

    n.on_event("pass", {"seconds": 1.5, "records": [Rec(True), Rec(False)]})
    assert listener.recv() == ["STATUS=last pass: 2 action(s), 1 failed, 1.50s"]
    n.on_event("stopping", {})
    assert listener.recv() == ["STOPPING=1", "STATUS=stopping: finishing in-flight work"]
