"""mTLS and access control between the daemon and real agent processes, with certificates made
by the lab PKI in a temporary directory.

- a daemon whose node has `tls:` snapshots through an agent that requires client certificates
  and lists the daemon in `tls.allowed_clients`;
- a certificate from another CA fails the handshake; one from the right CA whose name is not in
  `allowed_clients` gets PERMISSION_DENIED naming it, also in the daemon's status;
- plaintext only on loopback and only when asked for; the control socket is owner-only;
- `reconciler tls init` writes what docs/operations.md says.
"""

from __future__ import annotations

import json
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from grpc_health.v1 import health_pb2, health_pb2_grpc

from reconciler.tlslab import LabPKI, LeafFiles, create_lab_pki
from reconciler.v1 import agent_pb2 as pb
from reconciler.v1 import agent_pb2_grpc as pb_grpc
from tests.helpers import RECONCILER, AgentProcess, DaemonProcess, cli, cli_json, env_for, wait_for, write

NODE = "storage-a"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> LabPKI:
    # storage-b: a certificate from the right CA whose name the agent does not allow
    return create_lab_pki(tmp_path_factory.mktemp("pki") / "tls", nodes=[NODE, "storage-b"])


@pytest.fixture(scope="module")
def foreign_pki(tmp_path_factory: pytest.TempPathFactory) -> LabPKI:
    return create_lab_pki(tmp_path_factory.mktemp("foreign") / "tls", nodes=[NODE])


def agent_yaml(pki: LabPKI, pool: Path, *, allowed: list[str] | None, listen: str = "127.0.0.1:0") -> str:
    node = pki["nodes"][NODE]
    tls = {"ca": str(pki["ca"]), "cert": str(node["cert"]), "key": str(node["key"])}
    if allowed is not None:
        tls["allowed_clients"] = allowed  # type: ignore[assignment]
    return json.dumps(
        {
            "node": NODE,
            "listen": listen,
            "tls": tls,
            "pools": {"main": {"type": "chunkstore", "path": str(pool), "create": True}},
        }
    )


@pytest.fixture(scope="module")
def agent_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("agent")
    write(d / "pool" / "vms" / "vm1" / "disk.img", "v" * 10_000)
    return d


@pytest.fixture(scope="module")
def agent(pki: LabPKI, agent_dir: Path) -> Iterator[AgentProcess]:
    # names are compared case-insensitively, as DNS names are
    cfg = write(agent_dir / "agent.yaml", agent_yaml(pki, agent_dir / "pool", allowed=["Reconciler-Daemon"]))
    with AgentProcess(cfg) as a:
        yield a


def daemon_yaml(pki: LabPKI, port: int, client: LeafFiles, pool: Path) -> str:
    return json.dumps(
        {
            "version": 1,
            "nodes": {
                NODE: {
                    "address": f"127.0.0.1:{port}",
                    "tls": {
                        "ca": str(pki["ca"]),
                        "cert": str(client["cert"]),
                        "key": str(client["key"]),
                        "server_name": NODE,
                    },
                    "pools": {"main": {"type": "chunkstore", "path": str(pool)}},
                }
            },
            "resources": {"vm1": {"kind": "vm", "volumes": ["vms/vm1"]}},
        }
    )


def _channel(port: int, ca: Path, leaf: LeafFiles) -> grpc.Channel:
    creds = grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes(),
        private_key=leaf["key"].read_bytes(),
        certificate_chain=leaf["cert"].read_bytes(),
    )
    return grpc.secure_channel(f"127.0.0.1:{port}", creds, options=[("grpc.ssl_target_name_override", NODE)])


def _node_info(port: int, ca: Path, leaf: LeafFiles) -> pb.NodeInfo:
    with _channel(port, ca, leaf) as ch:
        info: pb.NodeInfo = pb_grpc.AgentStub(ch).GetNodeInfo(pb.GetNodeInfoRequest(), timeout=10)
        return info


def _status_node(state_dir: Path) -> Any:
    nodes = cli_json(state_dir, "status")["nodes"]
    assert [n["name"] for n in nodes] == [NODE]
    return nodes[0]


# --- the happy path ------------------------------------------------------------------------------
def test_daemon_snapshots_through_an_mtls_agent(
    pki: LabPKI, agent: AgentProcess, agent_dir: Path, tmp_path: Path
) -> None:
    cfg = write(tmp_path / "config.yaml", daemon_yaml(pki, agent.port, pki["daemon"], agent_dir / "pool"))
    with DaemonProcess(cfg, tmp_path / "state") as d:
        sock = d.state_dir / "control.sock"
        assert stat.S_ISSOCK(sock.stat().st_mode)
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600, oct(sock.stat().st_mode)
        node = wait_for(lambda: (n := _status_node(d.state_dir))["reachable"] and n, what="node reachable")
        assert node["address"] == f"127.0.0.1:{agent.port}"
        s = cli_json(d.state_dir, "snapshot", "create", "resource:vm1", "--expires", "1h")
        assert s["complete"] and [(m["node"], m["volume"]) for m in s["members"]] == [(NODE, "vms/vm1")]
        listed = cli_json(d.state_dir, "snapshot", "list")
        assert [x["set_id"] for x in listed] == [s["set_id"]]
        assert cli(d.state_dir, "snapshot", "delete", s["set_id"]).returncode == 0
        assert cli_json(d.state_dir, "snapshot", "list") == []


# --- refused clients -----------------------------------------------------------------------------
def test_a_certificate_from_another_ca_fails_the_handshake(
    pki: LabPKI, foreign_pki: LabPKI, agent: AgentProcess
) -> None:
    # the client trusts the agent's CA (so only the client side can fail) but presents a foreign cert
    with pytest.raises(grpc.RpcError) as err:
        _node_info(agent.port, pki["ca"], foreign_pki["daemon"])
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    # ...and a client without any certificate fares no better
    with (
        grpc.secure_channel(
            f"127.0.0.1:{agent.port}",
            grpc.ssl_channel_credentials(root_certificates=pki["ca"].read_bytes()),
            options=[("grpc.ssl_target_name_override", NODE)],
        ) as ch,
        pytest.raises(grpc.RpcError) as err,
    ):
        pb_grpc.AgentStub(ch).GetNodeInfo(pb.GetNodeInfoRequest(), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert _node_info(agent.port, pki["ca"], pki["daemon"]).node == NODE  # still serving


def test_a_right_ca_certificate_not_in_allowed_clients_is_denied_on_every_rpc(
    pki: LabPKI, agent: AgentProcess
) -> None:
    intruder = pki["nodes"]["storage-b"]
    with _channel(agent.port, pki["ca"], intruder) as ch:
        stub = pb_grpc.AgentStub(ch)
        calls: list[Callable[[], object]] = [
            lambda: stub.GetNodeInfo(pb.GetNodeInfoRequest(), timeout=10),
            lambda: list(stub.ListSnapshots(pb.ListSnapshotsRequest(pool="main"), timeout=10)),
            lambda: stub.DeleteSnapshots(
                pb.DeleteSnapshotsRequest(refs=[pb.SnapshotRef(set_id="x", pool="main", volume="vms/vm1")]),
                timeout=10,
            ),
            lambda: list(stub.Verify(pb.VerifyRequest(pool="main"), timeout=10)),
            # the health service is behind the same gate
            lambda: health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10),
        ]
        for call in calls:
            with pytest.raises(grpc.RpcError) as err:
                call()
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
            details = err.value.details() or ""
            assert "CN='storage-b'" in details
            assert "tls.allowed_clients" in details
            assert NODE in details
    assert "refused client certificate CN='storage-b'" in agent.log.read_text()


def test_the_daemon_status_names_a_denied_certificate(
    pki: LabPKI, agent: AgentProcess, agent_dir: Path, tmp_path: Path
) -> None:
    cfg = write(
        tmp_path / "config.yaml", daemon_yaml(pki, agent.port, pki["nodes"]["storage-b"], agent_dir / "pool")
    )
    with DaemonProcess(cfg, tmp_path / "state") as d:
        node = wait_for(lambda: (n := _status_node(d.state_dir))["error"] and n, what="node error in status")
        assert node["reachable"] is False
        assert "not allowed" in node["error"] and "CN='storage-b'" in node["error"]
        st = cli_json(d.state_dir, "status")
        [cond] = [c for c in st["conditions"] if c["kind"] == "NodeReachable"]
        assert cond["ok"] is False and "CN='storage-b'" in cond["message"]
        human = cli(d.state_dir, "status").stdout
        assert "DOWN" in human
        r = cli(d.state_dir, "snapshot", "create", "resource:vm1", "--expires", "1h")
        assert r.returncode != 0 and "storage-b" in r.stderr and "not allowed" in r.stderr


def test_without_allowed_clients_any_certificate_of_the_ca_is_served(pki: LabPKI, tmp_path: Path) -> None:
    cfg = write(tmp_path / "agent.yaml", agent_yaml(pki, tmp_path / "pool", allowed=None))
    with AgentProcess(cfg) as a:
        assert _node_info(a.port, pki["ca"], pki["nodes"]["storage-b"]).node == NODE
    assert "tls.allowed_clients is not set" in a.log.read_text()


def test_an_empty_allowed_clients_list_refuses_everybody(pki: LabPKI, tmp_path: Path) -> None:
    cfg = write(tmp_path / "agent.yaml", agent_yaml(pki, tmp_path / "pool", allowed=[]))
    with AgentProcess(cfg) as a, pytest.raises(grpc.RpcError) as err:
        _node_info(a.port, pki["ca"], pki["daemon"])
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


# --- plaintext and startup checks ----------------------------------------------------------------
def _run_agent(cfg: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*RECONCILER, "agent", "-c", str(cfg)],
        env=env_for(cfg.parent),
        capture_output=True,
        text=True,
        timeout=30,
        cwd=cfg.parent,
    )


def _plain(listen: str, pool: Path, **extra: object) -> str:
    return json.dumps(
        {
            "node": NODE,
            "listen": listen,
            "pools": {"main": {"type": "chunkstore", "path": str(pool), "create": True}},
        }
        | extra
    )


@pytest.mark.parametrize(
    ("listen", "extra", "message"),
    [
        (
            "0.0.0.0:0",
            {"insecure": True},
            "insecure transport is only allowed on loopback or a unix socket, not 0.0.0.0:0",
        ),
        ("10.1.2.3:7443", {"insecure": True}, "only allowed on loopback"),
        ("storage-a.example.net:7443", {"insecure": True}, "only allowed on loopback"),
        ("127.0.0.1:0", {}, "no tls section; set tls (ca, cert, key) or insecure: true"),
    ],
)
def test_plaintext_is_refused_at_startup_unless_loopback_and_explicit(
    tmp_path: Path, listen: str, extra: dict[str, object], message: str
) -> None:
    cfg = write(tmp_path / "agent.yaml", _plain(listen, tmp_path / "pool", **extra))
    r = _run_agent(cfg)
    assert r.returncode == 1
    assert message in r.stderr and str(cfg) in r.stderr
    assert "READY" not in r.stdout and "Traceback" not in r.stderr


def test_tls_and_insecure_together_are_refused(pki: LabPKI, tmp_path: Path) -> None:
    cfg = write(
        tmp_path / "agent.yaml",
        json.dumps(json.loads(agent_yaml(pki, tmp_path / "pool", allowed=["x"])) | {"insecure": True}),
    )
    r = _run_agent(cfg)
    assert r.returncode == 1 and "insecure: true together with a tls section" in r.stderr


def test_unreadable_certificate_is_a_clear_startup_error(pki: LabPKI, tmp_path: Path) -> None:
    text = agent_yaml(pki, tmp_path / "pool", allowed=["x"]).replace(
        str(pki["ca"]), str(tmp_path / "nope.pem")
    )
    r = _run_agent(write(tmp_path / "agent.yaml", text))
    assert r.returncode == 1 and "nope.pem" in r.stderr and "Traceback" not in r.stderr


def test_plaintext_on_loopback_when_asked_for_explicitly(tmp_path: Path) -> None:
    for listen in ("127.0.0.1:0", f"unix:{tmp_path / 'agent.sock'}"):
        cfg = write(tmp_path / "agent.yaml", _plain(listen, tmp_path / "pool", insecure=True))
        with AgentProcess(cfg) as a:
            target = listen if listen.startswith("unix:") else f"127.0.0.1:{a.port}"
            with grpc.insecure_channel(target) as ch:
                assert pb_grpc.AgentStub(ch).GetNodeInfo(pb.GetNodeInfoRequest(), timeout=10).node == NODE


# --- the lab PKI command -------------------------------------------------------------------------
def test_tls_init_writes_what_the_docs_say(tmp_path: Path) -> None:
    out = tmp_path / "etc" / "tls"
    r = cli(tmp_path, "tls", "init", str(out), "--node", "storage-1", "--node", "storage-2", check=True)
    files = {
        "ca.pem",
        "ca-key.pem",
        "daemon.pem",
        "daemon-key.pem",
        "node-storage-1.pem",
        "node-storage-1-key.pem",
        "node-storage-2.pem",
        "node-storage-2-key.pem",
    }
    assert {p.name for p in out.iterdir()} == files
    assert {line.removeprefix("wrote ") for line in r.stdout.splitlines() if line.startswith("wrote ")} == {
        str(out / f) for f in files
    }
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    for p in out.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == (0o600 if p.name.endswith("-key.pem") else 0o644), p

    def cert(name: str) -> x509.Certificate:
        return x509.load_pem_x509_certificate((out / name).read_bytes())

    ca = cert("ca.pem")
    assert (ca.not_valid_after_utc - ca.not_valid_before_utc).days >= 3650  # "valid for 10 years"
    daemon = cert("daemon.pem")
    assert daemon.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "reconciler-daemon"
    san = daemon.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["reconciler-daemon"]
    node = cert("node-storage-2.pem")
    san = node.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["storage-2", "localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    assert 824 <= (node.not_valid_after_utc - node.not_valid_before_utc).days <= 826  # --days 825
    # again with one more node: only that node's pair is written, the rest is left alone
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    again = cli_json(tmp_path, "tls", "init", str(out), "--node", "storage-1", "--node", "storage-3")
    assert sorted(Path(p).name for p in again["created"]) == ["node-storage-3-key.pem", "node-storage-3.pem"]
    assert all((out / n).read_bytes() == data for n, data in before.items())
    # bad input is a clean usage error
    bad = cli(tmp_path, "tls", "init", str(tmp_path / "x"), "--node", "../evil")
    assert bad.returncode == 2 and "invalid node name" in bad.stderr
