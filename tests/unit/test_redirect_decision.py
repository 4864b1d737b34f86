"""The redirect decision: exact ratio, sticky viewers, URL validation (no open redirect)."""

from __future__ import annotations

import pytest

from services.redirector.decision import (
    HostNotAllowed,
    HostPatterns,
    InvalidVideoUrl,
    RatioSplit,
    parse_video_url,
    viewer_key,
)
from services.redirector.schemas import CdnTarget, RedirectConfig

HOSTS = HostPatterns(["*.origin-cluster", "origin.example.com"])
VIDEO = "http://s1.origin-cluster/video/1488/xcg2djHckad.m3u8"


def balancer(cdn_target: CdnTarget = "host", **config: object) -> RatioSplit:
    values: dict[str, object] = {"cdn_host": "cdn.example.com", "ratio": 5, **config}
    return RatioSplit(
        RedirectConfig(**values),  # type: ignore[arg-type]
        HOSTS,
        max_url_bytes=2048,
        permanent_max_age_seconds=3600,
        cdn_target=cdn_target,
    )


def test_exactly_one_in_ratio_goes_to_the_origin() -> None:
    b = balancer(ratio=5)
    sides = [b.redirect(VIDEO).side for _ in range(1000)]
    assert sides.count("origin") == 200
    # Evenly spread, not bunched: every window of 5 holds exactly one origin answer.
    assert all(sides[i : i + 5].count("origin") == 1 for i in range(0, 1000, 5))


@pytest.mark.parametrize("ratio", [1, 2, 3, 7, 10])
def test_any_ratio_is_exact(ratio: int) -> None:
    b = balancer(ratio=ratio)
    assert [b.pick() for _ in range(ratio * 50)].count("origin") == 50


def test_cdn_url_keeps_subdomain_path_and_query() -> None:
    b = balancer(ratio=2)
    first, second = b.redirect(VIDEO + "?exp=1&sig=ab"), b.redirect(VIDEO + "?exp=1&sig=ab")
    assert first.side == "origin"
    assert first.location == VIDEO + "?exp=1&sig=ab"
    assert second.side == "cdn"
    assert second.location == "http://cdn.example.com/s1/video/1488/xcg2djHckad.m3u8?exp=1&sig=ab"
    assert (first.status, first.cache_control) == (302, "no-store")


def test_edges_target_sends_the_cdn_side_to_the_path_on_the_asked_host() -> None:
    b = balancer("edges", ratio=3, status_code=307)
    video = "https://s1.origin-cluster:8443/origin/t/tok/videos/v/hls/master.m3u8?exp=1&sig=ab"
    answers = [b.redirect(video) for _ in range(6)]
    assert [a.side for a in answers] == ["origin", "cdn", "cdn"] * 2
    # The origin side is the video URL itself; the CDN side a path-absolute reference, so the
    # viewer stays on the scheme and host it asked (https stays https) and no CDN host shows.
    assert answers[0].location == video
    assert answers[1].location == "/origin/t/tok/videos/v/hls/master.m3u8?exp=1&sig=ab"
    assert all(a.status == 307 for a in answers)
    assert balancer("edges", ratio=2).redirect("http://s2.origin-cluster").location == (
        "http://s2.origin-cluster/"
    )
    no_path = balancer("edges", ratio=2)
    no_path.pick()
    assert no_path.redirect("http://s2.origin-cluster").location == "/"


@pytest.mark.parametrize(
    "video",
    [
        "http://s1.origin-cluster//evil.example/x",
        "http://s1.origin-cluster///evil.example/x",
        "https://s1.origin-cluster:8443//evil.example",
        "http://s1.origin-cluster//evil.example/x?exp=1&sig=ab",
    ],
)
def test_edges_target_never_answers_a_protocol_relative_location(video: str) -> None:
    b = balancer("edges", ratio=2)
    with pytest.raises(InvalidVideoUrl):
        b.redirect(video)
    # Refused before counting, on both sides alike: the next valid request is the origin's.
    assert b.redirect(VIDEO).side == "origin"
    assert b.redirect(VIDEO).location == "/video/1488/xcg2djHckad.m3u8"


@pytest.mark.parametrize("target", ["host", "edges"])
def test_every_existing_refusal_holds_for_both_targets(target: CdnTarget) -> None:
    for video in ("https://evil.example/x", "//s1.origin-cluster/x", "http://u@s1.origin-cluster/"):
        with pytest.raises((HostNotAllowed, InvalidVideoUrl)):
            balancer(target).redirect(video)


def test_host_target_keeps_a_double_slash_path_under_the_cdn_host() -> None:
    b = balancer(ratio=2)
    b.pick()
    location = b.redirect("http://s1.origin-cluster//x").location
    assert location == "http://cdn.example.com/s1//x"


def test_url_without_a_path_and_with_a_port() -> None:
    b = balancer(ratio=2)
    assert b.redirect("http://s2.origin-cluster").location == "http://s2.origin-cluster/"
    assert b.redirect("http://s2.origin-cluster").location == "http://cdn.example.com/s2/"
    assert (
        b.redirect("https://S3.Origin-Cluster:8443/a").location
        == "https://s3.origin-cluster:8443/a"
    )
    # The CDN side keeps the scheme too: an https page is not sent to plain http.
    assert b.redirect("https://S3.Origin-Cluster:8443/a").location == "https://cdn.example.com/s3/a"


def test_permanent_status_is_cacheable_for_a_bounded_time() -> None:
    answer = balancer(status_code=301).redirect(VIDEO)
    assert (answer.status, answer.cache_control) == (301, "max-age=3600")


@pytest.mark.parametrize(
    "video",
    [
        "https://evil.example/x",
        "http://origin-cluster.evil.example/x",
        "http://evilorigin-cluster/x",
        "http://s1.origin-cluster.evil.example/x",
        "http://127.0.0.1/x",
    ],
)
def test_hosts_outside_the_patterns_are_refused(video: str) -> None:
    with pytest.raises(HostNotAllowed):
        balancer().redirect(video)


@pytest.mark.parametrize(
    "video",
    [
        None,
        "",
        "garbage",
        "not a url at all",
        "//s1.origin-cluster/x",
        "javascript:alert(1)",
        "ftp://s1.origin-cluster/x",
        "http://",
        "http://[::1/x",
        "http://s1.origin-cluster:99999/x",
        "http://user:pw@s1.origin-cluster/x",
        "http://evil.example\\@s1.origin-cluster/x",
        "http://s1.origin-cluster/x\r\nSet-Cookie: a=b",
        "http://s1.origin-cluster/vidéo",
        "http://s1.origin-cluster/" + "a" * 3000,
    ],
)
def test_garbage_is_refused(video: str | None) -> None:
    with pytest.raises(InvalidVideoUrl):
        balancer().redirect(video)


def test_refused_requests_are_not_counted() -> None:
    b = balancer(ratio=5)
    with pytest.raises(HostNotAllowed):
        b.redirect("https://evil.example/x")
    assert b.redirect(VIDEO).side == "origin"


def test_sticky_viewers_stay_on_one_side_and_share_the_ratio() -> None:
    b = balancer(ratio=4, sticky=True)
    viewers = [f"viewer-{n}" for n in range(4000)]
    sides = {v: b.redirect(VIDEO, v).side for v in viewers}
    assert all(b.redirect(VIDEO, v).side == sides[v] for v in viewers[:200])
    share = list(sides.values()).count("origin") / len(viewers)
    assert 0.22 < share < 0.28
    # Another instance with the same configuration answers the same.
    other = balancer(ratio=4, sticky=True)
    assert all(other.redirect(VIDEO, v).side == sides[v] for v in viewers[:200])


def test_sticky_without_a_viewer_falls_back_to_the_counter() -> None:
    b = balancer(ratio=3, sticky=True)
    assert [b.pick(None) for _ in range(30)].count("origin") == 10


def test_viewer_key_prefers_explicit_then_forwarded_then_client() -> None:
    assert viewer_key("v1", "1.2.3.4", "5.6.7.8") == "v1"
    assert viewer_key(None, "1.2.3.4, 10.0.0.1", "5.6.7.8") == "1.2.3.4"
    assert viewer_key(None, None, "5.6.7.8") == "5.6.7.8"


def test_apply_changes_the_next_answer() -> None:
    b = balancer(ratio=1)
    assert b.redirect(VIDEO).side == "origin"
    b.apply(RedirectConfig(cdn_host="cdn2.example.com", ratio=1_000_000, version=2))
    b.pick()  # the counter keeps running; past the origin slot every answer is the CDN
    assert b.redirect(VIDEO).location.startswith("http://cdn2.example.com/s1/")


@pytest.mark.parametrize("pattern", ["*", "", "*.", "a.*.b", "**.x"])
def test_bad_patterns_are_refused(pattern: str) -> None:
    with pytest.raises(ValueError):
        HostPatterns([pattern])


def test_parse_keeps_the_query_exactly() -> None:
    url = parse_video_url("http://s9.origin-cluster/p?b=2&a=%2F", HOSTS, 2048)
    assert (url.subdomain, url.path, url.query) == ("s9", "/p", "b=2&a=%2F")


def test_remembered_urls_follow_configuration_changes_and_refusals_repeat() -> None:
    b = balancer(ratio=2, cdn_host="cdn.one")
    assert [b.redirect(VIDEO).location for _ in range(2)] == [
        VIDEO,
        "http://cdn.one/s1/video/1488/xcg2djHckad.m3u8",
    ]
    b.apply(RedirectConfig(cdn_host="cdn.two", ratio=2, status_code=301))
    answers = [b.redirect(VIDEO) for _ in range(2)]
    assert [(a.status, a.location) for a in answers] == [
        (301, VIDEO),
        (301, "http://cdn.two/s1/video/1488/xcg2djHckad.m3u8"),
    ]
    for _ in range(2):
        with pytest.raises(HostNotAllowed):
            b.redirect("http://evil.example/x")
    # Refusals are neither remembered nor counted: the counter continues where it was.
    assert b.redirect(VIDEO).side == "origin"
