"""Upload HTTP routes: a raw streamed body or a browser form, to a new video."""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse

from services.upload.form import boundary_of
from services.upload.schemas import VideoCreated
from services.upload.service import (
    FORM_OVERHEAD_BYTES,
    UploadInterrupted,
    UploadLimits,
    UploadRequest,
    accept_upload,
    claim_video_id,
    release_video_id,
)
from shared.core.errors import AppError, BadRequest, PayloadTooLarge, UnsupportedMediaType
from shared.core.streams import parse_content_digest
from shared.http.app import resources
from shared.http.auth import Principal, RequiredPrincipal
from shared.http.openapi import error_responses
from shared.runtime.resources import Resources
from shared.videos.metadata import MetadataInput

router = APIRouter(prefix="/api/videos", tags=["upload"])

_RAW_TYPES = ("application/octet-stream", "video/", "audio/")
_FORM_TYPE = "multipart/form-data"
# The body streams past the framework (``_Body``), so the schema learns its shapes from here;
# Content-Type and Content-Length come with it rather than as parameters of their own.
_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            _FORM_TYPE: {
                "schema": {
                    "type": "object",
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "title": {"type": "string"},
                        "description": {"type": "string"},
                        "tags": {"type": "string"},
                        "privacy": {"type": "string", "enum": ["public", "unlisted", "private"]},
                    },
                    "required": ["file"],
                }
            },
        },
    }
}
# Up to a signed 64-bit integer's width, which also keeps int() cheap.
_CONTENT_LENGTH = re.compile(r"[0-9]{1,19}")


def _content_length(header: str | None) -> int | None:
    if header is None:
        return None
    if _CONTENT_LENGTH.fullmatch(header.strip()) is None:
        raise BadRequest("Content-Length must be a non-negative integer of at most 19 digits")
    return int(header)


# A refused body is read and dropped up to this much, for at most this long, before the answer:
# a client still sending then hears the JSON error instead of a reset connection (HTTP/1.1) or
# a reset stream (HTTP/2) that can overtake the response.
_DRAIN_BYTES = 16 * 1024 * 1024
_DRAIN_SECONDS = 5.0


class _Body:
    """The request body straight from ASGI ``receive``, and what is left of it once refused."""

    def __init__(self, request: Request, declared_bytes: int | None) -> None:
        self.receive = request.receive
        self.ended = False
        self.started = False
        # Such a client sends nothing until the body is read (Expect: 100-continue).
        self.asked_first = "100-continue" in request.headers.get("expect", "").lower()
        self.declared_bytes = declared_bytes

    async def chunks(self) -> AsyncIterator[bytes]:
        # Straight from ASGI receive: one generator per chunk instead of two on the hot path.
        receive = self.receive
        self.started = True
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.ended = True
                raise UploadInterrupted("the client stopped sending before the end of the body")
            body = message.get("body", b"")
            if not message.get("more_body", False):
                self.ended = True
                if body:
                    yield body
                return
            if body:
                yield body

    async def drain(self) -> None:
        """Read and drop the rest of the body, within ``_DRAIN_BYTES`` and ``_DRAIN_SECONDS``.

        Not when nothing was read yet and the client waits to be asked, or will send more than
        could be drained anyway.
        """
        if not self.started and (self.asked_first or (self.declared_bytes or 0) > _DRAIN_BYTES):
            return
        left = _DRAIN_BYTES
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_DRAIN_SECONDS):
                while not self.ended and left > 0:
                    message = await self.receive()
                    left -= len(message.get("body", b""))
                    self.ended = message["type"] != "http.request" or not message.get(
                        "more_body", False
                    )


class UploadParams:
    """Query parameters and headers every upload route takes, as sent (checked by the route)."""

    def __init__(
        self,
        title: Annotated[str, Query()] = "",
        description: Annotated[str, Query()] = "",
        tags: Annotated[str, Query()] = "",
        filename: Annotated[str, Query()] = "",
        privacy: Annotated[str, Query(description="public, unlisted or private")] = "",
        content_type: Annotated[str, Header(include_in_schema=False)] = "application/octet-stream",
        content_digest: Annotated[str | None, Header()] = None,
        content_length: Annotated[str | None, Header(include_in_schema=False)] = None,
    ) -> None:
        self.metadata = MetadataInput(
            title=title, description=description, tags=tags, filename=filename, privacy=privacy
        )
        self.content_type = content_type
        self.content_digest = content_digest
        self.content_length = content_length


def limits(request: Request) -> UploadLimits:
    """FastAPI dependency: the service's upload limits."""
    value: UploadLimits = request.app.state.upload_limits
    return value


Res = Annotated[Resources, Depends(resources)]
Limits = Annotated[UploadLimits, Depends(limits)]
Params = Annotated[UploadParams, Depends()]


def _upload_request(
    params: UploadParams,
    limits: UploadLimits,
    video_id: uuid.UUID,
    owner: Principal,
    declared: int | None,
) -> UploadRequest:
    """The upload, every bound of the request checked before a byte of its body is read."""
    media_type = params.content_type.split(";")[0].strip().lower()
    if media_type == _FORM_TYPE:
        boundary: bytes | None = boundary_of(params.content_type)
    elif media_type.startswith(_RAW_TYPES):
        boundary = None
    else:
        raise UnsupportedMediaType(
            "unsupported Content-Type: send the file as application/octet-stream "
            "(or video/*, audio/*) or in a multipart/form-data form"
        )
    max_bytes = limits.max_bytes
    max_body = max_bytes if boundary is None else max_bytes + FORM_OVERHEAD_BYTES
    if declared is not None and declared > max_body:
        raise PayloadTooLarge(
            f"the upload exceeds the maximum of {max_bytes} bytes", max_bytes=max_bytes
        )
    params.metadata.checked()  # the fields of a form are checked as they arrive
    return UploadRequest(
        video_id=video_id,
        owner_id=owner.user_id,
        max_bytes=max_bytes,
        expected_sha256=parse_content_digest(params.content_digest),
        metadata=params.metadata,
        declared_bytes=declared,
        form_boundary=boundary,
        form_limits=limits.form,
        progress_interval_seconds=limits.progress_interval_seconds,
    )


async def _upload(
    request: Request,
    res: Resources,
    limits: UploadLimits,
    params: UploadParams,
    video_id: uuid.UUID,
    owner: Principal,
) -> JSONResponse:
    declared = _content_length(params.content_length)
    body = _Body(request, declared)
    try:
        upload = _upload_request(params, limits, video_id, owner, declared)
        video = await accept_upload(res, body.chunks(), upload)
    except AppError:
        # A client still sending hears the refusal instead of a reset connection.
        await body.drain()
        raise
    location = f"/api/videos/{video.id}"
    links = {"self": location, "progress": f"{location}/events"}
    created = VideoCreated.from_video(video, links)
    return JSONResponse(
        created.model_dump(mode="json"), status_code=201, headers={"Location": location}
    )


@router.api_route(
    "",
    methods=["POST", "PUT"],
    status_code=201,
    openapi_extra=_BODY,
    responses=error_responses(415),
)
async def upload_video(
    request: Request, res: Res, limits: Limits, params: Params, owner: RequiredPrincipal
) -> JSONResponse:
    """Upload a new video (raw body or multipart/form-data); the server picks its id."""
    return await _upload(request, res, limits, params, uuid.uuid4(), owner)


@router.put(
    "/{video_id}", status_code=201, openapi_extra=_BODY, responses=error_responses(409, 415)
)
async def upload_video_at(
    video_id: uuid.UUID,
    request: Request,
    res: Res,
    limits: Limits,
    params: Params,
    owner: RequiredPrincipal,
) -> JSONResponse:
    """Upload to a client-chosen id, so its progress can be followed from the first byte."""
    await claim_video_id(res, video_id)
    try:
        return await _upload(request, res, limits, params, video_id, owner)
    except AppError:
        await release_video_id(res, video_id)
        raise
