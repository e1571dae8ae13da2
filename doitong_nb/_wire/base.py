"""What every transport provides: the wire format of the three calls, nothing about HTTP itself."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from doitong_nb._core.errors import ServerError
from doitong_nb._core.i18n import _
from doitong_nb._core.request import GenerationRequest
from doitong_nb._core.result import Job
from doitong_nb._core.steps import HttpCall


@dataclass(frozen=True)
class Account:
    credits: int
    plan: str


class Transport(Protocol):
    name: str

    def auth_headers(self, api_key: str) -> dict[str, str]: ...

    def submit(self, request: GenerationRequest) -> HttpCall: ...

    def status(self, job_id: str) -> HttpCall: ...

    def account(self) -> HttpCall: ...

    def parse_job(self, body: dict[str, Any]) -> Job: ...


def data_field(body: dict[str, Any], name: str) -> Any:
    """`body.data[name]`, tolerating the doc's lowercase `generateimage` (and any other case slip)."""
    data = body.get("data") or {}
    if name in data:
        return data[name]
    lowered = {k.lower(): v for k, v in data.items()}
    return lowered.get(name.lower())


def job_from(body: dict[str, Any], names: tuple[str, ...]) -> Job:
    """The first job object found under one of `names` in `body.data`."""
    for name in names:
        payload = data_field(body, name)
        if isinstance(payload, dict):
            return Job.from_payload(payload)
    data = body.get("data")
    jobs = [v for v in data.values() if isinstance(v, dict) and "id" in v] if isinstance(data, dict) else []
    if len(jobs) == 1:  # the one job object of the answer, under a name of the service's choosing
        return Job.from_payload(jobs[0])
    raise ServerError(_("the answer carried no job object; retry later"))


def account_from(body: dict[str, Any]) -> Account:
    payload = data_field(body, "account") or {}
    return Account(credits=int(payload.get("credits", 0)), plan=str(payload.get("plan", "")))
