"""`doitong-nb doctor` and `%flux_doctor`: check every [assumed] part of the contract against the configured
service, without spending a credit, one line per assumption; each failed line says what to set.

Probes: the host resolves and answers (TLS when https); the key is accepted (the account query); the plan's
limits come in X-RateLimit-* headers; the server's clock (Date header); a status read of a job that does not
exist (`NOT_FOUND` means the query exists; "cannot query field" means it does not, and one introspection request
looks for the service's own); the REST job path likewise; how errors are answered; and, when this output folder
holds a job of this service, that job read again (status spelling, cost, where and how its URL is served).
Two things only a paid job shows (the contract has no dry submission and no test webhook): whether a
submission's answer names its creditCost, and how a webhook is signed. The client notes both in the folder's
discovery file when it sees them, and doctor reports what it noted, or says that it could not check them.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from doitong_nb import _contract as contract
from doitong_nb._core.env import ENV_API_KEY, ENV_BASE_URL, ENV_WEBHOOK_SECRET
from doitong_nb._core.errors import DoitongError, UnsafeResponseError
from doitong_nb._core.limits import reset_form
from doitong_nb._core.result import Job
from doitong_nb._core.settings import parse_statuses
from doitong_nb._engine.engine import check_output_url
from doitong_nb._store.discovery_cache import DiscoveryCache
from doitong_nb._wire import make_transport
from doitong_nb._wire.discovery import INTROSPECTION, query_names, status_query_from
from doitong_nb._wire.replies import error_code, schema_mismatch

PROBE_ID = "job_doctor_probe_0000"
MAX_SKEW_SECONDS = 30.0


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool | None  # None: a difference the client tolerates (a warning), or nothing to check
    detail: str
    essential: bool = False

    def __str__(self) -> str:
        mark = {True: "ok  ", False: "FAIL", None: "note"}[self.ok]
        return f"{mark} {self.name:<16} {self.detail}"


def _post(api: httpx.Client, query: str, variables: dict[str, Any] | None = None) -> httpx.Response:
    return api.post(contract.GRAPHQL_PATH, json={"query": query, "variables": variables or {}})


def _body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def diagnose(client: Any) -> list[Check]:
    """Every check against `client`'s service (a doitong_nb.Flux); no request here can spend a credit."""
    settings = client.settings
    url = urlsplit(settings.base_url)
    checks: list[Check] = []
    try:
        socket.getaddrinfo(url.hostname, url.port or (443 if url.scheme == "https" else 80))
    except OSError as exc:
        why = f"{url.hostname} does not resolve ({exc}): set {ENV_BASE_URL}"
        return [Check("reachable", False, why, True)]
    headers = {**make_transport("graphql").auth_headers(settings.api_key), "User-Agent": "doitong-nb doctor"}
    with httpx.Client(base_url=settings.base_url, headers=headers, timeout=15, follow_redirects=False) as api:
        try:
            started = time.time()
            account = _post(api, "query Account { account { credits plan } }")
        except httpx.HTTPError as exc:
            tls = " (TLS)" if url.scheme == "https" and "SSL" in str(exc) else ""
            return [Check("reachable", False, f"{settings.base_url}{tls}: {exc}; check {ENV_BASE_URL}", True)]
        how = "TLS ok" if url.scheme == "https" else "plain http"
        checks.append(Check("reachable", True, f"{settings.base_url} answers ({how})"))
        body = _body(account)
        data = ((body or {}).get("data") or {}).get("account") if isinstance(body, dict) else None
        if account.status_code == 401 or error_code(body) == contract.UNAUTHENTICATED:
            checks.append(Check("key", False, f"the key is refused: set {ENV_API_KEY}", True))
            return checks
        if not isinstance(data, dict):
            checks.append(Check("key", False, f"the account query answered HTTP {account.status_code}", True))
        else:
            checks.append(Check("key", True, f"accepted; plan {data.get('plan')}, {data.get('credits')} credits"))
        checks.append(_limits(account, data))
        checks.append(_clock(account, started))
        checks.append(_status_query(api, client))
        checks.append(_errors(api))
        checks.append(_rest_path(api, settings))
        checks.append(_rest_errors(api, settings))
        checks.extend(_last_job(api, client))
    seen = client.discovered()  # what this folder's client saw the service do
    if not any(c.name == "cost" for c in checks):
        checks.append(_cost(seen.get("submission_cost")))
    checks.append(_webhooks(seen.get("webhook_signature"), settings.webhook_secret))
    checks.append(_submissions(seen))
    if seen.get("url_late"):
        checks.append(
            Check(
                "urls",
                None,
                f"differs: a completed job's url came {seen['url_late']} status read(s) late; the client reads it "
                "again with backoff until it comes, within its timeout",
            )
        )
    checks.append(
        Check(
            "retry-after",
            None,
            "a 429's Retry-After unit is unchecked (doctor causes no 429); the client waits extensions.retryAfter "
            "when given, and never past the rate window or its timeout",
        )
    )
    return checks


def _submissions(seen: dict[str, Any]) -> Check:
    """Whether a submission's unclear answer may be resent: only once the service has shown it honours keys."""
    how, unclear = seen.get("idempotency"), seen.get("unclear_submission")
    if unclear:
        follow = "the client followed the job it named, or kept the submission for `%flux_resume KEY --resend`"
        return Check("submissions", None, f"differs: a submission's answer was unclear ({unclear}); {follow}")
    if how:
        return Check(
            "submissions",
            True,
            f"answers {'echo' if how == 'echoed' else 'replay'} {contract.HEADER_IDEMPOTENCY}: a lost answer is "
            "resent with the same key, charged once",
        )
    return Check(
        "submissions",
        None,
        f"no answer seen from this folder echoing {contract.HEADER_IDEMPOTENCY} (the key is [assumed]): an "
        "unclear answer to a submission is not resent; `%flux_resume KEY --resend` sends it again on your word",
    )


def _rest_errors(api: httpx.Client, settings: Any) -> Check:
    """How the REST API writes an error (a job that does not exist), and in which language."""
    rest = make_transport("rest").auth_headers(settings.api_key)
    reply = api.get(contract.REST_JOB_PATH.format(id=PROBE_ID), headers=rest)
    body = _body(reply)
    words = "" if str(body).isascii() else "; messages in the service's language, shown as it wrote them"
    if isinstance(body, dict) and isinstance(body.get("errors"), list) and error_code(body):
        return Check("rest errors", None if words else True, f"the contract's errors list with a code{words}")
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        shape = '{"error": {"code", "message"}}'
        return Check("rest errors", None, f"differs: REST errors as {shape}: read as such{words}")
    if isinstance(body, dict) and "detail" in body:
        shape = '{"detail": ...}'
        return Check("rest errors", None, f"differs: REST errors as {shape} without a code: read by HTTP status{words}")
    return Check(
        "rest errors", None, f"HTTP {reply.status_code} for an unknown job, in no error shape the client knows"
    )


def _limits(response: httpx.Response, account: Any) -> Check:
    limit = response.headers.get(contract.HEADER_RATE_LIMIT)
    if limit is None:
        plan = account.get("plan") if isinstance(account, dict) else None
        named = f"; the account says plan {plan!r}" if plan else ""
        return Check(
            "plan and limits",
            None,
            f"no {contract.HEADER_RATE_LIMIT} headers{named}: the client paces from 429s; set Flux(plan=...) or "
            "%config Flux.plan to pace ahead",
        )
    plan = contract.plan_with_rate(float(limit)) if limit.replace(".", "", 1).isdigit() else None
    name = plan.name if plan else "custom"
    reset = response.headers.get(contract.HEADER_RATE_RESET)
    form = reset_form(reset) if reset else "unix-seconds"
    if form == "unix-seconds":
        return Check("plan and limits", True, f"{limit} requests/min: plan {name}")
    if form == "unreadable":
        return Check(
            "plan and limits",
            None,
            f"{limit} requests/min: plan {name}; {contract.HEADER_RATE_RESET} {reset!r} is unreadable: the client "
            "waits at most the rate window when the budget is spent, never past its timeout",
        )
    said = _RESET_FORMS[form]
    return Check(
        "plan and limits",
        None,
        f"differs: {limit} requests/min: plan {name}; {contract.HEADER_RATE_RESET} as {said} (the contract: a Unix "
        "time in seconds); the client reads it so, and never waits past the window or its timeout",
    )


_RESET_FORMS = {
    "seconds-left": "seconds from now",
    "unix-milliseconds": "a Unix time in milliseconds",
    "http-date": "an HTTP date",
}


def _clock(response: httpx.Response, started: float) -> Check:
    date = response.headers.get("Date")
    if not date:
        return Check("clock", None, "no Date header: clock skew unknown (webhook timestamps allow 5 minutes)")
    try:
        skew = parsedate_to_datetime(date).timestamp() - started
    except (TypeError, ValueError):
        return Check("clock", None, f"unreadable Date header {date!r}")
    if abs(skew) > MAX_SKEW_SECONDS:
        return Check("clock", False, f"the server's clock is {skew:+.0f} s from this machine's: set the system clock")
    return Check("clock", True, f"skew {skew:+.1f} s")


def _status_query(api: httpx.Client, client: Any) -> Check:
    asked, named_by_user = client.status_query
    query = asked.query() if asked else "query Job($id: ID!) { job(id: $id) { id status } }"
    name = f"{asked}" if asked else "job(id: ID!)"
    reply = _post(api, query, {"id": PROBE_ID})
    body = _body(reply)
    mismatch = schema_mismatch(body)
    if not mismatch:
        named = " (as named)" if named_by_user else ""
        if name == "job(id: ID!)":
            return Check("status query", True, f"{name}{named}")
        return Check("status query", None, f"differs: jobs are read with {name}{named}, not the contract's job(id:)")
    intro = _body(_post(api, INTROSPECTION))
    schema = ((intro or {}).get("data") or {}).get("__schema") if isinstance(intro, dict) else None
    if not schema:
        errors = intro.get("errors") if isinstance(intro, dict) else None
        message = errors[0].get("message", "no answer") if isinstance(errors, list) and errors else "no answer"
        return Check(
            "status query",
            False,
            f"no {name} query ({mismatch}) and introspection is disabled ({message}): set "
            '%config Flux.status_query = "getJob(jobId)" or Flux(status_query="getJob(jobId)") to the service\'s '
            "query (name and argument)",
            True,
        )
    found = status_query_from(schema)
    if found is None:
        return Check(
            "status query",
            False,
            f"no {name} query, and none that reads a job among: {', '.join(query_names(schema))}; "
            'set Flux(status_query="name(argument)")',
            True,
        )
    DiscoveryCache(client.settings.output_dir).put(client.settings.origin, status_query=str(found))
    return Check("status query", None, f"differs: jobs are read with {found} (found by introspection; remembered)")


def _errors(api: httpx.Client) -> Check:
    """A query for a field no schema has: the contract answers 400 with extensions.code."""
    reply = api.post(contract.GRAPHQL_PATH, json={"query": "query { doctorNoSuchField }"})
    coded, status = error_code(_body(reply)) is not None, reply.status_code
    if status == 200 or not coded:
        how = f"with HTTP {status}" + ("" if coded else ", without extensions.code")
        return Check("errors", None, f"differs: GraphQL errors answered {how}; the client reads their messages")
    return Check("errors", True, f"GraphQL errors answered with HTTP {status} and extensions.code")


def _rest_path(api: httpx.Client, settings: Any) -> Check:
    rest = make_transport("rest").auth_headers(settings.api_key)
    for path in contract.REST_JOB_PATHS:
        reply = api.get(path.format(id=PROBE_ID), headers=rest)
        text = str(_body(reply))
        if reply.status_code == 404 and PROBE_ID in text and f"{path.split('{')[0]}" not in text:
            if path == contract.REST_JOB_PATH:
                return Check("rest job path", True, f"GET {path}")
            return Check("rest job path", None, f"differs: jobs are read at GET {path} (found on first use)")
        if reply.status_code == 200:
            return Check("rest job path", True, f"GET {path}")
    return Check("rest job path", None, "no REST path answered for a job; use the GraphQL transport")


def _last_job(api: httpx.Client, client: Any) -> list[Check]:
    """A job this folder holds for this service, read again (free): statuses, cost, URL host and expiry."""
    history = [r for r in client.store.history()]
    pending = client.jobs()
    job_id = pending[-1].job_id if pending and pending[-1].job_id else (history[0].job_id if history else None)
    if job_id is None:
        return [Check("job", None, "no job of this service in this output folder yet: statuses and the CDN unchecked")]
    try:
        reply = client.status_call(job_id)
        raw = api.request(reply.method, reply.path, json=reply.json, headers=_auth(client))
        body = _body(raw) or {}
        payload = next((v for v in (body.get("data") or {}).values() if isinstance(v, dict)), {})
    except (httpx.HTTPError, DoitongError, AttributeError) as exc:
        return [Check("job", None, f"could not read job {job_id}: {exc}")]
    job = Job.from_payload(payload)
    checks = []
    spelled = job.raw_status or "?"
    named = parse_statuses(client.settings.statuses) if client.settings.statuses else {}
    mapped = named.get(contract.status_key(spelled))
    if job.known and spelled == job.status:
        checks.append(Check("statuses", True, f"job {job_id}: {spelled!r}"))
    elif job.known:
        checks.append(Check("statuses", None, f"differs: job {job_id} is {spelled!r}, read as {job.status!r}"))
    elif mapped:
        checks.append(
            Check("statuses", None, f"differs: job {job_id} is {spelled!r}, read as {mapped!r} by the statuses setting")
        )
    else:
        checks.append(
            Check(
                "statuses",
                False,
                f"job {job_id} is {spelled!r}, a status no reading knows: say what it means with "
                f'%config Flux.statuses = "{spelled}=completed" (or queued, processing, failed)',
            )
        )
    snake = [k for k in ("credit_cost", "created_at", "completed_at") if k in payload]
    if snake or isinstance(payload.get("metadata"), str):
        checks.append(Check("fields", None, f"differs: snake_case fields {snake}, metadata as text: read as such"))
    if not job.done and job.credit_cost is None:
        checks.append(
            Check("cost", None, f"differs: job {job_id} is not finished and names no creditCost yet; {_COST_LATE}")
        )
    if job.done and job.status == contract.STATUS_COMPLETED and not job.url:
        checks.append(
            Check("cdn", None, f"differs: job {job_id} is completed but names no url yet; the client reads it again")
        )
    if job.url:
        checks.append(_cdn(job.url, client.settings.base_url))
    return checks


def _cdn(url: str, base_url: str) -> Check:
    """Where and how an output URL is served, read as the client reads it (resolved against the API, redirects
    followed): a difference the client handles is a note, never a FAIL."""
    try:
        resolved = check_output_url(url, base_url)
    except UnsafeResponseError as exc:
        return Check("cdn", False, f"{exc}: the client refuses it; ask the service for https output URLs")
    host, api_host = urlsplit(resolved).hostname, urlsplit(base_url).hostname
    signed = any(k in url.lower() for k in contract.SIGNED_URL_MARKERS)
    where = "another host" if host != api_host else "the API's host"
    notes = [f"outputs on {host} ({where})"]
    if signed:
        notes.append("signed and expiring: downloaded at once")
    if url.startswith("//"):
        notes.append("URLs are scheme-relative (//host/...): read with the API's scheme")
    elif url.startswith("/"):
        notes.append("URLs are paths on the API host: resolved against it")
    try:
        fetched = httpx.get(resolved, timeout=15, headers={"Range": "bytes=0-0"}, follow_redirects=True)
    except httpx.HTTPError as exc:
        return Check("cdn", False, f"{', '.join(notes)}; unreachable: {exc}")
    if fetched.history:
        hops = fetched.history[0].status_code
        notes.append(f"redirected (HTTP {hops}) to {fetched.url.host}: the client follows it, each address checked")
    detail = f"{', '.join(notes)}; HTTP {fetched.status_code}"
    if fetched.status_code not in (200, 206):
        return Check("cdn", False, detail)
    return Check("cdn", None, "differs: " + detail) if len(notes) > 1 else Check("cdn", True, detail)


def _auth(client: Any) -> dict[str, str]:
    return make_transport(client.settings.transport).auth_headers(client.settings.api_key)


_COST_LATE = "the client counts the quote until the finished job names its cost, then the cost it names"


def _cost(form: str | None) -> Check:
    """Whether the submission's answer names its creditCost, as this folder's client last saw it (a submission
    is the only request that shows it, and it is paid: doctor never sends one)."""
    if form == "absent":
        return Check("cost", None, f"differs: the last submission's answer had no creditCost; {_COST_LATE}")
    if form == "present":
        return Check("cost", True, "the last submission's answer named its creditCost")
    return Check(
        "cost",
        None,
        "no submission seen from this output folder: whether its answer names creditCost is unchecked (only a paid "
        f"submission shows it); {_COST_LATE}",
    )


def _webhooks(form: str | None, secret: str | None) -> Check:
    """How the service signs webhooks, as this folder's receiver last verified one (the contract offers no test
    delivery, and only a paid job with a webhookUrl makes one)."""
    from doitong_nb._wire.webhooks import CONTRACT_SIGNATURE_FORM

    tolerated = "the receiver verifies hex or base64, over timestamp.body or the body alone (strict=True refuses "
    if form == CONTRACT_SIGNATURE_FORM:
        return Check("webhooks", True, "the last delivery was signed over timestamp.body in hex, as the contract says")
    if form:
        over, encoding = form.split(", ")
        what = "the raw body alone (no X-Doitong-Timestamp header)" if over == "body" else "timestamp.body"
        return Check(
            "webhooks",
            None,
            f"differs: the last delivery was signed over {what}, in {encoding}; {tolerated}a signature without "
            "a timestamp)",
        )
    has = "secret set" if secret else f"no {ENV_WEBHOOK_SECRET}"
    return Check(
        "webhooks",
        None,
        f"{has}; no delivery received in this output folder yet: the signing form is unchecked (only a paid "
        f"job with a webhook shows it); {tolerated}signatures without a timestamp)",
    )


def report(checks: list[Check]) -> str:
    lines = [str(c) for c in checks]
    failed = [c for c in checks if c.ok is False]
    notes, ok = sum(c.ok is None for c in checks), sum(bool(c.ok) for c in checks)
    lines.append(f"{len(failed)} failed, {notes} notes, {ok} ok")
    return "\n".join(lines)


def essential_failed(checks: list[Check]) -> bool:
    return any(c.ok is False and c.essential for c in checks)


def run(client: Any) -> tuple[str, bool]:
    """The report for `client`'s service, and whether something essential failed."""
    checks = diagnose(client)
    return report(checks), essential_failed(checks)
