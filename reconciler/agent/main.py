"""`reconciler agent -c agent.yaml`: a node agent serving its pools over gRPC."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import grpc
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .. import sdnotify
from ..config import ConfigPath, NonEmptyStr, PoolConfig, is_loopback_address
from ..durations import parse_duration
from ..errors import ConfigError, ReconcilerError
from ..logs import setup_logging
from ..nodes import make_backends
from ..replication.sender import dialer_from_tls
from .core import NodeAgent
from .server import build_server

log = logging.getLogger(__name__)


class AgentTLSConfig(BaseModel):
    """The agent's side of mTLS: its own certificate, the CA its clients' certificates must chain
    to, and which of those clients may talk to it at all."""

    model_config = ConfigDict(extra="forbid", strict=True)

    ca: ConfigPath
    cert: ConfigPath
    key: ConfigPath
    # Names a client certificate must carry (subject CN or a DNS subjectAltName) to be served:
    # the daemon's name, plus the nodes that replicate to this one. Unset: any certificate from
    # the CA (logged as a warning at startup); an empty list refuses everybody.
    allowed_clients: list[NonEmptyStr] | None = None


class AgentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    node: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
    listen: str  # host:port, or unix:/path
    pools: dict[str, PoolConfig] = Field(min_length=1)
    tls: AgentTLSConfig | None = None
    insecure: bool = False  # plain text: only on loopback or a unix socket, and only when asked for
    # Freeze/thaw hooks arrive with the daemon's snapshot request and run as commands on this node,
    # so a remote agent runs them only when its own config says so (and only for allowed clients).
    allow_hooks: bool = False
    unlock_floor: timedelta = timedelta(days=1)
    # "full" (default): a created snapshot survives a power loss once acknowledged. "normal": its
    # catalog row is not fsynced (about one flush less per create); safe against agent crashes,
    # but a power loss soon after a create may lose that snapshot (never leaves a partial one).
    catalog_sync: Literal["full", "normal"] = "full"

    @field_validator("unlock_floor", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> Any:
        return parse_duration(v) if isinstance(v, str) else v


def load_agent_config(path: Path) -> AgentConfig:
    from ..config_loader import load_model

    cfg = load_model(path, AgentConfig)
    errors = []
    if cfg.tls is None and not cfg.insecure:
        errors.append(
            f"{path}: listen: no tls section; set tls (ca, cert, key) or insecure: true (loopback only)"
        )
    if cfg.tls is not None and cfg.insecure:
        errors.append(f"{path}: insecure: true together with a tls section; choose one")
    if cfg.tls is None and cfg.insecure and not is_loopback_address(cfg.listen):
        errors.append(
            f"{path}: listen: insecure transport is only allowed on loopback or a unix socket, not {cfg.listen}"
        )
    if errors:
        raise ConfigError(errors)
    return cfg


def server_credentials(tls: AgentTLSConfig) -> grpc.ServerCredentials:
    return grpc.ssl_server_credentials(
        [(Path(tls.key).read_bytes(), Path(tls.cert).read_bytes())],
        root_certificates=Path(tls.ca).read_bytes(),
        require_client_auth=True,  # mTLS: only holders of a certificate from our CA may talk to us
    )


def run_agent(config_path: Path, *, log_level: str = "info", log_format: str = "text") -> int:
    setup_logging(log_level, log_format)
    try:
        cfg = load_agent_config(config_path)
    except ConfigError as exc:
        for e in exc.errors:
            print(e, file=sys.stderr)
        return 1
    except ValidationError as exc:
        print(f"{config_path}: {exc}", file=sys.stderr)
        return 1
    try:
        agent = NodeAgent(
            cfg.node,
            make_backends(cfg.pools),
            unlock_floor=cfg.unlock_floor,
            allow_hooks=cfg.allow_hooks,
            durable_inserts=cfg.catalog_sync == "full",
        )
    except ReconcilerError as exc:
        print(f"{config_path}: {exc}", file=sys.stderr)
        return 1
    allowed = cfg.tls.allowed_clients if cfg.tls is not None else None
    if cfg.tls is not None and allowed is None:
        log.warning(
            "tls.allowed_clients is not set: any certificate signed by %s is accepted; "
            "list the daemon's (and replicating nodes') names to restrict it",
            cfg.tls.ca,
        )
    try:
        creds = server_credentials(cfg.tls) if cfg.tls is not None else None
        server, port = build_server(
            agent,
            cfg.listen,
            credentials=creds,
            allowed_clients=allowed,
            replication_dialer=dialer_from_tls(cfg.tls),
        )
    except (OSError, ValueError, RuntimeError) as exc:  # unreadable certificate, address in use
        print(f"{config_path}: cannot serve on {cfg.listen}: {exc}", file=sys.stderr)
        agent.close()
        return 1
    server.start()
    sdnotify.ready(f"node {cfg.node} on port {port}")
    watchdog = sdnotify.Watchdog(lambda: True)
    watchdog.start()
    log.info(
        "agent for node %s listening on %s (port %d), pools: %s",
        cfg.node,
        cfg.listen,
        port,
        ", ".join(sorted(cfg.pools)),
    )
    print(f"READY port={port}", flush=True)  # tests and scripts wait for this line
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    log.info("shutting down: finishing in-flight requests")
    sdnotify.stopping()
    watchdog.stop()
    server.stop(30).wait()  # a snapshot being cut completes; nothing partial becomes visible
    agent.close()
    log.info("stopped")
    return 0
