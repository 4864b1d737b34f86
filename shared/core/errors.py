"""Domain errors, each carrying its HTTP status.

Tree::

    AppError (500)
    ├── BadRequest (400)
    │   ├── NotMedia (400)
    │   └── DigestMismatch (400)
    ├── Unauthorized (401)
    ├── Forbidden (403)
    ├── NotFound (404)
    ├── RequestTimeout (408)
    ├── Conflict (409)
    ├── Gone (410)
    ├── PreconditionFailed (412)
    ├── PayloadTooLarge (413)
    ├── UriTooLong (414)
    ├── UnsupportedMediaType (415)
    ├── RangeNotSatisfiable (416)
    ├── UnprocessableContent (422: well-formed, of an accepted type, but unusable)
    ├── Locked (423)
    ├── TooManyRequests (429, with Retry-After: a rate limit or quota is spent)
    ├── HeadersTooLarge (431)
    ├── ChecksumMismatch (460, tus checksum extension)
    ├── UpstreamUnavailable (502)
    │   └── GatewayTimeout (504)
    └── ServiceUnavailable (503, with Retry-After: a cap is full or a dependency is down)

One handler (``shared.http.app``) renders them all as ``{"error": code, "detail": message}``.
"""

from __future__ import annotations

from typing import Any


class AppError(Exception):
    """Base of every expected failure; ``status`` is the HTTP status it maps to."""

    status: int = 500
    code: str = "internal_error"

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None, **extra: Any):
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra

    def body(self) -> dict[str, Any]:
        """The JSON body the client receives."""
        return {"error": self.code, "detail": self.detail, **self.extra}


class BadRequest(AppError):
    status = 400
    code = "bad_request"


class NotMedia(BadRequest):
    code = "not_media"


class DigestMismatch(BadRequest):
    code = "digest_mismatch"


class Unauthorized(AppError):
    status = 401
    code = "unauthorized"


class Forbidden(AppError):
    status = 403
    code = "forbidden"


class NotFound(AppError):
    status = 404
    code = "not_found"


class RequestTimeout(AppError):
    status = 408
    code = "request_timeout"


class Conflict(AppError):
    status = 409
    code = "conflict"


class Gone(AppError):
    status = 410
    code = "gone"


class PreconditionFailed(AppError):
    status = 412
    code = "precondition_failed"


class PayloadTooLarge(AppError):
    status = 413
    code = "payload_too_large"


class UriTooLong(AppError):
    status = 414
    code = "uri_too_long"


class UnsupportedMediaType(AppError):
    status = 415
    code = "unsupported_media_type"


class RangeNotSatisfiable(AppError):
    status = 416
    code = "range_not_satisfiable"


class UnprocessableContent(AppError):
    status = 422
    code = "unprocessable_content"


class Locked(AppError):
    status = 423
    code = "locked"


class TooManyRequests(AppError):
    status = 429
    code = "too_many_requests"


class HeadersTooLarge(AppError):
    status = 431
    code = "headers_too_large"


class ChecksumMismatch(AppError):
    status = 460
    code = "checksum_mismatch"


class UpstreamUnavailable(AppError):
    status = 502
    code = "upstream_unavailable"


class GatewayTimeout(UpstreamUnavailable):
    status = 504
    code = "gateway_timeout"


class ServiceUnavailable(AppError):
    status = 503
    code = "service_unavailable"
