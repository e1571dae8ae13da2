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
from doitong_nb._core.i18n import N_, _, padded
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
        mark = {True: _("ok"), False: _("FAIL"), None: _("note")}[self.ok]
        return f"{padded(mark, 4)} {padded(_(self.name), 16)} {self.detail}"


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
        why = _("{host} does not resolve ({error}): set {variable}").format(
            host=url.hostname, error=exc, variable=ENV_BASE_URL
        )
        return [Check(N_("reachable"), False, why, True)]
    headers = {**make_transport("graphql").auth_headers(settings.api_key), "User-Agent": "doitong-nb doctor"}
    with httpx.Client(base_url=settings.base_url, headers=headers, timeout=15, follow_redirects=False) as api:
        try:
            started = time.time()
            account = _post(api, "query Account { account { credits plan } }")
        except httpx.HTTPError as exc:
            tls = " (TLS)" if url.scheme == "https" and "SSL" in str(exc) else ""
            why = _("{url}{tls}: {error}; check {variable}").format(
                url=settings.base_url, tls=tls, error=exc, variable=ENV_BASE_URL
            )
            return [Check(N_("reachable"), False, why, True)]
        how = _("TLS ok") if url.scheme == "https" else _("plain http")
        checks.append(Check(N_("reachable"), True, _("{url} answers ({how})").format(url=settings.base_url, how=how)))
        body = _body(account)
        data = ((body or {}).get("data") or {}).get("account") if isinstance(body, dict) else None
        if account.status_code == 401 or error_code(body) == contract.UNAUTHENTICATED:
            checks.append(
                Check(N_("key"), False, _("the key is refused: set {variable}").format(variable=ENV_API_KEY), True)
            )
            return checks
        if not isinstance(data, dict):
            why = _("the account query answered HTTP {status}").format(status=account.status_code)
            checks.append(Check(N_("key"), False, why, True))
        else:
            said = _("accepted; plan {plan}, {credits} credits").format(
                plan=data.get("plan"), credits=data.get("credits")
            )
            checks.append(Check(N_("key"), True, said))
        checks.append(_limits(account, data))
        checks.append(_clock(account, started))
        checks.append(_status_query(api, client))
        checks.append(_errors(api))
        rest = make_transport("rest").auth_headers(settings.api_key)
        probe = api.get(contract.REST_JOB_PATH.format(id=PROBE_ID), headers=rest)  # a job that does not exist
        checks.append(_rest_path(api, rest, probe))
        checks.append(_rest_errors(probe))
        checks.extend(_last_job(api, client))
    seen = client.discovered()  # what this folder's client saw the service do
    if not any(c.name == "cost" for c in checks):
        checks.append(_cost(seen.get("submission_cost")))
    checks.append(_webhooks(seen.get("webhook_signature"), settings.webhook_secret))
    checks.append(_submissions(seen))
    if seen.get("url_late"):
        checks.append(
            Check(
                N_("urls"),
                None,
                _(
                    "differs: a completed job's url came {reads} status read(s) late; the client reads it again "
                    "with backoff until it comes, within its timeout"
                ).format(reads=seen["url_late"]),
            )
        )
    checks.append(
        Check(
            N_("retry-after"),
            None,
            _(
                "a 429's Retry-After unit is unchecked (doctor causes no 429); the client waits "
                "extensions.retryAfter when given, and never past the rate window or its timeout"
            ),
        )
    )
    return checks


def _submissions(seen: dict[str, Any]) -> Check:
    """Whether a submission's unclear answer may be resent: only once the service has shown it honours keys."""
    how, unclear = seen.get("idempotency"), seen.get("unclear_submission")
    if unclear:
        said = _(
            "differs: a submission's answer was unclear ({why}); the client followed the job it named, or kept "
            "the submission for `%flux_resume KEY --resend`"
        )
        return Check(N_("submissions"), None, said.format(why=unclear))
    if how:
        return Check(
            N_("submissions"),
            True,
            (
                _("answers echo {header}: a lost answer is resent with the same key, charged once")
                if how == "echoed"
                else _("answers replay {header}: a lost answer is resent with the same key, charged once")
            ).format(header=contract.HEADER_IDEMPOTENCY),
        )
    return Check(
        N_("submissions"),
        None,
        _(
            "no answer seen from this folder echoing {header} (the key is [assumed]): an unclear answer to a "
            "submission is not resent; `%flux_resume KEY --resend` sends it again on your word"
        ).format(header=contract.HEADER_IDEMPOTENCY),
    )


def _rest_errors(reply: httpx.Response) -> Check:
    """How the REST API writes an error (the probe: a job that does not exist), and in which language."""
    body = _body(reply)
    words = "" if str(body).isascii() else _("; messages in the service's language, shown as it wrote them")
    if isinstance(body, dict) and isinstance(body.get("errors"), list) and error_code(body):
        said = _("the contract's errors list with a code{words}").format(words=words)
        return Check(N_("rest errors"), None if words else True, said)
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        said = _("differs: REST errors as {shape}: read as such{words}")
        return Check(N_("rest errors"), None, said.format(shape='{"error": {"code", "message"}}', words=words))
    if isinstance(body, dict) and "detail" in body:
        said = _("differs: REST errors as {shape} without a code: read by HTTP status{words}")
        return Check(N_("rest errors"), None, said.format(shape='{"detail": ...}', words=words))
    said = _("HTTP {status} for an unknown job, in no error shape the client knows")
    return Check(N_("rest errors"), None, said.format(status=reply.status_code))


def _limits(response: httpx.Response, account: Any) -> Check:
    limit = response.headers.get(contract.HEADER_RATE_LIMIT)
    if limit is None:
        plan = account.get("plan") if isinstance(account, dict) else None
        named = _("; the account says plan {plan!r}").format(plan=plan) if plan else ""
        return Check(
            N_("plan and limits"),
            None,
            _(
                "no {header} headers{named}: the client paces from 429s; set Flux(plan=...) or %config Flux.plan "
                "to pace ahead"
            ).format(header=contract.HEADER_RATE_LIMIT, named=named),
        )
    plan = contract.plan_with_rate(float(limit)) if limit.replace(".", "", 1).isdigit() else None
    name = plan.name if plan else _("custom")
    reset = response.headers.get(contract.HEADER_RATE_RESET)
    form = reset_form(reset) if reset else "unix-seconds"
    if form == "unix-seconds":
        return Check(N_("plan and limits"), True, _("{limit} requests/min: plan {plan}").format(limit=limit, plan=name))
    if form == "unreadable":
        return Check(
            N_("plan and limits"),
            None,
            _(
                "{limit} requests/min: plan {plan}; {header} {reset!r} is unreadable: the client waits at most the "
                "rate window when the budget is spent, never past its timeout"
            ).format(limit=limit, plan=name, header=contract.HEADER_RATE_RESET, reset=reset),
        )
    return Check(
        N_("plan and limits"),
        None,
        _(
            "differs: {limit} requests/min: plan {plan}; {header} as {form} (the contract: a Unix time in seconds); "
            "the client reads it so, and never waits past the window or its timeout"
        ).format(limit=limit, plan=name, header=contract.HEADER_RATE_RESET, form=_(_RESET_FORMS[form])),
    )


_RESET_FORMS = {
    "seconds-left": N_("seconds from now"),
    "unix-milliseconds": N_("a Unix time in milliseconds"),
    "http-date": N_("an HTTP date"),
}


def _clock(response: httpx.Response, started: float) -> Check:
    date = response.headers.get("Date")
    if not date:
        return Check(N_("clock"), None, _("no Date header: clock skew unknown (webhook timestamps allow 5 minutes)"))
    try:
        skew = parsedate_to_datetime(date).timestamp() - started
    except (TypeError, ValueError):
        return Check(N_("clock"), None, _("unreadable Date header {date!r}").format(date=date))
    if abs(skew) > MAX_SKEW_SECONDS:
        said = _("the server's clock is {skew:+.0f} s from this machine's: set the system clock")
        return Check(N_("clock"), False, said.format(skew=skew))
    return Check(N_("clock"), True, _("skew {skew:+.1f} s").format(skew=skew))


def _status_query(api: httpx.Client, client: Any) -> Check:
    asked, named_by_user = client.status_query
    query = asked.query() if asked else "query Job($id: ID!) { job(id: $id) { id status } }"
    name = f"{asked}" if asked else "job(id: ID!)"
    reply = _post(api, query, {"id": PROBE_ID})
    body = _body(reply)
    mismatch = schema_mismatch(body)
    if not mismatch:
        named = _(" (as named)") if named_by_user else ""
        if name == "job(id: ID!)":
            return Check(N_("status query"), True, f"{name}{named}")
        said = _("differs: jobs are read with {query}{named}, not the contract's job(id:)")
        return Check(N_("status query"), None, said.format(query=name, named=named))
    intro = _body(_post(api, INTROSPECTION))
    schema = ((intro or {}).get("data") or {}).get("__schema") if isinstance(intro, dict) else None
    if not schema:
        errors = intro.get("errors") if isinstance(intro, dict) else None
        message = errors[0].get("message", _("no answer")) if isinstance(errors, list) and errors else _("no answer")
        return Check(
            N_("status query"),
            False,
            _(
                "no {query} query ({mismatch}) and introspection is disabled ({message}): set "
                '%config Flux.status_query = "getJob(jobId)" or Flux(status_query="getJob(jobId)") to the '
                "service's query (name and argument)"
            ).format(query=name, mismatch=mismatch, message=message),
            True,
        )
    found = status_query_from(schema)
    if found is None:
        return Check(
            N_("status query"),
            False,
            _(
                'no {query} query, and none that reads a job among: {names}; set Flux(status_query="name(argument)")'
            ).format(query=name, names=", ".join(query_names(schema))),
            True,
        )
    DiscoveryCache(client.settings.output_dir).put(client.settings.origin, status_query=str(found))
    said = _("differs: jobs are read with {query} (found by introspection; remembered)")
    return Check(N_("status query"), None, said.format(query=found))


def _errors(api: httpx.Client) -> Check:
    """A query for a field no schema has: the contract answers 400 with extensions.code."""
    reply = api.post(contract.GRAPHQL_PATH, json={"query": "query { doctorNoSuchField }"})
    coded, status = error_code(_body(reply)) is not None, reply.status_code
    if status == 200 or not coded:
        said = (
            _("differs: GraphQL errors answered with HTTP {status}; the client reads their messages")
            if coded
            else _(
                "differs: GraphQL errors answered with HTTP {status}, without extensions.code; the client reads "
                "their messages"
            )
        )
        return Check(N_("errors"), None, said.format(status=status))
    return Check(
        N_("errors"), True, _("GraphQL errors answered with HTTP {status} and extensions.code").format(status=status)
    )


def _rest_path(api: httpx.Client, rest: dict[str, str], probe: httpx.Response) -> Check:
    """Which REST path knows jobs: the probe asked the contract's; the others are asked only when it does not."""
    for path in contract.REST_JOB_PATHS:
        reply = probe if path == contract.REST_JOB_PATH else api.get(path.format(id=PROBE_ID), headers=rest)
        text = str(_body(reply))
        if reply.status_code == 404 and PROBE_ID in text and f"{path.split('{')[0]}" not in text:
            if path == contract.REST_JOB_PATH:
                return Check(N_("rest job path"), True, f"GET {path}")
            said = _("differs: jobs are read at GET {path} (found on first use)")
            return Check(N_("rest job path"), None, said.format(path=path))
        if reply.status_code == 200:
            return Check(N_("rest job path"), True, f"GET {path}")
    return Check(N_("rest job path"), None, _("no REST path answered for a job; use the GraphQL transport"))


def _last_job(api: httpx.Client, client: Any) -> list[Check]:
    """A job this folder holds for this service, read again (free): statuses, cost, URL host and expiry."""
    history = [r for r in client.store.history()]
    pending = client.jobs()
    job_id = pending[-1].job_id if pending and pending[-1].job_id else (history[0].job_id if history else None)
    if job_id is None:
        said = _("no job of this service in this output folder yet: statuses and the CDN unchecked")
        return [Check(N_("job"), None, said)]
    try:
        reply = client.status_call(job_id)
        raw = api.request(reply.method, reply.path, json=reply.json, headers=_auth(client))
        body = _body(raw) or {}
        payload = next((v for v in (body.get("data") or {}).values() if isinstance(v, dict)), {})
    except (httpx.HTTPError, DoitongError, AttributeError) as exc:
        return [Check(N_("job"), None, _("could not read job {job_id}: {error}").format(job_id=job_id, error=exc))]
    job = Job.from_payload(payload)
    checks = []
    spelled = job.raw_status or "?"
    mapped = job.named(parse_statuses(client.settings.statuses)) if client.settings.statuses else job
    if job.known and spelled == job.status:
        checks.append(Check(N_("statuses"), True, _("job {job_id}: {status!r}").format(job_id=job_id, status=spelled)))
    elif job.known:
        said = _("differs: job {job_id} is {status!r}, read as {meaning!r}")
        checks.append(Check(N_("statuses"), None, said.format(job_id=job_id, status=spelled, meaning=job.status)))
    elif mapped.known:
        said = _("differs: job {job_id} is {status!r}, read as {meaning!r} by the statuses setting")
        checks.append(Check(N_("statuses"), None, said.format(job_id=job_id, status=spelled, meaning=mapped.status)))
    else:
        said = _(
            "job {job_id} is {status!r}, a status no reading knows: say what it means with "
            '%config Flux.statuses = "{status}=completed" (or queued, processing, failed)'
        )
        checks.append(Check(N_("statuses"), False, said.format(job_id=job_id, status=spelled)))
    snake = [k for k in ("credit_cost", "created_at", "completed_at") if k in payload]
    if snake or isinstance(payload.get("metadata"), str):
        said = _("differs: snake_case fields {fields}, metadata as text: read as such").format(fields=snake)
        checks.append(Check(N_("fields"), None, said))
    if not job.done and job.credit_cost is None:
        said = _("differs: job {job_id} is not finished and names no creditCost yet; {late}")
        checks.append(Check(N_("cost"), None, said.format(job_id=job_id, late=_(_COST_LATE))))
    if job.done and job.status == contract.STATUS_COMPLETED and not job.url:
        said = _("differs: job {job_id} is completed but names no url yet; the client reads it again")
        checks.append(Check(N_("cdn"), None, said.format(job_id=job_id)))
    if job.url:
        checks.append(_cdn(job.url, client.settings.base_url))
    return checks


def _cdn(url: str, base_url: str) -> Check:
    """Where and how an output URL is served, read as the client reads it (resolved against the API, redirects
    followed): a difference the client handles is a note, never a FAIL."""
    try:
        resolved = check_output_url(url, base_url)
    except UnsafeResponseError as exc:
        said = _("{error}: the client refuses it; ask the service for https output URLs").format(error=exc)
        return Check(N_("cdn"), False, said)
    host, api_host = urlsplit(resolved).hostname, urlsplit(base_url).hostname
    signed = any(k in url.lower() for k in contract.SIGNED_URL_MARKERS)
    where = _("another host") if host != api_host else _("the API's host")
    notes = [_("outputs on {host} ({where})").format(host=host, where=where)]
    if signed:
        notes.append(_("signed and expiring: downloaded at once"))
    if url.startswith("//"):
        notes.append(_("URLs are scheme-relative (//host/...): read with the API's scheme"))
    elif url.startswith("/"):
        notes.append(_("URLs are paths on the API host: resolved against it"))
    try:
        fetched = httpx.get(resolved, timeout=15, headers={"Range": "bytes=0-0"}, follow_redirects=True)
    except httpx.HTTPError as exc:
        said = _("{notes}; unreachable: {error}").format(notes=", ".join(notes), error=exc)
        return Check(N_("cdn"), False, said)
    if fetched.history:
        said = _("redirected (HTTP {status}) to {host}: the client follows it, each address checked")
        notes.append(said.format(status=fetched.history[0].status_code, host=fetched.url.host))
    detail = f"{', '.join(notes)}; HTTP {fetched.status_code}"
    if fetched.status_code not in (200, 206):
        return Check(N_("cdn"), False, detail)
    if len(notes) > 1:
        return Check(N_("cdn"), None, _("differs: {detail}").format(detail=detail))
    return Check(N_("cdn"), True, detail)


def _auth(client: Any) -> dict[str, str]:
    return make_transport(client.settings.transport).auth_headers(client.settings.api_key)


_COST_LATE = N_("the client counts the quote until the finished job names its cost, then the cost it names")


def _cost(form: str | None) -> Check:
    """Whether the submission's answer names its creditCost, as this folder's client last saw it (a submission
    is the only request that shows it, and it is paid: doctor never sends one)."""
    if form == "absent":
        said = _("differs: the last submission's answer had no creditCost; {late}")
        return Check(N_("cost"), None, said.format(late=_(_COST_LATE)))
    if form == "present":
        return Check(N_("cost"), True, _("the last submission's answer named its creditCost"))
    said = _(
        "no submission seen from this output folder: whether its answer names creditCost is unchecked (only a paid "
        "submission shows it); {late}"
    )
    return Check(N_("cost"), None, said.format(late=_(_COST_LATE)))


def _webhooks(form: str | None, secret: str | None) -> Check:
    """How the service signs webhooks, as this folder's receiver last verified one (the contract offers no test
    delivery, and only a paid job with a webhookUrl makes one)."""
    from doitong_nb._wire.webhooks import CONTRACT_SIGNATURE_FORM

    if form == CONTRACT_SIGNATURE_FORM:
        said = _("the last delivery was signed over timestamp.body in hex, as the contract says")
        return Check(N_("webhooks"), True, said)
    if form:
        over, encoding = form.split(", ")
        what = _("the raw body alone (no X-Doitong-Timestamp header)") if over == "body" else "timestamp.body"
        said = _(
            "differs: the last delivery was signed over {what}, in {encoding}; the receiver verifies hex or base64, "
            "over timestamp.body or the body alone (strict=True refuses a signature without a timestamp)"
        )
        return Check(N_("webhooks"), None, said.format(what=what, encoding=encoding))
    has = _("secret set") if secret else _("no {variable}").format(variable=ENV_WEBHOOK_SECRET)
    said = _(
        "{secret}; no delivery received in this output folder yet: the signing form is unchecked (only a paid job "
        "with a webhook shows it); the receiver verifies hex or base64, over timestamp.body or the body alone "
        "(strict=True refuses signatures without a timestamp)"
    )
    return Check(N_("webhooks"), None, said.format(secret=has))


def report(checks: list[Check]) -> str:
    lines = [str(c) for c in checks]
    failed = [c for c in checks if c.ok is False]
    notes, ok = sum(c.ok is None for c in checks), sum(bool(c.ok) for c in checks)
    lines.append(_("{failed} failed, {notes} notes, {ok} ok").format(failed=len(failed), notes=notes, ok=ok))
    return "\n".join(lines)


def essential_failed(checks: list[Check]) -> bool:
    return any(c.ok is False and c.essential for c in checks)


def run(client: Any) -> tuple[str, bool]:
    """The report for `client`'s service, and whether something essential failed."""
    checks = diagnose(client)
    return report(checks), essential_failed(checks)
