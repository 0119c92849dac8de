"""Where the daemon's control socket is, resolved without pydantic.

The CLI's client commands need this one path and nothing else of DaemonSettings (settings.py);
loading pydantic-settings for it doubled the start-up time of every `reconciler` command. The
rules are the same: a CLI flag, else the RECONCILER_* environment variable (any case, as
pydantic-settings reads them), else the default; tests/test_settings.py holds the two together.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

DEFAULT_STATE_DIR = Path("./var/state")
CONTROL_SOCKET_NAME = "control.sock"


def control_socket_path(
    *,
    state_dir: str | Path | None = None,
    control_socket: str | Path | None = None,
    environ: Mapping[str, str] = os.environ,
) -> Path:
    env = {k.upper(): v for k, v in environ.items() if k.upper().startswith("RECONCILER_")}
    socket = control_socket or env.get("RECONCILER_CONTROL_SOCKET")
    if socket:
        return Path(socket)
    return Path(state_dir or env.get("RECONCILER_STATE_DIR") or DEFAULT_STATE_DIR) / CONTROL_SOCKET_NAME
