"""HTTP client side of the CLI: streamed and tus uploads with progress bars, status polling.

Every call takes the account's ``Authorization`` header (``services.cli.credentials``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from services.chunked_upload.tus import OFFSET_CONTENT_TYPE, TUS_VERSION, format_metadata

CHUNK = 1024 * 1024


class ClientError(SystemExit):
    """Exit with a readable message when the server says no."""


def _check(response: httpx.Response) -> dict[str, Any]:
    if response.status_code >= 400:
        try:
            body = response.json()
            message = f"{body.get('error')}: {body.get('detail')}"
        except ValueError:
            message = response.text[:500]
        raise ClientError(f"error {response.status_code}: {message}")
    data: dict[str, Any] = response.json()
    return data


def request_json(
    method: str, url: str, headers: dict[str, str] | None = None, **kwargs: Any
) -> dict[str, Any]:
    """The JSON answer of one request (an empty dict for 204); ClientError for an error."""
    try:
        response = httpx.request(method, url, headers=headers, timeout=30, **kwargs)
    except httpx.HTTPError as exc:
        raise ClientError(f"cannot reach {url}: {exc}") from None
    if response.status_code == 204:
        return {}
    return _check(response)


def get_json(url: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    return request_json("GET", url, headers)


def transfer_progress() -> Progress:
    """A progress bar for bytes sent: size, speed and time left."""
    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        transient=False,
    )


def stream_upload(
    base: str,
    file: Path,
    *,
    title: str,
    description: str = "",
    tags: str = "",
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """PUT the file as a streamed body, showing bytes sent and speed."""
    size = file.stat().st_size
    with transfer_progress() as bar:
        task = bar.add_task(f"uploading {file.name}", total=size)

        def body() -> Iterator[bytes]:
            with file.open("rb") as fh:
                while chunk := fh.read(CHUNK):
                    bar.advance(task, len(chunk))
                    yield chunk

        params = {"title": title, "description": description, "filename": file.name}
        if tags:
            params["tags"] = tags
        try:
            response = httpx.put(
                f"{base}/api/videos",
                params=params,
                content=body(),
                headers={
                    **(headers or {}),
                    "Content-Type": "application/octet-stream",
                    "Content-Length": str(size),
                },
                timeout=httpx.Timeout(600, connect=10),
            )
        except httpx.HTTPError as exc:
            raise ClientError(f"upload to {base} failed: {exc}") from None
    return _check(response)


def wait_ready(
    base: str,
    video_id: str,
    timeout_seconds: float = 1800,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Poll the video until it is ready or failed, with a transcode progress bar."""
    deadline = time.monotonic() + timeout_seconds
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        "{task.percentage:>5.1f}%",
        TimeRemainingColumn(),
    ) as bar:
        task = bar.add_task("transcoding", total=100)
        while True:
            video = get_json(f"{base}/api/videos/{video_id}", headers)
            percent = float(video.get("progress", {}).get("percent", 0) or 0)
            bar.update(task, completed=percent, description=video["state"])
            if video["state"] in ("ready", "failed"):
                if video["state"] == "ready":
                    bar.update(task, completed=100)
                return video
            if time.monotonic() > deadline:
                raise ClientError(f"video {video_id} not ready after {timeout_seconds:.0f} s")
            time.sleep(0.5)


TUS_HEADERS = {"Tus-Resumable": TUS_VERSION}
_RETRYABLE = {409, 423, 500, 502, 503, 504}


def _resume_state_file() -> Path:
    return Path.home() / ".cache" / "vsp" / "resumable-uploads.json"


def _load_resume_state() -> dict[str, list[str]]:
    try:
        data: dict[str, list[str]] = json.loads(_resume_state_file().read_text())
        return data
    except (OSError, ValueError):
        return {}


def _save_resume_state(state: dict[str, list[str]]) -> None:
    path = _resume_state_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=1))
    tmp.replace(path)


def _encode_metadata(fields: dict[str, str]) -> str:
    # Empty fields are left out rather than sent as bare keys.
    return format_metadata({key: value for key, value in fields.items() if value})


class _Tus:
    """A tus 1.0.0 client session: create, find the offset, PATCH chunks, retrying what failed."""

    def __init__(
        self,
        endpoint: str,
        *,
        chunk_bytes: int,
        limit_bytes_per_second: float | None,
        give_up_seconds: float,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.endpoint = endpoint.rstrip("/") + "/"
        self.chunk_bytes = chunk_bytes
        self.limit = limit_bytes_per_second
        self.give_up_seconds = give_up_seconds
        # The account's credential goes with every request of the upload.
        self.http = httpx.Client(timeout=httpx.Timeout(120, connect=5), headers=headers)

    def close(self) -> None:
        self.http.close()

    def _retrying(self, what: str, call: Any) -> httpx.Response:
        """Run ``call`` until it answers without a transient error or time runs out."""
        deadline = time.monotonic() + self.give_up_seconds
        delay = 0.25
        while True:
            try:
                response: httpx.Response = call()
                if response.status_code not in _RETRYABLE or response.status_code == 409:
                    return response
                problem = f"HTTP {response.status_code}"
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            if time.monotonic() > deadline:
                raise ClientError(f"{what} failed for {self.give_up_seconds:.0f} s: {problem}")
            time.sleep(delay)
            delay = min(delay * 2, 4)

    def create(self, length: int, metadata: dict[str, str], *, partial: bool) -> str:
        headers = {**TUS_HEADERS, "Upload-Length": str(length)}
        if metadata:
            headers["Upload-Metadata"] = _encode_metadata(metadata)
        if partial:
            headers["Upload-Concat"] = "partial"
        response = self._retrying(
            "creating the upload", lambda: self.http.post(self.endpoint, headers=headers)
        )
        if response.status_code != 201:
            _check(response)
        return str(httpx.URL(self.endpoint).join(response.headers["location"]))

    def offset(self, url: str) -> int | None:
        """The server's offset, or None when the upload is gone (unknown or expired)."""
        response = self._retrying(
            "asking the offset", lambda: self.http.head(url, headers=TUS_HEADERS)
        )
        if response.status_code in (404, 410):
            return None
        if response.status_code != 200:
            raise ClientError(f"HEAD {url}: HTTP {response.status_code}")
        return int(response.headers["upload-offset"])

    def video_id(self, url: str) -> str:
        """The id of the video a finished upload became (its ``Video-Id``)."""
        response = self._retrying(
            "asking the video id", lambda: self.http.head(url, headers=TUS_HEADERS)
        )
        if response.status_code != 200:
            raise ClientError(f"HEAD {url}: HTTP {response.status_code}")
        return response.headers["video-id"]

    def send(self, url: str, file: Path, start: int, length: int, advance: Any) -> None:
        """Upload bytes ``start..start+length`` of ``file`` to ``url`` from the server's offset."""
        offset = self.offset(url)
        if offset is None:
            raise ClientError(f"upload {url} is gone")
        advance(offset)
        with file.open("rb") as fh:
            while offset < length:
                fh.seek(start + offset)
                chunk = fh.read(min(self.chunk_bytes, length - offset))
                began = time.monotonic()
                checksum = base64.b64encode(hashlib.sha256(chunk).digest()).decode()
                response = self._retrying(
                    "sending a chunk",
                    lambda chunk=chunk, offset=offset, checksum=checksum: self.http.patch(
                        url,
                        content=chunk,
                        headers={
                            **TUS_HEADERS,
                            "Content-Type": OFFSET_CONTENT_TYPE,
                            "Upload-Offset": str(offset),
                            "Upload-Checksum": f"sha256 {checksum}",
                        },
                    ),
                )
                if response.status_code in (204, 409, 460):
                    # 409: a retried PATCH had landed after all; 460: bytes damaged in transit.
                    new_offset = (
                        int(response.headers["upload-offset"])
                        if response.status_code == 204
                        else self.offset(url)
                    )
                    if new_offset is None:
                        raise ClientError(f"upload {url} is gone")
                    advance(new_offset - offset)
                    offset = new_offset
                else:
                    _check(response)
                if self.limit:
                    time.sleep(max(0.0, len(chunk) / self.limit - (time.monotonic() - began)))

    def concatenate(self, urls: list[str], metadata: dict[str, str]) -> str:
        paths = " ".join(httpx.URL(u).path for u in urls)
        headers = {**TUS_HEADERS, "Upload-Concat": f"final;{paths}"}
        if metadata:
            headers["Upload-Metadata"] = _encode_metadata(metadata)
        response = self._retrying(
            "joining the parts", lambda: self.http.post(self.endpoint, headers=headers)
        )
        if response.status_code != 201:
            _check(response)
        return str(httpx.URL(self.endpoint).join(response.headers["location"]))


def resumable_upload(
    base: str,
    file: Path,
    *,
    title: str,
    description: str = "",
    tags: str = "",
    parallel: int = 1,
    chunk_bytes: int = 8 * CHUNK,
    limit_bytes_per_second: float | None = None,
    give_up_seconds: float = 300,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Upload over tus, resuming an earlier interrupted run of the same file; returns the video."""
    size = file.stat().st_size
    parallel = max(1, min(parallel, size // (1024 * 1024) or 1))
    stat = file.stat()
    fingerprint = f"{base}|{file.resolve()}|{size}|{stat.st_mtime_ns}|{parallel}"
    metadata = {"filename": file.name, "title": title, "description": description, "tags": tags}
    bounds = [(size * i // parallel, size * (i + 1) // parallel) for i in range(parallel)]
    tus = _Tus(
        f"{base.rstrip('/')}/files/",
        chunk_bytes=chunk_bytes,
        limit_bytes_per_second=limit_bytes_per_second / parallel
        if limit_bytes_per_second
        else None,
        give_up_seconds=give_up_seconds,
        headers=headers,
    )
    state = _load_resume_state()
    urls = state.get(fingerprint, [])
    try:
        if len(urls) != parallel or any(tus.offset(u) is None for u in urls):
            urls = [
                tus.create(end - start, metadata if parallel == 1 else {}, partial=parallel > 1)
                for start, end in bounds
            ]
            state[fingerprint] = urls
            _save_resume_state(state)
        else:
            print(f"resuming {file.name} ({len(urls)} upload(s))", flush=True)
        with transfer_progress() as bar:
            task = bar.add_task(f"uploading {file.name}", total=size)
            lock = threading.Lock()

            def advance(count: int) -> None:
                with lock:
                    bar.advance(task, count)

            with ThreadPoolExecutor(max_workers=parallel) as pool:
                futures = [
                    pool.submit(tus.send, url, file, start, end - start, advance)
                    for url, (start, end) in zip(urls, bounds, strict=True)
                ]
                for future in futures:
                    future.result()
        final = tus.concatenate(urls, metadata) if parallel > 1 else urls[0]
        video_id = tus.video_id(final)
    finally:
        tus.close()
    state = _load_resume_state()
    state.pop(fingerprint, None)
    _save_resume_state(state)
    return get_json(f"{base.rstrip('/')}/api/videos/{video_id}", headers)
