"""What makes a submission's answer unclear, and the job it may still name (`_wire/replies.py`): the reading the
submission rule rests on, pinned case by case (issue 22's mutation run found it tested only through one flow)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from doitong_nb._core.steps import Reply
from doitong_nb._wire.replies import has_error_shape, job_id_in, unclear_submission


@pytest.mark.parametrize(
    ("body", "shaped"),
    [
        ({"errors": [{"message": "no"}]}, True),
        ({"error": "no"}, True),
        ({"detail": "no"}, True),
        ({"errors": [], "error": None, "detail": ""}, False),
        ({"message": "no"}, False),
        ({}, False),
        (None, False),
        ("errors", False),
        ([{"errors": [1]}], False),
    ],
)
def test_an_error_shape_is_an_errors_error_or_detail_that_says_something(body: Any, shaped: bool) -> None:
    assert has_error_shape(body) is shaped


def reply(status: int, body: Any = None, raw: bytes = b"", **headers: str) -> Reply:
    return Reply(status, httpx.Headers(headers), body, raw)


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (reply(202, {"data": {}}, Location="/v1/jobs/j"), "HTTP 202 Accepted with a Location"),
        (reply(202, {"data": {}}), "HTTP 202 Accepted and no job"),
        (reply(200, None, b'{"da'), "HTTP 200 with a body cut short or empty (4 bytes)"),
        (reply(299, [1], b"[1]"), "HTTP 299 with a body cut short or empty (3 bytes)"),
        (reply(500), "HTTP 500 without the service's error body"),
        (reply(503, {"message": "proxy"}), "HTTP 503 without the service's error body"),
        (reply(503, {"detail": "busy"}), None),
        (reply(500, {"errors": [{"message": "no"}]}), None),
        (reply(499), None),
        (reply(400, None), None),
        (reply(300, None), None),
        (reply(200, {"data": {}}), None),
        (reply(201, {"data": {}}), None),
    ],
)
def test_an_answer_is_unclear_when_it_may_stand_for_a_job(answer: Reply, why: str | None) -> None:
    assert unclear_submission(answer) == why


@pytest.mark.parametrize(
    ("answer", "job_id"),
    [
        (reply(202, Location="/v1/jobs/job_a"), "job_a"),
        (reply(202, Location="https://api.example/v1/jobs/job_a/?wait=1#top"), "job_a"),
        (reply(202, Location="/v1/jobs/job%3A7"), "job:7"),
        (reply(202, Location="/v1/jobs/Job_X"), "Job_X"),  # upper case, and an X that no strip may take
        (reply(202, Location="/v1/jobs/" + "j" * 200), "j" * 200),
        (reply(202, raw=b'{"id":"job_c"}', Location="/v1/jobs/" + "j" * 201), "job_c"),
        (reply(202, raw=b'{"id":"job_c"}', Location="/v1/jobs/a%20b"), "job_c"),
        (reply(202, raw=b'{"id":"job_c"}', Location=""), "job_c"),
        (reply(200, raw=b'{"data":{"generate":{"id" : "job_b","status":"PEND'), "job_b"),
        (reply(200, raw=b'{"jobId":"job-1.2","status"'), "job-1.2"),
        (reply(200, raw=b'{"job_id":"J_9:x"'), "J_9:x"),
        (reply(200, raw=b'{"data":{"generate":{"id":"job_b'), None),  # the id itself is cut: not named
        (reply(200, raw=b'{"uuid":"job_b"}'), None),
        (reply(200, raw=b'{"id":""}'), None),
        (reply(502), None),
        (Reply(502, httpx.Headers({}), None, None), None),  # type: ignore[arg-type]
    ],
)
def test_an_unclear_answer_names_its_job_by_location_or_its_first_whole_id(answer: Reply, job_id: str | None) -> None:
    assert job_id_in(answer) == job_id


def test_a_body_id_longer_than_an_id_is_not_one() -> None:
    assert job_id_in(reply(200, raw=b'{"id":"' + b"x" * 200 + b'"}')) == "x" * 200
    assert job_id_in(reply(200, raw=b'{"id":"' + b"x" * 201 + b'"}')) is None
