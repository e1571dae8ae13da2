"""The sandbox speaks CONTRACT.md over real loopback HTTP (httpx directly, never the doitong_nb client)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from _service_clock import Clock

from doitong_nb import _contract as contract
from doitong_sandbox import Faults, Sandbox
from doitong_sandbox.engine import generation_seconds

pytestmark = pytest.mark.timeout(30)

GENERATE = (
    "mutation Generate($input: GenerateInput!) { generate(input: $input) "
    "{ id status type provider url metadata creditCost createdAt completedAt error { code message } } }"
)
GENERATE_IMAGE = (
    "mutation GenerateImage($input: ImageGenerationInput!) "
    "{ generateImage(input: $input) { id status url width height creditCost } }"
)
JOB = (
    "query Job($id: ID!) "
    "{ job(id: $id) { id status url width height duration metadata creditCost completedAt error { code message } } }"
)
ACCOUNT = "{ account { credits plan requestsPerMinute concurrentJobs dailyLimit jobsToday activeJobs } }"
PROMPT = "A futuristic city with flying cars and neon lights"
RATE_HEADERS = (
    contract.HEADER_RATE_LIMIT,
    contract.HEADER_RATE_REMAINING,
    contract.HEADER_RATE_RESET,
    contract.HEADER_RATE_WINDOW,
)


@pytest.fixture(scope="module")
def shared() -> Iterator[Sandbox]:
    """One sandbox for the many stateless checks (each uses its own key where it reads counters)."""
    with Sandbox(speed=1000) as sb:
        yield sb


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    """One client for the module: building an SSL context per client costs more than most tests."""
    with httpx.Client(trust_env=False, timeout=10) as client:
        yield client


def gql(
    sb: Sandbox,
    http: httpx.Client,
    query: str,
    variables: dict[str, Any] | None = None,
    key: str | None = None,
    **headers: str,
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key or sb.api_key}", **headers}
    return http.post(f"{sb.base_url}/graphql", json={"query": query, "variables": variables}, headers=headers)


def rest_submit(
    sb: Sandbox, http: httpx.Client, key: str | None = None, headers: dict[str, str] | None = None, **params: Any
) -> httpx.Response:
    body = {"service": "flux-ultra", "prompt": PROMPT, **params}
    return http.post(
        f"{sb.base_url}/v1/text_to_image", json=body, headers={"X-API-Key": key or sb.api_key, **(headers or {})}
    )


def generate_input(**options: Any) -> dict[str, Any]:
    return {"input": {"type": "IMAGE", "provider": "flux-ultra", "input": {"text": PROMPT}, "options": options}}


def wait_final(sb: Sandbox, http: httpx.Client, job_id: str, key: str | None = None) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        response = http.get(f"{sb.base_url}/v1/jobs/{job_id}", headers={"X-API-Key": key or sb.api_key})
        job = response.json()["data"]["job"]
        if job["status"] != "processing":
            return job
        time.sleep(0.01)
    raise AssertionError(f"job {job_id} never finished")


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) <= {"errors", "data"}, body
    return body["errors"][0]


# --- the two mutations, the queries, REST -----------------------------------------------------------
def test_generate_answers_a_processing_job_with_the_documented_fields(sandbox: Sandbox, http: httpx.Client) -> None:
    response = gql(
        sandbox, http, GENERATE, generate_input(width=1024, height=1024, version="flux-pro-1.1-ultra", quality="high")
    )
    assert response.status_code == 200
    job = response.json()["data"]["generate"]
    assert job["id"].startswith("job_") and len(job["id"]) == 24 and job["id"][4:].isalnum()
    assert (job["status"], job["type"], job["provider"], job["url"]) == ("processing", "IMAGE", "flux-ultra", None)
    assert job["creditCost"] == contract.credit_cost(1024, 1024) == 20
    assert job["createdAt"].endswith("Z") and len(job["createdAt"]) == len("2024-01-01T00:00:00.000Z")
    meta = job["metadata"]
    assert meta["sandbox"] is True and meta["quality"] == "high" and meta["duration"] is None
    assert 0 <= meta["seed"] < 2**31


def test_the_image_is_rendered_while_its_job_runs_not_when_it_is_downloaded(http: httpx.Client) -> None:
    with Sandbox(speed=math.inf) as sb, sb.jobs_held():  # the job runs until the test has looked
        job = gql(sb, http, GENERATE, generate_input(width=512, height=512)).json()["data"]["generate"]
        deadline = time.monotonic() + 60
        while sb.stats(sb.api_key)["outputs_rendered"] == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sb.stats(sb.api_key)["outputs_rendered"] == 1
        assert gql(sb, http, JOB, {"id": job["id"]}).json()["data"]["job"]["status"] == "processing"
        assert sb.stats(sb.api_key)["cdn_requests"] == 0


def test_the_same_query_text_gets_the_same_answer_every_time(sandbox: Sandbox, http: httpx.Client) -> None:
    """Parsed and validated queries are cached by text: a cached refusal must still be a refusal."""
    for query, code in (("{ account { nope } }", "GRAPHQL_VALIDATION_FAILED"), ("{ account {", "GRAPHQL_PARSE_FAILED")):
        answers = [gql(sandbox, http, query) for _ in range(3)]
        assert {a.status_code for a in answers} == {400}
        assert [error_of(a)["extensions"]["code"] for a in answers] == [code] * 3
        assert len({json.dumps(a.json(), sort_keys=True) for a in answers}) == 1
    credits = [gql(sandbox, http, "{ account { credits } }").json()["data"]["account"]["credits"] for _ in range(2)]
    assert credits[0] == credits[1] > 0


def test_generate_image_completes_with_a_cdn_url_and_the_job_query_follows_it(
    sandbox: Sandbox, http: httpx.Client
) -> None:
    variables = {"input": {"service": "flux-ultra", "prompt": PROMPT, "width": 512, "height": 768, "seed": 7}}
    submitted = gql(sandbox, http, GENERATE_IMAGE, variables).json()["data"]["generateImage"]
    assert (submitted["status"], submitted["url"], submitted["width"], submitted["height"]) == (
        "processing",
        None,
        512,
        768,
    )
    wait_final(sandbox, http, submitted["id"])
    job = gql(sandbox, http, JOB, {"id": submitted["id"]}).json()["data"]["job"]
    assert job["status"] == "completed" and job["error"] is None
    assert job["url"] == f"{sandbox.cdn_url}/outputs/{submitted['id']}.jpg"
    assert job["metadata"]["seed"] == 7 and job["duration"] == job["metadata"]["duration"] > 0
    assert job["completedAt"].endswith("Z")


def test_account_query_reports_the_plan_and_balance(sandbox: Sandbox, http: httpx.Client) -> None:
    gql(sandbox, http, GENERATE, generate_input())
    account = gql(sandbox, http, ACCOUNT).json()["data"]["account"]
    assert account == {
        "credits": 980,
        "plan": "pro",
        "requestsPerMinute": 60,
        "concurrentJobs": 10,
        "dailyLimit": 10_000,
        "jobsToday": 1,
        "activeJobs": account["activeJobs"],
    }


def test_introspection_shows_both_mutations(sandbox: Sandbox, http: httpx.Client) -> None:
    response = gql(sandbox, http, "{ __schema { mutationType { fields { name } } } }")
    names = {f["name"] for f in response.json()["data"]["__schema"]["mutationType"]["fields"]}
    assert names == {"generate", "generateImage"}


def test_rest_submit_job_and_account_use_the_same_job_object(sandbox: Sandbox, http: httpx.Client) -> None:
    response = rest_submit(sandbox, http, width=1024, height=1024, version="flux-pro-1.1-ultra", outputFormat="png")
    assert response.status_code == 200
    submitted = response.json()["data"]["generateImage"]
    job = wait_final(sandbox, http, submitted["id"])
    graphql_fields = {"id", "status", "type", "provider", "service", "url", "width", "height", "duration", "webhookUrl"}
    assert (
        graphql_fields | {"metadata", "creditCost", "createdAt", "completedAt", "error"} == set(job) == set(submitted)
    )
    assert job["url"].endswith(".png")
    account = http.get(f"{sandbox.base_url}/v1/account", headers={"X-API-Key": sandbox.api_key}).json()["data"][
        "account"
    ]
    assert account["credits"] == 980 and account["plan"] == "pro"


@pytest.mark.parametrize("path", ["/graphql", "/v1/account"])
@pytest.mark.parametrize("style", ["bearer", "x-api-key"])
def test_both_auth_headers_work_on_both_protocols(shared: Sandbox, http: httpx.Client, path: str, style: str) -> None:
    headers = {"Authorization": f"Bearer {shared.api_key}"} if style == "bearer" else {"X-API-Key": shared.api_key}
    if path == "/graphql":
        response = http.post(shared.base_url + path, json={"query": ACCOUNT}, headers=headers)
    else:
        response = http.get(shared.base_url + path, headers=headers)
    assert response.status_code == 200


def test_aspect_ratio_alone_picks_the_contract_size(sandbox: Sandbox, http: httpx.Client) -> None:
    job = rest_submit(sandbox, http, aspectRatio="16:9").json()["data"]["generateImage"]
    assert (job["width"], job["height"]) == contract.size_for_aspect_ratio("16:9")


# --- errors ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"width": 1000}, "width"),
        ({"height": 8192}, "height"),
        ({"width": 128}, "width"),
        ({"prompt": "   "}, "prompt"),
        ({"prompt": "x" * 10_001}, "prompt"),
        ({"service": "flux-mini"}, "service"),
        ({"version": "flux-9"}, "version"),
        ({"quality": "ultra"}, "quality"),
        ({"outputFormat": "gif"}, "outputFormat"),
        ({"safetyTolerance": 7}, "safetyTolerance"),
        ({"webhookUrl": "ftp://example.com/hook"}, "webhookUrl"),
        ({"aspectRatio": "16:9", "width": 1024}, "aspectRatio"),
        ({"aspectRatio": "wide"}, "aspectRatio"),
        ({"width": "1024"}, "width"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_rest_invalid_parameter_is_400_naming_the_field(
    shared: Sandbox, http: httpx.Client, params: dict[str, Any], field: str
) -> None:
    key = shared.add_key()
    response = rest_submit(shared, http, key=key, **params)
    assert response.status_code == 400
    error = error_of(response)
    assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": field}
    assert field in error["message"]
    assert shared.stats(key)["credits_charged"] == 0


@pytest.mark.parametrize(
    ("variables", "field"),
    [
        (generate_input(width=1000), "width"),
        (generate_input(width="wide"), "width"),
        (generate_input(aspectRatio="1:1", height=512), "aspectRatio"),
        ({"input": {"type": "VIDEO", "provider": "flux-ultra", "input": {"text": PROMPT}}}, "type"),
        ({"input": {"type": "IMAGE", "provider": "flux-ultra", "input": {"text": ""}}}, "text"),
        ({"input": {"type": "IMAGE", "provider": "flux-ultra", "input": {}}}, "text"),
    ],
)
def test_graphql_invalid_parameter_is_400_naming_the_field(
    shared: Sandbox, http: httpx.Client, variables: dict[str, Any], field: str
) -> None:
    response = gql(shared, http, GENERATE, variables)
    assert response.status_code == 400
    assert error_of(response)["extensions"]["field"] == field


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer sbx_unknown"}, {"X-API-Key": "nope"}])
def test_missing_or_unknown_key_is_401(shared: Sandbox, http: httpx.Client, headers: dict[str, str]) -> None:
    response = http.post(f"{shared.base_url}/graphql", json={"query": ACCOUNT}, headers=headers)
    assert response.status_code == 401
    assert error_of(response)["extensions"]["code"] == "UNAUTHENTICATED"
    assert contract.HEADER_RATE_LIMIT not in response.headers


def test_too_few_credits_is_402_with_required_and_available(http: httpx.Client) -> None:
    with Sandbox(credits=15, speed=math.inf) as sb:
        response = gql(sb, http, GENERATE, generate_input(width=1024, height=1024))
        assert response.status_code == 402
        assert error_of(response)["extensions"] == {
            "code": "INSUFFICIENT_CREDITS",
            "creditsRequired": 20,
            "creditsAvailable": 15,
        }
        assert rest_submit(sb, http, width=512, height=512).status_code == 200  # 10 credits still fit


def test_unknown_job_and_another_keys_job_are_both_404(sandbox: Sandbox, http: httpx.Client) -> None:
    job_id = rest_submit(sandbox, http).json()["data"]["generateImage"]["id"]
    other = sandbox.add_key()
    for key, ident in ((sandbox.api_key, "job_doesnotexist"), (other, job_id)):
        response = http.get(f"{sandbox.base_url}/v1/jobs/{ident}", headers={"X-API-Key": key})
        assert response.status_code == 404 and error_of(response)["extensions"]["code"] == "NOT_FOUND"
        response = gql(sandbox, http, JOB, {"id": ident}, key=key)
        assert response.status_code == 404 and response.json()["data"] == {"job": None}


def test_rate_limit_is_429_with_retry_after(http: httpx.Client) -> None:
    with Sandbox(plan="free", speed=1) as sb:
        remaining = [int(gql(sb, http, ACCOUNT).headers[contract.HEADER_RATE_REMAINING]) for _ in range(10)]
        assert remaining == list(range(9, -1, -1))
        for _ in range(2):
            refused = gql(sb, http, ACCOUNT)
            assert refused.status_code == 429
            error = error_of(refused)
            assert error["extensions"]["code"] == "RATE_LIMITED"
            assert 0 < float(refused.headers["Retry-After"]) <= 60 and error["extensions"]["retryAfter"] > 0
            assert error["extensions"]["resetAt"] == pytest.approx(
                float(refused.headers[contract.HEADER_RATE_RESET]), abs=0.01
            )
            assert refused.headers[contract.HEADER_RATE_REMAINING] == "0"
        assert sb.stats(sb.api_key)["rate_limited"] == 2


def test_refused_requests_count_toward_the_window_too(http: httpx.Client) -> None:
    """The contract counts every authenticated request: a client that keeps knocking stays refused."""
    clock = Clock()
    with Sandbox(plan="free", speed=30, clock=clock) as sb:  # 10 requests per 2 s window
        assert all(gql(sb, http, ACCOUNT).status_code == 200 for _ in range(10))
        clock.advance(1.0)
        assert [gql(sb, http, ACCOUNT).status_code for _ in range(5)] == [429] * 5
        clock.advance(1.1)  # the accepted ten have left the window, the refused five have not
        answer = gql(sb, http, ACCOUNT)
        assert answer.status_code == 200
        assert answer.headers[contract.HEADER_RATE_REMAINING] == "4"  # 10 - the 5 refused - this one


def test_concurrency_limit_is_429_until_the_running_job_ends(http: httpx.Client) -> None:
    with Sandbox(plan="free", speed=1, clock=Clock()) as sb:  # no time passes between the two submissions
        assert rest_submit(sb, http, seed=1).status_code == 200
        refused = rest_submit(sb, http)
        assert refused.status_code == 429
        assert error_of(refused)["extensions"]["code"] == "CONCURRENCY_LIMITED"
        assert float(refused.headers["Retry-After"]) == pytest.approx(generation_seconds(1024, 1024, seed=1), abs=0.001)
        assert all(h in refused.headers for h in RATE_HEADERS)
        assert sb.stats(sb.api_key)["jobs_created"] == 1


def test_daily_limit_is_429_after_the_plans_submissions(monkeypatch: pytest.MonkeyPatch, http: httpx.Client) -> None:
    monkeypatch.setitem(
        contract.PLANS, "tiny", contract.Plan("tiny", requests_per_minute=60, concurrent_jobs=10, daily_limit=3)
    )
    with Sandbox(plan="tiny", speed=1000) as sb:
        assert [rest_submit(sb, http).status_code for _ in range(3)] == [200, 200, 200]
        refused = rest_submit(sb, http)
        assert refused.status_code == 429 and error_of(refused)["extensions"]["code"] == "DAILY_LIMIT_REACHED"
        assert 0 < float(refused.headers["Retry-After"]) <= contract.DAY_SECONDS / 1000
        assert gql(sb, http, ACCOUNT).json()["data"]["account"]["jobsToday"] == 3


def test_body_over_one_mib_is_413_and_the_server_keeps_serving(sandbox: Sandbox, http: httpx.Client) -> None:
    big = json.dumps({"query": ACCOUNT, "pad": "x" * (1 << 20)})
    response = http.post(
        f"{sandbox.base_url}/graphql", content=big, headers={"Authorization": f"Bearer {sandbox.api_key}"}
    )
    assert response.status_code == 413
    assert gql(sandbox, http, ACCOUNT).status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[1, 2]",
        b'"just a string"',
        b"",
        b'{"variables": {}}',
        b'{"query": "mutation { generate(input: "}',
        b'{"query": "{ nope }"}',
        b'{"query": "query Job($id: ID!) { job(id: $id) { id } }", "variables": {"id": [1]}}',
        b'{"query": "query Job($id: ID!) { job(id: $id) { id } }"}',
        b'{"query": "{ account { credits } }", "variables": "x"}',
        b'{"query": "{}"}',  # graphql-core parses an empty selection set; the spec does not allow it
        b'{"query": "{ account {} }"}',
        b"\xff\xfe",
    ],
)
def test_malformed_requests_are_400_and_the_server_keeps_serving(
    shared: Sandbox, http: httpx.Client, body: bytes
) -> None:
    response = http.post(
        f"{shared.base_url}/graphql", content=body, headers={"Authorization": f"Bearer {shared.api_key}"}
    )
    assert response.status_code == 400
    assert error_of(response)["extensions"]["code"]
    assert all(h in response.headers for h in RATE_HEADERS)
    assert gql(shared, http, ACCOUNT).status_code == 200


def test_unknown_paths_and_methods_answer_json_errors(shared: Sandbox, http: httpx.Client) -> None:
    assert error_of(http.get(f"{shared.base_url}/v2/nothing"))["extensions"]["code"] == "NOT_FOUND"
    assert http.get(f"{shared.base_url}/graphql").status_code == 405
    assert http.get(f"{shared.base_url}/v1/jobs/abc/").status_code == 404  # no slash redirect


# --- credits, idempotency, headers -------------------------------------------------------------------
def test_the_same_idempotency_key_returns_the_first_job_and_charges_once(sandbox: Sandbox, http: httpx.Client) -> None:
    headers = {contract.HEADER_IDEMPOTENCY: "4f1d3c0e-retry"}
    first = rest_submit(sandbox, http, headers=headers).json()["data"]["generateImage"]
    again = rest_submit(sandbox, http, headers=headers)
    assert again.status_code == 200 and again.json()["data"]["generateImage"]["id"] == first["id"]
    via_graphql = gql(sandbox, http, GENERATE_IMAGE, {"input": {"service": "flux-ultra", "prompt": PROMPT}}, **headers)
    assert via_graphql.json()["data"]["generateImage"]["id"] == first["id"]
    stats = sandbox.stats(sandbox.api_key)
    assert (stats["jobs_created"], stats["credits_charged"], stats["credits"]) == (1, 20, 980)
    other = rest_submit(sandbox, http, key=sandbox.add_key(), headers=headers).json()["data"]["generateImage"]
    assert other["id"] != first["id"]  # idempotency keys are per API key


def test_a_moderated_job_fails_with_content_moderated_and_is_refunded(http: httpx.Client) -> None:
    with Sandbox(speed=1000, faults=Faults(moderate_job=1)) as sb:
        job = wait_final(sb, http, gql(sb, http, GENERATE, generate_input()).json()["data"]["generate"]["id"])
        assert job["status"] == "failed" and job["error"]["code"] == "CONTENT_MODERATED"
        assert "moderation" in job["error"]["message"]
        assert sb.stats(sb.api_key)["credits"] == 1000 and sb.stats(sb.api_key)["outputs_rendered"] == 0


def test_a_queued_job_is_queued_then_processing_and_holds_a_job_slot(http: httpx.Client) -> None:
    clock = Clock()
    with Sandbox(
        plan="free", speed=10, faults=Faults(queue_job=1, queue_seconds=3.0), clock=clock
    ) as sb:  # 0.3 s queued
        submitted = gql(sb, http, GENERATE, generate_input()).json()["data"]["generate"]
        assert submitted["status"] == "queued"
        assert gql(sb, http, JOB, {"id": submitted["id"]}).json()["data"]["job"]["status"] == "queued"
        refused = gql(sb, http, GENERATE, generate_input())  # the free plan's one job slot is taken
        assert refused.status_code == 429 and error_of(refused)["extensions"]["code"] == "CONCURRENCY_LIMITED"
        clock.advance(0.4)
        assert gql(sb, http, JOB, {"id": submitted["id"]}).json()["data"]["job"]["status"] == "processing"
        clock.advance(1.0)  # about 0.8 s of processing at this speed
        assert gql(sb, http, JOB, {"id": submitted["id"]}).json()["data"]["job"]["status"] == "completed"


def test_a_held_job_stays_processing_until_the_test_releases_it(http: httpx.Client) -> None:
    """The hook that orders tests' events: at infinite speed a job is done when submitted, unless held."""
    with Sandbox(speed=math.inf) as sb:
        with sb.jobs_held():
            job_id = rest_submit(sb, http).json()["data"]["generateImage"]["id"]
            assert gql(sb, http, JOB, {"id": job_id}).json()["data"]["job"]["status"] == "processing"
            assert sb.stats(sb.api_key)["active_jobs"] == 1
        assert gql(sb, http, JOB, {"id": job_id}).json()["data"]["job"]["status"] == "completed"


def test_a_failed_job_carries_its_error_and_is_refunded(http: httpx.Client) -> None:
    with Sandbox(speed=1000, faults=Faults(fail_job=1)) as sb:
        job_id = gql(sb, http, GENERATE, generate_input()).json()["data"]["generate"]["id"]
        job = wait_final(sb, http, job_id)
        assert job["status"] == "failed" and job["url"] is None
        assert job["error"]["code"] == "GENERATION_FAILED" and job["error"]["message"]
        stats = sb.stats(sb.api_key)
        assert (stats["jobs_failed"], stats["credits_charged"], stats["credits_refunded"], stats["credits"]) == (
            1,
            20,
            20,
            1000,
        )
        assert (
            wait_final(sb, http, rest_submit(sb, http).json()["data"]["generateImage"]["id"])["status"] == "completed"
        )


def test_every_authenticated_answer_carries_the_rate_limit_headers(sandbox: Sandbox, http: httpx.Client) -> None:
    before = time.time()
    responses = [
        gql(sandbox, http, ACCOUNT),
        rest_submit(sandbox, http, width=1),
        http.get(f"{sandbox.base_url}/v1/jobs/job_missing", headers={"X-API-Key": sandbox.api_key}),
    ]
    for response in responses:
        headers = response.headers
        assert headers[contract.HEADER_RATE_LIMIT] == "60"
        assert headers[contract.HEADER_RATE_WINDOW] == "0.06"  # 60 s / speed 1000
        reset = headers[contract.HEADER_RATE_RESET]
        assert len(reset.split(".")[1]) == 3 and before < float(reset) < time.time() + 0.1


def test_cdn_downloads_come_from_another_port_without_the_key_and_do_not_count(
    sandbox: Sandbox, http: httpx.Client
) -> None:
    job_id = rest_submit(sandbox, http, width=512, height=512).json()["data"]["generateImage"]["id"]
    url = wait_final(sandbox, http, job_id)["url"]
    assert url.startswith(sandbox.cdn_url) and sandbox.cdn_url != sandbox.base_url
    download = http.get(url)
    assert download.status_code == 200 and download.headers["content-type"] == "image/jpeg"
    assert int(download.headers["content-length"]) == len(download.content) and download.content[:2] == b"\xff\xd8"
    assert http.get(url).content == download.content  # cached and deterministic
    seen = sandbox.cdn_requests
    assert len(seen) == 2 and all("authorization" not in h and "x-api-key" not in h for h in seen)
    assert not any(sandbox.api_key in value for h in seen for value in h.values())
    assert sandbox.stats(sandbox.api_key)["cdn_requests"] == 2
    assert all(entry["has_auth"] for entry in sandbox.api_request_log)
    assert not any(sandbox.api_key in str(entry) for entry in sandbox.api_request_log)


def test_cdn_answers_404_for_unknown_and_unfinished_jobs(http: httpx.Client) -> None:
    with Sandbox(speed=1) as sb:
        job_id = rest_submit(sb, http).json()["data"]["generateImage"]["id"]
        assert http.get(f"{sb.cdn_url}/outputs/{job_id}.jpg").status_code == 404  # still processing
        assert http.get(f"{sb.cdn_url}/outputs/job_unknown.jpg").status_code == 404


# --- webhooks ----------------------------------------------------------------------------------------
class Receiver:
    """A loopback webhook endpoint answering the given statuses in turn (then 200)."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses, self.calls = list(statuses), []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.calls.append((dict(self.headers), body))
                self.send_response(receiver.statuses.pop(0) if receiver.statuses else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, args=(0.01,), daemon=True).start()

    def wait(self, count: int) -> None:
        deadline = time.monotonic() + 10
        while len(self.calls) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(self.calls) >= count


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver([])
    yield r
    r.server.shutdown()
    r.server.server_close()


def test_webhook_is_delivered_signed_with_the_keys_secret(
    sandbox: Sandbox, http: httpx.Client, receiver: Receiver
) -> None:
    job_id = rest_submit(sandbox, http, webhookUrl=receiver.url, seed=3).json()["data"]["generateImage"]["id"]
    receiver.wait(1)
    headers, body = receiver.calls[0]
    timestamp = headers[contract.HEADER_TIMESTAMP]
    assert headers[contract.HEADER_SIGNATURE] == contract.webhook_signature(sandbox.webhook_secret, body, timestamp)
    assert abs(int(timestamp) - time.time()) < 5
    payload = json.loads(body)
    assert body == json.dumps(payload, separators=(",", ":")).encode()
    assert set(payload) == {"id", "status", "url", "service", "createdAt", "completedAt", "metadata"}
    assert (payload["id"], payload["status"], payload["service"]) == (job_id, "completed", "flux-ultra")
    assert payload["metadata"]["seed"] == 3 and payload["metadata"]["width"] == 1024
    assert payload["url"] == wait_final(sandbox, http, job_id)["url"]


def test_a_failing_webhook_is_retried_with_a_fresh_signature(
    sandbox: Sandbox, http: httpx.Client, receiver: Receiver
) -> None:
    receiver.statuses = [500, 503]
    other = sandbox.add_key()
    job_id = rest_submit(sandbox, http, key=other, webhookUrl=receiver.url).json()["data"]["generateImage"]["id"]
    wait_final(sandbox, http, job_id, key=other)  # the job has ended: its webhook's delivery has started
    sandbox.wait_for_webhooks()
    assert len(receiver.calls) == 3
    assert [e["status"] for e in sandbox.webhook_log] == [500, 503, 200]
    for headers, body in receiver.calls:
        secret = sandbox.webhook_secret_for(other)
        assert headers[contract.HEADER_SIGNATURE] == contract.webhook_signature(
            secret, body, headers[contract.HEADER_TIMESTAMP]
        )
    assert sandbox.stats(other)["webhook_attempts"] == 3


def test_webhooks_give_up_after_the_maximum_attempts(sandbox: Sandbox, http: httpx.Client, receiver: Receiver) -> None:
    receiver.statuses = [500] * 10
    job_id = rest_submit(sandbox, http, webhookUrl=receiver.url).json()["data"]["generateImage"]["id"]
    wait_final(sandbox, http, job_id)
    sandbox.wait_for_webhooks()
    assert len(receiver.calls) == contract.WEBHOOK_MAX_ATTEMPTS


def test_webhooks_never_leave_the_machine(sandbox: Sandbox, http: httpx.Client) -> None:
    job_id = rest_submit(sandbox, http, webhookUrl="https://example.com/hook").json()["data"]["generateImage"]["id"]
    wait_final(sandbox, http, job_id)  # ending the job decided its webhook: skipped, and logged at once
    (entry,) = sandbox.webhook_log
    assert entry["skipped"] and entry["status"] is None and entry["url"] == "https://example.com/hook"


# --- faults ------------------------------------------------------------------------------------------
def test_an_injected_5xx_answers_before_doing_anything(http: httpx.Client) -> None:
    with Sandbox(speed=1000, faults=Faults(error_5xx=1)) as sb:
        failed = rest_submit(sb, http)
        assert failed.status_code in (500, 502, 503) and error_of(failed)["extensions"]["code"] == "INTERNAL"
        assert sb.stats(sb.api_key)["jobs_created"] == 0
        assert rest_submit(sb, http).status_code == 200


def test_an_injected_429_carries_retry_after(http: httpx.Client) -> None:
    with Sandbox(speed=10, faults=Faults(rate_limit_429=1)) as sb:
        refused = gql(sb, http, ACCOUNT)
        assert refused.status_code == 429 and float(refused.headers["Retry-After"]) == pytest.approx(0.1)
        assert set(error_of(refused)["extensions"]) == {"code", "retryAfter", "resetAt"}
        assert gql(sb, http, ACCOUNT).status_code == 200


def test_a_dropped_submission_is_processed_so_an_idempotent_retry_gets_the_same_job(http: httpx.Client) -> None:
    with Sandbox(speed=1000, faults=Faults(drop=1)) as sb:
        headers = {contract.HEADER_IDEMPOTENCY: "retry-me"}
        with pytest.raises(httpx.RemoteProtocolError):
            rest_submit(sb, http, headers=headers)
        retried = rest_submit(sb, http, headers=headers)
        assert retried.status_code == 200
        stats = sb.stats(sb.api_key)
        assert (stats["jobs_created"], stats["credits_charged"]) == (1, 20)


def test_a_slow_answer_is_delayed_by_slow_seconds_over_speed(http: httpx.Client) -> None:
    with Sandbox(speed=10, faults=Faults(slow=1, slow_seconds=3.0)) as sb:
        started = time.monotonic()
        assert gql(sb, http, ACCOUNT).status_code == 200
        assert time.monotonic() - started >= 0.3  # a lower bound: no load makes a held answer come sooner


def test_a_truncated_download_announces_the_full_length_then_closes(sandbox: Sandbox, http: httpx.Client) -> None:
    job_id = rest_submit(sandbox, http, width=256, height=256).json()["data"]["generateImage"]["id"]
    url = wait_final(sandbox, http, job_id)["url"]
    sandbox.faults = Faults(truncate_cdn=1)
    with pytest.raises(httpx.RemoteProtocolError):
        http.get(url)
    assert http.get(url).status_code == 200


def test_an_injected_429_is_logged_with_its_arrival_time_and_retry_after(http: httpx.Client) -> None:
    with Sandbox(speed=10, faults=Faults(rate_limit_429=1, rate_limit_seconds=5.0)) as sb:
        gql(sb, http, ACCOUNT)
        gql(sb, http, ACCOUNT)
        refused, answered = sb.api_request_log
        assert (refused["status"], refused["retry_after"]) == (429, pytest.approx(0.5))
        assert (answered["status"], answered["retry_after"]) == (200, None)
        assert refused["at"] <= answered["at"]
        assert sb.stats()["faults"] == {"rate_limit_429": 1}


def test_a_slow_submit_charges_first_and_shows_the_held_answer(http: httpx.Client) -> None:
    with Sandbox(speed=10, faults=Faults(slow_submit=1, slow_seconds=600.0)) as sb:  # held for a minute
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(rest_submit, sb, http, headers={contract.HEADER_IDEMPOTENCY: "held"})
            deadline = time.monotonic() + 10
            while sb.stats()["total"]["held_submissions"] == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            stats = sb.stats()
            assert stats["total"]["held_submissions"] == 1 and stats["faults"] == {"slow_submit": 1}
            assert stats["total"]["jobs_created"] == 1 and not pending.done()
            with httpx.Client(trust_env=False, timeout=10) as other:  # the held answer keeps `http` busy
                again = rest_submit(sb, other, headers={contract.HEADER_IDEMPOTENCY: "held"})
            total = sb.stats()["total"]
            assert again.status_code == 200 and (total["idempotent_replays"], total["jobs_created"]) == (1, 1)
            sb.stop()  # ends the held answer


def test_the_cdn_reports_the_hash_of_what_it_served_whole(sandbox: Sandbox, http: httpx.Client) -> None:
    job_id = rest_submit(sandbox, http, width=256, height=256).json()["data"]["generateImage"]["id"]
    url = wait_final(sandbox, http, job_id)["url"]
    sandbox.faults = Faults(truncate_cdn=1)
    with pytest.raises(httpx.RemoteProtocolError):
        http.get(url + "?attempt=1")
    assert sandbox.served_sha256 == {}
    body = http.get(url).content
    assert sandbox.served_sha256 == {job_id: hashlib.sha256(body).hexdigest()}
    assert [r[":path"] for r in sandbox.cdn_requests] == [f"/outputs/{job_id}.jpg?attempt=1", f"/outputs/{job_id}.jpg"]


def test_fault_probabilities_are_reproducible_from_the_seed() -> None:
    def pattern(seed: int) -> list[bool]:
        faults = Faults(error_5xx=0.5, seed=seed)
        return [faults.fire("error_5xx") for _ in range(32)]

    assert pattern(1) == pattern(1) != pattern(2)
    assert 4 < sum(pattern(1)) < 28
    counted = Faults(drop=2)
    assert [counted.fire("drop") for _ in range(4)] == [True, True, False, False]


@pytest.mark.parametrize("bad", [{"drop": 1.5}, {"drop": -0.1}, {"drop": True}, {"slow_seconds": -1}])
def test_fault_values_are_checked(bad: dict[str, Any]) -> None:
    with pytest.raises((TypeError, ValueError)):
        Faults(**bad)


# --- speed, lifecycle, admin, CLI ----------------------------------------------------------------------
def test_generation_time_follows_size_and_speed(http: httpx.Client) -> None:
    assert 7.5 <= generation_seconds(1024, 1024, seed=1) <= 8.5
    assert 14.5 <= generation_seconds(4096, 4096, seed=1) <= 15.5
    assert generation_seconds(512, 512, seed=9) == generation_seconds(512, 512, seed=9)
    with Sandbox(speed=100) as sb:
        job_id = rest_submit(sb, http, seed=1).json()["data"]["generateImage"]["id"]
        job = wait_final(sb, http, job_id)
        assert job["duration"] == pytest.approx(generation_seconds(1024, 1024, seed=1) / 100, abs=0.001)


def test_infinite_speed_completes_at_once_and_keeps_idempotency(http: httpx.Client) -> None:
    with Sandbox(speed=math.inf) as sb:
        headers = {contract.HEADER_IDEMPOTENCY: "k"}
        first = rest_submit(sb, http, headers=headers).json()["data"]["generateImage"]
        again = rest_submit(sb, http, headers=headers).json()["data"]["generateImage"]
        assert again["id"] == first["id"] and again["status"] == "completed" and again["duration"] == 0


def test_sandboxes_run_side_by_side_and_stop_cleanly() -> None:
    threads_before = threading.active_count()
    with Sandbox(speed=1000) as a, Sandbox(speed=1000, api_key="sbx_fixed") as b:
        assert len({a.base_url, a.cdn_url, b.base_url, b.cdn_url}) == 4
        assert b.api_key == "sbx_fixed" and a.api_key.startswith("sbx_")
        assert a.api_key not in repr(a) and "sbx_fixed" not in repr(b)
        port = int(a.base_url.rsplit(":", 1)[1])
    assert threading.active_count() == threads_before
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


def test_admin_endpoints_create_keys_and_report_stats(sandbox: Sandbox, http: httpx.Client) -> None:
    created = http.post(f"{sandbox.base_url}/_sandbox/keys", json={"plan": "starter", "credits": 50}).json()
    assert created["api_key"].startswith("sbx_") and created["webhook_secret"]
    account = gql(sandbox, http, ACCOUNT, key=created["api_key"]).json()["data"]["account"]
    assert (account["plan"], account["credits"], account["requestsPerMinute"]) == ("starter", 50, 30)
    assert http.post(f"{sandbox.base_url}/_sandbox/keys", json={"plan": "gold"}).status_code == 400
    stats = http.get(f"{sandbox.base_url}/_sandbox/stats").json()
    assert stats["keys"][created["api_key"]]["account_requests"] == 1
    assert stats["total"]["api_requests"] == 1 and stats["total"]["credits"] == 1050


def test_cli_prints_where_it_listens_and_stops_on_sigint(http: httpx.Client) -> None:
    root = Path(__file__).resolve().parents[1]
    command = [
        sys.executable,
        "-m",
        "doitong_sandbox",
        "--port",
        "0",
        "--speed",
        "inf",
        "--api-key",
        "sbx_cli",
        "--fault-rate",
        "0",
    ]
    process = subprocess.Popen(command, cwd=root, stdout=subprocess.PIPE, text=True)
    try:
        lines = dict(process.stdout.readline().strip().split("=", 1) for _ in range(4))
        assert lines["api_key"] == "sbx_cli" and lines["webhook_secret"].startswith("whsec_")
        response = http.get(f"{lines['base_url']}/v1/account", headers={"X-API-Key": "sbx_cli"})
        assert response.json()["data"]["account"]["credits"] == 1000
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
    finally:
        process.kill()
        process.stdout.close()


# --- the seed document's three examples, pointed at the sandbox -------------------------------------------
CURL_EXAMPLE = """curl -X POST https://api.doitong.com/graphql \\
-H "Content-Type: application/json" \\
-H "Authorization: Bearer YOUR_API_KEY" \\
-d '{
"query": "mutation Generate($input: GenerateInput!) { generate(input: $input) { id status type provider url metadata creditCost } }",
"variables": {
"input": {
"type": "IMAGE",
"provider": "flux-ultra",
"input": {
"text": "A futuristic city with flying cars and neon lights"
},
"options": {
"width": 1024,
"height": 1024
}
}
}
}'"""  # noqa: E501 (verbatim from the seed document)

JS_EXAMPLE = """const response = await fetch('https://api.doitong.com/graphql', {
method: 'POST',
headers: {
'Content-Type': 'application/json',
'Authorization': 'Bearer YOUR_API_KEY'
},
body: JSON.stringify({
query: `
mutation GenerateImage($input: ImageGenerationInput!) {
generateImage(input: $input) {
id
url
width
height
}
}
`,
variables: {
input: {
service: 'flux-ultra',
prompt: 'A futuristic city with flying cars and neon lights',
width: 1024,
height: 1024
}
}
})
});
const data = await response.json();
console.log('Image:', data.data.generateImage);
"""

PYTHON_EXAMPLE = '''import requests
import json
url = "https://api.doitong.com/graphql"
headers = {
"Content-Type": "application/json",
"Authorization": "Bearer YOUR_API_KEY"
}
query = """
mutation Generate($input: GenerateInput!) {
generate(input: $input) {
id
status
type
provider
url
metadata
creditCost
}
}
"""
variables = {
"input": {
"type": "IMAGE",
"provider": "flux-ultra",
"input": {
"text": "A futuristic city with flying cars and neon lights"
},
"options": {
"width": 1024,
"height": 1024
}
}
}
response = requests.post(url, json={
"query": query,
"variables": variables
}, headers=headers)
data = response.json()
print("Result:", data["data"]["generate"])
'''


def _pointed_at(example: str, sb: Sandbox) -> str:
    return example.replace("https://api.doitong.com", sb.base_url).replace("YOUR_API_KEY", sb.api_key)


def _offline_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}


def _assert_generate_shape(job: dict[str, Any]) -> None:
    assert set(job) == {"id", "status", "type", "provider", "url", "metadata", "creditCost"}
    assert job["id"].startswith("job_") and job["status"] == "processing" and job["creditCost"] == 20


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_the_docs_curl_example_works(sandbox: Sandbox) -> None:
    run = subprocess.run(
        ["bash", "-c", _pointed_at(CURL_EXAMPLE, sandbox) + " --silent"],
        capture_output=True,
        text=True,
        env=_offline_env(),
        timeout=10,
    )
    _assert_generate_shape(json.loads(run.stdout)["data"]["generate"])


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_the_docs_javascript_example_works(sandbox: Sandbox, tmp_path: Path) -> None:
    script = tmp_path / "example.mjs"
    script.write_text(_pointed_at(JS_EXAMPLE, sandbox) + "console.log(JSON.stringify(data));\n")
    run = subprocess.run(["node", str(script)], capture_output=True, text=True, env=_offline_env(), timeout=20)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("Image:")
    job = json.loads(run.stdout.splitlines()[-1])["data"]["generateImage"]
    assert set(job) == {"id", "url", "width", "height"} and (job["width"], job["height"], job["url"]) == (
        1024,
        1024,
        None,
    )


def test_the_docs_python_requests_example_works(sandbox: Sandbox) -> None:
    pytest.importorskip("requests")
    code = _pointed_at(PYTHON_EXAMPLE, sandbox) + "print(json.dumps(data))\n"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_offline_env(), timeout=20)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("Result: {")
    _assert_generate_shape(json.loads(run.stdout.splitlines()[-1])["data"]["generate"])
