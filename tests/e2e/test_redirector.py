"""Redirector end to end: real processes, a real nginx, the real PostgreSQL (and a private one
that the test stops)."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.support.infra import PrivatePostgres
from tests.support.polling import wait_for
from tests.support.processes import Proc, Processes
from tests.support.proxies import start_nginx
from tests.support.redirector import (
    admin_headers,
    empty_config_table,
    sides,
    start_redirectors,
)

VIDEO = "http://s1.origin-cluster/video/1488/xcg2djHckad.m3u8"
CDN_PREFIX = "http://cdn.test/s1/video/1488/xcg2djHckad.m3u8"


def metric(base_url: str, name: str, labels: str = "") -> float:
    text = httpx.get(f"{base_url}/metrics").text
    match = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.M)
    assert match, f"{name}{labels} not in /metrics"
    return float(match.group(1))


@pytest.fixture(scope="module")
def cluster(test_env: dict[str, str], test_root: Path) -> Iterator[dict[str, list[Proc] | Proc]]:
    """Four redirectors and nginx in front, on an empty configuration table."""
    empty_config_table(test_env["DATABASE_URL"])
    procs = Processes(test_root / "logs" / "redirector-cluster", test_env)
    try:
        instances = start_redirectors(
            procs, 4, {"REDIRECTOR_CDN_HOST": "cdn.test", "REDIRECTOR_RATIO": "3"}
        )
        nginx = start_nginx(procs, test_root / "nginx-redirector", [p.url for p in instances])
        yield {"instances": instances, "nginx": nginx}
    finally:
        procs.stop_all()


def post_config(url: str, **changes: object) -> dict[str, object]:
    response = httpx.post(f"{url}/config", json=changes, headers=admin_headers())
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def test_empty_table_means_the_environment_configuration(cluster: dict) -> None:
    for proc in cluster["instances"]:
        config = httpx.get(f"{proc.url}/").json()
        assert (config["source"], config["version"]) == ("environment", 0)
        assert (config["cdn_host"], config["ratio"]) == ("cdn.test", 3)
    with httpx.Client(base_url=cluster["instances"][1].url) as client:
        assert sides(client, "/", VIDEO, 30, VIDEO).count("origin") == 10


def test_one_instance_sends_exactly_200_of_1000_to_the_origin(cluster: dict) -> None:
    one = cluster["instances"][0].url
    post_config(one, ratio=5, cdn_host="cdn.test", status_code=302)
    before = metric(one, "redirector_redirects_total", '{target="origin"}')
    with httpx.Client(base_url=one) as client:
        answers = sides(client, "/", VIDEO, 1000, VIDEO)
        redirect = client.get("/", params={"video": VIDEO + "?exp=9&sig=ab"})
    assert answers.count("origin") == 200
    assert redirect.headers["cache-control"] == "no-store"
    assert redirect.headers["location"] in (VIDEO + "?exp=9&sig=ab", CDN_PREFIX + "?exp=9&sig=ab")
    assert metric(one, "redirector_redirects_total", '{target="origin"}') - before >= 200
    assert metric(one, "redirector_config_ratio") == 5


def wait_all(urls: list[str], accept: Callable[[dict], bool], timeout: float = 10) -> list[dict]:
    """The /config of every instance once each satisfies ``accept``."""
    seen: dict[str, dict] = {}
    deadline = time.monotonic() + timeout
    with httpx.Client() as client:
        while len(seen) < len(urls) and time.monotonic() < deadline:
            for url in urls:
                if url not in seen:
                    config = client.get(f"{url}/config").json()
                    if accept(config):
                        seen[url] = config
            if len(seen) < len(urls):
                # Each instance stamps the change when it applies it, whenever it is asked:
                # the poll must not take the CPU the instances need to apply it.
                time.sleep(0.01)
    assert len(seen) == len(urls), f"only {sorted(seen)} took the change"
    return [seen[url] for url in urls]


def test_a_change_posted_to_one_is_what_all_four_answer_within_a_second(cluster: dict) -> None:
    instances = [p.url for p in cluster["instances"]]
    posted = post_config(instances[2], ratio=7, cdn_host="cdn.test")
    configs = wait_all(instances, lambda c: c["version"] == posted["version"])
    # Each instance says when it started answering with the change; all on one machine clock.
    lags = [c["applied_at"] - posted["applied_at"] for c in configs]
    assert max(lags) < 1.0, lags
    assert all(c["ratio"] == 7 for c in configs)
    for url in instances:
        assert metric(url, "redirector_config_version") == posted["version"]
    with httpx.Client(base_url=instances[3]) as client:
        assert sides(client, "/", VIDEO, 70, VIDEO).count("origin") == 10


def test_through_nginx_four_instances_send_20_percent_to_the_origin(cluster: dict) -> None:
    nginx = cluster["nginx"].url
    posted = post_config(nginx, ratio=5, cdn_host="cdn.test")
    # Every instance answers with the change before the count starts (the version it was
    # posted as: another instance nginx asks may not have it yet).
    wait_all([p.url for p in cluster["instances"]], lambda c: c["version"] == posted["version"])
    seen = {httpx.get(f"{nginx}/whoami").json()["instance"] for _ in range(8)}
    assert seen == {f"redirector-{n}" for n in range(1, 5)}

    def worker(count: int) -> list[str]:
        with httpx.Client(base_url=nginx) as client:
            return sides(client, "/", VIDEO, count, VIDEO)

    with ThreadPoolExecutor(8) as pool:
        answers = [side for part in pool.map(worker, [250] * 8) for side in part]
    share = answers.count("origin") / len(answers)
    assert len(answers) == 2000
    assert abs(share - 0.20) <= 0.01, share


def test_bad_input_is_refused_with_json_errors(cluster: dict) -> None:
    for base in (cluster["instances"][0].url, cluster["nginx"].url):
        evil = httpx.get(f"{base}/", params={"video": "https://evil.example/x"})
        assert evil.status_code == 400
        assert evil.json()["error"] == "host_not_allowed"
        assert "location" not in evil.headers
        for garbage in ("garbage", "", "http://", "http://s1.origin-cluster/\x01"):
            bad = httpx.get(f"{base}/", params={"video": garbage})
            assert bad.status_code == 400, (garbage, bad.text)
            assert bad.json()["error"] == "invalid_video_url"
        no_path = httpx.get(f"{base}/", params={"video": "http://s4.origin-cluster"})
        assert no_path.status_code == 302
        assert no_path.headers["location"] in ("http://s4.origin-cluster/", "http://cdn.test/s4/")

        zero = httpx.post(f"{base}/config", json={"ratio": 0}, headers=admin_headers())
        assert zero.status_code == 422
        assert zero.json()["error"] == "validation_error"
        host = httpx.post(f"{base}/", json={"cdn_host": "evil/x"}, headers=admin_headers())
        assert host.status_code == 422
        anonymous = httpx.post(f"{base}/config", json={"ratio": 2})
        assert anonymous.status_code == 401
        assert anonymous.json()["error"] == "unauthorized"
        wrong = httpx.post(f"{base}/config", json={"ratio": 2}, headers=admin_headers("x" * 20))
        assert wrong.status_code == 403
        # Nothing was changed by the refused requests.
        assert httpx.get(f"{base}/").json()["ratio"] != 2


def test_emptied_table_sends_every_instance_back_to_the_environment(cluster: dict) -> None:
    instances = [p.url for p in cluster["instances"]]
    reset = httpx.delete(f"{instances[0]}/config", headers=admin_headers())
    assert reset.status_code == 200, reset.text
    configs = wait_all(instances, lambda c: c["source"] == "environment")
    assert all((c["cdn_host"], c["ratio"], c["version"]) == ("cdn.test", 3, 0) for c in configs)
    assert max(c["applied_at"] for c in configs) - reset.json()["applied_at"] < 1.0


def test_database_stopped_keeps_the_cached_configuration(procs: Processes) -> None:
    db = PrivatePostgres.create()
    try:
        db.migrate()
        (one,) = start_redirectors(
            procs, 1, {"DATABASE_URL": db.url, "REDIRECTOR_RECONNECT_SECONDS": "0.2"}
        )
        saved = post_config(one.url, ratio=2, cdn_host="cached.test")
        db.stop()
        with httpx.Client(base_url=one.url) as client:
            wait_for(
                lambda: metric(one.url, "redirector_config_listener_up") == 0,
                timeout=30,
                what="the instance to notice the database is gone",
            )
            answers = sides(client, "/", VIDEO, 20, VIDEO)
            cdn = {client.get("/", params={"video": VIDEO}).headers["location"] for _ in range(2)}
            config = client.get("/config").json()
            refused = client.post("/config", json={"ratio": 4}, headers=admin_headers())
            ready = client.get("/readyz")
        assert metric(one.url, "redirector_config_listener_up") == 0
        assert answers.count("origin") == 10
        assert "http://cached.test/s1/video/1488/xcg2djHckad.m3u8" in cdn
        assert config["version"] == saved["version"] and config["source"] == "database"
        assert refused.status_code == 502
        assert refused.json()["error"] == "upstream_unavailable"
        assert ready.status_code == 200
    finally:
        db.destroy()


def test_the_listener_takes_its_limits_from_the_settings(procs: Processes) -> None:
    limits = {"REDIRECTOR_MAX_REQUEST_LINE_BYTES": "300", "REDIRECTOR_HEADER_TIMEOUT_SECONDS": "1"}
    (one,) = start_redirectors(procs, 1, limits)
    long_video = httpx.get(f"{one.url}/", params={"video": VIDEO + "?" + "a" * 300})
    assert long_video.status_code == 414 and long_video.json()["error"] == "uri_too_long"
    assert httpx.get(f"{one.url}/", params={"video": VIDEO}).status_code == 302
    host, port = one.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(b"GET / HTTP/1.1\r\nHost: r\r\nX-Half: ")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        took = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408 ") and 1 <= took < 5, took
