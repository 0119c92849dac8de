"""Connections to the nodes of a config: the embedded node's agent served in-process, and clients.

The embedded node is a real agent served over gRPC on a unix socket in the state directory, and the
daemon talks to it through the same AgentClient as to a remote node: one code path for both.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc

from .agent.client import DEFAULT_DEADLINES, AgentClient, Deadlines
from .agent.core import NodeAgent
from .agent.server import build_server
from .backends import make_backend
from .backends.base import Backend
from .config import Config, NodeConfig, PoolConfig
from .demo import seed_volume
from .errors import FailedPrecondition, InvalidArgument
from .replication.btrfs import btrfs_program, send_stream_version

log = logging.getLogger(__name__)


def make_backends(pools: Mapping[str, PoolConfig]) -> dict[str, Backend]:
    out: dict[str, Backend] = {}
    for name, pc in pools.items():
        root = Path(pc.path)
        if not root.is_dir():
            if pc.create:
                root.mkdir(parents=True, exist_ok=True)
            else:
                raise InvalidArgument(f"pool {name}: {root} does not exist (set create: true to create it)")
        options = {"compression": pc.compression, "compression_level": pc.compression_level}
        out[name] = make_backend(pc.type, pool=name, root=root, options=options)
    warn_without_btrfs_progs(out)
    return out


def warn_without_btrfs_progs(backends: Mapping[str, Backend]) -> None:
    """btrfs pools take, list, restore and delete snapshots through ioctls, but sending and
    receiving them runs `btrfs send`/`btrfs receive`: say at start-up when that cannot work,
    rather than at the first transfer."""
    pools = sorted(name for name, b in backends.items() if b.kind == "btrfs")
    if not pools:
        return
    try:
        btrfs_program()
        send_stream_version()  # looked up once, now rather than in the first transfer
    except FailedPrecondition as exc:
        log.warning(
            "%s; btrfs pool(s) %s take and restore snapshots, but cannot send or receive them (offsite sync) until it is installed",
            exc,
            ", ".join(pools),
        )


@dataclass
class EmbeddedNode:
    name: str
    agent: NodeAgent
    server: grpc.Server
    socket: Path
    pools: dict[str, PoolConfig]

    @property
    def target(self) -> str:
        return f"unix:{self.socket}"

    def stop(self, grace: float = 30.0) -> None:
        # in-flight RPCs (a snapshot being cut) finish; new ones are refused
        self.server.stop(grace).wait()
        self.agent.close()


def start_embedded(name: str, node: NodeConfig, state_dir: Path) -> EmbeddedNode:
    state_dir.mkdir(parents=True, exist_ok=True)
    socket = state_dir / f"agent-{name}.sock"
    if socket.exists():
        socket.unlink()
    agent = NodeAgent(name, make_backends(node.pools))
    server, _ = build_server(agent, f"unix:{socket}")
    old = os.umask(0o077)  # the socket is owner-only
    try:
        server.start()
    finally:
        os.umask(old)
    log.info("embedded node %s serving %d pool(s) on %s", name, len(node.pools), socket)
    return EmbeddedNode(name, agent, server, socket, dict(node.pools))


def client_for(
    name: str, node: NodeConfig, embedded: EmbeddedNode | None, *, deadlines: Deadlines = DEFAULT_DEADLINES
) -> AgentClient:
    if node.embedded:
        assert embedded is not None
        return AgentClient(name, embedded.target, deadlines=deadlines)
    assert node.address is not None
    if node.tls is None:
        # the config check already refused plain text to a remote node unless insecure: true
        return AgentClient(name, node.address, deadlines=deadlines)
    creds = grpc.ssl_channel_credentials(
        root_certificates=Path(node.tls.ca).read_bytes(),
        private_key=Path(node.tls.key).read_bytes(),
        certificate_chain=Path(node.tls.cert).read_bytes(),
    )
    return AgentClient(
        name, node.address, credentials=creds, server_name=node.tls.server_name, deadlines=deadlines
    )


def seed_demo_volumes(config: Config) -> None:
    """Embedded pools with seed_demo_data: create the volumes the config names, if missing."""
    for name, res in sorted(config.resources.items()):
        node_name, pool_name = config.resource_location(name)
        node = config.nodes[node_name]
        pool = node.pools[pool_name]
        if not (node.embedded and pool.seed_demo_data):
            continue
        root = Path(pool.path)
        root.mkdir(parents=True, exist_ok=True)
        for volume in res.volumes:
            seed_volume(root / volume, kind=res.kind)


class NodeSet:
    """The clients for the current config; rebuilt on reload, keeping what did not change."""

    def __init__(self, state_dir: Path, *, deadlines: Deadlines = DEFAULT_DEADLINES) -> None:
        self.state_dir = state_dir
        self.deadlines = deadlines  # of the clients made by apply() from now on
        self.embedded: EmbeddedNode | None = None
        self.clients: dict[str, AgentClient] = {}
        self._configs: dict[str, NodeConfig] = {}

    def apply(self, config: Config) -> list[str]:
        """Bring connections in line with `config`; returns the names of nodes that were (re)connected."""
        seed_demo_volumes(config)
        changed: list[str] = []
        for name in [n for n in self.clients if n not in config.nodes]:
            self._drop(name)
            changed.append(name)
        for name, node in sorted(config.nodes.items()):
            if self._configs.get(name) == node and name in self.clients:
                continue
            self._drop(name)
            embedded = None
            if node.embedded:
                embedded = self.embedded = start_embedded(name, node, self.state_dir)
            self.clients[name] = client_for(name, node, embedded, deadlines=self.deadlines)
            self._configs[name] = node
            changed.append(name)
        return changed

    def _drop(self, name: str) -> None:
        client = self.clients.pop(name, None)
        if client is not None:
            client.close()
        self._configs.pop(name, None)
        if self.embedded is not None and self.embedded.name == name:
            self.embedded.stop()
            self.embedded = None

    def close(self) -> None:
        for name in list(self.clients):
            self._drop(name)
