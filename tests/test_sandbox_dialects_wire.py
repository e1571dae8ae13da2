"""The sandbox's dialects for a service that speaks slightly differently, checked on the wire (httpx over loopback).

Each test names one behaviour of one dialect and asserts the bytes, statuses and headers a client would see, and
that the service's books (jobs made, credits charged) are what that dialect promises.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterator
from dataclasses import replace
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import pytest

from doitong_nb import _contract as contract
from doitong_sandbox import Faults, Sandbox
from doitong_sandbox.dialects import DIALECTS

pytestmark = pytest.mark.timeout(30)

PROMPT = "A lighthouse on a cliff at dawn"
GENERATE = "mutation Generate($input: GenerateInput!) { generate(input: $input) { id status creditCost } }"
JOB = "query Job($id: ID!) { job(id: $id) { id status url completedAt error { code message } } }"
ACCOUNT = "{ account { credits } }"
JOB_ID = re.compile(r"job_[a-z2-7]{20}")


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(trust_env=False, timeout=10) as client:
        yield client


def gql(
    box: Sandbox, http: httpx.Client, query: str, variables: dict[str, Any] | None = None, **headers: str
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {box.api_key}", **headers}
    return http.post(f"{box.base_url}/graphql", json={"query": query, "variables": variables}, headers=headers)


def gql_submit(box: Sandbox, http: httpx.Client, size: int = 1024, **headers: str) -> httpx.Response:
    options = {"width": size, "height": size}
    variables = {"input": {"type": "IMAGE", "provider": "flux-ultra", "input": {"text": PROMPT}, "options": options}}
    return gql(box, http, GENERATE, variables, **headers)


def rest_submit(
    box: Sandbox, http: httpx.Client, headers: dict[str, str] | None = None, **params: Any
) -> httpx.Response:
    body = {"service": "flux-ultra", "prompt": PROMPT, "width": 1024, "height": 1024, **params}
    return http.post(
        f"{box.base_url}/v1/text_to_image", json=body, headers={"X-API-Key": box.api_key, **(headers or {})}
    )


def rest_job(box: Sandbox, http: httpx.Client, job_id: str) -> dict[str, Any]:
    response = http.get(f"{box.base_url}/v1/jobs/{job_id}", headers={"X-API-Key": box.api_key})
    assert response.status_code == 200, response.text
    return response.json()["data"]["job"]


def credits(box: Sandbox, http: httpx.Client) -> int:
    """The balance as a client reads it: the account query."""
    return gql(box, http, ACCOUNT).json()["data"]["account"]["credits"]


def wait_for_url(box: Sandbox, http: httpx.Client, job_id: str) -> dict[str, Any]:
    """Read the job until it has a url (a bounded number of reads; the sandboxes here run at speed=inf)."""
    for _ in range(20):
        job = rest_job(box, http, job_id)
        if job["url"]:
            return job
    raise AssertionError(f"job {job_id} never got a url")


# --- 1. a submission answered with a body cut short ------------------------------------------------------------
def test_unclear_submit_cuts_an_accepted_graphql_answer_just_past_the_job_id_and_charges(http: httpx.Client) -> None:
    with Sandbox(speed=math.inf, dialect="unclear-submit") as box:
        response = gql_submit(box, http)
        text = response.text
        assert response.status_code == 200 and response.headers["content-length"] == str(len(response.content))
        assert text.startswith('{"data":{"generate":{"id":"job_') and not text.endswith("}")
        with pytest.raises(json.JSONDecodeError):
            json.loads(text)
        job_id = JOB_ID.search(text).group()
        assert text == f'{{"data":{{"generate":{{"id":"{job_id}","status":"processi'  # 20 bytes past the id
        assert credits(box, http) == 980  # accepted and charged
        assert rest_job(box, http, job_id)["status"] == "completed"  # the job exists and is the caller's


def test_unclear_submit_cuts_the_rest_answer_too(http: httpx.Client) -> None:
    with Sandbox(speed=math.inf, dialect="unclear-submit") as box:
        response = rest_submit(box, http)
        assert response.status_code == 200
        job_id = JOB_ID.search(response.text).group()
        assert response.text == f'{{"data":{{"generateImage":{{"id":"{job_id}","status":"processi'
        assert credits(box, http) == 980 and box.stats(box.api_key)["jobs_created"] == 1


def test_unclear_submit_no_id_cuts_before_the_job_id_on_both_protocols(http: httpx.Client) -> None:
    with Sandbox(speed=math.inf, dialect="unclear-submit-no-id") as box:
        graphql, rest = gql_submit(box, http), rest_submit(box, http)
        assert (graphql.status_code, graphql.text) == (200, '{"data":{"generate":{"i')
        assert (rest.status_code, rest.text) == (200, '{"data":{"generateImage":{"i')
        assert credits(box, http) == 960 and box.stats(box.api_key)["jobs_created"] == 2  # both made, both charged


def test_a_dialect_can_keep_an_exact_number_of_bytes_of_the_submission(http: httpx.Client) -> None:
    with Sandbox(speed=math.inf, dialect=replace(DIALECTS["default"], name="cut-12", submit_truncate_at=12)) as box:
        assert rest_submit(box, http).content == b'{"data":{"ge'
        assert gql(box, http, ACCOUNT).json() == {"data": {"account": {"credits": 980}}}  # other answers are whole


def test_unclear_submit_leaves_a_refused_submission_whole(http: httpx.Client) -> None:
    with Sandbox(credits=5, speed=math.inf, dialect="unclear-submit") as box:
        refused = gql_submit(box, http)
        assert (
            refused.status_code == 402 and refused.json()["errors"][0]["extensions"]["code"] == "INSUFFICIENT_CREDITS"
        )


# --- 2. 202 Accepted with a Location -----------------------------------------------------------------------------
@pytest.mark.parametrize("transport", ["graphql", "rest"])
def test_accepted_202_answers_an_empty_body_and_an_absolute_location_of_the_charged_job(
    http: httpx.Client, transport: str
) -> None:
    with Sandbox(speed=math.inf, dialect="accepted-202") as box:
        response = gql_submit(box, http) if transport == "graphql" else rest_submit(box, http)
        assert (response.status_code, response.content, response.headers["content-length"]) == (202, b"", "0")
        location = response.headers["location"]
        assert re.fullmatch(re.escape(box.base_url) + r"/v1/jobs/job_[a-z2-7]{20}", location), location
        assert contract.HEADER_RATE_REMAINING in response.headers  # the proxy keeps the service's headers
        followed = http.get(location, headers={"X-API-Key": box.api_key})
        assert followed.status_code == 200 and followed.json()["data"]["job"]["id"] == location.rsplit("/", 1)[1]
        assert credits(box, http) == 980


def test_accepted_202_path_points_at_the_job_with_a_path(http: httpx.Client) -> None:
    with Sandbox(speed=math.inf, dialect="accepted-202-path") as box:
        response = rest_submit(box, http)
        assert response.status_code == 202 and response.content == b""
        location = response.headers["location"]
        assert re.fullmatch(r"/v1/jobs/job_[a-z2-7]{20}", location), location
        assert rest_job(box, http, location.rsplit("/", 1)[1])["status"] == "completed"


# --- 3. Idempotency-Key ignored ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "jobs"),
    [
        ("default", 1),
        ("ignores-idempotency", 2),
        ("unclear-submit", 2),
        ("unclear-submit-no-id", 2),
        ("accepted-202", 2),
        ("accepted-202-path", 2),
    ],
)
def test_two_sends_with_one_idempotency_key_make_and_charge_one_job_or_two(
    http: httpx.Client, name: str, jobs: int
) -> None:
    with Sandbox(speed=math.inf, dialect=name) as box:
        key = {contract.HEADER_IDEMPOTENCY: "9b2f-one-intent"}
        rest_submit(box, http, headers=key)
        gql_submit(box, http, **key)
        assert credits(box, http) == 1000 - 20 * jobs
        stats = box.stats(box.api_key)
        assert (stats["jobs_created"], stats["idempotent_replays"]) == (jobs, 2 - jobs)


def test_ignores_idempotency_answers_each_send_with_a_new_job_id(http: httpx.Client) -> None:
    with Sandbox(speed=math.inf, dialect="ignores-idempotency") as box:
        key = {contract.HEADER_IDEMPOTENCY: "same"}
        ids = {rest_submit(box, http, headers=key).json()["data"]["generateImage"]["id"] for _ in range(3)}
        assert len(ids) == 3 and credits(box, http) == 940


# --- 4. reset and retry headers in other units -------------------------------------------------------------------
def test_reset_ms_gives_x_ratelimit_reset_in_epoch_milliseconds(http: httpx.Client) -> None:
    with Sandbox(speed=1, dialect="reset-ms") as box:
        before = time.time()
        value = gql(box, http, ACCOUNT).headers[contract.HEADER_RATE_RESET]
        assert value.isdigit(), value
        assert before + 60 - 1 <= int(value) / 1000 <= time.time() + 60 + 1  # the window's 60 s, in ms


def test_reset_http_date_gives_x_ratelimit_reset_as_an_http_date(http: httpx.Client) -> None:
    with Sandbox(speed=1, dialect="reset-http-date") as box:
        before = time.time()
        value = gql(box, http, ACCOUNT).headers[contract.HEADER_RATE_RESET]
        assert value.endswith(" GMT"), value
        assert before + 60 - 1 <= parsedate_to_datetime(value).timestamp() <= time.time() + 60 + 1


def test_retry_after_ms_gives_a_429s_retry_after_in_milliseconds(http: httpx.Client) -> None:
    faults = Faults(rate_limit_429=1, rate_limit_seconds=1.5)
    with Sandbox(speed=1, faults=faults, dialect="retry-after-ms") as box:
        refused = gql(box, http, ACCOUNT)
        assert refused.status_code == 429 and refused.headers["retry-after"] == "1500"
        assert refused.json()["errors"][0]["extensions"]["retryAfter"] == 1.5  # the body still says seconds
        assert box.api_request_log[-1]["retry_after"] == 1.5  # the log records seconds, whatever the header says
        assert gql(box, http, ACCOUNT).status_code == 200


def test_the_default_reset_is_unix_seconds_and_retry_after_seconds(http: httpx.Client) -> None:
    with Sandbox(speed=1, faults=Faults(rate_limit_429=1, rate_limit_seconds=1.5)) as box:
        refused = gql(box, http, ACCOUNT)
        assert refused.headers["retry-after"] == "1.500"
        assert re.fullmatch(r"\d{10}\.\d{3}", refused.headers[contract.HEADER_RATE_RESET])


# --- 5. statuses in other words ----------------------------------------------------------------------------------
SPELLED = {
    "korean-statuses": ("대기", ("처리 중", "생성 중"), "완료", "실패"),
    "odd-statuses": ("ACCEPTED", ("IN_FLIGHT",), "DELIVERED", "ABORTED"),
}


@pytest.mark.parametrize("name", list(SPELLED))
def test_statuses_are_spelled_in_the_dialects_words_from_queued_to_failed(http: httpx.Client, name: str) -> None:
    queued, processing, completed, failed = SPELLED[name]
    with Sandbox(speed=1, faults=Faults(queue_job=1), dialect=name) as slow:  # 3 s queued, then 8 s processing
        waiting = JOB_ID.search(rest_submit(slow, http, width=256, height=256).text).group()
        assert rest_job(slow, http, waiting)["status"] == queued
        answer = gql_submit(slow, http, size=256).json()["data"]["generate"]
        assert answer["status"] in processing
        assert gql(slow, http, JOB, {"id": answer["id"]}).json()["data"]["job"]["status"] == answer["status"]
    with Sandbox(speed=math.inf, dialect=name) as fast:
        done = rest_submit(fast, http).json()["data"]["generateImage"]["id"]
        assert wait_for_url(fast, http, done)["status"] == completed
        fast.faults = Faults(fail_job=1)
        broken = rest_submit(fast, http).json()["data"]["generateImage"]["id"]
        job = rest_job(fast, http, broken)
        assert job["status"] == failed and job["error"]["code"] == "GENERATION_FAILED"


def test_odd_statuses_are_words_the_clients_spelling_lists_do_not_name_and_opaque_ones_no_reading_knows() -> None:
    named = {s for spellings in contract.STATUS_SPELLINGS.values() for s in spellings}
    odd = DIALECTS["odd-statuses"].spellings.items()
    assert odd and all(contract.status_key(s) not in named for _, spellings in odd for s in spellings)
    assert all(contract.status_meaning(s) == meaning for meaning, spellings in odd for s in spellings)  # by words
    opaque = [s for spellings in DIALECTS["opaque-statuses"].spellings.values() for s in spellings]
    assert opaque and all(contract.status_meaning(s) is None for s in opaque)


# --- 6. output urls relative to a host ---------------------------------------------------------------------------
def test_relative_urls_give_a_path_the_api_host_serves_without_a_key(http: httpx.Client) -> None:
    with Sandbox(speed=math.inf, dialect="relative-urls") as box:
        job_id = rest_submit(box, http).json()["data"]["generateImage"]["id"]
        url = wait_for_url(box, http, job_id)["url"]
        assert url == f"/cdn/outputs/{job_id}.jpg"
        image = http.get(box.base_url + url)
        assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
        assert image.content[:3] == b"\xff\xd8\xff"
        assert box.cdn_requests[-1][":path"] == url and "x-api-key" not in box.cdn_requests[-1]
        assert box.stats(box.api_key)["cdn_requests"] == 1
        assert all(entry["path"] != url for entry in box.api_request_log)  # a download, not an API request


def test_scheme_relative_urls_name_the_cdn_host_without_a_scheme(http: httpx.Client) -> None:
    with Sandbox(speed=math.inf, dialect="scheme-relative-urls") as box:
        job_id = rest_submit(box, http).json()["data"]["generateImage"]["id"]
        url = wait_for_url(box, http, job_id)["url"]
        assert url == box.cdn_url.removeprefix("http:") + f"/outputs/{job_id}.jpg" and url.startswith("//")
        assert http.get("http:" + url).status_code == 200


# --- 7. the url comes late -----------------------------------------------------------------------------------------
def test_url_late_gives_a_completed_job_a_null_url_for_its_first_two_reads(http: httpx.Client) -> None:
    with Sandbox(speed=math.inf, dialect="url-late") as box:
        job_id = rest_submit(box, http).json()["data"]["generateImage"]["id"]
        first = gql(box, http, JOB, {"id": job_id}).json()["data"]["job"]
        second = rest_job(box, http, job_id)
        third = rest_job(box, http, job_id)
        assert [j["status"] for j in (first, second, third)] == ["completed"] * 3
        assert first["completedAt"] and [first["url"], second["url"]] == [None, None]
        assert third["url"] == f"{box.cdn_url}/outputs/{job_id}.jpg" == rest_job(box, http, job_id)["url"]
        assert http.get(third["url"]).status_code == 200


# --- 8. a second required argument on the status query -------------------------------------------------------------
def test_status_two_args_requires_kind_shows_it_in_introspection_and_reads_the_job_with_it(http: httpx.Client) -> None:
    introspect = (
        '{ __type(name: "Query") { fields { name args { name type { kind ofType { name } } } } } '
        'kind: __type(name: "JobKind") { kind enumValues { name } } }'
    )
    with Sandbox(speed=math.inf, dialect="status-two-args") as box:
        schema = gql(box, http, introspect).json()["data"]
        job_field = next(f for f in schema["__type"]["fields"] if f["name"] == "job")
        args = {a["name"]: (a["type"]["kind"], a["type"]["ofType"]["name"]) for a in job_field["args"]}
        assert args == {"id": ("NON_NULL", "ID"), "kind": ("NON_NULL", "JobKind")}
        assert schema["kind"] == {"kind": "ENUM", "enumValues": [{"name": "IMAGE"}]}
        job_id = rest_submit(box, http).json()["data"]["generateImage"]["id"]
        without = gql(box, http, JOB, {"id": job_id})
        assert without.status_code == 400
        error = without.json()["errors"][0]
        # graphql-core 3.2+'s wording (older versions: "Field 'job' argument 'kind' of type 'JobKind!' is required")
        assert (
            error["message"] == "Argument 'Query.job(kind:)' of type 'JobKind!' is required, but it was not provided."
        )
        assert error["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
        with_kind = gql(box, http, "query Job($id: ID!) { job(id: $id, kind: IMAGE) { id status } }", {"id": job_id})
        assert with_kind.status_code == 200 and with_kind.json()["data"]["job"] == {"id": job_id, "status": "completed"}


# --- 9. REST errors in another shape -------------------------------------------------------------------------------
def test_rest_error_shape_answers_rest_errors_as_one_error_object(http: httpx.Client) -> None:
    with Sandbox(speed=math.inf, dialect="rest-error-shape") as box:
        bad = rest_submit(box, http, width=100)
        assert bad.status_code == 400 and set(bad.json()) == {"error"}
        error = bad.json()["error"]
        assert (error["code"], error["field"]) == ("BAD_USER_INPUT", "width") and "width" in error["message"]
        unknown = http.get(f"{box.base_url}/v1/jobs/job_nothing", headers={"X-API-Key": box.api_key})
        assert unknown.status_code == 404
        assert unknown.json() == {
            "error": {"code": "NOT_FOUND", "message": "job 'job_nothing' not found", "id": "job_nothing"}
        }
        keyless = http.get(f"{box.base_url}/v1/account")
        assert keyless.status_code == 401 and keyless.json()["error"]["code"] == "UNAUTHENTICATED"
        graphql = gql(box, http, JOB, {"id": "job_nothing"})  # GraphQL keeps the errors list
        assert graphql.status_code == 404 and graphql.json()["errors"][0]["extensions"]["code"] == "NOT_FOUND"


def test_rest_error_detail_answers_rest_errors_with_a_message_and_no_code(http: httpx.Client) -> None:
    with Sandbox(speed=math.inf, credits=5, dialect="rest-error-detail") as box:
        poor = rest_submit(box, http)
        assert poor.status_code == 402
        assert poor.json() == {"detail": "Insufficient credits for this operation: 20 required, 5 available"}


# --- 10. errors in Korean --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("transport", ["graphql", "rest"])
def test_korean_errors_give_a_402_its_numbers_only_in_a_korean_message(http: httpx.Client, transport: str) -> None:
    with Sandbox(speed=math.inf, credits=5, dialect="korean-errors") as box:
        poor = gql_submit(box, http) if transport == "graphql" else rest_submit(box, http)
        assert poor.status_code == 402
        error = poor.json()["errors"][0]
        assert error["message"] == "크레딧이 부족합니다: 필요 20, 잔액 5"
        assert error["extensions"] == {"code": "INSUFFICIENT_CREDITS"}


def test_korean_errors_say_the_other_errors_in_korean_too(http: httpx.Client) -> None:
    with Sandbox(speed=math.inf, faults=Faults(fail_job=1), dialect="korean-errors") as box:
        bad = rest_submit(box, http, width=100).json()["errors"][0]
        assert bad == {
            "message": "입력값이 올바르지 않습니다: width",
            "extensions": {"code": "BAD_USER_INPUT", "field": "width"},
        }
        missing = gql(box, http, JOB, {"id": "job_nothing"}).json()["errors"][0]
        assert missing["message"] == "작업을 찾을 수 없습니다" and missing["extensions"]["code"] == "NOT_FOUND"
        keyless = http.get(f"{box.base_url}/v1/account").json()["errors"][0]
        assert keyless["message"] == "API 키가 없거나 올바르지 않습니다"
        failed = rest_job(box, http, rest_submit(box, http).json()["data"]["generateImage"]["id"])
        assert failed["error"] == {
            "code": "GENERATION_FAILED",
            "message": "이미지 생성에 실패했습니다. 크레딧은 환불되었습니다",
        }
        invalid = gql(box, http, "{ nothing }").json()["errors"][0]  # graphql-core's own words stay English
        assert invalid["message"] == "Cannot query field 'nothing' on type 'Query'."


# --- 11. a CDN that redirects ----------------------------------------------------------------------------------------
def test_cdn_302_redirects_the_output_url_to_a_path_on_the_same_host_that_serves_the_bytes(http: httpx.Client) -> None:
    with Sandbox(speed=math.inf, dialect="cdn-302") as box:
        job_id = rest_submit(box, http).json()["data"]["generateImage"]["id"]
        url = wait_for_url(box, http, job_id)["url"]
        assert url == f"{box.cdn_url}/outputs/{job_id}.jpg"  # the url itself is the contract's
        first = http.get(url)
        assert (first.status_code, first.headers["location"], first.content) == (302, f"/blobs/{job_id}.jpg", b"")
        image = http.get(url, follow_redirects=True)
        assert image.status_code == 200 and image.content[:3] == b"\xff\xd8\xff"
        assert str(image.url) == f"{box.cdn_url}/blobs/{job_id}.jpg" and [r.status_code for r in image.history] == [302]
        assert box.served_sha256[job_id]
        assert http.get(f"{box.cdn_url}/outputs/job_nothing.jpg").status_code == 404


# --- the table -------------------------------------------------------------------------------------------------------
def test_every_dialect_is_named_for_its_key_and_has_its_own_summary() -> None:
    assert all(name == d.name for name, d in DIALECTS.items())
    summaries = [d.summary for d in DIALECTS.values()]
    assert all(summaries) and len(set(summaries)) == len(summaries)
    assert [name for name, d in DIALECTS.items() if d.default] == ["default"]
