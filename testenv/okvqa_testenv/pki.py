"""Certificates of the test cluster: one CA per cluster, serving and client pairs signed by it.

P-256 keys by default: every component accepts them and they take microseconds, where RSA takes a while.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
SERVER_AUTH = ExtendedKeyUsageOID.SERVER_AUTH
CLIENT_AUTH = ExtendedKeyUsageOID.CLIENT_AUTH


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: PrivateKey) -> bytes:
    # PKCS#1 for RSA: the training operator's cert rotator parses no other RSA key format.
    key_format = (
        serialization.PrivateFormat.TraditionalOpenSSL
        if isinstance(key, rsa.RSAPrivateKey)
        else serialization.PrivateFormat.PKCS8
    )
    return key.private_bytes(serialization.Encoding.PEM, key_format, serialization.NoEncryption())


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def certificate(
    subject_key: PrivateKey,
    common_name: str,
    *,
    issuer: tuple[x509.Certificate, PrivateKey] | None = None,
    organizations: tuple[str, ...] = (),
    dns_names: tuple[str, ...] = (),
    ips: tuple[str, ...] = (),
    usages: tuple[x509.ObjectIdentifier, ...] = (),
    days: int = 3650,
) -> x509.Certificate:
    """A CA certificate when `issuer` is None, else a leaf signed by `issuer`."""
    name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
        + [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
    )
    now = datetime.datetime.now(datetime.UTC)
    issuer_cert, issuer_key = issuer if issuer else (None, subject_key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_cert.subject if issuer_cert else name)
        .public_key(subject_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def write_pair(directory: Path, stem: str, cert: x509.Certificate, key: PrivateKey) -> None:
    """`<stem>.crt` and `<stem>.key` (mode 0600) in `directory`."""
    (directory / f"{stem}.crt").write_bytes(cert_pem(cert))
    key_path = directory / f"{stem}.key"
    key_path.write_bytes(key_pem(key))
    key_path.chmod(0o600)


@dataclass
class ClusterCa:
    """The CA of one test cluster, kept in memory so later components (a node) get pairs signed by it."""

    directory: Path
    cert: x509.Certificate
    key: PrivateKey

    @classmethod
    def create(cls, directory: Path, common_name: str = "okvqa-testenv-ca") -> ClusterCa:
        key = new_key()
        cert = certificate(key, common_name)
        write_pair(directory, "ca", cert, key)
        return cls(directory, cert, key)

    @property
    def cert_file(self) -> Path:
        return self.directory / "ca.crt"

    def issue(
        self,
        stem: str,
        common_name: str,
        *,
        organizations: tuple[str, ...] = (),
        dns_names: tuple[str, ...] = (),
        ips: tuple[str, ...] = (),
        usages: tuple[x509.ObjectIdentifier, ...] = (),
    ) -> tuple[Path, Path]:
        """A new pair signed by this CA, written as `<stem>.crt`/`<stem>.key`; returns (cert, key) paths."""
        key = new_key()
        cert = certificate(
            key,
            common_name,
            issuer=(self.cert, self.key),
            organizations=organizations,
            dns_names=dns_names,
            ips=ips,
            usages=usages,
        )
        write_pair(self.directory, stem, cert, key)
        return self.directory / f"{stem}.crt", self.directory / f"{stem}.key"

    def write_service_account_keys(self) -> tuple[Path, Path]:
        """The key pair the API server signs service-account tokens with: (sa.key, sa.pub)."""
        sa_key = new_key()
        private, public = self.directory / "sa.key", self.directory / "sa.pub"
        private.write_bytes(key_pem(sa_key))
        private.chmod(0o600)
        public.write_bytes(
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        return private, public


WEBHOOK_PAIR_FILES = ("ca.crt", "ca.key", "tls.crt", "tls.key")


def webhook_pair(stem: str, ca_name: str, dns_name: str) -> dict[str, bytes]:
    """A controller's webhook CA and serving pair (`ca.crt`, `ca.key`, `tls.crt`, `tls.key`), made once per
    machine and user in the temporary directory `<stem>-<uid>` and shared by every control plane.

    Why pre-made: controllers that manage their own webhook certificate (the cert-controller rotator of
    the training operator and of Kueue) keep a Secret's certificate only if it verifies for their Service
    name `dns_name` and its CA for `ca_name`; ours also carries IP 127.0.0.1, which the API server dials,
    where the rotator's own certificate would not verify. RSA, because the rotator reads its CA key as
    PKCS#1; made once, so the slower key generation costs nothing later.
    """
    directory = Path(tempfile.gettempdir()) / f"{stem}-{os.getuid()}"
    if not all((directory / n).is_file() for n in WEBHOOK_PAIR_FILES):
        staging = Path(tempfile.mkdtemp(prefix=directory.name + ".", dir=directory.parent))
        ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        ca = certificate(ca_key, ca_name, dns_names=(ca_name,))
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        cert = certificate(
            key,
            dns_name,
            issuer=(ca, ca_key),
            dns_names=(dns_name,),
            ips=("127.0.0.1",),
            usages=(SERVER_AUTH,),
        )
        write_pair(staging, "ca", ca, ca_key)
        write_pair(staging, "tls", cert, key)
        try:
            staging.rename(directory)
        except OSError:  # another process won the race: use its certificates
            shutil.rmtree(staging)
    return {n: (directory / n).read_bytes() for n in WEBHOOK_PAIR_FILES}


def mount_pair(certs: dict[str, bytes], directory: Path) -> None:
    """Put a webhook's CA and serving pair where its controller reads them, as the Secret volume of its
    Deployment would: the controllers wait for these files and never write them themselves. Each file is
    replaced atomically, so a controller of another control plane sharing `directory` never reads half a
    file."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("ca.crt", "tls.crt", "tls.key"):
        target = directory / name
        if target.is_file() and target.read_bytes() == certs[name]:
            continue
        fd, staging = tempfile.mkstemp(prefix=f".{name}.", dir=directory)
        with os.fdopen(fd, "wb") as out:
            out.write(certs[name])
        os.replace(staging, target)


def namespace_with_secret(
    namespace: str, secret: str, certs: dict[str, bytes]
) -> list[tuple[str, dict[str, Any]]]:
    """(collection path, object) for a controller's namespace and the Secret holding its serving pair, as
    the webhook-serving controllers (training operator, Kueue) expect them before they start."""
    data = {name: base64.b64encode(value).decode() for name, value in certs.items()}
    return [
        ("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}),
        (
            f"/api/v1/namespaces/{namespace}/secrets",
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": secret}, "data": data},
        ),
    ]
