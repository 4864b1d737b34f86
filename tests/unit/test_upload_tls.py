"""The upload service's TLS listener: configured pairs, and the self-signed pair for dev stacks."""

from __future__ import annotations

import ssl
from pathlib import Path

from cryptography import x509

from services.upload.settings import Settings


def test_no_listener_without_a_certificate_and_key() -> None:
    assert Settings(upload_tls_cert_file=None, upload_tls_key_file=None).tls_listener() is None


def test_a_missing_pair_is_not_invented_unless_asked(tmp_path: Path) -> None:
    cert, key = tmp_path / "tls" / "upload.crt", tmp_path / "tls" / "upload.key"
    settings = Settings(upload_tls_cert_file=cert, upload_tls_key_file=key)
    assert settings.tls_listener() == (8441, cert, key)
    assert not cert.exists() and not key.exists()


def test_self_signed_makes_a_usable_pair_once(tmp_path: Path) -> None:
    cert, key = tmp_path / "tls" / "upload.crt", tmp_path / "tls" / "upload.key"
    settings = Settings(
        upload_tls_cert_file=cert, upload_tls_key_file=key, upload_tls_self_signed=True
    )
    assert settings.tls_listener() == (8441, cert, key)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)  # raises if the pair does not match
    names = (
        x509.load_pem_x509_certificate(cert.read_bytes())
        .extensions.get_extension_for_class(x509.SubjectAlternativeName)
        .value.get_values_for_type(x509.DNSName)
    )
    assert set(names) == {"localhost", "upload"}
    assert key.stat().st_mode & 0o077 == 0
    first = cert.read_bytes()
    settings.tls_listener()
    assert cert.read_bytes() == first, "an existing pair must be kept"
