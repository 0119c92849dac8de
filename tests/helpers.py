"""Helpers for integration tests: real daemon and agent processes, the real CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
RECONCILER = [sys.executable, "-m", "reconciler.cli"]


def env_for(state_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["RECONCILER_STATE_DIR"] = str(state_dir)
    env.pop("RECONCILER_CONTROL_SOCKET", None)
    env["PYTHONPATH"] = str(ROOT)
    return env


def cli(
    state_dir: Path, *args: str, check: bool = False, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [*RECONCILER, *args],
        env=env_for(state_dir),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"reconciler {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def cli_json(state_dir: Path, *args: str) -> Any:
    proc = cli(state_dir, *args, "--json", check=True)
    return json.loads(proc.stdout)


def wait_for(
    pred: Callable[[], Any], *, timeout: float = 30, interval: float = 0.1, what: str = "condition"
) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class DaemonProcess:
    """`reconciler daemon -c CONFIG` as a real subprocess with its own state dir."""

    def __init__(self, config: Path, state_dir: Path, *extra: str) -> None:
        self.config = config
        self.state_dir = state_dir
        self.log = state_dir.parent / f"{state_dir.name}-daemon.log"
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> DaemonProcess:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [*RECONCILER, "daemon", "-c", str(self.config), *self.extra],
            env=env_for(self.state_dir),
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            cwd=self.config.parent,
        )
        sock = self.state_dir / "control.sock"
        try:
            wait_for(lambda: sock.exists() or self.proc.poll() is not None, timeout=30, what="control socket")  # type: ignore[union-attr]
        except AssertionError:
            self.stop()
            raise
        if self.proc.poll() is not None:
            raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{self.output()}")
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 30) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._fh.close()
        return self.proc.returncode

    def __exit__(self, *exc: object) -> None:
        self.stop()


class AgentProcess:
    """`reconciler agent -c agent.yaml` as a real subprocess; `port` is read from its READY line."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0
        self.log = config.with_suffix(".log")

    def start(self) -> AgentProcess:
        self._fh = open(self.log, "a")
        self.proc = subprocess.Popen(
            [*RECONCILER, "agent", "-c", str(self.config)],
            stdout=subprocess.PIPE,
            stderr=self._fh,
            text=True,
            env=env_for(self.config.parent),
            cwd=self.config.parent,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("READY"):
            self.proc.wait(10)
            raise AssertionError(
                f"agent did not start ({self.proc.returncode}): {line}\n{self.log.read_text()}"
            )
        self.port = int(line.split("port=")[1])
        return self

    def __enter__(self) -> AgentProcess:
        return self.start()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._fh.close()
        return self.proc.returncode

    def __exit__(self, *exc: object) -> None:
        self.stop()


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@contextmanager
def small_tmpfs(mnt: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` (e.g. "6m") mounted at `mnt`, for a disk that fills up; unmounted after.
    Skips the test where it cannot mount (no root)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs")
    mnt.mkdir()
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], capture_output=True, text=True
    )
    if res.returncode != 0:
        pytest.skip(f"cannot mount tmpfs: {res.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
