"""Upload service settings."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from services.upload.form import FormLimits
from services.upload.tls import ensure_self_signed
from shared.core import ports
from shared.core.settings import BaseServiceSettings


class Settings(BaseServiceSettings):
    upload_max_bytes: int = Field(default=20 * 1024**3, gt=0)
    upload_max_concurrent_uploads: int = Field(
        default=32,
        ge=1,
        description="Uploads in progress at once per process; more get 503 with Retry-After",
    )
    upload_port: int = ports.UPLOAD
    upload_tls_port: int = Field(
        default=ports.UPLOAD_TLS,
        description="HTTPS (h2 by ALPN, HTTP/1.1) port; needs the cert and key",
    )
    upload_tls_cert_file: Path | None = None
    upload_tls_key_file: Path | None = Field(default=None, description="PKCS#8 PEM key")
    upload_tls_self_signed: bool = Field(
        default=False,
        description="Make a self-signed certificate at the cert and key paths if they are missing",
    )
    upload_h2_stream_window_bytes: int = Field(default=4 * 1024**2, ge=65535)
    upload_h2_connection_window_bytes: int = Field(default=8 * 1024**2, ge=65535)
    upload_h2_max_headers_bytes: int = Field(
        default=64 * 1024,
        ge=16 * 1024,
        description="An HTTP/2 request's header list; Granian answers more with its own 431",
    )
    upload_http1_buffer_bytes: int = Field(
        default=1024**2 + 8192,
        ge=8192,
        description="Granian's HTTP/1.1 read buffer: the largest body chunk the app receives",
    )
    upload_progress_interval_seconds: float = Field(default=0.5, gt=0)
    upload_form_max_fields: int = Field(
        default=FormLimits.max_fields,
        ge=3,
        description="Text fields a multipart/form-data upload may carry",
    )
    upload_form_max_text_bytes: int = Field(
        default=FormLimits.max_text_bytes,
        ge=8192,
        description="A form's text fields and part headers together (all but the file)",
    )

    def tls_listener(self) -> tuple[int, Path, Path] | None:
        """Port, certificate and key of the TLS listener, when one is configured.

        With ``upload_tls_self_signed`` a missing pair is created first (for localhost and the
        compose service name), so a development stack serves h2 over TLS with no setup.
        """
        cert, key = self.upload_tls_cert_file, self.upload_tls_key_file
        if not (self.upload_tls_port and cert and key):
            return None
        if self.upload_tls_self_signed:
            ensure_self_signed(cert, key, hosts=("localhost", "127.0.0.1", "upload"))
        return self.upload_tls_port, cert, key
