"""Daemon settings: defaults, RECONCILER_* environment, CLI overrides on top."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from reconciler.settings import DaemonSettings, load_settings

_VARS = (
    "STATE_DIR",
    "CONTROL_SOCKET",
    "LOG_LEVEL",
    "LOG_FORMAT",
    "METRICS_ADDRESS",
    "SAFETY_INTERVAL",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in _VARS:
        monkeypatch.delenv(f"RECONCILER_{var}", raising=False)


def test_defaults() -> None:
    s = load_settings()
    assert s.state_dir == Path("./var/state")
    assert s.control_socket is None
    assert s.control_socket_path == Path("./var/state/control.sock")
    assert (s.log_level, s.log_format) == ("info", "text")
    assert s.metrics_address is None
    assert s.safety_interval == 300.0


def test_environment_with_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECONCILER_STATE_DIR", "/var/lib/reconciler")
    monkeypatch.setenv("RECONCILER_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("RECONCILER_LOG_FORMAT", "json")
    monkeypatch.setenv("RECONCILER_METRICS_ADDRESS", "127.0.0.1:9479")
    monkeypatch.setenv("RECONCILER_SAFETY_INTERVAL", "60")
    monkeypatch.setenv("STATE_DIR", "/not/without/prefix")
    s = load_settings()
    assert s.state_dir == Path("/var/lib/reconciler")
    assert s.control_socket_path == Path("/var/lib/reconciler/control.sock")
    assert (s.log_level, s.log_format) == ("debug", "json")
    assert s.metrics_address == "127.0.0.1:9479"
    assert s.safety_interval == 60.0


def test_overrides_beat_environment_and_none_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECONCILER_STATE_DIR", "/from/env")
    monkeypatch.setenv("RECONCILER_LOG_LEVEL", "warning")
    s = load_settings(state_dir=Path("/from/cli"), log_level=None, control_socket=Path("/run/r.sock"))
    assert s.state_dir == Path("/from/cli")
    assert s.log_level == "warning"  # None: the flag was not given, the environment stays
    assert s.control_socket_path == Path("/run/r.sock")


def test_invalid_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError):
        load_settings(log_level="verbose")
    with pytest.raises(ValidationError):
        load_settings(metrics_address="nowhere")
    with pytest.raises(ValidationError):
        load_settings(safety_interval=0)
    with pytest.raises(ValidationError):
        load_settings(no_such_setting=1)
    monkeypatch.setenv("RECONCILER_LOG_FORMAT", "xml")
    with pytest.raises(ValidationError):
        DaemonSettings()


@pytest.mark.parametrize(
    ("env", "flags"),
    [
        ({}, {}),
        ({"RECONCILER_STATE_DIR": "/srv/state"}, {}),
        ({"reconciler_state_dir": "/srv/lower"}, {}),
        ({"RECONCILER_CONTROL_SOCKET": "/run/r.sock", "RECONCILER_STATE_DIR": "/srv/state"}, {}),
        ({"RECONCILER_STATE_DIR": "/srv/state"}, {"state_dir": "/flag/state"}),
        ({"RECONCILER_CONTROL_SOCKET": "/run/r.sock"}, {"state_dir": "/flag/state"}),
        ({"RECONCILER_CONTROL_SOCKET": "/run/r.sock"}, {"control_socket": "/flag/c.sock"}),
    ],
)
def test_the_cli_finds_the_control_socket_where_the_daemon_puts_it(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], flags: dict[str, str]
) -> None:
    """The CLI resolves the socket without pydantic (start-up time); the daemon with
    DaemonSettings: the same answer for every mix of flags and environment."""
    from reconciler.socketpath import control_socket_path

    for k, v in env.items():
        monkeypatch.setenv(k, v)
    daemon = load_settings(**flags).control_socket_path
    assert (
        control_socket_path(state_dir=flags.get("state_dir"), control_socket=flags.get("control_socket"))
        == daemon
    )


def test_the_control_client_loads_without_the_domain_and_agent_types() -> None:
    """Every client command imports the control API's client; it needs protobuf timestamps, not
    the domain dataclasses, the agent API or pydantic (about 30 ms of each command's start-up)."""
    code = (
        "import sys, reconciler.control.client, reconciler.socketpath; "
        "heavy = [m for m in ('reconciler.domain', 'reconciler.agent.api', 'reconciler.serde', 'pydantic') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
