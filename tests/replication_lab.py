"""Helpers for replication tests: agent processes on TLS with lab certificates, clients as the daemon
uses them, and deterministic volume content."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc

from reconciler.agent.api import CreateSetRequest, SnapshotKey, Target
from reconciler.agent.client import AgentClient
from reconciler.domain import SnapshotInfo
from reconciler.replication import wire
from reconciler.replication.api import Peer, ReplicateOutcome, ReplicateSpec
from reconciler.replication.client import ReplicationClient
from reconciler.replication.progress import TransferStats
from reconciler.tlslab import LabPKI, LeafFiles
from reconciler.v1 import replication_pb2 as rpb
from tests.helpers import AgentProcess, write


def unsqueeze(d: wire.Decoded) -> bytes:
    """A sparse block (wire.squeeze) as the target puts it back together."""
    assert d.kind == "sparse" and d.data is not None
    out, pos = bytearray(), 0
    for literal, zeros in zip(d.runs[0::2], d.runs[1::2], strict=True):
        out += d.data[pos : pos + literal]
        out += bytes(zeros)
        pos += literal
    return bytes(out)


class CollectLink:
    """A Link (replication/link.py) that keeps what a sender sends, with when, and answers nothing."""

    def __init__(self) -> None:
        self.frames: list[tuple[float, bytes]] = []

    def send(self, msg: rpb.ReceiveRequest) -> None:
        self.frames.append((time.monotonic(), wire.encode(msg)))

    def send_raw(self, frame: bytes) -> None:
        self.frames.append((time.monotonic(), frame))

    def recv(self) -> rpb.ReceiveResponse:
        raise AssertionError("a collecting link has no answers")

    def data(self) -> bytes:
        """The data messages' payloads, joined (sparse ones with their zeros put back)."""
        out = []
        for _t, frame in self.frames:
            d = wire.decode(frame)
            if d.kind == "data" and d.data is not None:
                out.append(bytes(d.data))
            elif d.kind == "sparse":
                out.append(unsqueeze(d))
        return b"".join(out)


def creds(pki: LabPKI, leaf: LeafFiles) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=Path(pki["ca"]).read_bytes(),
        private_key=Path(leaf["key"]).read_bytes(),
        certificate_chain=Path(leaf["cert"]).read_bytes(),
    )


@dataclass
class Site:
    """One agent process with one pool `main` and the daemon's clients for it."""

    name: str
    dir: Path
    pool: Path
    pki: LabPKI
    backend: str = "chunkstore"
    allowed: list[str] | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    more_pools: Mapping[str, Path] = field(default_factory=dict)  # name -> path, same backend
    proc: AgentProcess | None = None
    _client: AgentClient | None = None
    _repl: ReplicationClient | None = None

    @property
    def config(self) -> Path:
        return self.dir / "agent.yaml"

    def write_config(self, port: int = 0) -> None:
        node = self.pki["nodes"][self.name]
        tls: dict[str, Any] = {"ca": str(self.pki["ca"]), "cert": str(node["cert"]), "key": str(node["key"])}
        if self.allowed is not None:
            tls["allowed_clients"] = self.allowed
        pool: dict[str, Any] = {"type": self.backend, "path": str(self.pool), "create": True, **self.options}
        pools = {"main": pool}
        for name, path in self.more_pools.items():
            pools[name] = {**pool, "path": str(path)}
        write(
            self.config,
            json.dumps({"node": self.name, "listen": f"127.0.0.1:{port}", "tls": tls, "pools": pools}),
        )

    def start(self) -> Site:
        port = self.proc.port if self.proc is not None else 0
        self.write_config(port)
        self.proc = AgentProcess(self.config).start()
        return self

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc._fh.close()
        self.close_clients()

    def stop(self) -> None:
        if self.proc is not None and self.proc.proc is not None and self.proc.proc.poll() is None:
            self.proc.stop()
        self.close_clients()

    def restart(self) -> None:
        """Start again on the same port (after kill or stop)."""
        assert self.proc is not None
        port = self.proc.port
        self.write_config(port)
        self.proc = AgentProcess(self.config).start()
        assert self.proc.port == port

    def close_clients(self) -> None:
        if self._client is not None:
            self._client.close()
        self._client = None
        self._repl = None

    @property
    def address(self) -> str:
        assert self.proc is not None
        return f"127.0.0.1:{self.proc.port}"

    @property
    def client(self) -> AgentClient:
        if self._client is None:
            self._client = AgentClient(
                self.name,
                self.address,
                credentials=creds(self.pki, self.pki["daemon"]),
                server_name=self.name,
            )
        return self._client

    @property
    def repl(self) -> ReplicationClient:
        if self._repl is None:
            self._repl = ReplicationClient(self.client.channel, where=f"node {self.name}")
        return self._repl

    def peer(self, **kw: Any) -> Peer:
        return Peer(address=self.address, server_name=self.name, node=self.name, **kw)

    def snapshot(
        self,
        set_id: str,
        volumes: list[str],
        *,
        labels: Mapping[str, str] | None = None,
        expires: datetime | None = None,
    ) -> list[SnapshotInfo]:
        """`volumes`: names in pool main, or POOL:VOLUME."""
        pools_volumes = [v.split(":", 1) if ":" in v else ["main", v] for v in volumes]
        res = self.client.create_set(
            CreateSetRequest(
                set_id=set_id,
                name=f"name of {set_id}",
                targets=tuple(Target(p, v, v.split("/")[-1]) for p, v in pools_volumes),
                created=datetime.now(UTC),
                labels=dict(
                    labels
                    or {"scope": "resource:vm1", "kind": "manual", "expected_members": str(len(volumes))}
                ),
                expires=expires or datetime.now(UTC) + timedelta(days=1),
            )
        )
        return list(res.snapshots)

    def sets(self, pool: str = "main") -> dict[str, list[SnapshotInfo]]:
        out: dict[str, list[SnapshotInfo]] = {}
        for s in self.client.list_snapshots(pool)[1]:
            out.setdefault(s.set_id, []).append(s)
        return out

    def replicate(
        self, set_id: str, to: Site, *, progress: list[TransferStats] | None = None, **kw: Any
    ) -> ReplicateOutcome:
        spec = ReplicateSpec(set_id=set_id, target=to.peer(), **kw)
        return self.repl.replicate(spec, progress.append if progress is not None else (lambda _s: None))

    def verify(self, set_id: str = "") -> list[str]:
        return list(self.client.verify("main", set_id).problems)

    def content(self, set_id: str, volume: str, dest: Path) -> dict[str, bytes]:
        """Clone the snapshot to a new volume and read every file back."""
        name = f"check-{set_id}-{volume.replace('/', '_')}"[:100].replace(":", "_").replace("@", "_")
        self.client.clone(SnapshotKey(set_id, "main", volume), name)
        try:
            return read_tree(self.pool / name)
        finally:
            if self.backend == "btrfs":
                subprocess.run(
                    ["btrfs", "subvolume", "delete", str(self.pool / name)], capture_output=True, check=False
                )
            else:
                shutil.rmtree(self.pool / name)


def read_tree(root: Path) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            if not p.is_symlink():
                out[str(p.relative_to(root))] = p.read_bytes()
    return out


def fill_volume(root: Path, *, seed: int, big_mb: int = 8, small: int = 40) -> None:
    """A disk-image-like file (mixed random/text/zero 64 KiB regions) and some small files."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    words = [bytes(rng.choices(b"abcdefghij klmnop", k=rng.randint(3, 9))) for _ in range(500)]
    with open(root / "disk.img", "wb") as fh:
        for _ in range(big_mb * 16):
            kind = rng.choice(("random", "text", "zero"))
            if kind == "random":
                fh.write(rng.randbytes(65536))
            elif kind == "text":
                fh.write(b" ".join(rng.choices(words, k=12000))[:65536].ljust(65536, b"."))
            else:
                fh.write(bytes(65536))
    for i in range(small):
        d = root / "files" / f"d{i % 4}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}.txt").write_bytes(b" ".join(rng.choices(words, k=rng.randint(10, 2000))))


def change_volume(root: Path, *, seed: int, fraction: float = 0.01) -> int:
    """Overwrite `fraction` of disk.img in place with random 4 KiB-aligned runs; returns bytes changed."""
    rng = random.Random(seed)
    path = root / "disk.img"
    size = path.stat().st_size
    target = int(size * fraction)
    done = 0
    with open(path, "r+b") as fh:
        while done < target:
            n = min(rng.randint(4, 32) * 4096, target - done)
            n = max(4096, n // 4096 * 4096)
            off = rng.randrange(0, (size - n) // 4096) * 4096
            fh.seek(off)
            fh.write(rng.randbytes(n))
            done += n
    return done
