"""The service over HTTPS with mutual TLS: a client without a certificate of the agencies'
CA is refused before HTTP; with one, the token still says which agency calls (Art. 24)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from govbus.core.config import Settings
from tests.integration.api.conftest import ROOT, start_service, stop_service, token


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def issue(folder: Path, cn: str, ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
          server: bool = False) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey, Path]:
    """A certificate for ``cn`` signed by ``ca`` (None: self-signed CA); PEM cert + key file."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder().subject_name(_name(cn))
               .issuer_name(ca[0].subject if ca else _name(cn)).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now)
               .not_valid_after(now + dt.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca is None, path_length=None), True))
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
    cert = builder.sign(ca[1] if ca else key, hashes.SHA256())
    path = folder / f"{cn}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    path.chmod(0o600)
    return cert, key, path


def test_mutual_tls_refuses_a_client_without_a_certificate(settings: Settings,
                                                           tmp_path: Path) -> None:
    ca_cert, ca_key, _ = issue(tmp_path, "govbus-test-ca", None)
    ca_file = tmp_path / "ca.crt"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    server_cert, server_key, server_pem = issue(tmp_path, "127.0.0.1", (ca_cert, ca_key), True)
    *_, client_pem = issue(tmp_path, "tax", (ca_cert, ca_key))
    cert_file, key_file = tmp_path / "server.crt", tmp_path / "server.key"
    cert_file.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(server_pem.read_bytes().split(b"-----END CERTIFICATE-----\n")[1])
    key_file.chmod(0o600)
    port_env = {"GOVBUS_API_TLS_CERT_FILE": str(cert_file),
                "GOVBUS_API_TLS_KEY_FILE": str(key_file),
                "GOVBUS_API_CLIENT_CA_FILE": str(ca_file)}
    health = ssl.create_default_context(cafile=str(ca_file))
    health.load_cert_chain(str(client_pem))
    svc = start_service(settings.database_url, settings.bootstrap_servers,
                        tmp_path / "serve.log", port_env, verify=health)
    try:
        url = svc.url
        context = ssl.create_default_context(cafile=str(ca_file))
        with pytest.raises(httpx.HTTPError), httpx.Client(verify=context) as bare:
            bare.get(f"{url}/healthz")  # no client certificate: no TLS session
        me = f"agency_{uuid.uuid4().hex[:8]}"
        context.load_cert_chain(str(client_pem))
        with httpx.Client(verify=context, headers={
                "Authorization": f"Bearer {token(settings.database_url, me)}"}) as http:
            assert http.get(f"{url}/v1/grants").status_code == 200
        with httpx.Client(verify=context) as anonymous:
            assert anonymous.get(f"{url}/v1/grants").status_code == 401  # TLS is not a token
        env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
        env |= {"GOVBUS_API_URL": url, "GOVBUS_TOKEN": token(settings.database_url, me),
                "GOVBUS_API_CA_FILE": str(ca_file),
                "GOVBUS_API_CLIENT_CERT_FILE": str(client_pem), "PYTHONPATH": str(ROOT)}
        out = subprocess.run([sys.executable, "-m", "govbus.cli", "grants", "--agency", me,
                              "--json"], env=env, text=True, capture_output=True, timeout=60)
        assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr
    finally:
        stop_service(svc)

