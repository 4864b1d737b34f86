"""One table of conditional GETs and ranges (RFC 9110), run against the origin and an edge.

Both answer from the same ``shared.http.ranges.evaluate``; this proves it from the outside, on a
real origin process and a real edge process in front of it, with the same expectations.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from datetime import timedelta
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path

import httpx
import pytest

from shared.core.errors import RangeNotSatisfiable
from shared.http.ranges import parse_range
from tests.support.edge import start_edge
from tests.support.processes import Processes
from tests.support.signing import signed
from tests.support.storage import put_object

SIZE = 100_000


@dataclass(frozen=True)
class Case:
    name: str
    headers: dict[str, str]
    status: int
    # Inclusive byte range of a 206, or None for the whole object (200) or no body.
    part: tuple[int, int] | None = None
    method: str = "GET"


def table(etag: str, last_modified: str) -> list[Case]:
    """The cases, given the representation's validators as the server sent them."""
    modified = parsedate_to_datetime(last_modified)
    earlier = format_datetime(modified - timedelta(days=1), usegmt=True)
    later = format_datetime(modified + timedelta(days=1), usegmt=True)
    weak = f"W/{etag}"
    some_range = {"Range": "bytes=10-19"}
    outside = {"Range": f"bytes={SIZE}-"}
    return [
        Case("plain", {}, 200),
        Case("head", {}, 200, method="HEAD"),
        Case("if-none-match matches", {"If-None-Match": etag}, 304),
        Case("if-none-match compares weakly", {"If-None-Match": weak}, 304),
        Case("if-none-match in a list", {"If-None-Match": f'"nope", {etag}'}, 304),
        Case("if-none-match star", {"If-None-Match": "*"}, 304),
        Case("if-none-match misses", {"If-None-Match": '"nope"'}, 200),
        Case("if-modified-since now", {"If-Modified-Since": last_modified}, 304),
        Case("if-modified-since later", {"If-Modified-Since": later}, 304),
        Case("if-modified-since earlier", {"If-Modified-Since": earlier}, 200),
        Case("if-modified-since garbage", {"If-Modified-Since": "yesterday"}, 200),
        Case(
            "if-none-match wins over if-modified-since",
            {"If-None-Match": '"nope"', "If-Modified-Since": last_modified},
            200,
        ),
        Case("range", some_range, 206, (10, 19)),
        Case("open range", {"Range": f"bytes={SIZE - 5}-"}, 206, (SIZE - 5, SIZE - 1)),
        Case("suffix range", {"Range": "bytes=-10"}, 206, (SIZE - 10, SIZE - 1)),
        Case("range past the end is cut", {"Range": f"bytes=5-{SIZE * 2}"}, 206, (5, SIZE - 1)),
        Case("unsatisfiable range", {"Range": f"bytes={SIZE}-"}, 416),
        Case("empty suffix range", {"Range": "bytes=-0"}, 416),
        Case("several ranges get the whole", {"Range": "bytes=0-1,5-6"}, 200),
        Case("other units get the whole", {"Range": "items=0-1"}, 200),
        Case("if-range etag matches", {**some_range, "If-Range": etag}, 206, (10, 19)),
        Case("if-range etag differs", {**some_range, "If-Range": '"nope"'}, 200),
        Case("if-range weak never matches", {**some_range, "If-Range": weak}, 200),
        Case("if-range date matches", {**some_range, "If-Range": last_modified}, 206, (10, 19)),
        Case("if-range date differs", {**some_range, "If-Range": earlier}, 200),
        Case("head with a range", some_range, 206, (10, 19), method="HEAD"),
        Case("head if-none-match matches", {"If-None-Match": etag}, 304, method="HEAD"),
        # If-Range is evaluated before Range: a stale validator drops even an unsatisfiable
        # range, a current one lets it be refused.
        Case("if-range differs, range unsatisfiable", {**outside, "If-Range": '"nope"'}, 200),
        Case("if-range matches, range unsatisfiable", {**outside, "If-Range": etag}, 416),
    ]


def refusal(range_header: str) -> bytes:
    """The JSON error both servers send for an unsatisfiable range, byte for byte."""
    with pytest.raises(RangeNotSatisfiable) as refused:
        parse_range(range_header, SIZE)
    return json.dumps(refused.value.body(), separators=(",", ":")).encode()


@pytest.mark.parametrize("target", ["origin", "edge"])
def test_the_same_conditional_get_table(procs: Processes, tmp_path: Path, target: str) -> None:
    origin = procs.service("origin")
    base = origin.url or ""
    if target == "edge":
        edge = start_edge(procs, base, tmp_path / "cache", EDGE_PREFETCH_NEXT_SEGMENT="false")
        base = edge.url or ""
    key = f"videos/{uuid.uuid4()}/hls/720p/seg_00001.m4s"
    data = os.urandom(SIZE)
    put_object(key, data, "video/iso.segment")
    url = signed(base, key)
    with httpx.Client(timeout=10) as client:
        first = client.get(url)
        assert first.status_code == 200 and first.content == data
        etag, last_modified = first.headers["etag"], first.headers["last-modified"]
        for case in table(etag, last_modified):
            got = client.request(case.method, url, headers=case.headers)
            label = f"{target}: {case.name}"
            assert got.status_code == case.status, label
            if case.status == 304:
                assert got.content == b"", label
                assert got.headers["etag"] == etag, label
            elif case.status == 416:
                assert got.headers["content-range"] == f"bytes */{SIZE}", label
                assert got.content == refusal(case.headers["Range"]), label
                assert got.headers["content-length"] == str(len(got.content)), label
            else:
                start, end = case.part or (0, SIZE - 1)
                assert got.headers["content-length"] == str(end - start + 1), label
                assert got.headers.get("accept-ranges") == "bytes", label
                if case.status == 206:
                    assert got.headers["content-range"] == f"bytes {start}-{end}/{SIZE}", label
                else:
                    assert "content-range" not in got.headers, label
                expected = b"" if case.method == "HEAD" else data[start : end + 1]
                assert got.content == expected, label
