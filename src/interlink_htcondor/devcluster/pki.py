"""The cluster's certificates and keys, made with ``cryptography`` (no openssl).

One CA signs every certificate: the etcd and API server serving certificates (valid for
loopback names only), and the client certificates of the API server (to etcd and to the
kubelet API), the admin, the controller manager and the scheduler. The service-account
signing key pair is separate. Keys are ECDSA P-256; the CA lasts ten years, the others one and
are reissued when less than a month is left (or when their CA changed).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
LEAF_DAYS = 365
RENEW_BEFORE = dt.timedelta(days=30)
# Service network: its first address is the `kubernetes` Service's ClusterIP.
SERVICE_CIDR = "10.96.0.0/24"
KUBERNETES_SERVICE_IP = "10.96.0.1"
LOOPBACK_NAMES = ("localhost",)
LOOPBACK_IPS = ("127.0.0.1",)
API_SERVER_NAMES = (
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)

Key = ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class CertKey:
    """A certificate and its private key."""

    cert: x509.Certificate
    key: Key

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return key_pem(self.key)


@dataclass(frozen=True)
class LeafSpec:
    """What a certificate says: subject, names, and whether it serves, authenticates, or both."""

    name: str  # file stem
    common_name: str
    organizations: tuple[str, ...] = ()
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()
    server: bool = False
    client: bool = False


# Every certificate of the cluster.
LEAVES: tuple[LeafSpec, ...] = (
    LeafSpec(
        "etcd-server",
        "etcd",
        dns_names=LOOPBACK_NAMES,
        ip_addresses=LOOPBACK_IPS,
        server=True,
        client=True,  # etcd also uses it as a peer
    ),
    LeafSpec(
        "apiserver",
        "kube-apiserver",
        dns_names=LOOPBACK_NAMES + API_SERVER_NAMES,
        ip_addresses=(*LOOPBACK_IPS, KUBERNETES_SERVICE_IP),
        server=True,
    ),
    LeafSpec("apiserver-etcd-client", "kube-apiserver-etcd-client", client=True),
    LeafSpec(
        "apiserver-kubelet-client",
        "kube-apiserver-kubelet-client",
        organizations=("system:masters",),
        client=True,
    ),
    LeafSpec("admin", "interlink-htcondor-admin", organizations=("system:masters",), client=True),
    LeafSpec("controller-manager", "system:kube-controller-manager", client=True),
    LeafSpec("scheduler", "system:kube-scheduler", client=True),
)


def new_key() -> Key:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: Key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_ca(common_name: str = "interlink-htcondor-dev-ca", days: int = CA_DAYS) -> CertKey:
    key = new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
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
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return CertKey(cert, key)


def issue(ca: CertKey, spec: LeafSpec, days: int = LEAF_DAYS) -> CertKey:
    """A certificate for ``spec`` signed by ``ca``, with a new key."""
    if not (spec.server or spec.client):
        raise ValueError(f"{spec.name}: a certificate must serve or authenticate")
    key = new_key()
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in spec.organizations]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, spec.common_name))
    usages = []
    if spec.server:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if spec.client:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attrs))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
    )
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in spec.dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in spec.ip_addresses]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return CertKey(builder.sign(ca.key, hashes.SHA256()), key)


def verifies(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    """``cert`` was signed by ``ca``'s key (signature and issuer name)."""
    if cert.issuer != ca.subject:
        return False
    try:
        cert.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def needs_renewal(cert: x509.Certificate, now: dt.datetime | None = None) -> bool:
    return cert.not_valid_after_utc - (now or _now()) < RENEW_BEFORE


# -- files -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PkiFiles:
    """Where the PKI lives: ``<dir>/<name>.crt`` and ``<dir>/<name>.key``."""

    dir: Path
    leaves: Sequence[LeafSpec] = field(default=LEAVES)

    def cert(self, name: str) -> Path:
        return self.dir / f"{name}.crt"

    def key(self, name: str) -> Path:
        return self.dir / f"{name}.key"

    @property
    def ca_cert(self) -> Path:
        return self.cert("ca")

    @property
    def sa_key(self) -> Path:
        return self.dir / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.dir / "sa.pub"


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    tmp.replace(path)


def load(files: PkiFiles, name: str) -> CertKey | None:
    """The certificate and key ``name``, or None when missing or unreadable."""
    try:
        cert = x509.load_pem_x509_certificate(files.cert(name).read_bytes())
        key = serialization.load_pem_private_key(files.key(name).read_bytes(), password=None)
    except (OSError, ValueError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        return None
    return CertKey(cert, key)


def _store(files: PkiFiles, name: str, ck: CertKey) -> None:
    _write(files.key(name), ck.key_pem, 0o600)
    _write(files.cert(name), ck.cert_pem, 0o644)


def ensure(files: PkiFiles) -> list[str]:
    """Create what is missing, expiring, or signed by another CA; return the names written
    (empty when everything was current)."""
    files.dir.mkdir(parents=True, exist_ok=True)
    files.dir.chmod(0o700)
    written: list[str] = []
    ca = load(files, "ca")
    if ca is None or needs_renewal(ca.cert):
        ca = new_ca()
        _store(files, "ca", ca)
        written.append("ca")
    for spec in files.leaves:
        leaf = load(files, spec.name)
        if leaf is None or needs_renewal(leaf.cert) or not verifies(leaf.cert, ca.cert):
            _store(files, spec.name, issue(ca, spec))
            written.append(spec.name)
    if not (files.sa_key.exists() and files.sa_pub.exists()):
        sa = new_key()
        _write(files.sa_key, key_pem(sa), 0o600)
        pub = sa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        _write(files.sa_pub, pub, 0o644)
        written.append("sa")
    return written
