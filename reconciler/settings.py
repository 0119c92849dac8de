"""Daemon process settings: where state lives, logging, metrics. Not the desired state (config.py).

Sources, strongest first: CLI flags (passed to load_settings), RECONCILER_* environment variables
(what a systemd unit's Environment= sets), then the defaults below.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .socketpath import CONTROL_SOCKET_NAME, DEFAULT_STATE_DIR

_ADDRESS_RE = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]*):(\d{1,5})\Z")


class DaemonSettings(BaseSettings):
    # extra="forbid": a misspelt override from the CLI is a bug to surface, not to ignore
    model_config = SettingsConfigDict(env_prefix="RECONCILER_", extra="forbid")

    state_dir: Path = DEFAULT_STATE_DIR
    control_socket: Path | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    metrics_address: str | None = None
    # seconds between periodic full passes, even when nothing seems to have changed
    safety_interval: float = Field(default=300.0, gt=0, allow_inf_nan=False)
    # seconds between garbage collections of every pool (0: never); reclaims space of deleted sets
    gc_interval: float = Field(default=3600.0, ge=0)
    # seconds between full verifications of every pool (0: never); re-reads all stored data
    verify_interval: float = Field(default=0.0, ge=0)

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _lowercase(cls, v: Any) -> Any:
        # LOG_LEVEL=INFO is how people write it in unit files
        return v.strip().lower() if isinstance(v, str) else v

    @field_validator("metrics_address")
    @classmethod
    def _check_address(cls, v: str | None) -> str | None:
        if v is None:
            return v
        m = _ADDRESS_RE.match(v)
        if m is None or not 0 < int(m.group(2)) < 65536:
            raise ValueError(f"invalid metrics address {v!r}: expected host:port like 127.0.0.1:9479")
        return v

    @property
    def control_socket_path(self) -> Path:
        return (
            self.control_socket if self.control_socket is not None else self.state_dir / CONTROL_SOCKET_NAME
        )


def load_settings(**overrides: Any) -> DaemonSettings:
    """Settings from the environment, with non-None overrides (CLI flags) taking precedence."""
    given = {k: v for k, v in overrides.items() if v is not None}
    return DaemonSettings(**given)


__all__ = ["DaemonSettings", "load_settings"]
