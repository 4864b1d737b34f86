"""Webhooks end to end: a real upload, transcode and delete told to a receiver on 127.0.0.1,
signed, once each; retries with a log; targets and other accounts refused at the API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from shared.media.samples import synthetic_clip as make_clip
from shared.videos.webhooks import EVENTS
from tests.support.accounts import Account, create_account
from tests.support.metrics import metric
from tests.support.polling import wait_for
from tests.support.processes import Processes
from tests.support.upload import stream_upload_file, wait_state
from tests.support.webhooks import documented_verify, serve_receiver

# A receiver on this machine, and retries fast enough to watch.
LOCAL_RECEIVERS = {
    "WEBHOOK_ALLOW_HTTP": "true",
    "WEBHOOK_ALLOWED_NETWORKS": "127.0.0.1/32",
    "WEBHOOK_RETRY_DELAYS_SECONDS": "[0.3]",
    "WEBHOOK_DISPATCH_INTERVAL_SECONDS": "0.1",
}
verify = documented_verify()


def register(origin: str, account: Account, url: str, events: list[str]) -> httpx.Response:
    return httpx.post(
        f"{origin}/api/webhooks", json={"url": url, "events": events}, headers=account.headers
    )


def deliveries(origin: str, account: Account, webhook_id: str) -> dict[str, Any]:
    response = httpx.get(
        f"{origin}/api/webhooks/{webhook_id}/deliveries", headers=account.headers, timeout=5
    )
    assert response.status_code == 200, response.text
    log: dict[str, Any] = response.json()
    return log


def settled(origin: str, account: Account, webhook_id: str, count: int) -> dict[str, Any] | None:
    """The delivery log once it holds ``count`` deliveries, none of them pending."""
    log = deliveries(origin, account, webhook_id)
    done = log["total"] == count and all(d["state"] != "pending" for d in log["items"])
    return log if done else None


def test_one_upload_tells_each_event_once_signed_and_retries_a_failing_receiver(
    procs: Processes, test_env: dict[str, str], media_dir: Path
) -> None:
    owner = create_account(test_env)
    upload = procs.service("upload", wait=False)
    origin_proc = procs.service("origin", env=LOCAL_RECEIVERS, wait=False)
    worker = procs.worker("push", wait=False)
    procs.wait_ready([upload, origin_proc, worker])
    origin = origin_proc.url
    with serve_receiver() as receiver:
        created = register(origin, owner, f"{receiver.url}/all", list(EVENTS))
        assert created.status_code == 201, created.text
        hook = created.json()
        assert hook["secret"].startswith("whsec_") and hook["active"] is True
        assert created.headers["cache-control"] == "no-store"
        shown = httpx.get(f"{origin}/api/webhooks/{hook['id']}", headers=owner.headers).json()
        assert "secret" not in shown and shown["events"] == list(EVENTS)
        receiver.failures["/flaky"] = [500, 500, 500]
        flaky = register(origin, owner, f"{receiver.url}/flaky", ["video.uploaded"]).json()

        clip = make_clip(media_dir / "webhooks.mp4", seconds=2, size="320x180")
        response = stream_upload_file(upload.url, clip, owner, title="hooked")
        assert response.status_code == 201, response.text
        video_id = response.json()["id"]
        assert wait_state(origin, video_id, {"ready", "failed"})["state"] == "ready"
        deleted = httpx.delete(f"{origin}/api/videos/{video_id}", headers=owner.headers)
        assert deleted.status_code == 204, deleted.text

        log = wait_for(
            lambda: settled(origin, owner, hook["id"], 3), timeout=30, what="three deliveries"
        )
        received = receiver.at("/all")
        ids = [r.headers["webhook-id"] for r in received]
        assert len(received) == 3 and len(set(ids)) == 3, ids
        assert {d["id"] for d in log["items"]} == set(ids)
        states = {"video.uploaded": "queued", "video.ready": "ready", "video.deleted": "deleted"}
        for request in received:
            assert verify(hook["secret"], request.headers, request.body)
            assert not verify(flaky["secret"], request.headers, request.body)
            body = json.loads(request.body)
            assert body["data"]["video"]["id"] == video_id
            assert body["data"]["video"]["state"] == states[body["type"]]
            assert request.headers["content-type"] == "application/json"
        assert sorted(json.loads(r.body)["type"] for r in received) == sorted(states)
        for delivery in log["items"]:
            assert delivery["state"] == "succeeded" and delivery["attempts"] == 1
            assert [a["status_code"] for a in delivery["log"]] == [204]
            assert delivery["next_attempt_at"] is None and delivery["video_id"] == video_id

        retried = wait_for(
            lambda: settled(origin, owner, flaky["id"], 1), timeout=30, what="the flaky delivery"
        )["items"][0]
        assert retried["state"] == "succeeded" and retried["attempts"] == 4
        assert [a["attempt"] for a in retried["log"]] == [1, 2, 3, 4]
        assert [a["status_code"] for a in retried["log"]] == [500, 500, 500, 204]
        tries = receiver.at("/flaky")
        assert len(tries) == 4
        # One delivery: the same Webhook-Id and body each time, signed afresh each time.
        assert {t.headers["webhook-id"] for t in tries} == {retried["id"]}
        assert len({t.body for t in tries}) == 1
        assert all(verify(flaky["secret"], t.headers, t.body) for t in tries)
    assert metric(origin, "webhook_deliveries_total", outcome="retrying") == 3
    assert metric(origin, "webhook_deliveries_total", outcome="delivered") == 4


def test_private_targets_and_other_accounts_are_refused(
    procs: Processes, test_env: dict[str, str]
) -> None:
    # One origin as shipped (plus http for a local URL to reach its checks), one letting the
    # machine's own receivers through.
    strict_proc = procs.service("origin", env={"WEBHOOK_ALLOW_HTTP": "true"}, wait=False)
    local_env = {**LOCAL_RECEIVERS, "WEBHOOK_MAX_PER_ACCOUNT": "2"}
    local_proc = procs.service("origin", env=local_env, wait=False)
    procs.wait_ready([strict_proc, local_proc])
    strict, local = strict_proc.url, local_proc.url
    owner, stranger = create_account(test_env), create_account(test_env)

    for url in (
        "http://10.0.0.1/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://localhost:8080/hook",
        "http://127.0.0.1:8080/hook",
        "http://[::1]:8080/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://2130706433/hook",
        "http://0x7f.1/hook",
        "http://user:pass@127.0.0.1/hook",
        "ftp://127.0.0.1/hook",
    ):
        refused = register(strict, owner, url, ["video.ready"])
        assert refused.status_code == 422, (url, refused.text)
        body = refused.json()
        assert body["error"] == "validation_error", body
        assert body["detail"][0]["loc"] == ["body", "url"] and body["detail"][0]["msg"]
    for bad in (
        {"url": "http://127.0.0.1/x", "events": []},
        {"url": "http://127.0.0.1/x", "events": ["video.watched"]},
        {"url": "http://127.0.0.1/" + "a" * 2100, "events": ["video.ready"]},
        {"url": "http://127.0.0.1/x", "events": ["video.ready"], "secret": "mine"},
    ):
        response = httpx.post(f"{local}/api/webhooks", json=bad, headers=owner.headers)
        assert response.status_code == 422 and response.json()["error"] == "validation_error"
    listed = httpx.get(f"{strict}/api/webhooks", headers=owner.headers).json()
    assert listed == {"items": []}
    anonymous = httpx.post(f"{local}/api/webhooks", json={"url": "http://127.0.0.1/x"})
    assert anonymous.status_code == 401 and anonymous.json()["error"] == "unauthorized"

    hook = register(local, owner, "http://127.0.0.1:9/hook", ["video.ready"]).json()
    path = f"{local}/api/webhooks/{hook['id']}"
    for method, suffix, payload in (
        ("GET", "", None),
        ("PATCH", "", {"active": False}),
        ("DELETE", "", None),
        ("POST", "/rotate", None),
        ("GET", "/deliveries", None),
    ):
        response = httpx.request(method, path + suffix, json=payload, headers=stranger.headers)
        assert response.status_code == 404, (method, suffix, response.text)
        assert response.json()["error"] == "not_found"
    assert httpx.get(f"{local}/api/webhooks", headers=stranger.headers).json() == {"items": []}
    mine = httpx.get(path, headers=owner.headers).json()
    assert mine["active"] is True and mine["url"] == "http://127.0.0.1:9/hook"

    moved = httpx.patch(path, json={"url": "http://10.0.0.1/hook"}, headers=owner.headers)
    assert moved.status_code == 422 and moved.json()["detail"][0]["loc"] == ["body", "url"]
    paused = httpx.patch(path, json={"active": False}, headers=owner.headers).json()
    assert paused["active"] is False and paused["url"] == "http://127.0.0.1:9/hook"
    rotated = httpx.post(f"{path}/rotate", headers=owner.headers).json()
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != hook["secret"]

    second = register(local, owner, "http://127.0.0.1:9/other", ["video.failed"])
    assert second.status_code == 201
    third = register(local, owner, "http://127.0.0.1:9/third", ["video.failed"])
    assert third.status_code == 409 and third.json()["error"] == "conflict"
    assert httpx.delete(path, headers=owner.headers).status_code == 204
    assert httpx.get(path, headers=owner.headers).status_code == 404
