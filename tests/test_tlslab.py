"""The lab PKI: files, permissions, certificate contents, and a real gRPC mTLS handshake."""

from __future__ import annotations

import ipaddress
import stat
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from reconciler.tlslab import LabPKI, create_lab_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> LabPKI:
    return create_lab_pki(tmp_path_factory.mktemp("pki") / "tls", nodes=["storage-a", "storage-b"])


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> LabPKI:
    return create_lab_pki(tmp_path_factory.mktemp("pki-other"), nodes=["storage-a"])


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_layout_and_permissions(pki: LabPKI) -> None:
    d = pki["dir"]
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    names = {p.name for p in d.iterdir()}
    assert names == {
        "ca.pem",
        "ca-key.pem",
        "daemon.pem",
        "daemon-key.pem",
        "node-storage-a.pem",
        "node-storage-a-key.pem",
        "node-storage-b.pem",
        "node-storage-b-key.pem",
    }
    for p in d.iterdir():
        mode = stat.S_IMODE(p.stat().st_mode)
        assert mode == (0o600 if p.name.endswith("-key.pem") else 0o644), (p, oct(mode))
    assert set(pki["created"]) == {d / n for n in names}
    assert pki["daemon"]["name"] == "reconciler-daemon"


def test_certificate_contents(pki: LabPKI) -> None:
    ca = _cert(pki["ca"])
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    node = _cert(pki["nodes"]["storage-a"]["cert"])
    node.verify_directly_issued_by(ca)
    san = node.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"storage-a", "localhost"}
    assert ipaddress.ip_address("127.0.0.1") in san.get_values_for_type(x509.IPAddress)
    eku = node.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    daemon = _cert(pki["daemon"]["cert"])
    daemon.verify_directly_issued_by(ca)
    assert list(daemon.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH
    ]
    days = (node.not_valid_after_utc - node.not_valid_before_utc).days
    assert 824 <= days <= 826


def test_rerun_keeps_existing_and_adds_nodes(tmp_path: Path) -> None:
    first = create_lab_pki(tmp_path, nodes=["a"])
    ca_before = first["ca"].read_bytes()
    a_before = first["nodes"]["a"]["cert"].read_bytes()
    second = create_lab_pki(tmp_path, nodes=["a", "b"])
    assert second["ca"].read_bytes() == ca_before
    assert second["nodes"]["a"]["cert"].read_bytes() == a_before
    assert set(second["created"]) == {tmp_path / "node-b.pem", tmp_path / "node-b-key.pem"}
    _cert(second["nodes"]["b"]["cert"]).verify_directly_issued_by(_cert(second["ca"]))


def test_rejects_bad_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="invalid node name"):
        create_lab_pki(tmp_path, nodes=["../evil"])
    with pytest.raises(ValueError, match="duplicate"):
        create_lab_pki(tmp_path, nodes=["a", "a"])
    with pytest.raises(ValueError, match="daemon name"):
        create_lab_pki(tmp_path, nodes=["a"], daemon_name="bad name")
    assert not any(tmp_path.iterdir()), "nothing is written for invalid input"


# --- a real mTLS handshake ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(pki: LabPKI) -> Iterator[int]:
    node = pki["nodes"]["storage-a"]
    creds = grpc.ssl_server_credentials(
        [(node["key"].read_bytes(), node["cert"].read_bytes())],
        root_certificates=pki["ca"].read_bytes(),
        require_client_auth=True,
    )
    srv = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), srv)
    port = srv.add_secure_port("127.0.0.1:0", creds)
    srv.start()
    try:
        yield port
    finally:
        srv.stop(None).wait()


def _check(
    port: int, *, ca: Path, cert: Path, key: Path, server_name: str | None = None
) -> health_pb2.HealthCheckResponse:
    creds = grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes(), private_key=key.read_bytes(), certificate_chain=cert.read_bytes()
    )
    options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
    with grpc.secure_channel(f"127.0.0.1:{port}", creds, options=options) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)


def test_mtls_daemon_certificate_is_served(pki: LabPKI, server: int) -> None:
    d = pki["daemon"]
    # by IP (SAN 127.0.0.1) and by the node's name (SAN DNS)
    resp = _check(server, ca=pki["ca"], cert=d["cert"], key=d["key"])
    assert resp.status == health_pb2.HealthCheckResponse.SERVING
    resp = _check(server, ca=pki["ca"], cert=d["cert"], key=d["key"], server_name="storage-a")
    assert resp.status == health_pb2.HealthCheckResponse.SERVING


def test_mtls_node_certificate_works_as_client(pki: LabPKI, server: int) -> None:
    # agents replicate to each other: a node certificate is also a client certificate
    b = pki["nodes"]["storage-b"]
    resp = _check(server, ca=pki["ca"], cert=b["cert"], key=b["key"])
    assert resp.status == health_pb2.HealthCheckResponse.SERVING


def test_mtls_refuses_a_certificate_from_another_ca(pki: LabPKI, other_pki: LabPKI, server: int) -> None:
    # the client trusts the right CA (so only client auth can fail) but presents a foreign cert
    d = other_pki["daemon"]
    with pytest.raises(grpc.RpcError) as err:
        _check(server, ca=pki["ca"], cert=d["cert"], key=d["key"])
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_mtls_client_refuses_a_server_from_another_ca(pki: LabPKI, other_pki: LabPKI, server: int) -> None:
    d = other_pki["daemon"]
    with pytest.raises(grpc.RpcError) as err:
        _check(server, ca=other_pki["ca"], cert=d["cert"], key=d["key"])
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_mtls_wrong_server_name_is_refused(pki: LabPKI, server: int) -> None:
    d = pki["daemon"]
    with pytest.raises(grpc.RpcError) as err:
        _check(server, ca=pki["ca"], cert=d["cert"], key=d["key"], server_name="storage-b")
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
