"""Fuzz the sandbox's API host over loopback: garbage in is a 4xx out, never a 5xx, and it keeps serving."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from doitong_sandbox import Sandbox

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
ACCOUNT = {"query": "query Account { account { credits plan } }"}
GENERATE = "mutation Generate($input: GenerateInput!) { generate(input: $input) { id status } }"


@pytest.fixture(scope="module")
def box() -> Iterator[Sandbox]:
    with Sandbox(speed=1_000_000, credits=10**9) as sb:  # rate windows of microseconds: no 429s
        yield sb


@pytest.fixture(scope="module")
def api(box: Sandbox) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=box.base_url, headers={"Authorization": f"Bearer {box.api_key}"}, timeout=30) as c:
        yield c


def still_serves(api: httpx.Client) -> None:
    response = api.post("/graphql", json=ACCOUNT)
    assert response.status_code == 200 and response.json()["data"]["account"]["plan"] == "pro"


def assert_4xx(response: httpx.Response, sent: Any) -> None:
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300], repr(sent)[:300])
    assert isinstance(response.json().get("errors"), list)  # a JSON error body, not an HTML error page


_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**63, max_value=2**200),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
    st.integers(10_001, 200_000).map(lambda n: "A" * n),  # huge strings
)
JSON = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
_OPTION_NAMES = st.sampled_from(
    [
        "prompt",
        "width",
        "height",
        "seed",
        "raw",
        "version",
        "quality",
        "aspectRatio",
        "outputFormat",
        "safetyTolerance",
        "promptUpsampling",
        "webhookUrl",
        "service",
        "type",
        "provider",
        "input",
        "options",
        "text",
    ]
)
# objects shaped like real inputs, with wrong types and values in the right places
LOOKALIKE = st.dictionaries(_OPTION_NAMES, JSON, max_size=6)


def _no_valid_prompt(body: Any) -> bool:
    """A REST body that could be a valid submission is not garbage; leave it out of the fuzz."""
    return not (isinstance(body, dict) and isinstance(body.get("prompt"), str) and body["prompt"].strip())


@FUZZ
@given(body=st.one_of(JSON, LOOKALIKE).filter(_no_valid_prompt))
def test_rest_submit_answers_garbage_json_with_a_4xx(api: httpx.Client, body: Any) -> None:
    assert_4xx(api.post("/v1/text_to_image", json=body), body)
    still_serves(api)


@FUZZ
@given(
    body=st.one_of(
        JSON,
        st.fixed_dictionaries({"query": JSON}),
        st.fixed_dictionaries({"query": st.text(max_size=200), "variables": JSON}),
        st.fixed_dictionaries({"query": st.just(GENERATE), "variables": st.fixed_dictionaries({"input": LOOKALIKE})}),
        st.fixed_dictionaries(
            {
                "query": st.just(GENERATE),
                "variables": st.fixed_dictionaries(
                    {"input": st.fixed_dictionaries({"type": st.just("IMAGE"), "options": LOOKALIKE})}
                ),
            }
        ),
        st.fixed_dictionaries(
            {"query": st.just(ACCOUNT["query"]), "operationName": JSON.filter(lambda v: v is not None)}
        ),
    )
)
def test_graphql_answers_garbage_json_with_a_4xx(api: httpx.Client, body: Any) -> None:
    response = api.post("/graphql", json=body)
    assert_4xx(response, body)
    still_serves(api)


@FUZZ
@given(
    raw=st.one_of(
        st.binary(max_size=300),
        st.binary(max_size=100).map(lambda b: b'{"query": "' + b + b'"}'),
        st.just(b"\xff\xfe\xfd{}"),
        st.just(b'{"prompt": "\xc3\x28"}'),
    ),
    path=st.sampled_from(["/graphql", "/v1/text_to_image"]),
)
def test_non_utf8_or_broken_bodies_are_a_4xx(api: httpx.Client, raw: bytes, path: str) -> None:
    try:
        if _no_valid_prompt(json.loads(raw)) is False or json.loads(raw) == ACCOUNT:
            return  # by chance a valid request
    except (ValueError, RecursionError):
        pass
    assert_4xx(api.post(path, content=raw, headers={"Content-Type": "application/json"}), raw)
    still_serves(api)


@FUZZ
@given(job_id=st.text(min_size=1, max_size=300))
def test_unknown_job_ids_are_a_4xx(api: httpx.Client, job_id: str) -> None:
    response = api.get("/v1/jobs/" + quote(job_id, safe=""))
    assert_4xx(response, job_id)
    assert response.status_code in (404, 405)
    still_serves(api)


def test_body_over_the_size_limit_is_a_413_and_the_connection_stays_usable(api: httpx.Client) -> None:
    response = api.post("/v1/text_to_image", json={"prompt": "x" * (2 << 20)})
    assert response.status_code == 413
    still_serves(api)


def test_deeply_nested_graphql_document_is_a_4xx(api: httpx.Client) -> None:
    query = "query { " + "account { " * 1000 + "}" * 1000 + " }"
    assert_4xx(api.post("/graphql", json={"query": query}), "deep query")
    still_serves(api)


_DEEP = ("[" * 1000 + "]" * 1000).encode()


@pytest.mark.parametrize("path", ["/graphql", "/v1/text_to_image"])
def test_json_nested_1000_levels_is_a_4xx(api: httpx.Client, path: str) -> None:
    assert_4xx(api.post(path, content=_DEEP, headers={"Content-Type": "application/json"}), "deep json")


def test_server_still_serves_after_json_nested_1000_levels(api: httpx.Client) -> None:
    api.post("/graphql", content=_DEEP, headers={"Content-Type": "application/json"})
    still_serves(api)
