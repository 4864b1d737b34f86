"""tus 1.0.0 routes under ``/files``: parse the protocol headers, call the use case, answer."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request, Response
from starlette.requests import ClientDisconnect

from services.chunked_upload import service
from services.chunked_upload.parts import BodyInterrupted
from services.chunked_upload.settings import UploadLimits
from services.chunked_upload.tus import (
    CHECKSUM_ALGORITHMS,
    EXTENSIONS,
    OFFSET_CONTENT_TYPE,
    TUS_VERSION,
    check_version,
    format_concat,
    format_metadata,
    http_date,
    parse_checksum,
    parse_concat,
    parse_metadata,
    parse_non_negative,
)
from shared.core.errors import BadRequest, UnsupportedMediaType
from shared.db.models import Upload
from shared.http.app import resources
from shared.http.auth import RequiredPrincipal
from shared.http.openapi import error_responses
from shared.runtime.resources import Resources

BASE_PATH = "/files"
# The id of the video an upload becomes (not the upload's: that one stays its owner's secret).
VIDEO_ID_HEADER = "Video-Id"

# The protocol's refusals (tus 1.0.0 and its extensions), on top of those every route declares.
router = APIRouter(
    prefix=BASE_PATH,
    tags=["tus"],
    responses=error_responses(403, 404, 409, 410, 412, 413, 415, 423, 431, 460),
)

Res = Annotated[Resources, Depends(resources)]
TusResumable = Annotated[str | None, Header(alias="Tus-Resumable")]


def limits(request: Request) -> UploadLimits:
    """FastAPI dependency: the service's upload limits."""
    value: UploadLimits = request.app.state.upload_limits
    return value


Limits = Annotated[UploadLimits, Depends(limits)]


def upload_url(upload_id: uuid.UUID) -> str:
    return f"{BASE_PATH}/{upload_id}"


def _offset_headers(upload: Upload) -> dict[str, str]:
    """Upload-Offset and Upload-Expires, and the id of the video the upload becomes."""
    headers = {"Upload-Offset": str(upload.offset)}
    if upload.state == service.ACTIVE:
        headers["Upload-Expires"] = http_date(upload.expires_at)
    if upload.video_id is not None:
        headers[VIDEO_ID_HEADER] = str(upload.video_id)
    return headers


async def _body(request: Request) -> AsyncIterator[bytes]:
    try:
        async for chunk in request.stream():
            yield chunk
    except ClientDisconnect:
        raise BodyInterrupted from None


def _has_body(request: Request) -> bool:
    length = request.headers.get("content-length")
    if length is not None:
        return length.strip() != "0"
    return "chunked" in request.headers.get("transfer-encoding", "").lower()


def _content_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


@router.api_route("", methods=["OPTIONS"], include_in_schema=False)
@router.api_route("/", methods=["OPTIONS"], status_code=204)
@router.api_route("/{upload_id}", methods=["OPTIONS"], include_in_schema=False)
async def capabilities(limits: Limits) -> Response:
    """What this server supports: version, extensions, maximum size, checksum algorithms."""
    return Response(
        status_code=204,
        headers={
            "Tus-Version": TUS_VERSION,
            "Tus-Extension": ",".join(EXTENSIONS),
            "Tus-Max-Size": str(limits.max_bytes),
            "Tus-Checksum-Algorithm": ",".join(CHECKSUM_ALGORITHMS),
        },
    )


@router.api_route("", methods=["POST"], include_in_schema=False)
@router.api_route("/", methods=["POST"], status_code=201)
async def create(
    request: Request, res: Res, limits: Limits, owner: RequiredPrincipal, tus: TusResumable = None
) -> Response:
    """Creation (with upload, deferred length) and the final upload of a concatenation."""
    check_version(tus)
    # Every header is parsed before anything is recorded: a refusal leaves nothing behind.
    headers = request.headers
    metadata = parse_metadata(
        headers.get("upload-metadata"),
        max_bytes=limits.metadata_max_bytes,
        max_pairs=limits.metadata_max_pairs,
    )
    concat = parse_concat(headers.get("upload-concat"), BASE_PATH)
    length = parse_non_negative("Upload-Length", headers.get("upload-length"))
    defer = headers.get("upload-defer-length")
    if defer is not None and defer.strip() != "1":
        raise BadRequest("Upload-Defer-Length must be 1")
    carries_body = _content_type(request) == OFFSET_CONTENT_TYPE
    if not carries_body and _has_body(request) and _content_type(request):
        raise UnsupportedMediaType(f"a creation body must be {OFFSET_CONTENT_TYPE}")
    checksum = parse_checksum(headers.get("upload-checksum"))
    declared_bytes = parse_non_negative("Content-Length", headers.get("content-length"))

    if concat is not None and concat.kind == "final":
        if length is not None or defer is not None or carries_body:
            raise BadRequest("a final upload takes no Upload-Length and no body")
        upload = await service.concatenate(res, limits, concat.partials, metadata, owner)
    else:
        upload = await service.create_upload(
            res,
            limits,
            length=length,
            defer_length=defer is not None,
            metadata=metadata,
            concat=concat,
            owner=owner,
        )
        if carries_body:
            upload = await service.append(
                res,
                limits,
                upload.id,
                offset=0,
                body=_body(request),
                checksum=checksum,
                owner=owner,
                declared_bytes=declared_bytes,
            )
    return Response(
        status_code=201,
        headers={"Location": upload_url(upload.id), **_offset_headers(upload)},
    )


@router.head("/{upload_id}")
async def head(
    upload_id: uuid.UUID,
    res: Res,
    limits: Limits,
    owner: RequiredPrincipal,
    tus: TusResumable = None,
) -> Response:
    """The upload's offset, length, metadata, expiry and video id; 423 while it is being made a
    video."""
    check_version(tus)
    upload = await service.head_upload(res, limits, upload_id, owner)
    headers = {"Cache-Control": "no-store", **_offset_headers(upload)}
    if upload.length is None:
        headers["Upload-Defer-Length"] = "1"
    else:
        headers["Upload-Length"] = str(upload.length)
    if upload.upload_metadata:
        headers["Upload-Metadata"] = format_metadata(upload.upload_metadata)
    concat = format_concat(upload.partials, upload.is_partial, BASE_PATH)
    if concat:
        headers["Upload-Concat"] = concat
    return Response(status_code=200, headers=headers)


@router.patch("/{upload_id}", status_code=204)
async def patch(
    upload_id: uuid.UUID,
    request: Request,
    res: Res,
    limits: Limits,
    owner: RequiredPrincipal,
    tus: TusResumable = None,
) -> Response:
    """Append the body at Upload-Offset (checksum verified when sent)."""
    check_version(tus)
    if _content_type(request) != OFFSET_CONTENT_TYPE:
        raise UnsupportedMediaType(f"PATCH bodies must be {OFFSET_CONTENT_TYPE}")
    headers = request.headers
    offset = parse_non_negative("Upload-Offset", headers.get("upload-offset"))
    if offset is None:
        raise BadRequest("Upload-Offset is required")
    checksum = parse_checksum(headers.get("upload-checksum"))
    length = parse_non_negative("Upload-Length", headers.get("upload-length"))
    declared_bytes = parse_non_negative("Content-Length", headers.get("content-length"))
    upload = await service.append(
        res,
        limits,
        upload_id,
        offset=offset,
        body=_body(request),
        checksum=checksum,
        owner=owner,
        length=length,
        declared_bytes=declared_bytes,
    )
    return Response(status_code=204, headers=_offset_headers(upload))


@router.delete("/{upload_id}", status_code=204)
async def delete(
    upload_id: uuid.UUID,
    res: Res,
    limits: Limits,
    owner: RequiredPrincipal,
    tus: TusResumable = None,
) -> Response:
    """Termination: the upload and its stored bytes are removed."""
    check_version(tus)
    await service.terminate(res, limits, upload_id, owner)
    return Response(status_code=204)
