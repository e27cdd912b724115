"""Serving certificates of the webhook when cert-manager is not used: a private CA and a leaf it signs.

The CA (10 years) goes into the webhook configuration's `caBundle`; the serving certificate (1 year,
with the Service's DNS names and any IPs) is renewed when less than `renew_before` remains, signed
by the same CA so the `caBundle` keeps working across renewals. Everything is PEM, ECDSA P-256.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
LEAF_DAYS = 365
RENEW_BEFORE = dt.timedelta(days=30)


@dataclass(frozen=True)
class CertBundle:
    ca_cert: bytes
    ca_key: bytes
    cert: bytes
    key: bytes

    def as_secret_data(self) -> dict[str, bytes]:
        return {"ca.crt": self.ca_cert, "ca.key": self.ca_key, "tls.crt": self.cert, "tls.key": self.key}

    @classmethod
    def from_secret_data(cls, data: dict[str, bytes]) -> CertBundle:
        return cls(data["ca.crt"], data["ca.key"], data["tls.crt"], data["tls.key"])


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_ca(common_name: str = "modelexpress-webhook-ca") -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def issue(ca_cert_pem: bytes, ca_key_pem: bytes, dns_names: list[str], ips: list[str] | None = None) -> CertBundle:
    """A serving certificate for `dns_names` (first one is the subject) and `ips`, signed by the CA."""
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError("the webhook CA key is not an EC key")
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips or []]
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + dt.timedelta(days=LEAF_DAYS), ca_cert.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    return CertBundle(ca_cert_pem, ca_key_pem, cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def needs_renewal(bundle: CertBundle, dns_names: list[str], ips: list[str] | None = None) -> str | None:
    """Why the serving certificate must be reissued (None: it is fine)."""
    cert = x509.load_pem_x509_certificate(bundle.cert)
    ca = x509.load_pem_x509_certificate(bundle.ca_cert)
    now = _now()
    if ca.not_valid_after_utc - now < RENEW_BEFORE * 2:
        return "the CA expires soon"
    if cert.not_valid_after_utc - now < RENEW_BEFORE:
        return f"it expires on {cert.not_valid_after_utc:%Y-%m-%d}"
    if cert.issuer != ca.subject:
        return "it was not issued by the stored CA"
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    have = set(names.get_values_for_type(x509.DNSName)) | {str(i) for i in names.get_values_for_type(x509.IPAddress)}
    missing = (set(dns_names) | set(ips or [])) - have
    if missing:
        return f"it does not cover {sorted(missing)}"
    return None


def ensure(
    existing: CertBundle | None, dns_names: list[str], ips: list[str] | None = None
) -> tuple[CertBundle, str | None]:
    """The bundle to serve with, and why it changed (None: `existing` is kept as is)."""
    if existing is None:
        ca_cert, ca_key = new_ca()
        return issue(ca_cert, ca_key, dns_names, ips), "no certificate yet"
    reason = needs_renewal(existing, dns_names, ips)
    if reason is None:
        return existing, None
    if reason == "the CA expires soon":
        ca_cert, ca_key = new_ca()
        return issue(ca_cert, ca_key, dns_names, ips), reason
    return issue(existing.ca_cert, existing.ca_key, dns_names, ips), reason
