"""`jobstatus-server keys`, the loopback-only open mode, and TLS on both listeners.

TLS uses certificates made at test time (a CA, a server certificate for
127.0.0.1, a client certificate), with real TLS connections from grpc and httpx.

SQLite only: keys and TLS do not touch the database beyond the key table, which
test_tenants.py makes and reads with the same `auth.create_key` on both databases.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from jobstatus.v1 import map_import_pb2 as mi
from jobstatus.v1 import map_import_pb2_grpc as mi_grpc
from jobstatus.v1 import watch_pb2
from jobstatus_server.access import auth
from jobstatus_server.composition.main import main
from tests.conftest import Stubs, sqlite_url
from tests.restkit import db_path
from tests.serverproc import ROOT, ServerProcess, free_port


def _main(capsys: pytest.CaptureFixture[str], url: str, *args: str) -> tuple[int, str, str]:
    """`jobstatus-server ARGS` in this process: (exit code, stdout, stderr)."""
    code = main(["--database-url", url, *args])
    out, err = capsys.readouterr()
    return code, out, err


def _cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`jobstatus-server ARGS` as its own process."""
    return subprocess.run(
        [sys.executable, "-m", "jobstatus_server", "--database-url", url, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


# --- keys ----------------------------------------------------------------------------------


def test_keys_create_list_revoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = sqlite_url(tmp_path)
    made = _cli(url, "keys", "create", "--tenant", "acme", "--scope", "read,write", "--name", "ci")
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()
    assert secret.startswith("jsk_") and len(secret.splitlines()) == 1
    key_id = secret.split("_")[1]
    assert key_id in made.stderr and "not shown again" in made.stderr

    code, listed, _ = _main(capsys, url, "keys", "list")
    assert code == 0
    header, row = listed.splitlines()
    assert header.split() == ["ID", "TENANT", "SCOPES", "CREATED", "REVOKED", "NAME"]
    assert row.split()[:3] == [key_id, "acme", "read,write"]
    assert row.split()[4:] == ["-", "ci"]
    assert secret.split("_", 2)[2] not in listed
    # Only a hash of the secret is stored.
    assert secret.split("_", 2)[2].encode() not in db_path(url).read_bytes()

    assert _main(capsys, url, "keys", "revoke", key_id)[0] == 0
    assert _main(capsys, url, "keys", "list")[1].splitlines()[1].split()[4] != "-"
    code, _, err = _main(capsys, url, "keys", "revoke", key_id)
    assert code == 1 and "no active key" in err


@pytest.mark.parametrize(
    "args",
    [
        ("--tenant", "Acme Corp"),
        ("--tenant", "acme", "--scope", "admin"),
        ("--tenant", "acme", "--scope", ""),
    ],
)
def test_keys_create_refuses_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...]
) -> None:
    code, out, err = _main(capsys, sqlite_url(tmp_path), "keys", "create", *args)
    assert code == 2 and out == "" and err.startswith("jobstatus: ")


# --- open only on loopback -----------------------------------------------------------------


def test_an_open_server_refuses_a_non_loopback_address(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    args = ["--grpc-addr", "0.0.0.0:0", "--http-addr", f"127.0.0.1:{free_port()}"]
    refused = _cli(url, *args)
    assert refused.returncode == 2
    assert "refusing to start" in refused.stderr and "0.0.0.0:0" in refused.stderr
    assert "--allow-open" in refused.stderr


def test_allow_open_or_a_key_lets_it_listen_beyond_loopback(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    everywhere = ["--grpc-addr", f"0.0.0.0:{free_port()}"]  # the last flag wins
    proc = ServerProcess(url, extra_args=[*everywhere, "--allow-open"]).start()
    try:
        assert "the server is OPEN" in proc.log() and "--allow-open" in proc.log()
    finally:
        proc.stop()
    assert _cli(url, "keys", "create", "--tenant", "acme").returncode == 0
    keyed = ServerProcess(url, extra_args=everywhere).start()
    try:
        assert "OPEN" not in keyed.log()
    finally:
        keyed.stop()


def test_an_open_server_says_so(tmp_path: Path) -> None:
    proc = ServerProcess(sqlite_url(tmp_path)).start()
    try:
        assert "no API keys are configured: the server is OPEN" in proc.log()
    finally:
        proc.stop()


# --- TLS -----------------------------------------------------------------------------------


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _write(path: Path, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> Path:
    path.with_suffix(".key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.with_suffix(".pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    elif server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    else:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("jobstatus test CA", ca_key, None, ca_key, ca=True)
    _write(directory / "ca", ca_key, ca)
    server_key = ec.generate_private_key(ec.SECP256R1())
    _write(
        directory / "server",
        server_key,
        _cert("127.0.0.1", server_key, ca.subject, ca_key, server=True),
    )
    client_key = ec.generate_private_key(ec.SECP256R1())
    _write(directory / "client", client_key, _cert("a client", client_key, ca.subject, ca_key))
    return Pki(
        directory / "ca.pem",
        directory / "server.pem",
        directory / "server.key",
        directory / "client.pem",
        directory / "client.key",
    )


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[ServerProcess]:
    args = [
        "--tls-cert",
        str(pki.server_cert),
        "--tls-key",
        str(pki.server_key),
        "--tls-client-ca",
        str(pki.ca),
    ]
    proc = ServerProcess(sqlite_url(tmp_path_factory.mktemp("tls")), extra_args=args).start()
    yield proc
    proc.stop()


def _context(pki: Pki, *, client_cert: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca))
    if client_cert:
        context.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    return context


def test_https_with_a_client_certificate(tls_server: ServerProcess, pki: Pki) -> None:
    assert "HTTPS on" in tls_server.log()
    url = f"https://127.0.0.1:{tls_server.http_port}"
    with httpx.Client(verify=_context(pki, client_cert=True), timeout=10) as client:
        assert client.get(f"{url}/healthz").json() == {"status": "SERVING"}
        body = client.get(f"{url}/api/v2/import/status/7").json()
        assert body == {"id": "7", "status": "NOT_FOUND"}
    with (
        httpx.Client(verify=_context(pki, client_cert=False), timeout=10) as client,
        pytest.raises(httpx.TransportError),
    ):
        client.get(f"{url}/healthz")
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{tls_server.http_port}/healthz", timeout=5)


def test_grpc_over_tls_with_a_client_certificate(tls_server: ServerProcess, pki: Pki) -> None:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pki.ca.read_bytes(),
        private_key=pki.client_key.read_bytes(),
        certificate_chain=pki.client_cert.read_bytes(),
    )
    with grpc.secure_channel(tls_server.address, credentials) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == 1
        maps = mi_grpc.MapImportServiceStub(channel)
        made = maps.CreateMapImport(
            mi.CreateMapImportRequest(map_import=mi.MapImport(import_request_id="tls-1")),
            timeout=10,
        )
        assert made.map_import.import_request_id == "tls-1"
    without_cert = grpc.ssl_channel_credentials(root_certificates=pki.ca.read_bytes())
    with grpc.secure_channel(tls_server.address, without_cert) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert isinstance(refused.value, grpc.Call)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    with grpc.insecure_channel(tls_server.address) as channel, pytest.raises(grpc.RpcError):
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)


# --- the open server's tenant --------------------------------------------------------------


def test_the_open_servers_jobs_are_tenant_defaults_and_its_watches_end_with_the_first_key(
    tmp_path: Path,
) -> None:
    url = sqlite_url(tmp_path)
    proc = ServerProcess(url).start()
    stubs = Stubs.connect(proc.address)
    try:
        stubs.maps.CreateMapImport(
            mi.CreateMapImportRequest(map_import=mi.MapImport(import_request_id="made-open")),
            timeout=10,
        )
        stream = stubs.maps.WatchMapImportStatus(
            mi.WatchMapImportStatusRequest(import_request_ids=["made-open"]), timeout=10
        )
        events = iter(stream)
        first = [next(events).type, next(events).type]
        assert first == [watch_pb2.WATCH_EVENT_TYPE_STATE, watch_pb2.WATCH_EVENT_TYPE_SYNCED]
        _, secret = auth.create_key(url, "default", ["read"], "first")
        with pytest.raises(grpc.RpcError) as ended:
            left = list(stream)  # ends within the key refresh, or at the call's deadline
            pytest.fail(f"a watch opened while the server was open ended cleanly: {left}")
        assert isinstance(ended.value, grpc.Call)
        assert ended.value.code() == grpc.StatusCode.UNAUTHENTICATED, (
            "a watch opened while the server was open went on after a key became active "
            f"(ended {ended.value.code()})"
        )
        try:
            got = stubs.maps.GetMapImportStatus(
                mi.GetMapImportStatusRequest(import_request_id="made-open"),
                metadata=(("x-api-key", secret),),
                timeout=10,
            )
        except grpc.RpcError as error:
            assert isinstance(error, grpc.Call)
            pytest.fail(
                "a job made while the server was open is not tenant default's: a key of "
                f"tenant default could not read it ({error.code()}: {error.details()})"
            )
        assert got.map_import.import_request_id == "made-open"
    finally:
        stubs.channel.close()
        proc.stop()
