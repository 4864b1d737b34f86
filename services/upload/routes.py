"""Upload HTTP routes: a raw streamed body or a browser form, to a new video."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse

from services.upload.form import boundary_of
from services.upload.schemas import VideoCreated
from services.upload.service import (
    UploadInterrupted,
    UploadRequest,
    accept_upload,
    claim_video_id,
)
from shared.core.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from shared.core.streams import parse_content_digest
from shared.http.app import resources
from shared.runtime.resources import Resources
from shared.videos.ingest import SourceMetadata

router = APIRouter(prefix="/api/videos", tags=["upload"])

_RAW_TYPES = ("application/octet-stream", "video/", "audio/")
_FORM_TYPE = "multipart/form-data"


def _tags(raw: str | None) -> list[str]:
    if not raw:
        return []
    tags = [t.strip() for t in raw.split(",") if t.strip()]
    if any(len(t) > 64 for t in tags) or len(tags) > 32:
        raise BadRequest("at most 32 tags of at most 64 characters each")
    return tags


# A refused body is read and dropped up to this much, for at most this long, before the answer:
# a client still sending then hears the JSON error instead of a reset connection (HTTP/1.1) or
# a reset stream (HTTP/2) that can overtake the response.
_DRAIN_BYTES = 16 * 1024 * 1024
_DRAIN_SECONDS = 5.0


class _Body:
    """The request body straight from ASGI ``receive``, and what is left of it once refused."""

    def __init__(self, request: Request) -> None:
        self.receive = request.receive
        self.ended = False

    async def chunks(self) -> AsyncIterator[bytes]:
        # Straight from ASGI receive: one generator per chunk instead of two on the hot path.
        receive = self.receive
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
        """Read and drop the rest of the body, within ``_DRAIN_BYTES`` and ``_DRAIN_SECONDS``."""
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
    """Query parameters and headers every upload route takes."""

    def __init__(
        self,
        title: Annotated[str, Query(max_length=200)] = "",
        description: Annotated[str, Query(max_length=5000)] = "",
        tags: Annotated[str | None, Query()] = None,
        filename: Annotated[str | None, Query(max_length=255)] = None,
        content_type: Annotated[str, Header()] = "application/octet-stream",
        content_digest: Annotated[str | None, Header()] = None,
        content_length: Annotated[int | None, Header(ge=0)] = None,
    ) -> None:
        self.meta = SourceMetadata(
            title=title, description=description, tags=_tags(tags), filename=filename
        )
        self.content_type = content_type
        self.expected_sha256 = parse_content_digest(content_digest)
        self.content_length = content_length


async def _upload(
    request: Request, res: Resources, params: UploadParams, video_id: uuid.UUID
) -> JSONResponse:
    media_type = params.content_type.split(";")[0].strip().lower()
    if media_type == _FORM_TYPE:
        boundary: bytes | None = boundary_of(params.content_type)
    elif media_type.startswith(_RAW_TYPES):
        boundary = None
    else:
        raise UnsupportedMediaType(
            f"unsupported Content-Type {params.content_type!r}: send the file as "
            "application/octet-stream (or video/*, audio/*) or in a multipart/form-data form"
        )
    max_bytes = int(getattr(res.settings, "upload_max_bytes", 0))
    body = _Body(request)
    if boundary is None and params.content_length is not None and params.content_length > max_bytes:
        # Refused before a byte is read. A client that asked first (Expect: 100-continue) sends
        # nothing more; one that did not is sending the body anyway, so a small one is drained.
        asked_first = "100-continue" in request.headers.get("expect", "").lower()
        if not asked_first and params.content_length - max_bytes <= _DRAIN_BYTES:
            await body.drain()
        raise PayloadTooLarge(
            f"the upload exceeds the maximum of {max_bytes} bytes", max_bytes=max_bytes
        )
    upload = UploadRequest(
        video_id=video_id,
        max_bytes=max_bytes,
        expected_sha256=params.expected_sha256,
        meta=params.meta,
        declared_bytes=params.content_length,
        form_boundary=boundary,
        progress_interval_seconds=float(
            getattr(res.settings, "upload_progress_interval_seconds", 0.5)
        ),
    )
    try:
        video = await accept_upload(res, body.chunks(), upload)
    except PayloadTooLarge:
        await body.drain()
        raise
    location = f"/api/videos/{video.id}"
    links = {"self": location, "progress": f"{location}/events"}
    created = VideoCreated.from_video(video, links)
    return JSONResponse(
        created.model_dump(mode="json"), status_code=201, headers={"Location": location}
    )


@router.api_route("", methods=["POST", "PUT"], status_code=201)
async def upload_video(
    request: Request,
    res: Annotated[Resources, Depends(resources)],
    params: Annotated[UploadParams, Depends()],
) -> JSONResponse:
    """Upload a new video (raw body or multipart/form-data); the server picks its id."""
    return await _upload(request, res, params, uuid.uuid4())


@router.put("/{video_id}", status_code=201)
async def upload_video_at(
    video_id: uuid.UUID,
    request: Request,
    res: Annotated[Resources, Depends(resources)],
    params: Annotated[UploadParams, Depends()],
) -> JSONResponse:
    """Upload to a client-chosen id, so its progress can be followed from the first byte."""
    await claim_video_id(res, video_id)
    return await _upload(request, res, params, video_id)
