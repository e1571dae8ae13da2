"""First contact with a service that differs from our reading of the doc (issue 11).

Statuses read by meaning, pending jobs listed and resumed at no new cost, and the sandbox's dialects:
each one changes one [assumed] part of CONTRACT.md the way a real (resold) service plausibly would.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import replace
from email.utils import formatdate
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from _journal_probe import journaled_job_id
from _service_clock import Clock

from doitong_nb import _contract as contract
from doitong_nb._core.errors import (
    JobTimeoutError,
    SchemaMismatchError,
    UnclearSubmissionError,
    UnknownStatusError,
    UnsafeResponseError,
    WebhookVerificationError,
)
from doitong_nb._core.limits import reset_seconds, retry_after_seconds
from doitong_nb._core.request import GenerationRequest
from doitong_nb._core.result import ImageResult, Job
from doitong_nb._core.steps import Sleep, Work
from doitong_nb._engine.engine import check_output_url
from doitong_nb._runtime.client import Flux
from doitong_nb._wire.webhooks import verify_signature
from doitong_sandbox import Sandbox
from doitong_sandbox.dialects import DIALECTS

PROMPT = "A lighthouse on a cliff at dawn"


def client_for(box: Sandbox, tmp_path: Path, **kwargs) -> Flux:
    kwargs.setdefault("output_dir", tmp_path / "out")
    return Flux(api_key=box.api_key, base_url=box.base_url, **kwargs)


def charged(box: Sandbox) -> int:
    total = box.stats()["total"]
    return total["credits_charged"] - total["credits_refunded"]


# --- statuses by meaning ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spelling", "meaning"),
    [
        ("queued", "queued"),
        ("PENDING", "queued"),
        ("Pending", "queued"),
        ("RUNNING", "processing"),
        ("in-progress", "processing"),
        ("SUCCEEDED", "completed"),
        ("success", "completed"),
        ("done", "completed"),
        ("Ready", "completed"),
        ("FAILED", "failed"),
        ("error", "failed"),
        ("moderated", "failed"),
        ("Request Moderated", "failed"),
        ("Content Moderated", "failed"),
    ],
)
def test_a_status_is_read_by_its_meaning_whatever_its_spelling(spelling: str, meaning: str) -> None:
    job = Job.from_payload({"id": "job_1", "status": spelling})
    assert job.status == meaning and job.known and job.raw_status == spelling
    assert job.done == (meaning in contract.FINAL_STATUSES)


def test_a_status_nobody_listed_is_not_terminal() -> None:
    job = Job.from_payload({"id": "job_1", "status": "Upscaling"})
    assert not job.known and not job.done and job.raw_status == "Upscaling"


def test_a_moderated_status_fails_as_content_moderated() -> None:
    job = Job.from_payload({"id": "job_1", "status": "Content Moderated"})
    assert job.error_code == contract.CONTENT_MODERATED and "Content Moderated" in (job.error_message or "")


def test_snake_case_fields_and_metadata_as_a_json_string_are_read() -> None:
    job = Job.from_payload(
        {
            "id": "job_1",
            "status": "done",
            "url": "https://x.example/a.jpg",
            "credit_cost": 20,
            "created_at": "2026-01-01T00:00:00Z",
            "completed_at": "2026-01-01T00:00:08Z",
            "metadata": '{"width": 1024, "height": 768, "seed": 3}',
        }
    )
    assert (job.credit_cost, job.metadata["width"], job.metadata["seed"], job.duration) == (20, 1024, 3, 8.0)


# --- never lose a paid job ----------------------------------------------------------------------------


def test_a_job_the_client_stopped_waiting_for_is_listed_and_resumed_at_no_new_cost(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    with client_for(sandbox, tmp_path, timeout=0.001) as flux:
        with pytest.raises(JobTimeoutError, match="flux_resume") as caught:
            flux.generate(PROMPT, size="512x512", seed=4)
        job_id = caught.value.job_id
        assert [j.job_id for j in flux.jobs()] == [job_id]
    with client_for(sandbox, tmp_path) as flux:  # a later session
        img = flux.resume(job_id)
        assert img.job_id == job_id and img.path.exists() and flux.jobs() == []
        again = flux.generate(PROMPT, size="512x512", seed=4)  # stored under its original request
        assert again.replayed and again.job_id == job_id
    total = sandbox.stats()["total"]
    assert total["jobs_created"] == 1 and charged(sandbox) == img.credit_cost


def test_a_crash_after_submitting_leaves_the_job_pending_and_resumable(sandbox: Sandbox, tmp_path: Path) -> None:
    with client_for(sandbox, tmp_path) as flux:
        flow = flux.engine.generate(flux_request(PROMPT))
        step = next(flow)
        while flux.jobs() == [] or flux.jobs()[0].job_id is None:  # run until the submission is journaled
            step = flow.send(carry_out(flux, step))
        flow.close()  # the process dies here: nothing more is run
        pending = flux.jobs()
    with client_for(sandbox, tmp_path) as flux:
        results = flux.resume_all()
        assert [r.job_id for r in results] == [pending[0].job_id] and flux.jobs() == []
    assert charged(sandbox) == results[0].credit_cost


def test_resuming_an_unknown_job_says_how_to_list_the_pending_ones(flux: Flux) -> None:
    from doitong_nb._core.errors import NotFoundError

    with pytest.raises(NotFoundError, match="flux_jobs"):
        flux.resume("job_nothing")


def flux_request(prompt: str, **options):
    from doitong_nb._core.request import GenerationRequest

    return GenerationRequest.build(prompt, size="512x512", seed=1, **options)


# --- every dialect x transport: images delivered, or the job kept and what to set said -------------------

OPAQUE = "s0=queued, s1=processing, s2=completed, s9=failed"
SETTINGS = {"opaque-statuses": {"statuses": OPAQUE}}
LOST = "unclear-submit-no-id"  # every answer is cut before its job id: nothing can be delivered without a resend
ALL = [name for name in DIALECTS if name != LOST]


def carry_out(flux: Flux, step: Any) -> Any:
    """One step of a flow run by hand, as the driver would (no real sleep): what a killed kernel ran before."""
    if isinstance(step, Sleep):
        return None
    return step.fn() if isinstance(step, Work) else flux._runtime.run(flux._async._execute(step))


def crash_after_submitting(flux: Flux, request: GenerationRequest) -> None:
    """Run a generate flow until its submission is journaled, then drop it: what a killed kernel leaves."""
    flow = flux.engine.generate(request)
    step = next(flow)
    while not any(j.job_id for j in flux.jobs()):
        step = flow.send(carry_out(flux, step))
    flow.close()


def pending_credits(flux: Flux) -> int:
    return sum(contract.credit_cost(*map(int, j.size.split("x"))) for j in flux.jobs())


@pytest.mark.timeout(120)
@pytest.mark.parametrize("transport", ["graphql", "rest"])
@pytest.mark.parametrize("name", ALL)
def test_every_dialect_delivers_the_images_or_keeps_the_job_and_says_what_to_set(
    name: str, transport: str, tmp_path: Path
) -> None:
    """generate, a small batch, webhook mode and resume after a crash; credits charged == images + pending."""
    delivered = []
    setting = SETTINGS.get(name, {})  # the one documented setting a dialect needs, if any
    with Sandbox(speed=1000, dialect=name) as box, client_for(box, tmp_path, transport=transport, **setting) as flux:
        stuck = name == "no-introspection" and transport == "graphql"
        if stuck:
            with pytest.raises(SchemaMismatchError, match=r"Flux.status_query") as caught:
                flux.generate(PROMPT, size="512x512", seed=1)
            assert "flux_resume" in str(caught.value) and [j.job_id for j in flux.jobs()] == [caught.value.job_id]
            assert charged(box) == pending_credits(flux)
            flux.engine.use_status_query("getJob(jobId)")  # what the message says to set
            delivered.append(flux.resume(caught.value.job_id))
        else:
            delivered.append(flux.generate(PROMPT, size="512x512", seed=1))
        batch = flux.batch([f"{PROMPT}, study {i}" for i in range(3)], size="256x256", seed=2, progress=False)
        assert batch.errors == {}, batch.errors
        delivered += batch.images
        hooked = flux.batch(
            [f"{PROMPT}, by webhook"],
            size="256x256",
            seed=3,
            progress=False,
            webhook_url=True,
            webhook_secret=box.webhook_secret,
        )
        assert hooked.errors == {} and hooked.stats.webhooks, hooked.errors
        delivered += hooked.images
        assert box.webhook_log and all(entry["status"] == 200 for entry in box.webhook_log)  # verified, accepted
        crash_after_submitting(flux, GenerationRequest.build(PROMPT + ", crashed", size="256x256", seed=4))
        assert len(flux.jobs()) == 1 and charged(box) == sum(i.credit_cost for i in delivered) + pending_credits(flux)
        with client_for(box, tmp_path, transport=transport, **setting) as later:  # the next session
            if stuck:
                later.engine.use_status_query("getJob(jobId)")
            resumed = later.resume_all()
            assert [type(r) for r in resumed] == [ImageResult] and later.jobs() == []
        delivered += resumed
        assert charged(box) == sum(i.credit_cost for i in delivered)
        assert box.stats()["total"]["jobs_created"] == len(delivered) == 6
    assert all(i.path.exists() for i in delivered)


@pytest.mark.parametrize("transport", ["graphql", "rest"])
def test_an_answer_lost_before_its_job_id_is_kept_counted_and_resent_only_on_the_users_word(
    transport: str, tmp_path: Path
) -> None:
    """The job may exist: not resent on a guess (the service never showed that it honours the key), counted as
    possibly charged, kept in the journal; `resume(key, resend=True)` sends it again, and both counts show it."""
    with Sandbox(speed=1000, dialect=LOST) as box, client_for(box, tmp_path, transport=transport) as flux:
        with pytest.raises(UnclearSubmissionError, match=r"may exist and be charged .*--resend") as caught:
            flux.generate(PROMPT, size="512x512", seed=1)
        assert box.stats()["total"]["jobs_created"] == 1  # sent once
        assert flux.session_credits == charged(box) == contract.credit_cost(512, 512)
        (pending,) = flux.jobs()
        assert pending.job_id is None and pending.idempotency_key == caught.value.idempotency_key
        assert "may be charged" in str(pending) and "--resend" in str(pending)
        with pytest.raises(UnclearSubmissionError):  # re-running the cell does not send it again either
            flux.generate(PROMPT, size="512x512", seed=1)
        assert box.stats()["total"]["jobs_created"] == 1 and flux.session_credits == charged(box)
        with pytest.raises(UnclearSubmissionError):  # the resend's answer is cut short too: counted once more
            flux.resume(pending.idempotency_key, resend=True)
        assert box.stats()["total"]["jobs_created"] == 2 and flux.session_credits == charged(box)
        assert [j.idempotency_key for j in flux.jobs()] == [pending.idempotency_key]


# --- what each difference needs from the client -----------------------------------------------------------


def test_a_status_that_never_resolves_is_named_after_a_bounded_wait_and_the_job_kept(tmp_path: Path) -> None:
    forever = replace(DIALECTS["statuses"], unknown_forever=True)
    with Sandbox(speed=1000, dialect=forever) as box, client_for(box, tmp_path, timeout=2) as flux:
        with pytest.raises(UnknownStatusError, match=r"'upscaling'.*flux_resume") as caught:
            flux.generate(PROMPT, size="256x256", seed=1)
        assert [j.job_id for j in flux.jobs()] == [caught.value.job_id]
        assert charged(box) == pending_credits(flux)


def test_statuses_no_reading_knows_are_named_by_the_error_and_doctor_and_resumed_with_the_setting(
    tmp_path: Path,
) -> None:
    from doitong_nb._tools.doctor import run

    with Sandbox(speed=1000, dialect="opaque-statuses") as box:
        with client_for(box, tmp_path, timeout=2) as flux:
            with pytest.raises(UnknownStatusError, match=r'%config Flux.statuses = "s[0-2]=processing".*flux_resume'):
                flux.generate(PROMPT, size="256x256", seed=1)
            text, _ = run(flux)
            assert re.search(
                r'FAIL statuses +job \S+ is \'s2\', a status no reading knows: .*Flux.statuses = "s2=', text
            )
        with client_for(box, tmp_path, statuses=OPAQUE) as later:  # the one setting the message names
            (resumed,) = later.resume_all()
            assert isinstance(resumed, ImageResult) and later.jobs() == []
        assert charged(box) == resumed.credit_cost and box.stats()["total"]["jobs_created"] == 1


def test_the_status_query_is_discovered_once_per_host_and_kept_on_disk(tmp_path: Path) -> None:
    with Sandbox(speed=1000, dialect="status-query") as box:
        with client_for(box, tmp_path) as flux:
            flux.generate(PROMPT, size="256x256", seed=1)
            flux.generate(PROMPT, size="256x256", seed=2)
            assert flux.engine.requests["discover"] == 1
        assert "generation(id: ID!)" in (tmp_path / "out" / "service.discovery").read_text()
        with client_for(box, tmp_path) as later:  # a new session reads what the first one found
            later.generate(PROMPT, size="256x256", seed=3)
            assert later.engine.requests["discover"] == 0


def test_a_named_status_query_is_used_and_a_wrong_one_is_said_so(tmp_path: Path) -> None:
    with Sandbox(speed=1000, dialect="no-introspection") as box:
        with client_for(box, tmp_path, status_query="getJob(jobId)") as flux:
            assert flux.generate(PROMPT, size="256x256", seed=1).path.exists()
        with client_for(box, tmp_path, status_query="fetchJob(id)") as flux:
            with pytest.raises(SchemaMismatchError, match="you named, fetchJob"):
                flux.generate(PROMPT, size="256x256", seed=2)
            assert len(flux.jobs()) == 1


def test_an_expired_signed_url_gets_one_fresh_status_read(tmp_path: Path) -> None:
    clock = Clock()
    with Sandbox(speed=1000, dialect="signed-urls", clock=clock) as box, client_for(box, tmp_path) as flux:
        request = GenerationRequest.build(PROMPT, size="256x256", seed=1)
        job = flux.submit(request)
        while not (job := flux.status(job.id)).done:
            clock.advance(0.01)
        assert urlsplit(job.url).hostname == "localhost" and "signature=" in job.url  # another host, signed
        clock.advance(box.dialect.url_ttl / box.speed + 0.2)  # the URL expires (10 minutes at speed 1)
        reads = box.stats()["total"]["status_requests"]
        path = flux.run(flux.engine.download(job, request, time.monotonic() + 30))
        assert path.exists() and box.stats()["total"]["status_requests"] == reads + 1


def test_errors_answered_with_http_200_and_no_code_are_still_typed(tmp_path: Path) -> None:
    from doitong_nb._core.errors import NotFoundError

    with Sandbox(speed=1000, dialect="errors-200") as box, client_for(box, tmp_path) as flux:
        with pytest.raises(NotFoundError):
            flux.status("job_unknown")


@pytest.mark.parametrize(
    ("url", "api", "ok"),
    [
        ("https://storage.example-cdn.net/b/job_1.jpg?X-Amz-Signature=ab", "https://api.doitong.com", True),
        ("https://cdn.doitong.com/outputs/job_1.jpg", "https://api.doitong.com", True),
        ("http://storage.example-cdn.net/job_1.jpg", "https://api.doitong.com", False),
        ("https://user:pw@storage.example-cdn.net/job_1.jpg", "https://api.doitong.com", False),
        ("https://127.0.0.1/job_1.jpg", "https://api.doitong.com", False),
        ("https://localhost/job_1.jpg", "https://api.doitong.com", False),
        ("https://10.1.2.3/job_1.jpg", "https://api.doitong.com", False),
        ("https://169.254.169.254/latest/meta-data", "https://api.doitong.com", False),
        ("https://[fe80::1]/job_1.jpg", "https://api.doitong.com", False),
        ("https://printer.local/job_1.jpg", "https://api.doitong.com", False),
        ("ftp://storage.example-cdn.net/job_1.jpg", "https://api.doitong.com", False),
        ("http://localhost:9000/storage/job_1.jpg", "http://127.0.0.1:8787", True),
    ],
)
def test_output_urls_https_on_public_hosts_only_loopback_for_a_loopback_api(url: str, api: str, ok: bool) -> None:
    if ok:
        assert check_output_url(url, api) == url
    else:
        with pytest.raises(UnsafeResponseError):
            check_output_url(url, api)


def test_header_forms_retry_after_as_a_date_and_reset_as_seconds_left() -> None:
    now = 1_800_000_000.0
    assert retry_after_seconds("2.5", now) == 2.5
    assert retry_after_seconds(formatdate(now + 30, usegmt=True), now) == pytest.approx(30.0)
    assert retry_after_seconds(formatdate(now - 30, usegmt=True), now) == 0.0
    assert retry_after_seconds("soon", now) is None
    assert reset_seconds(42, now) == 42  # seconds left
    assert reset_seconds(now + 12, now) == pytest.approx(12)  # a Unix time


def test_without_rate_headers_the_named_plan_paces(tmp_path: Path) -> None:
    with Sandbox(speed=1000, dialect="headers") as box, client_for(box, tmp_path, plan="free") as flux:
        assert flux.engine.budget.limit == contract.PLANS["free"].requests_per_minute
        flux.account()
        assert flux.engine.budget.limit == contract.PLANS["free"].requests_per_minute  # no header changed it


def test_a_cost_known_only_at_completion_is_what_the_image_records(tmp_path: Path) -> None:
    with Sandbox(speed=1000, dialect="cost-late") as box, client_for(box, tmp_path) as flux:
        job = flux.submit(PROMPT, size="256x256", seed=1)
        assert job.credit_cost is None
        img = flux.generate(PROMPT, size="2048x2048", seed=1)
        assert img.credit_cost == contract.credit_cost(2048, 2048) and charged(box) == flux.session_credits


def test_webhook_signatures_over_the_raw_body_in_hex_or_base64_verify() -> None:
    body, secret = b'{"id":"job_1"}', "whsec_test"
    for name in ("webhook-body-only", "webhook-base64", "default"):
        headers = DIALECTS[name].webhook_headers(secret, body, str(int(time.time())))
        signature, timestamp = headers[contract.HEADER_SIGNATURE], headers.get(contract.HEADER_TIMESTAMP)
        verify_signature(body, signature, secret, timestamp=timestamp)
        with pytest.raises(WebhookVerificationError):
            verify_signature(body + b" ", headers[contract.HEADER_SIGNATURE], secret)


# --- doctor: one line per assumption, naming each dialect's difference -----------------------------------

DOCTOR_NAMES = {
    "status-query": r"status query +differs: jobs are read with generation\(id: ID!\)",
    "no-introspection": r"FAIL status query .*introspection is disabled.*Flux.status_query",
    "statuses": r"statuses +differs: .*'(SUCCEEDED|success|done)', read as 'completed'",
    "rest-shape": r"rest job path +differs: jobs are read at GET /v1/generations/\{id\}",
    "signed-urls": r"cdn +differs: outputs on localhost \(another host\), signed and expiring",
    "headers": r"plan and limits +no X-RateLimit-Limit headers.*Flux\(plan=",
    "errors-200": r"errors +differs: GraphQL errors answered with HTTP 200, without extensions.code",
    "webhook-body-only": r"webhooks +differs: the last delivery was signed over the raw body alone \(no "
    r"X-Doitong-Timestamp header\), in hex",
    "webhook-base64": r"webhooks +differs: the last delivery was signed over the raw body alone .*, in base64",
    "cost-late": r"cost +differs: the last submission's answer had no creditCost; the client counts the quote",
    "unclear-submit": r"submissions +differs: a submission's answer was unclear \(HTTP 200 with a body cut short",
    LOST: r"submissions +differs: a submission's answer was unclear .*--resend",
    "accepted-202": r"submissions +differs: a submission's answer was unclear \(HTTP 202 Accepted with a Location\)",
    "accepted-202-path": r"submissions +differs: a submission's answer was unclear \(HTTP 202 Accepted with a "
    r"Location\)",
    "ignores-idempotency": r"note submissions +no answer seen from this folder echoing Idempotency-Key .*--resend",
    "reset-ms": r"plan and limits +differs: .*X-RateLimit-Reset as a Unix time in milliseconds",
    "reset-http-date": r"plan and limits +differs: .*X-RateLimit-Reset as an HTTP date",
    "retry-after-ms": r"note retry-after +a 429's Retry-After unit is unchecked",
    "korean-statuses": r"statuses +differs: job \S+ is '(완료|실패)', read as '(completed|failed)'",
    "odd-statuses": r"statuses +differs: job \S+ is 'DELIVERED', read as 'completed'",
    "opaque-statuses": r"statuses +differs: job \S+ is 's2', read as 'completed' by the statuses setting",
    "relative-urls": r"cdn +differs: .*URLs are paths on the API host: resolved against it",
    "scheme-relative-urls": r"cdn +differs: .*URLs are scheme-relative \(//host/...\): read with the API's scheme",
    "url-late": r"urls +differs: a completed job's url came 2 status read\(s\) late",
    "status-two-args": r"status query +differs: jobs are read with job\(id: ID!, kind: IMAGE\)",
    "rest-error-shape": r'rest errors +differs: REST errors as \{"error": \{"code", "message"\}\}',
    "rest-error-detail": r'rest errors +differs: REST errors as \{"detail": ...\} without a code',
    "korean-errors": r"rest errors +the contract's errors list with a code; messages in the service's language",
    "cdn-302": r"cdn +differs: .*redirected \(HTTP 302\) to 127.0.0.1: the client follows it",
}


def test_every_dialect_has_a_doctor_test() -> None:
    assert set(DOCTOR_NAMES) | {"default"} == set(DIALECTS)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", ["default", *DOCTOR_NAMES])
def test_doctor_names_each_dialects_difference(name: str, tmp_path: Path) -> None:
    from doitong_nb._tools.doctor import run

    with Sandbox(speed=1000, dialect=name) as box, client_for(box, tmp_path, **SETTINGS.get(name, {})) as flux:
        if name == LOST:
            with pytest.raises(UnclearSubmissionError):
                flux.generate(PROMPT, size="256x256", seed=1)
        elif name != "no-introspection":
            flux.generate(PROMPT, size="256x256", seed=1)  # a job of this service for doctor to read again (free)
            hooked = flux.batch(
                [PROMPT], size="256x256", seed=2, progress=False, webhook_url=True, webhook_secret=box.webhook_secret
            )
            assert hooked.errors == {} and hooked.stats.webhooks  # a delivery this folder's receiver verified
        spent = charged(box)
        text, failed = run(flux)
        assert charged(box) == spent  # doctor spends no credit
    assert failed == (name == "no-introspection"), text
    if name == "default":
        assert "differs" not in text and "FAIL" not in text, text
        assert re.search(r"ok   cost +the last submission's answer named its creditCost", text), text
        assert re.search(r"ok   webhooks +.*timestamp.body in hex, as the contract says", text), text
        assert re.search(r"ok   submissions +answers echo Idempotency-Key: a lost answer is resent", text), text
    else:
        assert re.search(DOCTOR_NAMES[name], text), text


def test_doctor_says_what_only_a_paid_job_would_show_and_how_the_client_copes(sandbox: Sandbox, tmp_path: Path) -> None:
    from doitong_nb._tools.doctor import run

    with client_for(sandbox, tmp_path) as flux:
        text, failed = run(flux)
    assert not failed and charged(sandbox) == 0, text
    assert re.search(
        r"note cost +no submission seen .*unchecked \(only a paid submission shows it\); the client "
        r"counts the quote",
        text,
    ), text
    assert re.search(
        r"note webhooks +.*no delivery received .*unchecked \(only a paid job with a webhook shows it\); "
        r"the receiver verifies hex or base64",
        text,
    ), text


def test_doctor_sees_a_late_cost_on_a_job_still_in_flight(tmp_path: Path) -> None:
    from doitong_nb._tools.doctor import run

    with Sandbox(speed=1, dialect="cost-late") as box, client_for(box, tmp_path, timeout=0.001) as flux:
        with pytest.raises(JobTimeoutError):
            flux.generate(PROMPT, size="256x256", seed=1)
        (tmp_path / "out" / "service.discovery").unlink()  # only the pending job itself tells
        pending = flux.jobs()[0].job_id
        text, _ = run(flux)
    assert re.search(rf"note cost +differs: job {pending} is not finished and names no creditCost yet", text), text


def test_doctor_cli_exits_non_zero_when_something_essential_fails(tmp_path: Path) -> None:
    import subprocess
    import sys

    with Sandbox(speed=1000, dialect="no-introspection") as box:
        env = {**os.environ, "DOITONG_API_KEY": box.api_key, "PYTHONPATH": str(Path(__file__).parents[1])}
        argv = [sys.executable, "-m", "doitong_nb._tools.cli", "doctor", "--base-url", box.base_url]
        done = subprocess.run(
            [*argv, "--output-dir", str(tmp_path)], capture_output=True, text=True, env=env, timeout=60
        )
        assert done.returncode == 1 and "Flux.status_query" in done.stdout, done.stdout + done.stderr
        named = subprocess.run(
            [*argv, "--output-dir", str(tmp_path), "--status-query", "getJob(jobId)"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert named.returncode == 0 and box.api_key not in named.stdout, named.stdout + named.stderr


# --- resume after a real kill, in every dialect ------------------------------------------------------------

_KILLED_SCRIPT = """
import sys
from doitong_nb._runtime.client import Flux

key, url, out, transport, status_query = sys.argv[1:6]
with Flux(api_key=key, base_url=url, output_dir=out, transport=transport, status_query=status_query or None) as flux:
    flux.generate("A lighthouse on a cliff at dawn, killed", size="256x256", seed=7)
print("finished")
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("moment", ["in-flight", "journaled"])
@pytest.mark.parametrize("name", ALL)
def test_every_dialect_resumes_a_generate_killed_with_sigkill(name: str, moment: str, tmp_path: Path) -> None:
    """A process generating is killed (SIGKILL) while its submission is charged but unanswered (a slow_submit
    fault holds the answer), or just after the job id is journaled; a new client's resume_all() delivers the
    image: charged once, credits charged == images delivered + pending at every point."""
    import signal
    import subprocess
    import sys

    from doitong_sandbox import Faults

    out = tmp_path / "out"
    transport = "rest" if name == "rest-shape" else "graphql"
    status_query = "getJob(jobId)" if name == "no-introspection" else ""
    options = {"status_query": status_query or None, **SETTINGS.get(name, {})}
    earlier = []
    lost = moment == "in-flight" and not DIALECTS[name].honours_idempotency  # resent only on the user's word
    with Sandbox(speed=8, dialect=name) as box:  # a job takes about a second
        if moment == "in-flight":  # an earlier session: its answers showed whether the service honours keys
            with client_for(box, tmp_path, transport=transport, **options) as first:
                earlier.append(first.generate(PROMPT, size="256x256", seed=6))
            assert first.engine.idempotency_honoured == DIALECTS[name].honours_idempotency
            box.faults = Faults(slow_submit=1, slow_seconds=600.0)
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
        argv = [sys.executable, "-c", _KILLED_SCRIPT, box.api_key, box.base_url, str(out), transport, status_query]
        child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        deadline = time.monotonic() + 60

        def ready() -> bool:
            if moment == "in-flight":
                return box.stats()["total"]["held_submissions"] == 1
            return journaled_job_id(out) is not None

        while not ready() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        child.send_signal(signal.SIGKILL)
        _, err = child.communicate(timeout=30)
        assert child.returncode == -signal.SIGKILL, "the child ended before it could be killed: " + err.decode()[-2000:]
        assert box.stats()["total"]["jobs_created"] == 1 + len(earlier)
        paid_before = sum(i.credit_cost for i in earlier)

        with client_for(box, tmp_path, transport=transport, **options) as later:
            pending = later.jobs()
            assert len(pending) == 1 and (pending[0].job_id is None) == (moment == "in-flight"), pending
            assert charged(box) - paid_before == pending_credits(later)  # nothing delivered yet: all of it pending
            resumed = later.resume_all()
            if lost:  # the service never showed it honours keys: not resent on a guess
                assert [type(r) for r in resumed] == [UnclearSubmissionError], resumed
                assert box.stats()["total"]["jobs_created"] == 2 and later.jobs() == pending
                resumed = [later.resume(pending[0].idempotency_key, resend=True)]  # the user's word
            assert [type(r) for r in resumed] == [ImageResult], resumed
            assert later.jobs() == [] and resumed[0].path.exists()
        total, spent = box.stats()["total"], charged(box) - paid_before
    assert total["jobs_created"] == 1 + len(earlier) + lost and spent == resumed[0].credit_cost * (1 + lost)
    if moment == "in-flight":  # the submission was sent again with its journaled Idempotency-Key
        assert total["idempotent_replays"] == (0 if lost else 1)  # a service that ignores keys: none


# --- [assumed] choices live in contract.py, in one place ----------------------------------------------------


def test_codeless_errors_are_classified_by_the_contracts_message_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    from doitong_nb._core.errors import NotFoundError, RateLimitError
    from doitong_nb._wire.replies import from_response

    body = {"errors": [{"message": "Job quota exhausted"}]}
    assert type(from_response(200, body)) is not RateLimitError
    monkeypatch.setattr(contract, "CODE_BY_MESSAGE", (("quota exhausted", contract.RATE_LIMITED),))
    assert type(from_response(200, body)) is RateLimitError
    assert type(from_response(200, {"errors": [{"message": "job_1 not found"}]})) is not NotFoundError


def test_the_expired_url_statuses_are_the_contracts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(contract, "EXPIRED_URL_STATUSES", ())  # then an expired URL is a plain download failure
    clock = Clock()
    with Sandbox(speed=1000, dialect="signed-urls", clock=clock) as box, client_for(box, tmp_path) as flux:
        request = GenerationRequest.build(PROMPT, size="256x256", seed=1)
        job = flux.submit(request)
        while not (job := flux.status(job.id)).done:
            clock.advance(0.01)
        clock.advance(box.dialect.url_ttl / box.speed + 0.2)
        reads = box.stats()["total"]["status_requests"]
        with pytest.raises(Exception, match="HTTP 403"):
            flux.run(flux.engine.download(job, request, time.monotonic() + 30))
        assert box.stats()["total"]["status_requests"] == reads  # no fresh status read


@pytest.mark.parametrize(
    ("name", "transport", "words"),
    [
        ("default", "graphql", r"needs 20 credits, 5 left: top up"),
        ("korean-errors", "graphql", r"too few credits \(the service said: \"크레딧이 부족합니다: 필요 20, 잔액 5\"\)"),
        ("rest-error-shape", "rest", r"needs 20 credits, 5 left: top up"),
        ("rest-error-detail", "rest", r"too few credits \(the service said: \".+\"\): top up"),
    ],
)
def test_a_402_keeps_the_services_words_and_leaves_nothing_pending(
    name: str, transport: str, words: str, tmp_path: Path
) -> None:
    """Issue 20: a Korean 402, or a REST error shaped {"error": {...}}, became "needs None credits, None left",
    and the journal kept a "(not confirmed)" job that a later resume_all() would have submitted again."""
    from doitong_nb._core.errors import InsufficientCreditsError

    with Sandbox(speed=1000, credits=5, dialect=name) as box, client_for(box, tmp_path, transport=transport) as flux:
        with pytest.raises(InsufficientCreditsError, match=words) as caught:
            flux.generate(PROMPT, size="1024x1024", seed=1)
        assert "None" not in str(caught.value)
        assert flux.jobs() == [] and flux.resume_all() == [] and box.stats()["total"]["jobs_created"] == 0
